"""benchmarks.real_slices: the pyradiomics scans become three verified 2D slice datasets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks.real_slices import choose_background, make_pyradiomics_slice_federation
from preprocessing.dataset import RawDataset
from preprocessing.integrity import verify_dataset
from preprocessing.io import read_image
from tests.conftest import SHARED_DATA

RATIO = 1.5  # not 1, so that a count that ignores the ratio or rounds it oddly shows
VOLUMES = {"Dataset101_RealLungCT": ("lung1", "lung2"),
           "Dataset102_RealBrainMR": ("brain1", "brain2"),
           "Dataset103_RealBreastMR": ("breast1",)}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The federation built once (about 3 s); every test that uses it skips without the scans."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real scans not present at {SHARED_DATA}")
    root = tmp_path_factory.mktemp("real") / "raw"
    names = make_pyradiomics_slice_federation(SHARED_DATA, root, background_slices_per_lesion_slice=RATIO)
    assert names == list(VOLUMES)
    return root


def lesion_slices(volume: str) -> list[int]:
    """Read independently of the code under test: z indices whose label holds lesion."""
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(SHARED_DATA / f"{volume}_label.nrrd")))
    return [int(z) for z in np.nonzero(label.any(axis=(1, 2)))[0]]


def slice_index(case: str) -> int:
    return int(case.rpartition("_z")[2])


def test_three_datasets_pass_the_integrity_check(raw: Path) -> None:
    assert sorted(p.name for p in raw.iterdir()) == sorted(VOLUMES)
    for name in VOLUMES:
        report = verify_dataset(raw / name)
        assert report.problems == [], report.format()
        assert report.cases_checked > 0


def test_channel_names_pick_the_planner_normalisation(raw: Path) -> None:
    names = [RawDataset(raw / name).spec.channel_names for name in VOLUMES]
    assert names == [{0: "CT"}, {0: "T1"}, {0: "MR"}]


def test_every_lesion_slice_is_kept_and_background_follows_the_ratio(raw: Path) -> None:
    for name, volumes in VOLUMES.items():
        dataset = RawDataset(raw / name)
        for volume in volumes:
            lesion = lesion_slices(volume)
            train = [c for c in dataset.case_ids("Tr") if c.startswith(f"{volume}_z")]
            test = [c for c in dataset.case_ids("Ts") if c.startswith(f"{volume}_z")]
            assert [slice_index(c) for c in test] == [lesion[-1]]  # every scan has >= 2 here
            assert dataset.label_file(test[0], "Ts").is_file()
            train_lesion = [c for c in train if slice_index(c) in lesion]
            background = [c for c in train if slice_index(c) not in lesion]
            assert sorted(slice_index(c) for c in train_lesion) == lesion[:-1]
            for case in train_lesion:
                assert dataset.read_label(case)[0].any(), case
            for case in background:
                assert not dataset.read_label(case)[0].any(), case
            assert len(background) == math.floor(RATIO * len(train_lesion) + 0.5), volume


def test_slice_keeps_the_volume_in_plane_spacing_and_intensities(raw: Path) -> None:
    volume, volume_geometry = read_image(SHARED_DATA / "lung2_image.nrrd")
    z = lesion_slices("lung2")[0]
    image, geometry = read_image(raw / "Dataset101_RealLungCT" / "imagesTr" / f"lung2_z{z:03d}_0000.nii.gz")
    assert geometry.shape == volume_geometry.shape[1:]
    assert geometry.array_spacing == pytest.approx(volume_geometry.array_spacing[1:])
    assert geometry.direction == (1.0, 0.0, 0.0, 1.0)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image[0], volume[0, z])  # HU, unchanged


def test_refuses_an_existing_dataset_folder(raw: Path) -> None:
    with pytest.raises(ValueError, match="already exists"):
        make_pyradiomics_slice_federation(SHARED_DATA, raw)


def test_background_draw_is_deterministic_per_seed_and_volume() -> None:
    candidates = list(range(40))
    first = choose_background(candidates, 5, seed=0, volume="lung1")
    assert first == choose_background(candidates, 5, seed=0, volume="lung1")
    assert first != choose_background(candidates, 5, seed=1, volume="lung1")
    assert first != choose_background(candidates, 5, seed=0, volume="lung2")
    assert choose_background(candidates[:3], 5, seed=0, volume="lung1") == [0, 1, 2]


def test_missing_source_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make_pyradiomics_slice_federation(missing, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
