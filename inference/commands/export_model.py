"""``mucald_export``: one client's trained model from a run, as the file a hospital receives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from inference.model import ModelSource
from inference.model_export import export_client_model
from planners.locate import client_names, find_client_plans
from preprocessing.cli_support import entry_points
from preprocessing.paths import preprocessed_root, results_root

app = typer.Typer(add_completion=False, help="Export one client's trained model (its weights only) for prediction.")


@app.command()
def export(
    dataset: Annotated[str, typer.Option("-d", "--dataset", help="The client (dataset id or name) to export.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The export file to write (e.g. model.pt).")],
    run: Annotated[str, typer.Option("--run", help="Run folder name, as mucald_train printed it (e.g. splitfed, "
                                                   "mucald__no-daca).")] = "mucald",
    fold: Annotated[int, typer.Option("--fold", min=0, help="Which fold's model.")] = 0,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best or final.")] = "best",
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="Preprocessed folder with the plans (default: $MUCALD_PREPROCESSED).")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="Results folder (default: $MUCALD_RESULTS).")] = None,
    federation: Annotated[Optional[list[str]], typer.Option(
        "--federation", help="The federation the client trained in, by its dataset ids (default: the one "
        "plan that holds the client; needed when several do).")] = None,
) -> None:
    """Only the client's FE, CRDMs, BE and server segment, with the run's settings and plan digest;
    use it with mucald_predict --checkpoint FILE."""
    plans_path = find_client_plans(preprocessed_root(preprocessed), [dataset], federation)
    client = client_names(plans_path, [dataset])[0]
    source = ModelSource(run=run, fold=fold, checkpoint=checkpoint)
    path = source.existing_checkpoint(results_root(results), plans_path)
    export_client_model(plans_path, client, path, output)
    Console(highlight=False, soft_wrap=True).print(
        f"{client} ({run}, fold {fold}, {checkpoint}) -> {output}; predict with: mucald_predict -d {dataset} "
        f"--checkpoint {output} ...")


main, entry = entry_points(app, ("--federation",))

if __name__ == "__main__":
    entry()
