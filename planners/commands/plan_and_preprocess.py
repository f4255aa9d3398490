"""``mucald_plan_and_preprocess``: verify, fingerprint, proxies, causal graphs, plan, preprocess."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from planners.budget import Preset
from planners.pipeline import PipelineConfig, plan_and_preprocess
from planners.planner import PlannerConfig
from planners.plans import ClientPlan, Plans, load_plans
from preprocessing.cli_support import DATASET_FLAGS, entry_points
from preprocessing.paths import preprocessed_root, raw_root

app = typer.Typer(add_completion=False, help="Plan a federation and preprocess every client's data.")


class Target(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


class Dimensionality(str, Enum):
    two_d = "2d"
    three_d = "3d"


class RichReporter:
    """Shows one progress bar per pipeline stage."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def stage(self, description: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(description, total=total)

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


# the planner's flags, shared with the server of a federation planned site by site (mucald_server plan)
TargetOption = Annotated[Optional[Target], typer.Option(
    "--target", help="Budget preset: gpu (memory budget) or cpu (~3 s per federation iteration on "
    "2 cores). Default: gpu if torch sees CUDA, else cpu.")]
MemoryOption = Annotated[float, typer.Option("--memory-gb", min=1.0, help="GPU memory for --target gpu.")]
DimensionalityOption = Annotated[Optional[Dimensionality], typer.Option(
    "--config", help="Force 2d or 3d (default: 3d only if every client is 3D).")]
NumNodesOption = Annotated[int, typer.Option("--num-nodes", min=1, help="Causal nodes K per client.")]
SplitWidthOption = Annotated[int, typer.Option(
    "--split-width", min=4, help="Channels crossing each split, and the width of FE, BE and the server's "
    "first stage (nnU-Net's 32; 16 is ~2.5x cheaper per iteration and learns less).")]
CutDepthOption = Annotated[int, typer.Option(
    "--cut-depth", min=0, help="How many of the U-Net body's first stages (encoder and decoder, with their "
    "skips) run at the client. 0: the cut sits after the stem, at full resolution; each stage deeper sends "
    "features pooled once more (docs/privacy.md).")]
NoVerifyOption = Annotated[bool, typer.Option("--no-verify", help="Skip the integrity check.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for sampling and causal discovery.")]


def planner_config(target: Target | None, memory_gb: float, config: Dimensionality | None, num_nodes: int,
                   split_width: int, cut_depth: int) -> PlannerConfig:
    """The planner's settings from its flags."""
    return PlannerConfig(preset=Preset((target or _default_target()).value, memory_gb=memory_gb),
                         dimensionality=config.value if config else None, num_nodes=num_nodes,
                         split_channels=split_width, cut_depth=cut_depth)


@app.command()
def plan(
    datasets: Annotated[list[str], typer.Option(
        "-d", "--dataset", help="Dataset ids or names, one per client: -d 1 2 3.")],
    raw: Annotated[Optional[Path], typer.Option("--raw", help="Raw datasets folder (default: $MUCALD_RAW).")] = None,
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="Output folder (default: $MUCALD_PREPROCESSED).")] = None,
    num_processes: Annotated[int, typer.Option("-np", "--num-processes", min=1,
                                               help="Worker processes for fingerprinting and preprocessing.")] = 2,
    target: TargetOption = None,
    memory_gb: MemoryOption = 8.0,
    config: DimensionalityOption = None,
    num_nodes: NumNodesOption = 4,
    split_width: SplitWidthOption = 32,
    cut_depth: CutDepthOption = 0,
    no_verify: NoVerifyOption = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo finished preprocessed cases.")] = False,
    seed: SeedOption = 0,
) -> None:
    """Self-configure a federation: every decision lands in one plans.json."""
    pipeline = PipelineConfig(
        raw_root=raw_root(raw), preprocessed_root=preprocessed_root(preprocessed), datasets=tuple(datasets),
        planner=planner_config(target, memory_gb, config, num_nodes, split_width, cut_depth),
        num_processes=num_processes, verify=not no_verify, overwrite=overwrite, seed=seed)
    console = Console(highlight=False)
    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        plans_path = plan_and_preprocess(pipeline, RichReporter(progress))
    plans = load_plans(plans_path)
    console.print(summary_table(plans))
    for name, client in plans.clients.items():
        for note in client.planning_notes:
            console.print(f"{name} {note}")
        edges = [f"{p} -> {c}" for c, ps in client.causal_graph.parents.items() for p in ps]
        console.print(f"{name} causal graph over {', '.join(client.causal_graph.nodes) or 'no nodes'}: "
                      f"{'; '.join(edges) or 'no edges'}")
    warnings = list(plans.warnings) + [f"{name}: {w}" for name, c in plans.clients.items()
                                       for w in c.causal_graph.warnings]
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"plans: {plans_path}")


def summary_table(plans: Plans) -> Table:
    fed = plans.federation
    table = Table(title=f"federation: {fed.dimensionality}, split width {fed.split_channels}, "
                        f"{len(fed.server_segment.strides)} body stages, the first {fed.cut_depth} at the client; "
                        f"preset {plans.preset}")
    table.add_column("client", no_wrap=True)
    for column in ("spacing mm", "patch", "batch", "norm", "edges", "crosses per sample"):
        table.add_column(column)
    for name, client in plans.clients.items():
        edges = sum(len(ps) for ps in client.causal_graph.parents.values())
        table.add_row(name, " x ".join(f"{s:.3g}" for s in client.target_spacing),
                      " x ".join(str(p) for p in client.patch_size), str(client.batch_size),
                      _kinds(client.normalization), str(edges), _crossing(client))
    return table


def _crossing(client: ClientPlan) -> str:
    if client.crossing is None:
        return "?"
    channels, *spatial = client.crossing.shape
    return f"{channels} x " + " x ".join(str(s) for s in spatial)


def _kinds(normalization: tuple[dict, ...]) -> str:
    kinds = [n["kind"] for n in normalization]
    return kinds[0] if len(set(kinds)) == 1 else ", ".join(kinds)


def _default_target() -> Target:
    try:
        import torch  # only to see whether a GPU is there; planning itself never needs torch
    except ImportError:
        return Target.cpu
    return Target.gpu if torch.cuda.is_available() else Target.cpu


main, entry = entry_points(app, DATASET_FLAGS)

if __name__ == "__main__":
    entry()
