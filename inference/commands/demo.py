"""``mucald_demo``: the whole pipeline on the built-in demo federation, one command.

It runs the real commands in order (make the demo, verify, plan and preprocess, train, predict
each client's imagesTs, evaluate), printing each command line first so that the same run can be
typed by hand, then prints a table of per-client test Dice.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inference.commands import evaluate, predict
from mucald_unet.commands import train
from mucald_unet.config import Method, TrainingConfig
from mucald_unet.federation.strategies import method_names
from planners.commands import plan_and_preprocess
from preprocessing.cli_support import entry_points
from preprocessing.commands import make_demo, verify
from preprocessing.dataset import find_dataset_folder
from preprocessing.errors import MucaldError

app = typer.Typer(add_completion=False, help="Run the whole pipeline on the built-in demo federation.")

DEMO_DATASETS = ("1", "2", "3")
DEPLOY_ENGINE = train.Engine.flare_loopback.value  # mucald_train's engine for --deploy; labels its run name


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="Working folder: raw/, preprocessed/, results/, predictions/ go here.")],
    size: Annotated[make_demo.DemoSize, typer.Option("--size", help="Demo size.")] = make_demo.DemoSize.small,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Training rounds.")] = 10,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Iterations per round.")] = 25,
    method: Annotated[str, typer.Option("--method", metavar="|".join(method_names()),
                                        help="mucald or a baseline.")] = Method.MUCALD,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the demo data and the training.")] = 0,
    deploy: Annotated[bool, typer.Option(
        "--deploy", help="Train as a deployment: FLARE provisions a startup kit per site (mutual TLS), the server "
        "and each client run as their own processes on this machine (mucald_train --engine flare-loopback).")] = False,
) -> None:
    """make demo -> verify -> plan and preprocess -> train -> predict imagesTs -> evaluate -> table."""
    method = Method(method)  # an unknown name is refused here, with the valid ones, before any stage runs
    console = Console(highlight=False, soft_wrap=True)
    raw, pre, res, preds = out / "raw", out / "preprocessed", out / "results", out / "predictions"
    datasets = list(DEMO_DATASETS)
    stage = _Stage(console)
    stage("mucald_make_demo", make_demo.main, [str(raw), "--size", size.value, "--seed", str(seed), "--overwrite"])
    stage("mucald_verify", verify.main, ["--raw", str(raw), "-d", *datasets])
    stage("mucald_plan_and_preprocess", plan_and_preprocess.main,
          ["--raw", str(raw), "--preprocessed", str(pre), "-d", *datasets])
    stage("mucald_train", train.main, ["--preprocessed", str(pre), "--results", str(res), "-d", *datasets,
                                       "--rounds", str(rounds), "--iters", str(iters), "--method", method.value,
                                       "--seed", str(seed), "--overwrite",
                                       *(["--engine", DEPLOY_ENGINE] if deploy else [])])
    run_name = TrainingConfig(method=method, rounds=rounds, iterations_per_epoch=iters, seed=seed).run_name
    run_name += f"__{DEPLOY_ENGINE}" if deploy else ""
    summaries = {}
    for dataset in datasets:
        folder = find_dataset_folder(raw, dataset)
        predicted = preds / folder.name
        stage("mucald_predict", predict.main, ["-d", dataset, "-i", str(folder / "imagesTs"), "-o", str(predicted),
                                               "--preprocessed", str(pre), "--results", str(res),
                                               "--run", run_name])
        stage("mucald_evaluate", evaluate.main, ["-ref", str(folder / "labelsTs"), "-pred", str(predicted),
                                                 "-d", dataset, "--raw", str(raw)])
        summaries[folder.name] = json.loads((predicted / "evaluation" / "summary.json").read_text())
    wide = Console(highlight=False, width=max(console.width, 110))  # a log file is 80 wide by default
    how = ", deployed over FLARE" if deploy else ""
    wide.print(dice_table(summaries, f"{method.value}: test-set Dice per client ({rounds} rounds x {iters} "
                                     f"iterations{how})"))


class _Stage:
    """Print a command line, run it in this process, stop the demo if it fails."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, name: str, main: Callable[[Sequence[str]], int], argv: list[str]) -> None:
        self.console.rule(f"$ {name} {shlex.join(argv)}", align="left")
        code = main(argv)
        if code != 0:
            raise MucaldError(f"{name} failed (exit {code}); the demo stops here. Fix: see its message above.")


def dice_table(summaries: dict[str, dict], title: str) -> Table:
    """One row per client: test cases, Dice per class, mean foreground Dice and HD95."""
    table = Table(title=title)
    for column in ("client", "test cases", "Dice per class", "mean Dice", "mean HD95 mm"):
        table.add_column(column, justify="left" if column in ("client", "Dice per class") else "right")
    for client, summary in summaries.items():
        per_class = ", ".join(f"{name} {_fmt(stats['dice']['mean'])}" for name, stats in summary["classes"].items())
        mean = summary["foreground_mean"]
        table.add_row(client, str(summary["n_cases"]), per_class, _fmt(mean["dice"]), _fmt(mean["hd95_mm"], 1))
    return table


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


main, entry = entry_points(app)

if __name__ == "__main__":
    entry()
