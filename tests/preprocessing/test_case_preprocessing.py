"""Preprocess then invert: labels come back exactly on the original grid, images within
interpolation tolerance; interrupted runs resume without redoing finished cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from preprocessing import runner
from preprocessing.case_preprocessing import (CasePreprocessingConfig, preprocess_case, restore_images,
                                              restore_label)
from preprocessing.case_store import load_case
from preprocessing.dataset import RawDataset
from preprocessing.demo import make_demo_federation
from preprocessing.geometry import Geometry
from preprocessing.normalization import CTNormalization, NoNormalization, ZScoreNormalization
from preprocessing.resampling import ResamplingConfig
from tests.conftest import SHARED_DATA


def config(spacing: tuple[float, ...], channels: int = 1, use_mask: bool = False) -> CasePreprocessingConfig:
    return CasePreprocessingConfig(spacing, (NoNormalization(),) * channels, use_mask, ResamplingConfig())


def blob_case(shape=(12, 40, 44)) -> tuple[np.ndarray, np.ndarray, Geometry]:
    z, y, x = np.indices(shape)
    images = np.zeros((1, *shape), np.float32)
    body = ((y - 20) ** 2 + (x - 22) ** 2) < 17 ** 2
    images[0][body] = 100 + 10 * np.sin(x[body] / 5.0)
    label = ((((y - 18) / 6.0) ** 2 + ((x - 24) / 8.0) ** 2 + ((z - 6) / 3.0) ** 2) < 1).astype(np.uint8)
    geometry = Geometry(shape, (0.8, 0.8, 3.0), (-20.0, 5.0, 30.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))
    return images, label, geometry


def test_round_trip_at_native_spacing_is_exact_after_cropping() -> None:
    images, label, geometry = blob_case()
    case = preprocess_case("c", images, label, geometry, config(geometry.array_spacing))
    assert case.images.shape[1:] == case.properties.shape_after_crop  # cropped to the body
    assert case.properties.shape_after_crop[1] < 40
    np.testing.assert_array_equal(restore_label(case.label, case.properties), label)
    np.testing.assert_allclose(restore_images(case.images, case.properties)[0], images[0], atol=1e-4)


def test_round_trip_through_another_spacing_keeps_the_label_and_smooth_images() -> None:
    images, label, geometry = blob_case()
    case = preprocess_case("c", images, label, geometry, config((1.5, 0.8, 0.8)))
    assert case.images.shape[1] == 24  # 12 slices of 3 mm at 1.5 mm
    restored = restore_label(case.label, case.properties)
    dice = 2 * np.sum((restored == 1) & (label == 1)) / (np.sum(restored == 1) + np.sum(label == 1))
    assert restored.shape == label.shape and dice > 0.95
    back = restore_images(case.images, case.properties)[0]
    inside = images[0] > 0
    assert np.abs(back[inside] - images[0][inside]).mean() < 2.0


def test_foreground_locations_point_at_foreground() -> None:
    images, label, geometry = blob_case()
    case = preprocess_case("c", images, label, geometry, config(geometry.array_spacing))
    coords = case.foreground[1]
    assert len(coords) == int(case.label.sum())
    assert np.all(case.label[tuple(coords.T)] == 1)


def test_masked_zscore_uses_the_nonzero_region() -> None:
    images, label, geometry = blob_case()
    cfg = CasePreprocessingConfig(geometry.array_spacing, (ZScoreNormalization(use_nonzero_mask=True),), True)
    out = preprocess_case("c", images, label, geometry, cfg).images[0]
    inside = out != 0
    assert abs(out[inside].mean()) < 1e-3 and abs(out[inside].std() - 1) < 1e-2


def test_config_digest_changes_with_settings() -> None:
    a = config((1.0, 1.0, 1.0))
    b = CasePreprocessingConfig((1.0, 1.0, 1.0), (CTNormalization(0.0, 1.0, -1.0, 1.0),), False)
    assert a.digest() == config((1.0, 1.0, 1.0)).digest() != b.digest()


def test_demo_datasets_round_trip_exactly_with_original_geometry(tmp_path: Path) -> None:
    make_demo_federation(tmp_path / "raw", seed=3, size="tiny")
    for identifier in (1, 2, 3):
        dataset = RawDataset.open(tmp_path / "raw", identifier)
        case_id = dataset.case_ids()[0]
        images = dataset.read_images(case_id)
        label, geometry = dataset.read_label(case_id)
        cfg = config(geometry.array_spacing, images.array.shape[0])
        out = tmp_path / "pre" / dataset.name
        runner.preprocess_dataset(dataset, cfg, out)
        case = load_case(out, case_id)
        assert case.properties.geometry == geometry  # original grid recorded exactly
        np.testing.assert_array_equal(restore_label(case.label, case.properties), label)
        restored = restore_images(case.images, case.properties)
        np.testing.assert_allclose(restored, images.array, atol=1e-3)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/pyradiomics is not present")
def test_pyradiomics_lung_case_round_trip_on_its_own_grid_and_a_coarser_one() -> None:
    from preprocessing.io import read_image

    images, geometry = read_image(SHARED_DATA / "lung2_image.nrrd")
    label, _ = read_image(SHARED_DATA / "lung2_label.nrrd")
    label = label[0].astype(np.uint8)
    native = preprocess_case("lung2", images, label, geometry, config(geometry.array_spacing))
    np.testing.assert_array_equal(restore_label(native.label, native.properties), label)
    coarse = preprocess_case("lung2", images, label, geometry, config((5.0, 1.0, 1.0)))
    restored = restore_label(coarse.label, coarse.properties)
    dice = 2 * np.sum(restored & label) / (restored.sum() + label.sum())
    assert restored.shape == label.shape and dice > 0.85


def test_interrupted_preprocessing_resumes_without_redoing_finished_cases(tmp_path: Path, monkeypatch) -> None:
    make_demo_federation(tmp_path / "raw", seed=0, size="tiny")
    dataset = RawDataset.open(tmp_path / "raw", 3)
    cases = dataset.case_ids()
    cfg = config(dataset.read_label(cases[0])[1].array_spacing)
    out = tmp_path / "pre"
    real_run_case = runner.run_case
    calls: list[str] = []

    def crash_on_fourth(job, config_, folder):
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        calls.append(job.case_id)
        return real_run_case(job, config_, folder)

    monkeypatch.setattr(runner, "run_case", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        runner.preprocess_dataset(dataset, cfg, out)
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(calls)
    assert not list(out.glob(".*partial"))  # nothing half-written left behind
    calls.clear()
    monkeypatch.setattr(runner, "run_case", real_run_case)
    redone = runner.preprocess_dataset(dataset, cfg, out)
    assert redone == cases[3:]
    assert runner.preprocess_dataset(dataset, cfg, out) == []
    assert runner.preprocess_dataset(dataset, cfg, out, overwrite=True) == cases


def test_parallel_workers_write_the_same_cases_as_one_process(tmp_path: Path) -> None:
    make_demo_federation(tmp_path / "raw", seed=1, size="tiny")
    dataset = RawDataset.open(tmp_path / "raw", 1)
    cfg = config((1.0, 1.0), channels=3)
    serial = runner.preprocess_dataset(dataset, cfg, tmp_path / "one")
    parallel = runner.preprocess_dataset(dataset, cfg, tmp_path / "two", num_processes=2)
    assert serial == parallel == dataset.case_ids()
    for case_id in serial:
        a, b = load_case(tmp_path / "one", case_id), load_case(tmp_path / "two", case_id)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.label, b.label)


def test_a_replaced_raw_file_is_preprocessed_again(tmp_path: Path) -> None:
    make_demo_federation(tmp_path / "raw", seed=0, size="tiny")
    dataset = RawDataset.open(tmp_path / "raw", 3)
    cases = dataset.case_ids()
    cfg = config(dataset.read_label(cases[0])[1].array_spacing)
    runner.preprocess_dataset(dataset, cfg, tmp_path / "pre")
    label_path = dataset.label_file(cases[1])
    label, geometry = dataset.read_label(cases[1])
    from preprocessing.io import write_image
    write_image(label_path, (label > 0)[None].astype(np.uint8), geometry)  # merge the two classes
    assert runner.preprocess_dataset(dataset, cfg, tmp_path / "pre") == [cases[1]]
    assert set(np.unique(load_case(tmp_path / "pre", cases[1]).label)) == {0, 1}
