"""``mucald_client``: one hospital's site of a federation on separate machines, run from its startup kit.

The kit says who the site is (its certificate's name: the dataset) and where the server is; this
command adds what only the hospital knows: its plans and preprocessed cases, and where its records
go. It writes them into the kit's ``local/`` folder, starts FLARE's client in the foreground and
trains every job the server submits until stopped (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console

from mucald_unet.errors import TrainingError
from planners.locate import client_names, find_client_plans
from preprocessing.cli_support import DATASET_FLAGS, entry_points
from preprocessing.paths import preprocessed_root, results_root

app = typer.Typer(add_completion=False, help="Run this hospital's site of a federation from its startup kit.")


@app.command()
def client(
    kit: Annotated[Path, typer.Option("--kit", help="This site's startup kit (mucald_provision; see KITS.md).")],
    datasets: Annotated[Optional[list[str]], typer.Option(
        "-d", "--dataset", help="This site's dataset id, checked against the kit's name (optional).")] = None,
    federation: Annotated[Optional[list[str]], typer.Option(
        "--federation", help="The federation's dataset ids, when this dataset is planned in several.")] = None,
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="Preprocessed folder (default: $MUCALD_PREPROCESSED).")] = None,
    results: Annotated[Optional[Path], typer.Option(
        "--results", help="Results folder (default: $MUCALD_RESULTS); a run's records go to "
        "<results>/<federation>/<run name>/fold_<F>/sites/<site>.")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch threads for training.")] = torch.get_num_threads(),
) -> None:
    """Write the site's settings into its kit, then run FLARE's client until stopped."""
    try:
        from mucald_unet.deployment.flare_job import stop_process_group
        from mucald_unet.deployment.site_kits import Kit, SiteSettings
    except ImportError as missing:
        raise TrainingError(f"mucald_client needs NVIDIA FLARE ({missing}). Fix: pip install 'mucald[deploy]'.") from None
    site_kit = Kit(kit.resolve()).expect("client")
    site = site_kit.site_name
    plans_path = find_client_plans(preprocessed_root(preprocessed), [site], federation)
    if datasets and client_names(plans_path, datasets) != [site]:
        raise TrainingError(f"-d {' '.join(datasets)} is not this kit's site {site}. Fix: give the kit issued for "
                            "this dataset, or drop -d.")
    client_names(plans_path, [site])  # the site must be planned in this federation
    settings = SiteSettings(plans_path.resolve(), results_root(results).resolve(), threads)
    written = settings.write(site_kit.folder)
    Console(highlight=False, soft_wrap=True).print(
        f"{site}: plans {settings.plans}, records under {settings.results}/<run>/sites/{site} (settings in "
        f"{written}); connecting to the server named in the kit. Stop with Ctrl-C.")
    signal.signal(signal.SIGTERM, _interrupt)
    process = site_kit.start()
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_process_group(process)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


main, entry = entry_points(app, (*DATASET_FLAGS, "--federation"))

if __name__ == "__main__":
    entry()
