"""Where converted cases land: a hidden staging folder beside the dataset folder, verified and
then moved into place, so a dataset folder appears complete and checked or not at all (and an
existing one survives a failed ``--overwrite``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from preprocessing.dataset import DATASET_FOLDER_PATTERN, dataset_folder_name
from preprocessing.dataset_json import DatasetSpec
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry
from preprocessing.integrity import verify_dataset
from preprocessing.io import write_image



@dataclass(frozen=True)
class OutputConfig:
    """The dataset to create under the raw root, and how its cases split into Tr and Ts."""

    raw_root: Path
    dataset_id: int
    name: str
    overwrite: bool = False
    test_fraction: float = 0.0
    seed: int = 0

    @property
    def folder(self) -> Path:
        return Path(self.raw_root) / dataset_folder_name(self.dataset_id, self.name)


def check_target(output: OutputConfig) -> Path:
    """Refuse, before any input is read, to clobber a dataset or to reuse another one's id."""
    folder = output.folder
    if not 0.0 <= output.test_fraction < 1.0:
        raise DatasetError(f"--test-fraction {output.test_fraction} is out of range. "
                           "Fix: use 0 <= F < 1.")
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder}: exists and is not a folder. Fix: move it away.")
    if folder.is_dir() and any(folder.iterdir()) and not output.overwrite:
        raise DatasetError(f"{folder}: dataset folder exists and is not empty. Fix: pass --overwrite "
                           "to replace it, or choose another --dataset-id/--name.")
    root = Path(output.raw_root)
    if root.is_dir():
        for other in sorted(root.iterdir()):
            match = DATASET_FOLDER_PATTERN.match(other.name)
            if other.is_dir() and match and int(match.group(1)) == output.dataset_id and other != folder:
                raise DatasetError(f"{other}: already uses dataset id {output.dataset_id}. Fix: choose "
                                   "another --dataset-id or remove that folder.")
    return folder


class DatasetWriter:
    """Writes cases in the raw layout into staging; ``publish`` verifies and moves them in place."""

    def __init__(self, output: OutputConfig, file_ending: str) -> None:
        self.folder = check_target(output)
        self.file_ending = file_ending
        self._staging: Path | None = None
        self.cases: dict[str, list[str]] = {"Tr": [], "Ts": []}

    def __enter__(self) -> "DatasetWriter":
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        # A plain mkdir (not mkdtemp) so the published folder gets the user's usual permissions.
        staging = self.folder.parent / f".{self.folder.name}.{uuid.uuid4().hex[:12]}.partial"
        staging.mkdir()
        self._staging = staging
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

    @property
    def staging(self) -> Path:
        if self._staging is None:
            raise RuntimeError("DatasetWriter is used outside its with-block")
        return self._staging

    def write_case(self, case: str, split: str, image: np.ndarray, geometry: Geometry,
                   label: np.ndarray | None) -> None:
        """One image file (all its channels: a single RGB PNG or one volume) and its label."""
        write_image(self.staging / f"images{split}" / f"{case}_0000{self.file_ending}", image, geometry)
        if label is not None:
            write_image(self.staging / f"labels{split}" / f"{case}{self.file_ending}",
                        label[None].astype(np.uint8, copy=False), geometry)
        self.cases[split].append(case)

    def publish(self, spec: DatasetSpec) -> Path:
        """Write dataset.json last, verify the staged dataset, then move it to its final name."""
        for sub in ("imagesTr", "labelsTr"):
            (self.staging / sub).mkdir(exist_ok=True)
        spec.save(self.staging)
        report = verify_dataset(self.staging)
        if not report.ok:
            text = report.format().replace(str(self.staging), str(self.folder))
            raise DatasetError(f"{self.folder.name}: the converted dataset failed the integrity check "
                               f"({len(report.problems)} problems; nothing was written):\n{text}")
        if self.folder.is_dir():
            shutil.rmtree(self.folder)  # only reached with --overwrite or for an empty folder
        os.replace(self.staging, self.folder)
        self._staging = None
        return self.folder
