"""``Predictor``: load a trained client once, then segment many arrays or files.

A case goes: preprocess with the plan (``preprocess_case``, the code that made the training
data) -> Gaussian-weighted sliding windows (MONAI) over FE -> CRDM1 -> SS -> CRDM2 -> BE, with
mirroring TTA and optional noise draws -> softmax -> probabilities back onto the input grid
(undo resampling and cropping) -> argmax. The three stages are separate functions so that a
batch run can preprocess and export in worker processes while the network predicts.

Example::

    predictor = Predictor.from_trained("2", preprocessed_root=..., results_root=...)
    prediction = predictor.predict_files(["scan_0000.nii.gz"])
    prediction.segmentation  # (z, y, x) on the scan's grid; prediction.geometry is the scan's
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference.errors import PredictionError
from inference.inputs import InputCase, discover_cases
from inference.model import ModelSource, TrainedClientModel, load_client_model
from inference.windows import averaged_windows
from mucald_unet.training.validation import predict_case_logits
from planners.locate import client_names, find_client_plans
from planners.plans import ClientPlan
from preprocessing.case_preprocessing import (CasePreprocessingConfig, CaseProperties, PreprocessedCase,
                                              preprocess_case, restore_probabilities)
from preprocessing.geometry import Geometry
from preprocessing.resampling import ResamplingConfig


@dataclass(frozen=True)
class PredictionSettings:
    step_size: float = 0.5  # window step as a fraction of the patch (overlap = 1 - step)
    mirror: bool = True  # test-time mirroring over the axes training mirrored
    noise_samples: int = 1  # forward-noise draws averaged per window (CRDM runs only)
    window_batch: int = 4  # windows per network call
    seed: int = 0  # noise draws are seeded per case, so a case's result does not depend on order
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0 < self.step_size <= 1:
            raise PredictionError(f"step size {self.step_size} is outside (0, 1]. Fix: use e.g. --step-size 0.5.")
        if self.noise_samples < 1 or self.window_batch < 1:
            raise PredictionError("noise samples and window batch must be at least 1.")


@dataclass(frozen=True)
class CaseRequirements:
    """What a case must look like for this client, and how to preprocess it (picklable, for workers)."""

    client: str
    spatial_dims: int
    num_channels: int
    preprocessing: CasePreprocessingConfig

    @classmethod
    def from_plan(cls, plan: ClientPlan) -> "CaseRequirements":
        return cls(plan.dataset_name, len(plan.target_spacing), plan.in_channels, plan.case_preprocessing())

    def check(self, images: np.ndarray, source: str) -> None:
        if images.ndim - 1 != self.spatial_dims:
            kind = "2D" if self.spatial_dims == 2 else "3D"
            raise PredictionError(f"{source}: a {images.ndim - 1}D image, but {self.client} was trained on {kind} "
                                  f"images. Fix: predict it with a federation client trained on "
                                  f"{images.ndim - 1}D data.")
        if images.shape[0] != self.num_channels:
            raise PredictionError(f"{source}: {images.shape[0]} channel(s), but {self.client} takes "
                                  f"{self.num_channels}. Fix: give exactly the task's channel files _0000 ...")


@dataclass(frozen=True, eq=False)
class Prediction:
    segmentation: np.ndarray  # (*spatial) class indices on the input grid
    geometry: Geometry  # the input's grid
    probabilities: np.ndarray | None = None  # (K, *spatial) softmax on the input grid, if asked for


def prepare_case(case_id: str, images: np.ndarray, geometry: Geometry, requirements: CaseRequirements,
                 source: str = "") -> PreprocessedCase:
    """Check and preprocess one case exactly as training data was."""
    requirements.check(images, source or case_id)
    if not np.all(np.isfinite(images)):
        raise PredictionError(f"{source or case_id}: holds NaN or infinite values. Fix: repair or re-export the scan.")
    return preprocess_case(case_id, images, None, geometry, requirements.preprocessing)


def read_and_prepare(case: InputCase, requirements: CaseRequirements) -> PreprocessedCase:
    """Read an input case's channel files and preprocess it (runs in a worker in batch mode)."""
    images = case.read(requirements.num_channels)
    return prepare_case(case.case_id, images.array, images.geometry, requirements, str(images.files[0]))


def finish_case(probabilities: np.ndarray, properties: CaseProperties, resampling: ResamplingConfig,
                keep_probabilities: bool) -> Prediction:
    """Probabilities at the target spacing -> segmentation (and probabilities) on the input grid."""
    full = restore_probabilities(probabilities, properties, resampling)
    dtype = np.uint8 if full.shape[0] <= 256 else np.int16
    return Prediction(full.argmax(axis=0).astype(dtype), properties.geometry, full if keep_probabilities else None)


class Predictor:
    def __init__(self, model: TrainedClientModel, settings: PredictionSettings = PredictionSettings()) -> None:
        self.model = model
        self.settings = settings
        self.plan: ClientPlan = model.plan
        self.requirements = CaseRequirements.from_plan(self.plan)
        self.resampling = ResamplingConfig.from_dict(dict(self.plan.resampling))

    @classmethod
    def from_trained(cls, dataset: str | int, *, preprocessed_root: Path | str, results_root: Path | str,
                     source: ModelSource = ModelSource(),
                     settings: PredictionSettings = PredictionSettings(),
                     federation: Sequence[str] | None = None) -> "Predictor":
        """The client ``dataset`` of the federation planned under ``preprocessed_root`` (the one
        holding it, or ``federation``), with the weights ``source`` names under ``results_root``."""
        plans_path = find_client_plans(Path(preprocessed_root), [str(dataset)], federation)
        client = client_names(plans_path, [str(dataset)])[0]
        model = load_client_model(plans_path, client, source.existing_checkpoint(Path(results_root), plans_path),
                                  settings.device)
        return cls(model, settings)

    # ---- the network stage ------------------------------------------------------------------
    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """The patch axes training mirrored: all of them, or none when the run trained without
        augmentation (``enabled`` false) or without mirroring (``p_mirror`` 0), or TTA is off."""
        if not self.settings.mirror:
            return ()
        return self.model.config.augmentation.mirrored_axes(len(self.plan.patch_size))

    @property
    def noise_draws(self) -> int:
        """Draws worth averaging: one when nothing in the network is random at evaluation."""
        return self.settings.noise_samples if self.model.adds_noise else 1

    def predict_logits(self, images: np.ndarray) -> torch.Tensor:
        """Class logits (K, *spatial) of a preprocessed case (C, *spatial), on the model's device."""
        device = self.model.device
        generators = [torch.Generator(device=device).manual_seed(self.settings.seed + draw)
                      for draw in range(self.noise_draws)]
        window = averaged_windows(self.model, self.mirror_axes, generators)
        with torch.inference_mode():
            return predict_case_logits(window, images, self.plan.patch_size, self.plan.slice_axis, device,
                                       overlap=1.0 - self.settings.step_size,
                                       batch_size=self.settings.window_batch)

    def predict_probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax (K, *spatial) of a preprocessed case, as float32 on the host."""
        with torch.inference_mode():
            return torch.softmax(self.predict_logits(images).float(), dim=0).cpu().numpy()

    # ---- whole cases ------------------------------------------------------------------------
    def predict_array(self, images: np.ndarray, geometry: Geometry | None = None, case_id: str = "case",
                      keep_probabilities: bool = False) -> Prediction:
        """Segment a raw array (C, *spatial); pass the scan's geometry, or unit spacing is assumed."""
        images = np.asarray(images)
        geometry = geometry if geometry is not None else Geometry.default(tuple(images.shape[1:]))
        case = prepare_case(case_id, images, geometry, self.requirements)
        return self._finish(case, keep_probabilities)

    def predict_files(self, files: Sequence[Path | str], keep_probabilities: bool = False) -> Prediction:
        """Segment one case given as its channel files (``CASE_0000<ending>``, ...)."""
        cases = discover_cases([Path(f) for f in files])
        if len(cases) != 1:
            raise PredictionError(f"{', '.join(map(str, files))}: these are {len(cases)} cases. Fix: pass the "
                                  "channel files of one case (or use predict_cases for a folder).")
        return self._finish(read_and_prepare(cases[0], self.requirements), keep_probabilities)

    def _finish(self, case: PreprocessedCase, keep_probabilities: bool) -> Prediction:
        probabilities = self.predict_probabilities(case.images)
        return finish_case(probabilities, case.properties, self.resampling, keep_probabilities)
