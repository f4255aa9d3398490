"""``mucald_predict``: segment new scans with a trained client; output lands on each scan's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from inference.batch import BatchOptions, BatchResult, predict_cases
from inference.inputs import check_output_folder, discover_cases
from inference.model import ModelSource
from inference.predictor import PredictionSettings, Predictor
from inference.windows import mirror_combinations
from mucald_unet.devices import Device, resolve_device
from preprocessing.cli_support import entry_points
from preprocessing.paths import preprocessed_root, results_root

app = typer.Typer(add_completion=False, help="Predict segmentations of new scans with a trained federation client.")

INPUT_FLAGS = ("-i", "--input")
FLAG_ALIASES = {"-np": "--num-processes"}  # nnU-Net's spelling


class RichBatchReporter:
    """One bar over the cases; a line per failed case as it happens."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("predicting", total=total)

    def case_started(self, case_id: str) -> None:
        self.progress.update(self.task, description=f"predicting {case_id[:32]}")

    def case_done(self, case_id: str, problem: str | None) -> None:
        self.progress.update(self.task, advance=1)
        if problem:
            self.progress.console.print(f"[red]failed:[/] {escape(problem)}")


@app.command()
def predict(
    dataset: Annotated[str, typer.Option("-d", "--dataset", help="The client (dataset id or name) whose model to use.")],
    inputs: Annotated[list[Path], typer.Option(
        "-i", "--input", help="A folder of CASE_0000<ending> files (like imagesTs), or such files: -i a_0000.nii.gz b_0000.nii.gz.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for CASE<ending> segmentations.")],
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="Preprocessed folder with the plans (default: $MUCALD_PREPROCESSED).")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="Results folder (default: $MUCALD_RESULTS).")] = None,
    run: Annotated[str, typer.Option("--run", help="Run folder name, as mucald_train printed it: the method, "
                                                   "ablations, defence and non-default settings (e.g. splitfed, "
                                                   "mucald__no-daca, mucald__seed-1__agg-causal).")] = "mucald",
    federation: Annotated[Optional[list[str]], typer.Option(
        "--federation", help="The federation the client trained in, by its dataset ids (default: the one "
        "plan that holds the client; needed when several do).")] = None,
    fold: Annotated[int, typer.Option("--fold", min=0, help="Which fold's model.")] = 0,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best, final, or a file: a run's checkpoint or a "
                                            "mucald_export model (read as plain weights; one that would run code "
                                            "is refused).")] = "best",
    step_size: Annotated[float, typer.Option("--step-size", help="Window step as a fraction of the patch.")] = 0.5,
    no_tta: Annotated[bool, typer.Option("--no-tta", help="Skip test-time mirroring (2^axes times faster).")] = False,
    noise_samples: Annotated[int, typer.Option(
        "--noise-samples", min=1, help="Average this many forward-noise draws at the split points (mucald runs).")] = 1,
    save_probabilities: Annotated[bool, typer.Option(
        "--save-probabilities", help="Also write the softmax as CASE.npz (key 'probabilities', (K, *spatial)).")] = False,
    num_processes: Annotated[int, typer.Option(
        "--num-processes", min=1, help="Worker processes for reading/preprocessing and export (-np works too).")] = 2,
    continue_prediction: Annotated[bool, typer.Option(
        "--continue", help="Skip cases whose segmentation already exists (resume an interrupted run).")] = False,
    device: Annotated[Device, typer.Option("--device", help="auto uses CUDA when available.")] = Device.auto,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split points' noise draws.")] = 0,
) -> None:
    """Each case: preprocess as in training, sliding windows (+ mirroring), back onto the input grid."""
    check_output_folder(output, inputs)
    cases = discover_cases(inputs)
    settings = PredictionSettings(step_size=step_size, mirror=not no_tta, noise_samples=noise_samples,
                                  seed=seed, device=resolve_device(device))
    source = ModelSource(run=run, fold=fold, checkpoint=checkpoint)
    predictor = Predictor.from_trained(dataset, preprocessed_root=preprocessed_root(preprocessed),
                                       results_root=results_root(results), source=source, settings=settings,
                                       federation=federation)
    options = BatchOptions(output, save_probabilities, num_processes, skip_existing=continue_prediction)
    console = Console(highlight=False, soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console) as progress:
        result = predict_cases(predictor, cases, options, RichBatchReporter(progress))
    _print_summary(console, result, predictor, output)
    raise typer.Exit(1 if result.failures else 0)


def _print_summary(console: Console, result: BatchResult, predictor: Predictor, output: Path) -> None:
    done = result.predicted
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} case(s) already predicted (--continue)")
    if done:
        network = sum(result.network_seconds[c] for c in done) / len(done)
        console.print(f"{len(done)} case(s) -> {output} in {result.wall_seconds:.1f} s: "
                      f"{result.wall_seconds / len(done):.2f} s per case ({network:.2f} s in the network; "
                      f"{len(mirror_combinations(predictor.mirror_axes))} mirror(s) x "
                      f"{predictor.noise_draws} noise draw(s), {predictor.model.device})")
    for case_id, message in sorted(result.failures.items()):
        console.print(f"[red]error:[/] {escape(message)}")
    if result.failures:
        console.print(f"{len(result.failures)} case(s) failed; fix them and rerun with --continue.")


main, entry = entry_points(app, (*INPUT_FLAGS, "--federation"), FLAG_ALIASES)

if __name__ == "__main__":
    entry()
