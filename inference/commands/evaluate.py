"""``mucald_evaluate``: score a folder of predicted label maps against reference labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from inference.evaluation import EvaluationError, evaluate_folders, summarize, write_results
from preprocessing.cli_support import entry_points
from preprocessing.dataset import RawDataset
from preprocessing.paths import raw_root

app = typer.Typer(add_completion=False, help="Evaluate predicted segmentations against reference labels.")

FLAG_ALIASES = {"-ref": "--ref", "-pred": "--pred"}  # nnU-Net's spelling


@app.command()
def evaluate(
    ref: Annotated[Path, typer.Option("--ref", help="Reference labels folder (-ref works too).")],
    pred: Annotated[Path, typer.Option("--pred", help="Predicted label maps folder (-pred works too).")],
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Where summary.json and metrics.csv go (default: PRED/evaluation).")] = None,
    dataset: Annotated[Optional[str], typer.Option(
        "-d", "--dataset", help="Dataset id or name: labels and file ending from its dataset.json.")] = None,
    raw: Annotated[Optional[Path], typer.Option("--raw", help="Raw datasets folder (default: $MUCALD_RAW).")] = None,
    labels: Annotated[Optional[str], typer.Option(
        "--labels", help="Labels without -d, e.g. background:0,lesion:1 (overrides dataset.json).")] = None,
    file_ending: Annotated[Optional[str], typer.Option(
        "--file-ending", help="File ending without -d, e.g. .nii.gz (overrides dataset.json).")] = None,
) -> None:
    """Dice, IoU, HD95, ASSD, precision and recall per case and class; exits 1 if any case had a problem."""
    label_map, ending = _labels_and_ending(dataset, raw, labels, file_ending)
    metrics, problems = evaluate_folders(ref, pred, label_map, ending)
    summary = summarize(metrics)
    out_dir = out if out is not None else pred / "evaluation"
    write_results(out_dir, metrics, summary)
    console = Console(highlight=False, soft_wrap=True)
    console.print(summary_table(summary))
    for problem in problems:
        console.print(f"[red]problem:[/] {escape(problem)}")
    console.print(f"results: {out_dir}")
    raise typer.Exit(1 if problems else 0)


def _labels_and_ending(dataset: str | None, raw: Path | None, labels: str | None,
                       file_ending: str | None) -> tuple[dict[str, int], str]:
    label_map, ending = (parse_labels(labels) if labels else None), file_ending
    if dataset is not None and (label_map is None or ending is None):
        spec = RawDataset.open(raw_root(raw), dataset).spec
        label_map = label_map if label_map is not None else dict(spec.labels)
        ending = ending if ending is not None else spec.file_ending
    if label_map is None or ending is None:
        raise EvaluationError("labels and file ending unknown. Fix: pass -d ID (with --raw DIR or "
                              "$MUCALD_RAW) or both --labels background:0,lesion:1 and --file-ending .nii.gz.")
    return label_map, ending


def parse_labels(text: str) -> dict[str, int]:
    """``background:0,lesion:1`` -> {"background": 0, "lesion": 1}."""
    label_map = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.rpartition(":")
        if not sep or not name or not value.strip().lstrip("-").isdigit():
            raise EvaluationError(f"--labels item {item!r} is not NAME:VALUE. Fix: write e.g. "
                                  f"--labels background:0,lesion:1.")
        label_map[name.strip()] = int(value)
    if not any(v != 0 for v in label_map.values()):
        raise EvaluationError(f"--labels {text!r} names no foreground class. Fix: add one, e.g. lesion:1.")
    return label_map


def summary_table(summary: dict) -> Table:
    table = Table(title=f"evaluation over {summary['n_cases']} cases")
    table.add_column("class", no_wrap=True)
    for column in ("mean Dice", "mean HD95 mm", "mean ASSD mm", "n cases"):
        table.add_column(column, justify="right")
    for name, row in summary["classes"].items():
        table.add_row(name, _fmt(row["dice"]), _fmt(row["hd95_mm"]), _fmt(row["assd_mm"]), str(row["n_cases"]))
    return table


def _fmt(stats: dict) -> str:
    text = "-" if stats["mean"] is None else f"{stats['mean']:.4g}"
    return f"{text} (+{stats['n_infinite']} inf)" if stats["n_infinite"] else text


main, entry = entry_points(app, aliases=FLAG_ALIASES)


if __name__ == "__main__":
    entry()
