"""Fold splits are deterministic and partition the cases; the patch sampler cuts aligned,
padded, foreground-oversampled batches that depend only on its generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mucald_unet.training.data import (PatchSampler, TrainingCase, fold_split, list_case_ids, scarce_subset,
                                       load_training_cases)
from preprocessing.case_preprocessing import CaseProperties, PreprocessedCase, foreground_locations
from preprocessing.case_store import save_case
from preprocessing.cropping import BoundingBox
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry

IDS = [f"case_{i:03d}" for i in range(11)]


def coordinate_case(shape: tuple[int, ...], case_id: str = "c", blob: tuple[slice, ...] | None = None) -> TrainingCase:
    """Channel d holds 1 + each voxel's index along axis d, so a patch shows where it was cut
    from (0 only in padding); the label is 2 inside ``blob`` and 0 elsewhere."""
    grid = np.indices(shape)
    images = grid.astype(np.float32) + 1  # +1: padding (0) is distinguishable from index 0
    label = np.zeros(shape, np.uint8)
    if blob is not None:
        label[blob] = 2
    return TrainingCase(case_id, images, label, foreground_locations(label, 0))


def test_fold_split_is_deterministic_disjoint_and_covers_every_case() -> None:
    shuffled = list(reversed(IDS))
    vals = []
    for fold in range(5):
        train, val = fold_split(IDS, fold)
        assert (train, val) == fold_split(shuffled, fold)  # order of listing does not matter
        assert set(train).isdisjoint(val) and sorted(train + val) == IDS
        vals.append(val)
    assert sorted(v for val in vals for v in val) == IDS
    assert {len(v) for v in vals} == {2, 3}


def test_fold_split_falls_back_to_leave_one_out_with_few_cases() -> None:
    splits = [fold_split(["b", "a", "c"], fold) for fold in range(3)]
    assert sorted(val[0] for _, val in splits) == ["a", "b", "c"]
    assert all(len(train) == 2 and len(val) == 1 for train, val in splits)
    with pytest.raises(DatasetError, match=r"0\.\.2"):
        fold_split(["a", "b", "c"], 3)


def test_fold_split_errors_name_the_problem() -> None:
    with pytest.raises(DatasetError, match="at least 2 cases"):
        fold_split(["only"], 0)
    with pytest.raises(DatasetError, match=r"0\.\.4"):
        fold_split(IDS, 5)
    with pytest.raises(DatasetError, match=r"0\.\.4"):
        fold_split(IDS, -1)


def _stored_case(case_id: str, with_label: bool = True) -> PreprocessedCase:
    label = np.zeros((4, 6, 5), np.uint8)
    label[1:3, 2:4, 1:3] = 1
    geometry = Geometry.default((4, 6, 5))
    properties = CaseProperties(case_id, geometry, BoundingBox.full((4, 6, 5)), (4, 6, 5), (4, 6, 5),
                                (1.0, 1.0, 1.0), "digest")
    images = np.random.default_rng(0).normal(size=(2, 4, 6, 5)).astype(np.float32)
    return PreprocessedCase(images, label if with_label else None,
                            foreground_locations(label if with_label else None, 0), properties)


def test_list_and_load_training_cases(tmp_path: Path) -> None:
    for case_id in ("b", "a"):
        save_case(tmp_path, _stored_case(case_id))
    (tmp_path / "notes.json").write_text("{}")  # a stray json without arrays is not a case
    assert list_case_ids(tmp_path) == ["a", "b"]
    cases = load_training_cases(tmp_path, ["a", "b"])
    assert [c.case_id for c in cases] == ["a", "b"]
    assert cases[0].images.shape == (2, 4, 6, 5) and cases[0].label.shape == (4, 6, 5)
    assert set(cases[0].foreground) == {1} and len(cases[0].foreground[1]) == 2 * 2 * 2


def test_missing_or_empty_folder_and_unlabelled_case_raise(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="mucald_plan_and_preprocess"):
        list_case_ids(tmp_path / "nope")
    with pytest.raises(DatasetError, match="mucald_plan_and_preprocess"):
        list_case_ids(tmp_path)
    save_case(tmp_path, _stored_case("u", with_label=False))
    with pytest.raises(DatasetError, match="u.npy: case has no label"):
        load_training_cases(tmp_path, ["u"])


def test_training_cases_are_read_only_memory_maps_of_the_case_files(tmp_path: Path) -> None:
    save_case(tmp_path, _stored_case("a"))
    case = load_training_cases(tmp_path, ["a"])[0]
    for array, name in ((case.images, "a.npy"), (case.label, "a_seg.npy")):
        assert isinstance(array, np.memmap) and Path(array.filename) == tmp_path / name
        assert not array.flags.writeable
    assert not case.foreground[1].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        case.label[0, 0, 0] = 1
    in_memory = load_training_cases(tmp_path, ["a"], mmap=False)[0]
    assert not isinstance(in_memory.images, np.memmap) and in_memory.images.flags.writeable


@pytest.mark.parametrize("slice_axis,patch", [(None, (3, 8, 7)), (1, (5, 8)), (None, (2, 3, 3))])
def test_patches_from_memory_maps_equal_patches_from_an_in_memory_copy(tmp_path: Path, slice_axis, patch) -> None:
    for case_id in ("a", "b"):
        save_case(tmp_path, _stored_case(case_id))
    mapped = load_training_cases(tmp_path, ["a", "b"])
    copies = [TrainingCase(c.case_id, np.array(c.images), np.array(c.label),
                           {v: np.array(x) for v, x in c.foreground.items()}) for c in mapped]
    from_maps = PatchSampler(mapped, patch, 4, 0.5, slice_axis, np.random.default_rng(3))
    from_copies = PatchSampler(copies, patch, 4, 0.5, slice_axis, np.random.default_rng(3))
    for _ in range(10):
        a, b = from_maps.sample_batch(), from_copies.sample_batch()
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.case_ids == b.case_ids
        assert a.images.flags.writeable and not np.shares_memory(a.images, mapped[0].images)
    np.testing.assert_array_equal(mapped[0].images, copies[0].images)  # nothing wrote into the cases


def test_a_memory_mapped_case_validates_like_its_in_memory_copy(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mucald_unet.training.validation import predict_case_logits

    save_case(tmp_path, _stored_case("a"))
    case = load_training_cases(tmp_path, ["a"])[0]
    weights = torch.randn(3, 2)
    real_from_numpy = torch.from_numpy

    def from_writable_only(array: np.ndarray) -> torch.Tensor:
        # torch cannot keep a tensor read-only: one aliasing the mapping would crash on a write
        assert array.flags.writeable, "a tensor would alias a read-only memory map"
        return real_from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", from_writable_only)
    mapped = predict_case_logits(lambda w: torch.einsum("kc,bc...->bk...", weights, w), case.images, (4, 4), 0,
                                 torch.device("cpu"))
    copied = predict_case_logits(lambda w: torch.einsum("kc,bc...->bk...", weights, w), np.array(case.images),
                                 (4, 4), 0, torch.device("cpu"))
    torch.testing.assert_close(mapped, copied)


def _assert_contiguous(patch: np.ndarray, axes_channels: list[int]) -> None:
    """Each coordinate channel steps by exactly 1 along its own axis wherever both voxels are inside."""
    for axis, channel in enumerate(axes_channels):
        values = patch[channel]
        inside = values > 0
        steps = np.diff(values, axis=axis)
        both = inside[tuple(slice(1, None) if a == axis else slice(None) for a in range(values.ndim))] & \
            inside[tuple(slice(None, -1) if a == axis else slice(None) for a in range(values.ndim))]
        assert np.all(steps[both] == 1)


def test_2d_patches_are_aligned_crops_with_the_right_shapes() -> None:
    case = coordinate_case((30, 40), blob=(slice(10, 14), slice(20, 25)))
    sampler = PatchSampler([case], (16, 12), 4, 0.33, None, np.random.default_rng(0))
    for _ in range(20):
        images, labels = sampler.sample()
        assert images.shape == (4, 2, 16, 12) and images.dtype == np.float32
        assert labels.shape == (4, 1, 16, 12) and labels.dtype == np.int16
        for b in range(4):
            _assert_contiguous(images[b], [0, 1])
            y, x = images[b, 0].astype(int) - 1, images[b, 1].astype(int) - 1
            np.testing.assert_array_equal(labels[b, 0], case.label[y, x])


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_2d_patches_from_3d_cases_come_from_one_slice(slice_axis: int) -> None:
    case = coordinate_case((8, 20, 24), blob=(slice(3, 5), slice(6, 9), slice(10, 14)))
    sampler = PatchSampler([case], (10, 12), 3, 1.0, slice_axis, np.random.default_rng(1))
    in_plane = [a for a in range(3) if a != slice_axis]
    for _ in range(20):
        images, labels = sampler.sample()
        assert images.shape == (3, 3, 10, 12) and labels.shape == (3, 1, 10, 12)
        for b in range(3):
            slice_index = images[b, slice_axis]
            assert np.unique(slice_index[slice_index > 0]).size == 1  # one slice throughout (0 = padding)
            _assert_contiguous(images[b], in_plane)
            assert (labels[b] == 2).any()  # every sample is forced to foreground here


def test_3d_patches_are_aligned_and_padded_when_the_case_is_small() -> None:
    case = coordinate_case((3, 5, 6), blob=(slice(1, 2), slice(1, 3), slice(2, 4)))
    sampler = PatchSampler([case], (4, 8, 8), 2, 0.5, None, np.random.default_rng(2))
    images, labels = sampler.sample()
    assert images.shape == (2, 3, 4, 8, 8) and labels.shape == (2, 1, 4, 8, 8)
    # need 1/3/2 voxels of padding: low side gets need // 2, the rest goes to the high side
    for b in range(2):
        np.testing.assert_array_equal(images[b, :, 0:3, 1:6, 1:7], case.images)
        np.testing.assert_array_equal(labels[b, 0, 0:3, 1:6, 1:7], case.label)
        assert images[b, :, 3].sum() == 0 and images[b, :, :, 0].sum() == 0 and labels[b, 0, :, 6:].sum() == 0


def test_forced_samples_always_hold_foreground_and_the_rest_are_uniform() -> None:
    case = coordinate_case((64, 64), blob=(slice(50, 53), slice(5, 8)))
    sampler = PatchSampler([case], (16, 16), 3, 0.33, None, np.random.default_rng(3))
    assert sampler.num_forced == 1  # 3 - round(3 * 0.67)
    free_hits = 0
    for _ in range(200):
        _, labels = sampler.sample()
        assert (labels[2] == 2).any()
        free_hits += int((labels[:2] == 2).any(axis=(1, 2, 3)).sum())
    assert free_hits < 100  # random positions rarely cover a 3x3 blob in a 64x64 image
    positions = set()
    for _ in range(50):  # the foreground voxel is not always at the same place in the patch
        images, _ = sampler.sample()
        positions.add((int(images[2, 0, 0, 0]), int(images[2, 1, 0, 0])))
    assert len(positions) > 10


def test_case_without_foreground_falls_back_to_a_random_patch() -> None:
    case = coordinate_case((20, 20))
    sampler = PatchSampler([case], (8, 8), 2, 1.0, None, np.random.default_rng(4))
    images, labels = sampler.sample()
    assert images.shape == (2, 2, 8, 8) and not labels.any()


def test_equal_seeds_give_identical_batches_and_state_resumes() -> None:
    cases = [coordinate_case((12, 20, 20), f"c{i}", blob=(slice(i, i + 2), slice(3, 6), slice(4, 9)))
             for i in range(3)]
    a = PatchSampler(cases, (8, 8), 4, 0.5, 0, np.random.default_rng(7))
    b = PatchSampler(cases, (8, 8), 4, 0.5, 0, np.random.default_rng(7))
    for _ in range(5):
        for x, y in zip(a.sample(), b.sample()):
            np.testing.assert_array_equal(x, y)
    saved = a.state()
    expected = a.sample()
    b.set_state(saved)
    for x, y in zip(expected, b.sample()):
        np.testing.assert_array_equal(x, y)


def test_sampler_rejects_cases_that_do_not_fit_the_plan() -> None:
    case = coordinate_case((20, 20))
    with pytest.raises(DatasetError, match="case c"):
        PatchSampler([case], (8, 8), 2, 0.3, 0, np.random.default_rng(0))
    with pytest.raises(DatasetError, match="case c"):
        PatchSampler([case], (8, 8, 8), 2, 0.3, None, np.random.default_rng(0))


def test_scarce_subsets_are_fixed_random_and_nested() -> None:
    ids = [f"case_{i:03d}" for i in range(40)]
    eight = scarce_subset(ids, 8)
    assert len(eight) == 8 and eight == sorted(eight) and set(eight) <= set(ids)
    assert eight == scarce_subset(list(reversed(ids)), 8)  # listing order does not matter
    assert eight != ids[:8]  # a random draw, not the first ids (generators order cases by kind)
    assert set(eight) <= set(scarce_subset(ids, 16))  # 8 cases are a subset of 16
    assert scarce_subset(ids, None) == ids and scarce_subset(ids, 40) == ids and scarce_subset(ids, 99) == ids
