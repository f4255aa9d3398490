"""``mucald_client``: one hospital's site of a federation on separate machines, run from its startup kit.

The kit says who the site is (its certificate's name: the dataset) and where the server is; this
command adds what only the hospital knows: where its raw data (for a federation the server plans
site by site), its plans and preprocessed cases and its records are. It writes them into the kit's
``local/`` folder, starts FLARE's client in the foreground and runs every job the server submits
(planning, training) until stopped (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from mucald_unet.errors import TrainingError
from planners.locate import dataset_number, plan_command, planned_federations
from preprocessing.cli_support import DATASET_FLAGS, entry_points
from preprocessing.dataset import RawDataset
from preprocessing.paths import RAW_ENV, preprocessed_root, raw_root, results_root

app = typer.Typer(add_completion=False, help="Run this hospital's site of a federation from its startup kit.")


@app.command()
def client(
    kit: Annotated[Path, typer.Option("--kit", help="This site's startup kit (mucald_provision; see KITS.md).")],
    datasets: Annotated[Optional[list[str]], typer.Option(
        "-d", "--dataset", help="This site's dataset id, checked against the kit's name (optional).")] = None,
    raw: Annotated[Optional[Path], typer.Option(
        "--raw", help="Raw datasets folder holding this site's dataset, so that the server can plan the "
        "federation site by site (mucald_server plan). Default: $MUCALD_RAW when set.")] = None,
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="Preprocessed folder (default: $MUCALD_PREPROCESSED): each federation's "
        "plans.json and this site's cases, as planning writes them.")] = None,
    results: Annotated[Optional[Path], typer.Option(
        "--results", help="Results folder (default: $MUCALD_RESULTS); a run's records go to "
        "<results>/<federation>/<run name>/fold_<F>/sites/<site>.")] = None,
    threads: Annotated[int, typer.Option(
        "--threads", min=1, help="torch threads for training, processes for planning (default: the CPUs this "
        "process may use).")] = len(os.sched_getaffinity(0)),
) -> None:
    """Write the site's settings into its kit, then run FLARE's client until stopped."""
    try:
        from mucald_unet.deployment.flare_server import stop_process_group
        from mucald_unet.deployment.site_kits import Kit, SiteSettings
    except ImportError as missing:
        raise TrainingError(f"mucald_client needs NVIDIA FLARE ({missing}). Fix: pip install 'mucald[deploy]'.") from None
    site_kit = Kit(kit.resolve()).expect("client")
    site = site_kit.site_name
    if datasets and [dataset_number(d) for d in datasets] != [dataset_number(site)]:
        raise TrainingError(f"-d {' '.join(datasets)} is not this kit's site {site}. Fix: give the kit issued for "
                            "this dataset, or drop -d.")
    settings = SiteSettings(preprocessed_root(preprocessed).resolve(), results_root(results).resolve(), threads,
                            _raw_folder(raw, site))
    planned = [path.parent.name for path, held in planned_federations(settings.preprocessed).items()
               if dataset_number(site) in held]
    if not planned and settings.raw is None:
        raise TrainingError(f"{settings.preprocessed}: no plan holds {site}, and no raw data was given to plan it "
                            f"with. Fix: give --raw (the folder holding {site}) so that the server plans the "
                            f"federation with this site (mucald_server plan), or run "
                            f"{plan_command([site], settings.preprocessed)} here with the federation's datasets.")
    written = settings.write(site_kit.folder)
    Console(highlight=False, soft_wrap=True).print(
        f"{site}: planned in {', '.join(planned) or 'no federation yet'} under {settings.preprocessed}"
        f"{f', raw data in {settings.raw}' if settings.raw else ''}; records under {settings.results}/<run>/sites/"
        f"{site} (settings in {written}); connecting to the server named in the kit. Stop with Ctrl-C.")
    signal.signal(signal.SIGTERM, _interrupt)
    process = site_kit.start()
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_process_group(process)


def _raw_folder(flag: Path | None, site: str) -> Path | None:
    """The raw root holding the site's dataset (checked now, not when a planning job arrives), or None."""
    if flag is None and not os.environ.get(RAW_ENV):
        return None
    root = raw_root(flag).resolve()
    RawDataset.open(root, site)  # a clear error naming the folder when the dataset is not there
    return root


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


main, entry = entry_points(app, DATASET_FLAGS)

if __name__ == "__main__":
    entry()
