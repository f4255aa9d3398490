"""``mucald_server plan``: plan a federation site by site, from the server's startup kit.

Each hospital's ``mucald_client`` (given ``--raw``) verifies, fingerprints and preprocesses its own
dataset on its own machine; the server gets only each site's native dimensionality and offered
patch and spacing, fixes the shared topology and sends the shared plan back. Every site ends with
its own ``plans.json`` (the shared plan and its own) and cases; the server with ``federation.json``
(the shared plan and the sites), from which ``mucald_server`` trains. The planner's flags are
``mucald_plan_and_preprocess``'s, and the plan is the one it would make for the same datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from mucald_unet.errors import TrainingError
from planners.commands.plan_and_preprocess import (CutDepthOption, DimensionalityOption, MemoryOption,
                                                   NoVerifyOption, NumNodesOption, SeedOption, SplitWidthOption,
                                                   TargetOption, planner_config)
from planners.locate import dataset_number, federation_folder_name
from planners.plans import SHARED_PLAN_FILE, SharedPlan
from preprocessing.cli_support import DATASET_FLAGS, entry_points
from preprocessing.paths import preprocessed_root

app = typer.Typer(add_completion=False, help="Plan a federation site by site from the server's startup kit.")


@app.command()
def plan(
    datasets: Annotated[list[str], typer.Option(
        "-d", "--dataset", help="The sites' dataset ids or names: -d 1 2 3 (ids as the kits were issued).")],
    kit: Annotated[Path, typer.Option("--kit", help="The server's startup kit (mucald_provision; KITS.md).")],
    admin_kit: Annotated[Path, typer.Option("--admin-kit", help="The admin's startup kit, which submits the job.")],
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="The server's preprocessed folder (default: $MUCALD_PREPROCESSED): the shared "
        "plan goes to <it>/Federation_<ids>/federation.json.")] = None,
    target: TargetOption = None,
    memory_gb: MemoryOption = 8.0,
    config: DimensionalityOption = None,
    num_nodes: NumNodesOption = 4,
    split_width: SplitWidthOption = 32,
    cut_depth: CutDepthOption = 0,
    no_verify: NoVerifyOption = False,
    seed: SeedOption = 0,
    call_timeout: Annotated[float, typer.Option(
        "--call-timeout", min=1.0, help="Seconds every site has for one stage (its fingerprinting, its "
        "preprocessing).")] = 3600.0,
) -> None:
    """Plan with every site over FLARE; the sites' plans and cases stay at the sites."""
    try:
        from mucald_unet.deployment.flare_planning import PlanningJob, plan_from_kits
        from mucald_unet.deployment.site_kits import Kit
    except ImportError as missing:
        raise TrainingError(f"mucald_server needs NVIDIA FLARE ({missing}). Fix: pip install 'mucald[deploy]'.") from None
    server_kit, admin = Kit(kit.resolve()).expect("server"), Kit(admin_kit.resolve()).expect("admin")
    sites = site_names(datasets, server_kit)
    folder = preprocessed_root(preprocessed).resolve() / federation_folder_name([dataset_number(s) for s in sites])
    job = PlanningJob(tuple(sites), planner_config(target, memory_gb, config, num_nodes, split_width, cut_depth),
                      folder / SHARED_PLAN_FILE, seed, not no_verify, call_timeout)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"planning {', '.join(sites)} site by site; waiting for every site's mucald_client to connect")
    shared = plan_from_kits(job, server_kit, admin)
    console.print(shared_plan_table(shared))
    for warning in shared.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    ids = " ".join(str(dataset_number(s)) for s in sites)
    console.print(f"shared plan: {job.shared_plan}\nnext: mucald_server -d {ids} --kit {kit} --admin-kit {admin_kit} "
                  f"--preprocessed {folder.parent} --results RESULTS")


def site_names(references: list[str], server_kit) -> list[str]:
    """The sites' names for ``-d``: ids resolved against the sites the server's kit was issued for."""
    if len(set(map(dataset_number, references))) != len(references):
        raise TrainingError(f"a site is named twice in -d {' '.join(references)}. Fix: list each once.")
    try:
        project = {dataset_number(site): site for site in server_kit.project_sites}
    except TrainingError:
        if all(r.startswith("Dataset") and "_" in r for r in references):  # full names need no list
            return list(references)
        raise
    unknown = [r for r in references if dataset_number(r) not in project]
    if unknown:
        raise TrainingError(f"-d {' '.join(unknown)}: no such site in {server_kit.folder}'s project (it has "
                            f"{', '.join(project.values())}). Fix: name the sites the kits were issued for.")
    return [project[dataset_number(r)] for r in references]


def shared_plan_table(shared: SharedPlan) -> Table:
    fed = shared.federation
    table = Table(title=f"shared plan: {fed.dimensionality}, split width {fed.split_channels}, "
                        f"{len(fed.server_segment.strides)} body stages, the first {fed.cut_depth} at the client; "
                        f"preset {shared.preset}")
    for column in ("site", "offered patch", "at spacing mm"):
        table.add_column(column)
    for offer in shared.offers:
        table.add_row(offer["dataset_name"], " x ".join(map(str, offer["patch"])),
                      " x ".join(f"{s:.3g}" for s in offer["patch_spacing"]))
    return table


main, entry = entry_points(app, DATASET_FLAGS)

if __name__ == "__main__":
    entry()
