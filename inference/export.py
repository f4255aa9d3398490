"""Write a prediction where the input came from, in the input's format, on the input's grid.

``CASE<ending>`` holds the segmentation (same shape, spacing, origin and direction as the scan,
via the same IO layer that read it); ``CASE.npz`` optionally holds the softmax
(``probabilities``: (K, *spatial) float32, array order, plus the class names). Every file is
written to a temporary name first and renamed, so an interrupted run leaves no partial output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.predictor import Prediction
from preprocessing.atomic import atomic_output
from preprocessing.io import write_image


def segmentation_path(out_folder: Path, case_id: str, ending: str) -> Path:
    return Path(out_folder) / f"{case_id}{ending}"


def probabilities_path(out_folder: Path, case_id: str) -> Path:
    return Path(out_folder) / f"{case_id}.npz"


def write_prediction(prediction: Prediction, out_folder: Path, case_id: str, ending: str,
                     class_names: list[str]) -> list[Path]:
    """Write the segmentation (and probabilities, if the prediction kept them); returns the paths."""
    written = []
    if prediction.probabilities is not None:
        target = probabilities_path(out_folder, case_id)
        with atomic_output(target) as tmp:
            with open(tmp, "wb") as handle:  # a file object: numpy would append .npz to a bare name
                np.savez_compressed(handle, probabilities=prediction.probabilities.astype(np.float32),
                                    class_names=np.array(class_names))
        written.append(target)
    target = segmentation_path(out_folder, case_id, ending)
    write_image(target, prediction.segmentation[None], prediction.geometry)
    written.append(target)
    return written
