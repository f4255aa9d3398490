"""``mucald_verify``: the integrity check of one or more raw datasets, every problem on its own line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from preprocessing.cli_support import DATASET_FLAGS, entry_points
from preprocessing.dataset import find_dataset_folder
from preprocessing.errors import DatasetError
from preprocessing.integrity import IntegrityReport, verify_dataset
from preprocessing.paths import raw_root

app = typer.Typer(add_completion=False, help="Check raw datasets before planning or training.")


@app.command()
def verify(
    datasets: Annotated[list[str], typer.Option(
        "-d", "--dataset", help="Dataset id (3) or folder name (Dataset003_Name); repeatable: -d 1 2 3.")],
    raw: Annotated[Optional[Path], typer.Option(
        "--raw", help="Raw datasets folder (default: $MUCALD_RAW).")] = None,
) -> None:
    """Check dataset.json, file names, channels, geometry, label values and intensities.

    Prints one line per problem (file, problem, fix) and exits 1 if there is any.
    """
    console = Console(highlight=False, soft_wrap=True)
    root = raw_root(raw)
    failed = False
    for identifier in datasets:
        try:
            folder = find_dataset_folder(root, identifier)
        except DatasetError as err:
            failed = True
            console.print(f"[red]FAILED[/] {escape(str(err))}")
            continue
        report = _verify_with_progress(folder, console)
        failed |= not report.ok
        if report.ok:
            console.print(f"[green]OK[/] {folder.name}: {report.cases_checked} cases checked")
        else:
            console.print(f"[red]FAILED[/] {folder.name}: {len(report.problems)} problems")
            for problem in report.problems:
                console.print(f"  {escape(str(problem))}")
    raise typer.Exit(1 if failed else 0)


def _verify_with_progress(folder: Path, console: Console) -> IntegrityReport:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(f"checking {folder.name}", total=None)
        return verify_dataset(folder, on_case=lambda _case: progress.advance(task))


main, entry = entry_points(app, DATASET_FLAGS)

if __name__ == "__main__":
    entry()
