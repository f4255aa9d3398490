"""``mucald_make_demo OUT``: write the built-in demo federation (three synthetic hospitals with
planted causal graphs) in the raw layout, so every later stage can be tried without real data.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from preprocessing.cli_support import entry_points
from preprocessing.demo import WrittenDataset, write_demo_federation


class DemoSize(str, Enum):
    """The size presets of preprocessing.demo.presets, as CLI choices."""

    tiny = "tiny"
    small = "small"
    medium = "medium"


app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Write the demo federation: polyp RGB, lung CT and fetal ultrasound datasets.")


@app.command()
def make_demo(
    out: Annotated[Path, typer.Argument(help="Raw root folder to write the DatasetXXX_Name "
                                             "folders into (created if missing).")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same arrays.")] = 0,
    size: Annotated[DemoSize, typer.Option(help="Case counts and image sizes: tiny (seconds, for "
                                                "tests), small (default) or medium.")] = DemoSize.small,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace demo dataset folders "
                                            "that already exist and are not empty.")] = False,
    cases: Annotated[int | None, typer.Option(
        min=1, help="Training cases per dataset instead of the size preset's (test cases stay the "
                    "preset's); recorded in dataset.json's description.")] = None,
    test_cases: Annotated[int | None, typer.Option(
        "--test-cases", min=1, help="Labelled test cases (imagesTs) per dataset instead of the size preset's: "
        "non-members for mucald_audit --raw.")] = None,
) -> None:
    """Write Dataset001_DemoPolyp, Dataset002_DemoLungCT and Dataset003_DemoFetalUS under OUT."""
    written = write_demo_federation(out, seed=seed, size=size.value, overwrite=overwrite, cases=cases,
                                    test_cases=test_cases)
    Console(highlight=False).print(_summary(written, out, seed, size.value, cases))


def _summary(written: list[WrittenDataset], out: Path, seed: int, size: str, cases: int | None) -> Table:
    counts = f", {cases} training cases each" if cases is not None else ""
    table = Table(title=f"Demo federation in {out} (seed {seed}, size {size}{counts})")
    for column in ("dataset", "cases Tr", "cases Ts", "spatial size", "file ending"):
        table.add_column(column, justify="right" if column.startswith("cases") else "left")
    for item in written:
        table.add_row(item.folder.name, str(item.train), str(item.test),
                      " x ".join(str(n) for n in item.shape), item.file_ending)
    return table


main, entry = entry_points(app)

if __name__ == "__main__":
    entry()
