"""Dataset fingerprint: what the planner needs to know about one client's raw data.

Per case: spacing, shape, the crop-to-nonzero box and the shape after it, voxel counts per class,
and a seeded sample of foreground intensities per channel. Per dataset: the pooled intensity
statistics (what CT normalisation uses), class frequencies, and the median size kept by cropping.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from planners.errors import PlanError
from preprocessing.atomic import write_json_atomic
from preprocessing.cropping import bounding_box, nonzero_mask

FINGERPRINT_VERSION = 1
FINGERPRINT_FILE = "fingerprint.json"
SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class CaseFingerprint:
    case_id: str
    spacing: tuple[float, ...]  # array order
    shape: tuple[int, ...]
    bbox: tuple[tuple[int, ...], tuple[int, ...]]  # starts, stops of the crop to nonzero
    shape_after_crop: tuple[int, ...]
    class_voxels: dict[int, int]


@dataclass(frozen=True)
class IntensityStats:
    mean: float
    std: float
    median: float
    percentile_00_5: float
    percentile_99_5: float
    min: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> "IntensityStats":
        if values.size == 0:
            return cls(*(float("nan"),) * 7)
        low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
        return cls(float(values.mean()), float(values.std()), float(median), float(low), float(high),
                   float(values.min()), float(values.max()))


@dataclass(frozen=True)
class DatasetFingerprint:
    version: int
    dataset_name: str
    cases: tuple[CaseFingerprint, ...]
    foreground_intensity: dict[int, IntensityStats]  # per channel
    class_frequencies: dict[int, float]  # fraction of all voxels per label value
    median_relative_size_after_crop: float

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=float)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        return np.array([c.shape_after_crop for c in self.cases], dtype=float)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / FINGERPRINT_FILE
        write_json_atomic(path, asdict(self))
        return path


def fingerprint_case(case_id: str, images: np.ndarray, label: np.ndarray, spacing: tuple[float, ...],
                     seed: int) -> tuple[CaseFingerprint, list[np.ndarray]]:
    """One case's record and its sampled foreground intensities per channel."""
    box = bounding_box(nonzero_mask(images))
    values, counts = np.unique(label, return_counts=True)
    foreground = np.flatnonzero(label.ravel() > 0)
    rng = np.random.default_rng(seed)
    if foreground.size:  # the same count from every case, so each case weighs the same (as nnU-Net)
        foreground = rng.choice(foreground, SAMPLES_PER_CASE, replace=foreground.size < SAMPLES_PER_CASE)
    samples = [channel.ravel()[foreground].astype(np.float64) for channel in images]
    record = CaseFingerprint(
        case_id=case_id,
        spacing=tuple(float(s) for s in spacing),
        shape=tuple(int(s) for s in label.shape),
        bbox=(tuple(box.starts), tuple(box.stops)),
        shape_after_crop=tuple(int(s) for s in box.shape),
        class_voxels={int(v): int(c) for v, c in zip(values, counts)},
    )
    return record, samples


def combine_fingerprints(dataset_name: str, records: list[CaseFingerprint],
                         samples: list[list[np.ndarray]]) -> DatasetFingerprint:
    """Pool per-case records; fails clearly when there is nothing to plan from."""
    if len(records) < 2:
        raise PlanError(f"{dataset_name}: {len(records)} training case(s); planning needs at least 2. "
                        "Fix: add training cases to imagesTr/labelsTr.")
    total = sum(sum(r.class_voxels.values()) for r in records)
    classes: dict[int, int] = {}
    for record in records:
        for value, count in record.class_voxels.items():
            classes[value] = classes.get(value, 0) + count
    if sum(c for v, c in classes.items() if v > 0) == 0:
        raise PlanError(f"{dataset_name}: no foreground in any training label. Fix: check labelsTr "
                        "(all zeros?) or the label values in dataset.json.")
    channels = len(samples[0])
    pooled = {c: IntensityStats.of(np.concatenate([s[c] for s in samples])) for c in range(channels)}
    relative = [np.prod(r.shape_after_crop) / np.prod(r.shape) for r in records]
    return DatasetFingerprint(
        version=FINGERPRINT_VERSION,
        dataset_name=dataset_name,
        cases=tuple(sorted(records, key=lambda r: r.case_id)),
        foreground_intensity=pooled,
        class_frequencies={v: c / total for v, c in sorted(classes.items())},
        median_relative_size_after_crop=float(np.median(relative)),
    )


def load_fingerprint(folder: Path) -> dict:
    """The saved fingerprint as plain JSON (for reports and tests)."""
    path = Path(folder) / FINGERPRINT_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != FINGERPRINT_VERSION:
        raise PlanError(f"{path}: fingerprint version {data.get('version')}. Fix: re-run planning.")
    return data
