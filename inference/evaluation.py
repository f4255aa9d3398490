"""Segmentation metrics: per case and class (Dice, IoU, HD95, ASSD, precision, recall), their
summary over cases, and folder-level pairing of reference labels with predictions.

Conventions (nnU-Net's for overlap, MONAI's surface distances in mm with the image spacing):
- Dice and IoU are NaN when a class is absent from both reference and prediction; precision is
  NaN when nothing is predicted, recall NaN when the reference is empty. NaN means "undefined"
  and is left out of every mean and median.
- HD95 and ASSD (symmetric) are NaN when both are empty and ``inf`` when exactly one is empty.
  Summaries average the finite values and count the infinite ones separately.
- JSON output writes NaN and inf as ``null`` (the summary's counts say which was which);
  metrics.csv writes them as ``nan`` and ``inf``.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from preprocessing.atomic import write_json_atomic, write_text_atomic
from preprocessing.errors import ImageIOError, MucaldError
from preprocessing.io import read_image

METRIC_NAMES = ("dice", "iou", "hd95_mm", "assd_mm", "precision", "recall")


class EvaluationError(MucaldError):
    """The evaluation cannot start (missing folders, no labels); the message says what to pass."""


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one foreground class in one case; distances in mm, sizes in voxels."""

    case_id: str
    class_name: str
    label_value: int
    dice: float
    iou: float
    hd95_mm: float
    assd_mm: float
    precision: float
    recall: float
    reference_voxels: int
    predicted_voxels: int


def evaluate_case(reference: np.ndarray, prediction: np.ndarray, spacing: tuple[float, ...],
                  labels: dict[str, int], case_id: str) -> list[CaseMetrics]:
    """Compare two integer label maps (same shape, array order) for every non-zero label.

    ``spacing`` is in array order and mm; label value 0 (background) is never scored.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"{case_id}: reference shape {reference.shape} != prediction shape {prediction.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"{case_id}: spacing {spacing} has {len(spacing)} values for a {reference.ndim}D map")
    results = []
    for name, value in labels.items():
        if value == 0:
            continue
        ref, pred = reference == value, prediction == value
        tp = int(np.count_nonzero(ref & pred))
        fp = int(np.count_nonzero(pred & ~ref))
        fn = int(np.count_nonzero(ref & ~pred))
        hd95, assd = _surface_distances(ref, pred, spacing)
        results.append(CaseMetrics(
            case_id=case_id, class_name=name, label_value=int(value),
            dice=_ratio(2 * tp, 2 * tp + fp + fn), iou=_ratio(tp, tp + fp + fn), hd95_mm=hd95,
            assd_mm=assd, precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
            reference_voxels=tp + fn, predicted_voxels=tp + fp))
    return results


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """(HD95, symmetric ASSD) in mm; the empty cases are decided here, not by MONAI's warnings."""
    has_ref, has_pred = bool(ref.any()), bool(pred.any())
    if not has_ref and not has_pred:
        return math.nan, math.nan
    if has_ref != has_pred:
        return math.inf, math.inf
    y, y_pred = _one_hot(ref), _one_hot(pred)
    spacing = tuple(float(s) for s in spacing)
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(y_pred, y, include_background=False, symmetric=True,
                                                spacing=spacing)
    return float(hd95.item()), float(assd.item())


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    """(1, 2, *spatial) with channel 0 = background, so include_background=False scores the mask."""
    tensor = torch.from_numpy(np.ascontiguousarray(mask))
    return torch.stack([~tensor, tensor])[None].float()


def summarize(metrics: list[CaseMetrics]) -> dict:
    """Per class and metric: mean and median of finite values, counts of finite/inf/NaN cases;
    plus the foreground mean (the mean over classes of each class mean). JSON-ready."""
    by_class: dict[str, list[CaseMetrics]] = {}
    for m in metrics:
        by_class.setdefault(m.class_name, []).append(m)
    classes = {}
    for name, rows in by_class.items():
        classes[name] = {
            "label_value": rows[0].label_value,
            "n_cases": len(rows),
            **{metric: _describe([getattr(r, metric) for r in rows]) for metric in METRIC_NAMES},
        }
    foreground = {}
    for metric in METRIC_NAMES:
        means = [c[metric]["mean"] for c in classes.values() if c[metric]["mean"] is not None]
        foreground[metric] = float(np.mean(means)) if means else None
    return {
        "conventions": "NaN (undefined: class absent where the metric needs it) is excluded; inf "
                       "(surface distance with exactly one side empty) is counted in n_infinite and "
                       "left out of mean/median; null in this file means not defined",
        "n_cases": len({m.case_id for m in metrics}),
        "classes": classes,
        "foreground_mean": foreground,
    }


def _describe(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "median": float(np.median(finite)) if finite.size else None,
        "n_finite": int(finite.size),
        "n_infinite": int(np.isinf(array).sum()),
        "n_undefined": int(np.isnan(array).sum()),
    }


def evaluate_folders(reference_dir: Path, prediction_dir: Path, labels: dict[str, int],
                     file_ending: str) -> tuple[list[CaseMetrics], list[str]]:
    """Pair ``CASE<file_ending>`` files by case id and evaluate each pair.

    Returns the metrics of every pair that could be evaluated and one problem string per case that
    could not (missing prediction, unreadable file, grid mismatch) or per prediction without a
    reference; problems never stop the other cases.
    """
    reference_dir, prediction_dir = Path(reference_dir), Path(prediction_dir)
    for folder, flag in ((reference_dir, "--ref"), (prediction_dir, "--pred")):
        if not folder.is_dir():
            raise EvaluationError(f"{folder} is not a folder. Fix: pass an existing folder as {flag}.")
    references = _cases(reference_dir, file_ending)
    predictions = _cases(prediction_dir, file_ending)
    problems: list[str] = []
    if not references:
        problems.append(f"{reference_dir}: no *{file_ending} reference files. Fix: point --ref at the "
                        f"labels folder or pass the right --file-ending.")
    metrics: list[CaseMetrics] = []
    for case, ref_path in references.items():
        pred_path = predictions.get(case)
        if pred_path is None:
            problems.append(f"{prediction_dir / (case + file_ending)}: prediction missing for reference "
                            f"{ref_path.name}. Fix: predict case {case} or remove its reference.")
            continue
        try:
            metrics.extend(_evaluate_pair(ref_path, pred_path, labels, case))
        except _PairProblem as problem:
            problems.append(str(problem))
    for case in sorted(set(predictions) - set(references)):
        problems.append(f"{predictions[case]}: prediction without a reference in {reference_dir}. Fix: "
                        f"add {case}{file_ending} to the references or remove the prediction.")
    return metrics, problems


class _PairProblem(Exception):
    """One case cannot be evaluated; reported as a problem string, never raised to the user."""


def _cases(folder: Path, file_ending: str) -> dict[str, Path]:
    return {p.name[:-len(file_ending)]: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(file_ending) and not p.name.startswith(".")}


def _evaluate_pair(ref_path: Path, pred_path: Path, labels: dict[str, int], case: str) -> list[CaseMetrics]:
    try:
        reference, ref_geometry = read_image(ref_path)
        prediction, pred_geometry = read_image(pred_path)
    except ImageIOError as err:
        raise _PairProblem(str(err)) from err
    differences = pred_geometry.mismatches(ref_geometry)
    if differences:
        raise _PairProblem(f"{pred_path}: grid differs from reference {ref_path.name} "
                           f"({'; '.join(differences)}; prediction vs reference). Fix: export the "
                           f"prediction on the reference's original grid.")
    return evaluate_case(reference[0], prediction[0], ref_geometry.array_spacing, labels, case)


def write_results(out_dir: Path, metrics: list[CaseMetrics], summary: dict) -> None:
    """Write ``summary.json`` and ``metrics.csv`` (one row per case and class), each atomically."""
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "summary.json", summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f.name for f in fields(CaseMetrics)])
    for m in metrics:
        writer.writerow([_csv_value(v) for v in asdict(m).values()])
    write_text_atomic(out_dir / "metrics.csv", buffer.getvalue())


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else "inf")
    return value
