"""Integrity check of a raw dataset: every problem found, one line each (file, problem, fix).

``verify_dataset`` is what ``mucald_verify`` and the planner call; it never stops at the first
fault, and data faults become report lines, never tracebacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocessing.dataset import SPLITS, RawDataset
from preprocessing.dataset_json import DATASET_JSON
from preprocessing.errors import DatasetError, ImageIOError
from preprocessing.io import ending_of

_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Problem:
    file: Path
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}. Fix: {self.fix}"


@dataclass
class IntegrityReport:
    dataset_folder: Path
    problems: list[Problem] = field(default_factory=list)
    cases_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: Path, problem: str, fix: str) -> None:
        self.problems.append(Problem(Path(file), problem, fix))

    def format(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def raise_if_problems(self) -> None:
        if self.problems:
            raise DatasetError(f"{self.dataset_folder.name} failed the integrity check "
                               f"({len(self.problems)} problems):\n{self.format()}")


def verify_dataset(folder: Path, on_case: Callable[[str], None] | None = None) -> IntegrityReport:
    """Check ``folder`` (a DatasetXXX_Name folder) completely; ``on_case`` reports progress."""
    folder = Path(folder)
    report = IntegrityReport(folder)
    try:
        dataset = RawDataset(folder)
    except DatasetError as err:  # dataset.json missing or invalid: nothing else can be checked
        for line in str(err).splitlines():
            path, _, rest = line.partition(": ")
            problem, _, fix = rest.partition(" Fix: ")
            report.add(Path(path) if path else folder / DATASET_JSON, problem.rstrip("."), fix or
                       "see the README's dataset layout")
        return report
    if not dataset.images_dir("Tr").is_dir():
        report.add(dataset.images_dir("Tr"), "folder is missing", "put training images in imagesTr/")
    if not dataset.labels_dir("Tr").is_dir():
        report.add(dataset.labels_dir("Tr"), "folder is missing", "put training labels in labelsTr/")
    _check_file_names(dataset, report)
    train_cases = dataset.case_ids("Tr")
    if dataset.images_dir("Tr").is_dir() and not train_cases:
        report.add(dataset.images_dir("Tr"), "holds no training images",
                   f"add CASE_0000{dataset.spec.file_ending} files")
    if len(train_cases) != dataset.spec.num_training:
        report.add(folder / DATASET_JSON, f"numTraining is {dataset.spec.num_training} but imagesTr "
                   f"holds {len(train_cases)} cases", "correct numTraining")
    for split in SPLITS:
        for case in dataset.case_ids(split):
            # test labels are optional, case by case; every training case needs one
            labelled = split == "Tr" or dataset.label_file(case, split).is_file()
            _check_case(dataset, case, split, labelled, report)
            report.cases_checked += 1
            if on_case is not None:
                on_case(case)
    return report


def _check_file_names(dataset: RawDataset, report: IntegrityReport) -> None:
    """Unknown endings, endings other than dataset.json's, misnamed images, orphan labels."""
    ending = dataset.spec.file_ending
    for split in SPLITS:
        cases = set(dataset.case_ids(split))
        for folder, is_label in ((dataset.images_dir(split), False), (dataset.labels_dir(split), True)):
            if not folder.is_dir():
                continue
            for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
                found = ending_of(path)
                if found is None:
                    report.add(path, "unknown file ending", f"convert it to {ending} or remove it")
                elif found != ending:
                    report.add(path, f"ending {found} differs from dataset.json's file_ending "
                               f"{ending}", f"convert it to {ending}")
                elif is_label and path.name[: -len(ending)] not in cases:
                    report.add(path, "label has no image", f"add {path.name[: -len(ending)]}_0000"
                               f"{ending} to images{split} or remove the label")
                elif not is_label and not _CHANNEL_STEM.match(path.name[: -len(ending)]):
                    report.add(path, "image name lacks the channel suffix",
                               f"rename it to CASE_0000{ending}")


def _check_case(dataset: RawDataset, case: str, split: str, labelled: bool,
                report: IntegrityReport) -> None:
    try:
        images = dataset.read_images(case, split)
    except ImageIOError as err:
        report.add(err.path, err.problem, err.fix)
        images = None
    if images is not None:
        _check_extra_channel_files(dataset, case, split, len(images.files), report)
        for channel, path in enumerate(images.channel_files):
            for problem, fix in channel_problems(images.array[channel], channel):
                report.add(path, problem, fix)
    if not labelled:
        return
    try:
        label, label_geometry = dataset.read_label(case, split)
    except ImageIOError as err:
        report.add(err.path, err.problem, err.fix)
        return
    label_path = dataset.label_file(case, split)
    if images is not None and (diff := label_geometry.mismatches(images.geometry)):
        report.add(label_path, f"geometry differs from {images.files[0].name}: {'; '.join(diff)}",
                   "resample the label onto the image grid (nearest neighbour) or fix its header")
    _check_label_values(label, label_path, dataset.spec.label_values, report)


def _check_extra_channel_files(dataset: RawDataset, case: str, split: str, used: int,
                               report: IntegrityReport) -> None:
    extra = dataset.channel_file(case, used, split)
    if extra.is_file():
        report.add(extra, f"channel file beyond the {dataset.spec.num_channels} declared in "
                   "dataset.json", "declare the channel in channel_names or remove the file")


def channel_problems(channel: np.ndarray, index: int) -> list[tuple[str, str]]:
    """Why one image channel is unusable, as (problem, fix) pairs: no voxels, NaN/Inf, constant.

    Shared with the converter, which checks inputs before it writes anything.
    """
    if channel.size == 0:
        return [("image is empty (no voxels)", "re-export the image")]
    if np.issubdtype(channel.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(channel)))
        if bad:
            return [(f"channel {index} has {bad} NaN/Inf voxels",
                     "re-export the image or replace non-finite values")]
    if channel.min() == channel.max():
        return [(f"channel {index} is constant ({channel.flat[0]})",
                 "the image holds no information: re-export or drop the case")]
    return []


def _check_label_values(label: np.ndarray, path: Path, allowed: frozenset[int],
                        report: IntegrityReport) -> None:
    if np.issubdtype(label.dtype, np.floating):
        if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
            report.add(path, "label holds non-integer values",
                       "store labels as integer class values (nearest-neighbour resampling)")
            return
    values = {int(v) for v in np.unique(label)}
    unknown = sorted(values - allowed)
    if unknown:
        report.add(path, f"label values {unknown} are not in dataset.json's labels {sorted(allowed)}",
                   "map them to declared values (mucald_convert --label-map) or declare them")
