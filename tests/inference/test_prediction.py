"""Prediction: geometry-exact export, sliding windows, TTA and noise draws, bad input, the demo."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.batch import BatchOptions, predict_cases
from inference.commands.demo import main as demo_main
from inference.commands.predict import main as predict_main
from inference.errors import PredictionError
from inference.inputs import discover_cases
from inference.model import ModelSource
from inference.predictor import PredictionSettings, Predictor
from inference.windows import averaged_windows, mirror_combinations
from mucald_unet.training.checkpoint import FINAL, load_checkpoint, save_checkpoint
from mucald_unet.training.trainer import run_folder
from planners.plans import load_plans
from preprocessing.case_preprocessing import preprocess_case, restore_probabilities
from preprocessing.dataset import RawDataset
from preprocessing.geometry import Geometry
from preprocessing.io import read_image, write_image
from tests.inference.conftest import TrainedRun

POLYP, LUNG, FETAL = "Dataset001_DemoPolyp", "Dataset002_DemoLungCT", "Dataset003_DemoFetalUS"


def predictor_for(run: TrainedRun, dataset: str, **settings) -> Predictor:
    return Predictor.from_trained(dataset, preprocessed_root=run.preprocessed, results_root=run.results,
                                  source=ModelSource(checkpoint="final"), settings=PredictionSettings(**settings))


def assert_same_grid(prediction_file: Path, image_file: Path) -> None:
    image, image_geometry = read_image(image_file)
    label, label_geometry = read_image(prediction_file)
    assert label.shape == (1, *image.shape[1:])
    assert label_geometry.shape == image_geometry.shape
    np.testing.assert_allclose(label_geometry.spacing, image_geometry.spacing, rtol=1e-6)
    np.testing.assert_allclose(label_geometry.origin, image_geometry.origin, atol=1e-5)
    np.testing.assert_allclose(label_geometry.direction, image_geometry.direction, atol=1e-6)


# ---- the command on each client's test images ---------------------------------------------------
@pytest.mark.parametrize("client,ending", [(POLYP, ".png"), (LUNG, ".nii.gz"), (FETAL, ".nii.gz")])
def test_predictions_land_on_the_input_grid_in_the_input_format(trained_run: TrainedRun, tmp_path: Path,
                                                                client: str, ending: str) -> None:
    images = trained_run.raw / client / "imagesTs"
    code = predict_main(["-d", client, "-i", str(images), "-o", str(tmp_path), *trained_run.cli_roots(),
                         "--checkpoint", "final", "-np", "2", "--save-probabilities"])
    assert code == 0
    dataset = RawDataset(trained_run.raw / client)
    num_classes = len(dataset.spec.labels)
    for case in dataset.case_ids("Ts"):
        out = tmp_path / f"{case}{ending}"
        assert_same_grid(out, dataset.channel_file(case, 0, "Ts"))
        segmentation = read_image(out)[0][0]
        assert segmentation.min() >= 0 and segmentation.max() < num_classes
        saved = np.load(tmp_path / f"{case}.npz")
        probabilities = saved["probabilities"]
        assert probabilities.shape == (num_classes, *segmentation.shape)
        np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)
        assert np.array_equal(probabilities.argmax(axis=0), segmentation)
        assert list(saved["class_names"]) == [n for n, _ in sorted(dataset.spec.labels.items(), key=lambda kv: kv[1])]
    assert not list(tmp_path.glob(".*partial"))


def test_a_3d_scan_with_an_oblique_direction_keeps_its_geometry_under_a_2d_plan(trained_run: TrainedRun,
                                                                                tmp_path: Path) -> None:
    angle = np.deg2rad(30)
    direction = (1.0, 0.0, 0.0, 0.0, np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle))
    geometry = Geometry((9, 37, 41), spacing=(0.9, 0.6, 2.5), origin=(-30.0, 12.5, 101.0), direction=direction,
                        source_format="nifti")
    rng = np.random.default_rng(3)
    volume = rng.normal(-700, 150, (1, 9, 37, 41)).astype(np.float32)
    volume[0, 3:6, 10:20, 12:25] = 40.0  # a bright "lesion"
    scan = tmp_path / "in" / "oblique_0000.nii.gz"
    write_image(scan, volume, geometry)
    assert load_plans(trained_run.plans_path).client(LUNG).slice_axis is not None  # predicted slice by slice
    assert predict_main(["-d", "2", "-i", str(scan), "-o", str(tmp_path / "out"), *trained_run.cli_roots(),
                         "--checkpoint", "final"]) == 0
    assert_same_grid(tmp_path / "out" / "oblique.nii.gz", scan)


def test_resuming_skips_cases_already_predicted(trained_run: TrainedRun, tmp_path: Path) -> None:
    cases = discover_cases([trained_run.raw / FETAL / "imagesTs"])
    predictor = predictor_for(trained_run, "3", mirror=False)
    first = predict_cases(predictor, cases[:1], BatchOptions(tmp_path))
    again = predict_cases(predictor, cases, BatchOptions(tmp_path, skip_existing=True))
    assert first.predicted == [cases[0].case_id]
    assert again.skipped == [cases[0].case_id] and again.predicted == [c.case_id for c in cases[1:]]


# ---- the network stage ------------------------------------------------------------------------
def test_sliding_window_equals_one_forward_pass_when_the_case_fits_one_window(trained_run: TrainedRun) -> None:
    predictor = predictor_for(trained_run, "3", mirror=False)
    patch = predictor.plan.patch_size
    images = np.random.default_rng(0).normal(size=(1, *patch)).astype(np.float32)
    windowed = predictor.predict_logits(images)
    with torch.no_grad():
        direct = predictor.model(torch.from_numpy(images)[None], torch.Generator().manual_seed(0))[0]
    assert windowed.shape == direct.shape == (predictor.plan.num_classes, *patch)
    torch.testing.assert_close(windowed, direct, atol=1e-5, rtol=1e-5)


def test_noise_draws_average_the_single_draw_predictions(trained_run: TrainedRun) -> None:
    images = np.random.default_rng(1).normal(size=(1, 70, 90)).astype(np.float32)
    single = [predictor_for(trained_run, "3", mirror=False, seed=s).predict_logits(images) for s in (0, 1)]
    averaged = predictor_for(trained_run, "3", mirror=False, noise_samples=2).predict_logits(images)
    assert predictor_for(trained_run, "3").model.adds_noise
    assert not torch.allclose(single[0], single[1])  # the draws really differ
    torch.testing.assert_close(averaged, (single[0] + single[1]) / 2, atol=1e-5, rtol=1e-5)


def test_mirroring_averages_every_flip_of_the_planned_axes() -> None:
    assert mirror_combinations((0, 1)) == [(), (0,), (1,), (0, 1)]
    assert len(mirror_combinations((0, 1, 2))) == 8
    weights = torch.arange(12.0).view(1, 1, 3, 4)

    def model(x: torch.Tensor, _generator) -> torch.Tensor:  # position-dependent: not flip-equivariant
        return x * weights

    x = torch.randn(2, 1, 3, 4)
    expected = (x * weights + (x.flip(2) * weights).flip(2) + (x.flip(3) * weights).flip(3)
                + (x.flip(2, 3) * weights).flip(2, 3)) / 4
    torch.testing.assert_close(averaged_windows(model, (0, 1), [None])(x), expected)
    torch.testing.assert_close(averaged_windows(model, (), [None])(x), x * weights)


def test_predictor_api_gives_the_same_result_for_files_and_arrays(trained_run: TrainedRun) -> None:
    predictor = predictor_for(trained_run, "2", mirror=False)
    files = sorted((trained_run.raw / LUNG / "imagesTs").glob("*_0000.nii.gz"))
    from_file = predictor.predict_files([files[0]])
    image, geometry = read_image(files[0])
    from_array = predictor.predict_array(image, geometry, keep_probabilities=True)
    assert np.array_equal(from_file.segmentation, from_array.segmentation)
    assert from_file.geometry == geometry and from_file.segmentation.shape == image.shape[1:]
    assert from_array.probabilities.shape == (2, *image.shape[1:])


def test_restoring_one_hot_labels_gives_back_the_original_label(trained_run: TrainedRun) -> None:
    """The inverse path alone: preprocess a labelled case, put its one-hot label back on the grid."""
    plan = load_plans(trained_run.plans_path).client(LUNG)
    dataset = RawDataset(trained_run.raw / LUNG)
    case_id = dataset.case_ids("Tr")[0]
    images = dataset.read_images(case_id)
    label = dataset.read_label(case_id)[0]
    case = preprocess_case(case_id, images.array, label, images.geometry, plan.case_preprocessing())
    one_hot = np.eye(plan.num_classes, dtype=np.float32)[case.label].transpose(3, 0, 1, 2)
    restored = restore_probabilities(one_hot, case.properties)
    assert restored.shape == (plan.num_classes, *label.shape)
    back = restored.argmax(axis=0)
    overlap = 2 * np.sum((back == 1) & (label == 1)) / (np.sum(back == 1) + np.sum(label == 1))
    assert overlap > 0.9
    outside = np.ones(label.shape, bool)
    outside[case.properties.bbox.slices] = False
    assert np.all(restored[0][outside] == 1.0)


# ---- bad input --------------------------------------------------------------------------------
def copy_test_images(run: TrainedRun, client: str, target: Path) -> Path:
    shutil.copytree(run.raw / client / "imagesTs", target)
    return target


def test_one_bad_case_is_reported_and_the_others_are_still_predicted(trained_run: TrainedRun, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    folder = copy_test_images(trained_run, FETAL, tmp_path / "in")
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in folder.glob("*_0000.nii.gz"))
    truncated = folder / f"{cases[0]}_0000.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:200])
    extra = folder / f"{cases[1]}_0001.nii.gz"  # the ultrasound task has one channel
    shutil.copy(folder / f"{cases[1]}_0000.nii.gz", extra)
    out = tmp_path / "out"
    code = predict_main(["-d", "3", "-i", str(folder), "-o", str(out), *trained_run.cli_roots(), "--checkpoint",
                         "final", "--no-tta"])
    printed = capsys.readouterr().out
    assert code == 1
    assert truncated.name in printed and extra.name in printed and "2 case(s) failed" in printed
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases[2:]]
    assert not list(out.glob(".*partial"))


def test_a_3d_scan_for_a_2d_client_is_refused_with_the_file_named(trained_run: TrainedRun, tmp_path: Path) -> None:
    volume = tmp_path / "vol_0000.nii.gz"
    write_image(volume, np.zeros((1, 4, 32, 32), np.float32), Geometry.default((4, 32, 32), "nifti"))
    cases = discover_cases([volume])
    result = predict_cases(predictor_for(trained_run, "3"), cases, BatchOptions(tmp_path / "out"))
    assert "vol_0000.nii.gz" in result.failures["vol"] and "3D image" in result.failures["vol"]
    assert not (tmp_path / "out" / "vol.nii.gz").exists()


def test_request_level_mistakes_exit_1_with_the_fix(trained_run: TrainedRun, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    folder = copy_test_images(trained_run, FETAL, tmp_path / "in")
    roots = trained_run.cli_roots()
    assert predict_main(["-d", "3", "-i", str(folder), "-o", str(folder), *roots]) == 1
    assert "output folder is the input folder" in capsys.readouterr().err
    assert predict_main(["-d", "3", "-i", str(folder), "-o", str(tmp_path / "o"), *roots, "--fold", "4"]) == 1
    err = capsys.readouterr().err
    assert "fold_4" in err and "no checkpoint" in err
    assert predict_main(["-d", "3", "-i", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"), *roots]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_from_another_plan_is_refused(trained_run: TrainedRun, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    source = run_folder(trained_run.results, trained_run.plans_path, "mucald", 0) / FINAL
    checkpoint = load_checkpoint(source)
    checkpoint.plans_digest = "0" * 16
    foreign = tmp_path / "foreign.pt"
    save_checkpoint(foreign, checkpoint)
    folder = copy_test_images(trained_run, FETAL, tmp_path / "in")
    assert predict_main(["-d", "3", "-i", str(folder), "-o", str(tmp_path / "o"), *trained_run.cli_roots(),
                         "--checkpoint", str(foreign)]) == 1
    err = capsys.readouterr().err
    assert "foreign.pt" in err and "different plan" in err
    with pytest.raises(PredictionError, match="not a readable mucald checkpoint"):
        garbage = tmp_path / "garbage.pt"
        garbage.write_bytes(b"not a checkpoint")
        Predictor.from_trained("3", preprocessed_root=trained_run.preprocessed, results_root=trained_run.results,
                               source=ModelSource(checkpoint=str(garbage)))


def test_input_grouping_keeps_case_problems_with_the_case(tmp_path: Path) -> None:
    image = np.zeros((1, 8, 8), np.float32)
    write_image(tmp_path / "a_0000.nii.gz", image, Geometry.default((8, 8), "nifti"))
    write_image(tmp_path / "a_0001.nrrd", image, Geometry.default((8, 8), "nrrd"))
    write_image(tmp_path / "b_0000.nii.gz", image, Geometry.default((8, 8), "nifti"))
    (tmp_path / "notes.txt").write_text("ignored")
    cases = {c.case_id: c for c in discover_cases([tmp_path])}
    assert sorted(cases) == ["a", "b"]
    assert cases["a"].problems and not cases["b"].problems
    assert cases["b"].output_ending == ".nii.gz"
    with pytest.raises(PredictionError, match="CASE_0000"):
        discover_cases([tmp_path / "notes.txt"])


# ---- the whole pipeline -----------------------------------------------------------------------
def test_demo_runs_the_whole_pipeline_and_prints_a_dice_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert demo_main([str(tmp_path / "demo"), "--size", "tiny", "--rounds", "1", "--iters", "2"]) == 0
    printed = capsys.readouterr().out
    assert "test-set Dice per client" in printed
    for client in (POLYP, LUNG, FETAL):
        assert client in printed
        assert (tmp_path / "demo" / "predictions" / client / "evaluation" / "summary.json").is_file()
