"""Evaluation metrics, their empty-mask conventions, folder pairing and the mucald_evaluate command."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.commands.evaluate import FLAG_ALIASES, main, parse_labels
from preprocessing.cli_support import rewrite_aliases
from inference.evaluation import CaseMetrics, evaluate_case, evaluate_folders, summarize, write_results
from preprocessing.geometry import Geometry
from preprocessing.io import write_image

LABELS = {"background": 0, "lesion": 1}
ARRAY_SPACING = (3.0, 0.7, 0.5)  # (z, y, x) mm: every axis different
SHAPE = (6, 8, 10)


def only(metrics: list[CaseMetrics]) -> CaseMetrics:
    assert len(metrics) == 1
    return metrics[0]


# --- overlap metrics -------------------------------------------------------------------------

def test_overlap_metrics_match_hand_counts() -> None:
    reference = np.zeros((4, 8), np.uint8)
    prediction = np.zeros((4, 8), np.uint8)
    reference[1, 0:4] = 1  # 4 voxels
    prediction[1, 2:8] = 1  # 6 voxels, 2 of them on the reference: tp 2, fp 4, fn 2
    m = only(evaluate_case(reference, prediction, (1.0, 1.0), LABELS, "c"))
    assert m.dice == pytest.approx(2 * 2 / (2 * 2 + 4 + 2))
    assert m.iou == pytest.approx(2 / 8)
    assert m.precision == pytest.approx(2 / 6)
    assert m.recall == pytest.approx(2 / 4)
    assert (m.reference_voxels, m.predicted_voxels) == (4, 6)


def test_every_foreground_label_is_scored_and_background_never() -> None:
    reference = np.zeros((5, 5), np.uint8)
    reference[0, :] = 1
    reference[4, :] = 2
    metrics = evaluate_case(reference, reference.copy(), (1.0, 1.0), {"background": 0, "a": 1, "b": 2}, "c")
    assert [(m.class_name, m.label_value) for m in metrics] == [("a", 1), ("b", 2)]
    assert all(m.dice == 1.0 and m.hd95_mm == 0.0 and m.assd_mm == 0.0 for m in metrics)


# --- surface distances in mm with anisotropic spacing ------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2])
def test_parallel_planes_offset_along_one_axis_are_offset_times_spacing_apart(axis: int) -> None:
    reference = np.zeros(SHAPE, np.uint8)
    prediction = np.zeros(SHAPE, np.uint8)
    np.moveaxis(reference, axis, 0)[1] = 1  # a one-voxel-thick plane: every voxel is on its surface
    np.moveaxis(prediction, axis, 0)[3] = 1  # the same plane two voxels further along ``axis``
    m = only(evaluate_case(reference, prediction, ARRAY_SPACING, LABELS, "planes"))
    expected = 2 * ARRAY_SPACING[axis]
    assert m.hd95_mm == pytest.approx(expected)
    assert m.assd_mm == pytest.approx(expected)
    assert m.dice == 0.0


def test_same_voxel_offset_gives_different_mm_along_differently_spaced_axes() -> None:
    distances = []
    for axis in (0, 2):
        reference = np.zeros(SHAPE, np.uint8)
        prediction = np.zeros(SHAPE, np.uint8)
        np.moveaxis(reference, axis, 0)[1] = 1
        np.moveaxis(prediction, axis, 0)[3] = 1
        distances.append(only(evaluate_case(reference, prediction, ARRAY_SPACING, LABELS, "c")).hd95_mm)
    assert distances == pytest.approx([6.0, 1.0])


def test_2d_lines_use_the_spacing_of_the_offset_axis() -> None:
    reference = np.zeros((10, 12), np.uint8)
    prediction = np.zeros((10, 12), np.uint8)
    reference[3, 2:9] = 1
    prediction[5, 2:9] = 1  # two rows apart; rows are 0.5 mm, columns 2 mm
    m = only(evaluate_case(reference, prediction, (0.5, 2.0), LABELS, "lines"))
    assert (m.hd95_mm, m.assd_mm) == pytest.approx((1.0, 1.0))


# --- empty-mask conventions (nnU-Net's) --------------------------------------------------------

def test_class_absent_from_both_is_undefined_everywhere() -> None:
    empty = np.zeros((4, 4), np.uint8)
    m = only(evaluate_case(empty, empty.copy(), (1.0, 1.0), LABELS, "c"))
    for value in (m.dice, m.iou, m.precision, m.recall, m.hd95_mm, m.assd_mm):
        assert math.isnan(value)


def test_only_reference_empty_means_zero_overlap_no_recall_and_infinite_distance() -> None:
    reference = np.zeros((4, 4), np.uint8)
    prediction = reference.copy()
    prediction[1, 1] = 1
    m = only(evaluate_case(reference, prediction, (1.0, 1.0), LABELS, "c"))
    assert (m.dice, m.iou, m.precision) == (0.0, 0.0, 0.0)
    assert math.isnan(m.recall)
    assert m.hd95_mm == math.inf and m.assd_mm == math.inf


def test_only_prediction_empty_means_zero_overlap_no_precision_and_infinite_distance() -> None:
    reference = np.zeros((4, 4), np.uint8)
    reference[1, 1] = 1
    m = only(evaluate_case(reference, np.zeros_like(reference), (1.0, 1.0), LABELS, "c"))
    assert (m.dice, m.iou, m.recall) == (0.0, 0.0, 0.0)
    assert math.isnan(m.precision)
    assert m.hd95_mm == math.inf and m.assd_mm == math.inf


def test_mismatched_shapes_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(np.zeros((4, 4)), np.zeros((4, 5)), (1.0, 1.0), LABELS, "c")


# --- summary ---------------------------------------------------------------------------------

def metric(case: str, dice: float, hd95: float, name: str = "lesion") -> CaseMetrics:
    return CaseMetrics(case, name, 1, dice, dice, hd95, hd95, dice, dice, 1, 1)


def test_summary_ignores_nan_and_counts_inf_apart() -> None:
    rows = [metric("a", 0.8, 2.0), metric("b", 0.4, 4.0), metric("c", 0.0, math.inf),
            metric("d", math.nan, math.nan)]
    lesion = summarize(rows)["classes"]["lesion"]
    assert lesion["n_cases"] == 4
    assert lesion["dice"]["mean"] == pytest.approx(0.4)  # (0.8 + 0.4 + 0.0) / 3
    assert lesion["dice"]["median"] == pytest.approx(0.4)
    assert lesion["dice"]["n_undefined"] == 1
    assert lesion["hd95_mm"]["mean"] == pytest.approx(3.0)
    assert (lesion["hd95_mm"]["n_infinite"], lesion["hd95_mm"]["n_finite"]) == (1, 2)


def test_foreground_mean_averages_class_means_and_summary_is_strict_json() -> None:
    rows = [metric("a", 1.0, 1.0, "x"), metric("b", 0.5, 3.0, "x"), metric("a", 0.25, math.nan, "y")]
    summary = summarize(rows)
    assert summary["foreground_mean"]["dice"] == pytest.approx((0.75 + 0.25) / 2)
    assert summary["foreground_mean"]["hd95_mm"] == pytest.approx(2.0)  # y has no defined HD95
    assert summary["classes"]["y"]["hd95_mm"]["mean"] is None
    json.dumps(summary, allow_nan=False)


def test_write_results_writes_null_in_json_and_inf_in_csv(tmp_path: Path) -> None:
    rows = [metric("a", 0.0, math.inf)]
    write_results(tmp_path, rows, summarize(rows))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["classes"]["lesion"]["hd95_mm"] == {
        "mean": None, "median": None, "n_finite": 0, "n_infinite": 1, "n_undefined": 0}
    with open(tmp_path / "metrics.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["hd95_mm"] == "inf" and row["case_id"] == "a"


# --- folders and the command -----------------------------------------------------------------

def geometry(shape: tuple[int, ...] = SHAPE, spacing_itk: tuple[float, ...] = (0.5, 0.7, 3.0)) -> Geometry:
    return Geometry(shape, spacing=spacing_itk, origin=(-4.0, 10.0, 2.5),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), source_format="nifti")


def write_label(path: Path, label: np.ndarray, grid: Geometry | None = None) -> None:
    write_image(path, label[None].astype(np.uint8), grid or geometry(label.shape))


def plane(z: int) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[z, 2:6, 3:8] = 1
    return label


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two cases predicted: one exactly, one a plane shifted by one z slice (3 mm)."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_label(ref / "case_a.nii.gz", plane(2))
    write_label(pred / "case_a.nii.gz", plane(2))
    write_label(ref / "case_b.nii.gz", plane(2))
    write_label(pred / "case_b.nii.gz", plane(3))
    return ref, pred


def test_folder_evaluation_pairs_cases_and_uses_the_file_spacing(folders: tuple[Path, Path]) -> None:
    metrics, problems = evaluate_folders(*folders, LABELS, ".nii.gz")
    assert problems == []
    by_case = {m.case_id: m for m in metrics}
    assert by_case["case_a"].dice == 1.0
    assert by_case["case_b"].dice == 0.0
    assert by_case["case_b"].hd95_mm == pytest.approx(3.0)  # one slice along z, ITK spacing z = 3 mm


def test_missing_extra_and_off_grid_predictions_are_problems_not_exceptions(
        folders: tuple[Path, Path]) -> None:
    ref, pred = folders
    write_label(ref / "case_missing.nii.gz", plane(1))
    write_label(pred / "case_extra.nii.gz", plane(1))
    write_label(ref / "case_grid.nii.gz", plane(1))
    write_label(pred / "case_grid.nii.gz", plane(1), geometry(spacing_itk=(0.5, 0.7, 2.0)))
    metrics, problems = evaluate_folders(ref, pred, LABELS, ".nii.gz")
    assert sorted({m.case_id for m in metrics}) == ["case_a", "case_b"]
    assert len(problems) == 3
    missing, = [p for p in problems if "case_missing" in p]
    assert "prediction missing" in missing and "Fix:" in missing
    grid, = [p for p in problems if "case_grid" in p]
    assert "spacing" in grid and "Fix:" in grid
    extra, = [p for p in problems if "case_extra" in p]
    assert "without a reference" in extra


def test_command_exits_0_and_writes_results_when_every_case_is_evaluated(
        folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ref, pred = folders
    code = main(["-ref", str(ref), "-pred", str(pred), "--labels", "background:0,lesion:1",
                 "--file-ending", ".nii.gz"])
    assert code == 0
    assert (pred / "evaluation" / "summary.json").is_file()
    assert (pred / "evaluation" / "metrics.csv").is_file()
    assert "lesion" in capsys.readouterr().out


def test_command_exits_1_on_a_missing_prediction_after_writing_the_rest(
        folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, pred = folders
    write_label(ref / "case_missing.nii.gz", plane(1))
    out = tmp_path / "out"
    code = main(["--ref", str(ref), "--pred", str(pred), "-o", str(out), "--labels", "background:0,lesion:1",
                 "--file-ending", ".nii.gz"])
    assert code == 1
    assert "case_missing" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2


def test_command_takes_labels_and_ending_from_dataset_json(make_volume_dataset, tmp_path: Path) -> None:
    folder = make_volume_dataset()
    pred = tmp_path / "pred"
    shutil.copytree(folder / "labelsTr", pred)
    code = main(["-ref", str(folder / "labelsTr"), "-pred", str(pred), "-d", "1", "--raw", str(folder.parent)])
    assert code == 0
    summary = json.loads((pred / "evaluation" / "summary.json").read_text())
    assert summary["classes"]["lesion"]["dice"]["mean"] == 1.0


def test_command_without_labels_names_the_fix(folders: tuple[Path, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ref, pred = folders
    assert main(["-ref", str(ref), "-pred", str(pred)]) == 1
    assert "--labels background:0,lesion:1" in capsys.readouterr().err


def test_label_parsing_and_alias_rewrite() -> None:
    assert parse_labels("background:0, lesion:1,edema:2") == {"background": 0, "lesion": 1, "edema": 2}
    assert rewrite_aliases(["-ref", "a", "-pred", "b", "-o", "c"], FLAG_ALIASES) == ["--ref", "a", "--pred", "b", "-o", "c"]
