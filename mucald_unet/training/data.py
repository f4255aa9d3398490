"""Training data for one client: which cases train and which validate (fold split), opening
them, and cutting nnU-Net-style patch batches with foreground oversampling.

Cases are opened as read-only memory maps of their files, so a client's memory does not grow
with its number of cases: a patch reads only the pages it covers, and those pages are the OS's
reclaimable file cache. Nothing here writes into a case (patches are copied into the batch).

Every random choice comes from the ``numpy.random.Generator`` the caller passes in, so a run
resumes exactly when the caller stores ``sampler.state()`` and restores it with ``set_state``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.model_selection import KFold

from preprocessing.case_store import (
    ExpectedCases,
    case_paths,
    check_case,
    check_folder,
    load_case,
    stored_case_ids,
)
from preprocessing.errors import DatasetError

PREPROCESS_FIX = "run mucald_plan_and_preprocess for this dataset"


def fold_split(case_ids: Sequence[str], fold: int, num_folds: int = 5, seed: int = 12345,
               *, source: str | Path = "training cases") -> tuple[list[str], list[str]]:
    """(train, val) ids of one cross-validation fold, the same split nnU-Net would make.

    Ids are sorted first so the split does not depend on listing order. With fewer cases than
    folds each case becomes its own fold (``num_folds = len(case_ids)``), because KFold cannot
    make more folds than cases and leave-one-out is the closest honest split. ``source`` only
    names where the ids came from in error messages.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise DatasetError(f"{source}: case ids {duplicates} appear more than once. Fix: give each "
                           "case a unique id.")
    if num_folds < 2:
        raise DatasetError(f"{source}: num_folds={num_folds} cannot hold out a validation set. Fix: "
                           "use at least 2 folds.")
    if len(ids) < 2:
        raise DatasetError(f"{source}: validation needs at least 2 cases, found {len(ids)}. Fix: add "
                           "labelled training cases to the dataset and preprocess it again.")
    num_folds = min(num_folds, len(ids))
    if not 0 <= fold < num_folds:
        raise DatasetError(f"{source}: fold {fold} does not exist for {len(ids)} cases. Fix: choose a "
                           f"fold in 0..{num_folds - 1}.")
    splitter = KFold(n_splits=num_folds, shuffle=True, random_state=seed)
    train_idx, val_idx = list(splitter.split(ids))[fold]
    return [ids[i] for i in train_idx], [ids[i] for i in val_idx]


def scarce_subset(train_ids: Sequence[str], max_cases: int | None, seed: int = 12345) -> list[str]:
    """At most ``max_cases`` of a fold's training ids, drawn at random but the same for every run.

    A scarce-data experiment must vary the labelled cases, not the training seed: the draw uses
    the split's fixed seed, so runs with different ``--seed`` see the same subset, and the first
    ``n`` ids of a larger draw are the ``n`` of a smaller one (8 cases are a subset of 16).
    """
    ids = sorted(train_ids)
    if max_cases is None or max_cases >= len(ids):
        return ids
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted(ids[i] for i in order[:max_cases])


def list_case_ids(cases_folder: Path, expected: ExpectedCases | None = None) -> list[str]:
    """Ids of the finished preprocessed cases in a folder (a ``.json`` with all its arrays), sorted.

    With ``expected`` (what the plan says the folder holds) half a case, a case the dataset no
    longer has or a planned case never preprocessed stops training instead of being skipped.
    """
    folder = Path(cases_folder)
    fix = f"run {expected.fix}" if expected is not None else f"{PREPROCESS_FIX}."
    if not folder.is_dir():
        raise DatasetError(f"{folder}: preprocessed cases folder does not exist. Fix: {fix}")
    if expected is not None:
        check_folder(folder, expected)
    ids = stored_case_ids(folder)
    if not ids:
        raise DatasetError(f"{folder}: holds no preprocessed cases. Fix: {fix}")
    return ids  # each case's settings digest is checked when it is loaded (load_training_cases)


@dataclass(frozen=True, eq=False)
class TrainingCase:
    """One labelled case: the part of a preprocessed case that training reads.

    Opened by ``load_training_cases`` its arrays are read-only memory maps of the case's files;
    tests may build one from arrays in memory. Readers must not write into them.
    """

    case_id: str
    images: np.ndarray  # float32 (C, *spatial)
    label: np.ndarray  # integer (*spatial)
    foreground: dict[int, np.ndarray]  # label value -> (n, ndim) voxel coordinates, non-empty only


def load_training_cases(cases_folder: Path, case_ids: Sequence[str],
                        expected: ExpectedCases | None = None, *, mmap: bool = True) -> list[TrainingCase]:
    """Open labelled cases (memory-mapped unless ``mmap`` is false); an unlabelled, malformed or
    (with ``expected``) stale case stops training before it starts."""
    cases = []
    for case_id in case_ids:
        if expected is not None:
            check_case(Path(cases_folder), case_id, expected)
        case = load_case(Path(cases_folder), case_id, mmap=mmap)
        arrays_path = case_paths(Path(cases_folder), case_id).images
        if case.label is None:
            raise DatasetError(f"{arrays_path}: case has no label, so it cannot be used for training. "
                               "Fix: give it a label in labelsTr, or move it to imagesTs, then "
                               "run mucald_plan_and_preprocess again.")
        if case.label.shape != case.images.shape[1:]:
            raise DatasetError(f"{arrays_path}: label shape {case.label.shape} does not match image shape "
                               f"{case.images.shape[1:]}. Fix: {PREPROCESS_FIX} again.")
        foreground = {int(v): np.asarray(c) for v, c in case.foreground.items() if len(c) > 0}
        cases.append(TrainingCase(case_id, case.images, case.label, foreground))
    return cases


class PatchBatch(NamedTuple):
    images: np.ndarray  # (B, C, *patch) float32
    labels: np.ndarray  # (B, 1, *patch) int16
    case_ids: tuple[str, ...]


class PatchSampler:
    """Draws patch batches the way nnU-Net's loader does.

    Each sample picks a random case. The last ``B - round(B * (1 - p))`` samples of a batch are
    forced to hold foreground: a random present class, a random stored voxel of it, and a
    patch placed at a random offset that still contains that voxel. The others take a uniformly
    random position. Cases smaller than the patch are zero-padded (images and labels), about
    evenly on both sides. With ``slice_axis`` set, 2D patches are cut from slices of 3D cases
    across that spatial axis (0 = z); the slice is chosen first.
    """

    def __init__(self, cases: Sequence[TrainingCase], patch_size: tuple[int, ...], batch_size: int,
                 foreground_oversampling: float, slice_axis: int | None,
                 rng: np.random.Generator) -> None:
        self.cases = list(cases)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.batch_size = int(batch_size)
        self.foreground_oversampling = float(foreground_oversampling)
        self.slice_axis = slice_axis
        self.rng = rng
        self._check()
        self.num_forced = self.batch_size - round(self.batch_size * (1 - self.foreground_oversampling))

    def _check(self) -> None:
        if not self.cases:
            raise ValueError("PatchSampler needs at least one training case")
        if len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be 2 or 3 positive ints, got {self.patch_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.foreground_oversampling <= 1.0:
            raise ValueError(f"foreground_oversampling must lie in [0, 1], got {self.foreground_oversampling}")
        case_ndim = 3 if self.slice_axis is not None else len(self.patch_size)
        if self.slice_axis is not None and (len(self.patch_size) != 2 or self.slice_axis not in (0, 1, 2)):
            raise ValueError(f"slice_axis={self.slice_axis} needs a 2D patch and an axis in 0..2, "
                             f"got patch_size {self.patch_size}")
        channels = self.cases[0].images.shape[0]
        for case in self.cases:
            if case.images.ndim - 1 != case_ndim or case.images.shape[0] != channels:
                raise DatasetError(
                    f"case {case.case_id}: images of shape {case.images.shape} do not fit a "
                    f"{len(self.patch_size)}D patch {self.patch_size} with slice_axis={self.slice_axis} "
                    f"and {channels} channels. Fix: preprocess this client's cases with its current plan.")

    def state(self) -> dict[str, Any]:
        """The generator state to store in a checkpoint (plain, picklable dict)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch: images (B, C, *patch) float32 and labels (B, 1, *patch) int16."""
        batch = self.sample_batch()
        return batch.images, batch.labels

    def sample_batch(self) -> PatchBatch:
        """One batch and the case each sample came from (the trainer looks up its proxies)."""
        channels = self.cases[0].images.shape[0]
        images = np.zeros((self.batch_size, channels, *self.patch_size), np.float32)
        labels = np.zeros((self.batch_size, 1, *self.patch_size), np.int16)
        case_ids = []
        for b in range(self.batch_size):
            case = self.cases[int(self.rng.integers(len(self.cases)))]
            force = b >= self.batch_size - self.num_forced
            images[b], labels[b, 0] = self._sample_one(case, force)
            case_ids.append(case.case_id)
        return PatchBatch(images, labels, tuple(case_ids))

    def _sample_one(self, case: TrainingCase, force_foreground: bool) -> tuple[np.ndarray, np.ndarray]:
        voxel = self._foreground_voxel(case) if force_foreground else None
        images, label = case.images, case.label
        if self.slice_axis is not None:
            axis = self.slice_axis
            index = int(voxel[axis]) if voxel is not None else int(self.rng.integers(label.shape[axis]))
            images = np.take(images, index, axis=axis + 1)
            label = np.take(label, index, axis=axis)
            if voxel is not None:
                voxel = np.delete(voxel, axis)
        start = self._patch_start(label.shape, voxel)
        return crop_with_padding(images, label, start, self.patch_size)

    def _foreground_voxel(self, case: TrainingCase) -> np.ndarray | None:
        """A random stored voxel of a random present class; None when the case has no foreground."""
        classes = sorted(case.foreground)
        if not classes:
            return None
        coords = case.foreground[classes[int(self.rng.integers(len(classes)))]]
        return np.asarray(coords[int(self.rng.integers(len(coords)))], dtype=np.int64)

    def _patch_start(self, shape: tuple[int, ...], voxel: np.ndarray | None) -> tuple[int, ...]:
        """Patch origin in case coordinates; negative or overhanging parts are padding."""
        start = []
        for d, (size, patch) in enumerate(zip(shape, self.patch_size)):
            need = max(0, patch - size)
            low, high = -(need // 2), size + need // 2 + need % 2 - patch
            if voxel is not None:
                low, high = max(low, int(voxel[d]) - patch + 1), min(high, int(voxel[d]))
            start.append(int(self.rng.integers(low, high + 1)))
        return tuple(start)


def crop_with_padding(images: np.ndarray, label: np.ndarray, start: Sequence[int],
                      patch_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The patch at ``start`` (may lie partly outside the case); outside voxels are 0."""
    inside, pads = [], []
    for origin, patch, size in zip(start, patch_size, label.shape):
        lo, hi = max(origin, 0), min(origin + patch, size)
        inside.append(slice(lo, hi))
        pads.append((lo - origin, origin + patch - hi))
    patch_images = images[(slice(None), *inside)]
    patch_label = label[tuple(inside)]
    if any(before or after for before, after in pads):
        patch_images = np.pad(patch_images, [(0, 0), *pads], constant_values=0)
        patch_label = np.pad(patch_label, pads, constant_values=0)
    return patch_images, patch_label
