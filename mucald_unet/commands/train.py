"""``mucald_train``: split-federated training of planned clients (mucald, baselines, ablations)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mucald_unet.config import (CrdmConfig, DefenceConfig, LrSchedule, Method, OptimizerConfig, OptimizerKind,
                                Precision, StrategyOptions, TrainingConfig, parse_ablations)
from mucald_unet.deployment import KITS_ENGINE, LOOPBACK_ENGINE
from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies import method_names
from mucald_unet.federation.transport import CaptureRequest
from mucald_unet.presets import PRESETS, preset_named
from mucald_unet.training.trainer import FederatedTrainer, run_folder_for
from planners.locate import client_names, find_plans
from planners.plans import load_shared_plan
from mucald_unet.devices import Device, PrecisionChoice, bf16_is_native, resolve_device, resolve_precision
from preprocessing.cli_support import DATASET_FLAGS, entry_points
from preprocessing.paths import preprocessed_root, results_root

app = typer.Typer(add_completion=False, help="Train a planned federation split-federated.")


class Engine(str, Enum):
    in_process = "in-process"  # every client and the server in this process (the simulation)
    flare_loopback = LOOPBACK_ENGINE  # each site a FLARE process over mutual TLS on this machine
    flare = KITS_ENGINE  # separate machines: the server from its kit here, each hospital from its own


class WireDtype(str, Enum):
    float32 = "float32"
    float16 = "float16"


class Aggregation(str, Enum):
    equal = "equal"
    samples = "samples"
    causal = "causal"


class RichTrainingReporter:
    """One bar over all steps of the run; the description names round, client and last loss."""

    def __init__(self, progress: Progress, rounds: int) -> None:
        self.progress, self.rounds = progress, rounds
        self.task = None
        self.started = time.perf_counter()
        self.steps = 0

    def start(self, total_steps: int, done_steps: int) -> None:
        self.task = self.progress.add_task("starting", total=total_steps, completed=done_steps, rate="")
        self.started = time.perf_counter()

    def step(self, round_index: int, client: str, step: int, loss: float) -> None:
        self.steps += 1
        rate = self.steps / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=1, rate=f"{rate:.1f} it/s", description=(
            f"round {round_index + 1}/{self.rounds} {client[:24]:<24} it {step + 1:>4} loss {loss:.3f}"))

    def round_done(self, round_index: int, records: list[dict]) -> None:
        dice = "  ".join(f"{r['client']}: {r['mean_val_dice']:.3f}" for r in records)
        self.progress.console.print(f"round {round_index + 1}: validation Dice  {dice}")


@app.command()
def train(
    ctx: typer.Context,
    datasets: Annotated[list[str], typer.Option("-d", "--dataset", help="Clients by dataset id: -d 1 2 3.")],
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="Preprocessed folder (default: $MUCALD_PREPROCESSED).")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="Results folder (default: $MUCALD_RESULTS).")] = None,
    method: Annotated[str, typer.Option(
        "--method", metavar="|".join(method_names()),
        help="mucald, or a baseline on the same code path (docs/federation_methods.md).")] = Method.MUCALD,
    ablate: Annotated[Optional[str], typer.Option(
        "--ablate", help="Comma-separated: no-daca,no-crdm,no-causal,no-diffusion,no-forward-noise.")] = None,
    preset: Annotated[Optional[str], typer.Option(
        "--preset", metavar="|".join(PRESETS), help="Start from a named set of settings; flags given explicitly "
        "still win. " + " ".join(f"{p.name}: {p.summary}." for p in PRESETS.values()))] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Communication rounds.")] = 10,
    local_epochs: Annotated[int, typer.Option("--local-epochs", min=1, help="Local epochs per round.")] = 1,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Iterations per local epoch.")] = 25,
    fold: Annotated[int, typer.Option("--fold", min=0, help="Validation fold (5-fold split per client).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed; equal seeds give equal weights on CPU.")] = 0,
    max_train_cases: Annotated[Optional[int], typer.Option(
        "--max-train-cases", min=1, help="Train each client on at most N of its fold's training cases (a fixed "
        "random subset, the same for every seed): scarce-data experiments. Validation keeps the whole fold.")] = None,
    aggregation: Annotated[Aggregation, typer.Option("--aggregation", help="Weights of the round average.")] = Aggregation.equal,
    optimizer: Annotated[OptimizerKind, typer.Option(
        "--optimizer", help="sgd (nnU-Net's, Nesterov momentum) or adamw, for every trained part.")] = OptimizerConfig.kind,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", min=0.0, help="Learning rate of the networks (encoders and SCMs use half); default: "
        "1e-2 for sgd, 1e-3 for adamw.")] = None,
    lr_schedule: Annotated[LrSchedule, typer.Option(
        "--lr-schedule", help="poly (nnU-Net's, the default by measurement): lr x (1 - progress)^0.9 over the "
        "whole run; or constant.")] = OptimizerConfig.schedule,
    deep_supervision: Annotated[int, typer.Option(
        "--deep-supervision", min=0, help="nnU-Net's deep supervision through the split: the server's N coarser "
        "decoder maps (1/2, 1/4, ... resolution) cross back too and the client scores them against its "
        "downsampled labels (0: off; a shallow body gives fewer).")] = TrainingConfig.deep_supervision,
    fedprox_mu: Annotated[float, typer.Option("--fedprox-mu", min=0.0, help="FedProx weight on SS.")] = 1e-3,
    local_norms: Annotated[bool, typer.Option(
        "--local-norms", help="Keep the server segment's normalisation parameters per client (FedBN).")] = False,
    ditto_lambda: Annotated[float, typer.Option(
        "--ditto-lambda", min=0.0,
        help="--method ditto: weight of the personal regulariser.")] = StrategyOptions.ditto_lambda,
    fedper_stages: Annotated[int, typer.Option(
        "--fedper-stages", min=1, help="--method fedper: the server segment's last decoder stages kept "
        "personal (with its output block).")] = StrategyOptions.fedper_stages,
    fedrep_head_fraction: Annotated[float, typer.Option(
        "--fedrep-head-fraction", min=0.0, max=1.0, help="--method fedrep: share of each round's steps that "
        "train the personal parts before the shared body.")] = StrategyOptions.fedrep_head_fraction,
    mocha_lambda: Annotated[float, typer.Option(
        "--mocha-lambda", min=0.0, help="--method mocha: weight of the task-relationship coupling "
        "lambda/2 tr(W Omega^-1 W^T) of the clients' server segments.")] = StrategyOptions.mocha_lambda,
    fedem_components: Annotated[int, typer.Option(
        "--fedem-components", min=2, help="--method fedem: mixture components of the server segment "
        "(each one's features and gradients cross every step).")] = StrategyOptions.fedem_components,
    eval_timestep: Annotated[Optional[int], typer.Option(
        "--eval-timestep", min=1, help="Noise level of what crosses at evaluation (default: the plan's, T/2); "
        "training draws timesteps up to it. Lower keeps more Dice and less privacy.")] = None,
    defence: Annotated[Optional[str], typer.Option(
        "--defence", help="A defence at split 1: gaussian:SIGMA (noise on what crosses), nopeek:WEIGHT "
        "(distance-correlation penalty), quantise:BITS (2**BITS levels per sample and channel cross) or "
        "adversary:WEIGHT (attacker-aware training: FE trained against a simulated inversion decoder at the "
        "client) or bottleneck:CHANNELS (a learned 1x1 projection: only that many channels cross); several of "
        "different kinds join with '+' (bottleneck:8+quantise:2). The run folder gets a __gaussian-0.5 style "
        "suffix.")] = None,
    capture_round: Annotated[Optional[int], typer.Option(
        "--capture-round", min=1, help="Keep every tensor that crosses the boundary in this round (1-based) in "
        "capture_roundNNN.pt: the server's view, for privacy audits.")] = None,
    capture_clients: Annotated[Optional[str], typer.Option(
        "--capture-clients", help="Comma-separated dataset ids of the clients to capture (default: all).")] = None,
    device: Annotated[Device, typer.Option("--device", help="auto uses CUDA when available.")] = Device.auto,
    precision: Annotated[PrecisionChoice, typer.Option(
        "--precision", help="bf16: the networks compute in bfloat16 autocast (parameters, losses and what "
        "crosses stay float32); native on CUDA and on CPUs with AVX512-BF16 or AMX, emulated (slower) "
        "elsewhere. auto: bf16 where native, else fp32. Recorded in config.json; like the device, it does "
        "not name the run and may differ on --resume.")] = PrecisionChoice.auto,
    engine: Annotated[Engine, typer.Option(
        "--engine", help="in-process (the simulation); flare-loopback: the server and every client as separate "
        "NVIDIA FLARE processes over mutual TLS on this machine; flare: separate machines, this one the server "
        "(--kit, --admin-kit; each hospital runs mucald_client). Both need the deploy extra; the run name gets "
        "__flare-loopback or __flare.")] = Engine.in_process,
    kit: Annotated[Optional[Path], typer.Option(
        "--kit", help="With --engine flare: the server's startup kit (mucald_provision).")] = None,
    admin_kit: Annotated[Optional[Path], typer.Option(
        "--admin-kit", help="With --engine flare: the project admin's startup kit, which submits the job.")] = None,
    wire_dtype: Annotated[WireDtype, typer.Option(
        "--wire-dtype", help="With a flare engine: float16 sends float32 tensors as float16 (half the "
        "bytes; run name gets __wire-float16).")] = WireDtype.float32,
    federation: Annotated[Optional[list[str]], typer.Option(
        "--federation", help="Train the -d clients under this federation's plan (its dataset ids, e.g. "
        "--federation 1 2 3); default: the plan of exactly the -d datasets. The run folder then names the "
        "clients (clients-2).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run's last checkpoint; give the flags it "
                                                          "was started with (they name its folder).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Discard a run already in the run folder and start again.")] = False,
) -> None:
    """Train; checkpoints, log, curves and the message manifest land in the run's results folder."""
    chosen_device = resolve_device(device)
    chosen_precision = resolve_precision(precision, chosen_device)
    config = TrainingConfig(method=method, ablations=parse_ablations(ablate), rounds=rounds,
                            local_epochs=local_epochs, iterations_per_epoch=iters, fold=fold, seed=seed,
                            max_train_cases=max_train_cases, device=chosen_device, precision=chosen_precision,
                            aggregation=aggregation.value, fedprox_mu=fedprox_mu,
                            local_norms=local_norms, deep_supervision=deep_supervision,
                            strategy=StrategyOptions(ditto_lambda=ditto_lambda, fedper_stages=fedper_stages,
                                                     fedrep_head_fraction=fedrep_head_fraction,
                                                     mocha_lambda=mocha_lambda,
                                                     fedem_components=fedem_components),
                            optimizer=OptimizerConfig(kind=optimizer, lr=lr or optimizer.default_lr,
                                                      schedule=lr_schedule),
                            crdm=CrdmConfig(eval_timestep=eval_timestep), defence=DefenceConfig.parse(defence))
    plans_path = find_plans(preprocessed_root(preprocessed), datasets, federation)
    if preset:
        chosen = preset_named(preset)
        chosen.check_plan(load_shared_plan(plans_path).federation.cut_depth, plans_path)
        config = chosen.apply(config, keep=_explicit_settings(ctx))
    names = client_names(plans_path, datasets)
    run_folder = run_folder_for(results_root(results), plans_path, config, names)
    console = Console(highlight=False)
    console.print(f"computing on {config.device} in {config.precision.value}")
    if config.precision is Precision.BF16 and not bf16_is_native(config.device):
        console.print(f"[yellow]--precision bf16: this {config.device.upper()} has no native bfloat16 arithmetic; "
                      "torch emulates it, slower than fp32. Fix: --precision auto or fp32 here.[/yellow]")
    if engine is not Engine.in_process or wire_dtype is WireDtype.float16 or kit or admin_kit:
        placement = _deployment(engine, capture_round, kit, admin_kit)
        summary = _train_deployed(plans_path, names, config, run_folder, wire_dtype, placement,
                                  results_root(results), overwrite=overwrite, resume=resume)
        _print_summary(console, summary, fold, predictable=placement is None)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                  TimeRemainingColumn(), console=console) as progress:
        trainer = FederatedTrainer(plans_path, names, config, run_folder, RichTrainingReporter(progress, config.rounds),
                                   capture=_capture_request(plans_path, names, capture_round, capture_clients))
        summary = trainer.run(resume=resume, overwrite=overwrite)
    _print_summary(console, summary, fold)


def _print_summary(console: Console, summary, fold: int, predictable: bool = True) -> None:
    run_name = summary.run_folder.parent.name
    table = Table(title=f"{run_name}, fold {fold}: validation Dice after round {summary.rounds_done}")
    table.add_column("client")
    table.add_column("mean Dice", justify="right")
    for name, dice in summary.final_dice.items():
        table.add_row(name, f"{dice:.3f}")
    console.print(table)
    where = (f"(mucald_predict --run {run_name})" if predictable else
             "(the server's records; each hospital keeps its own parts and records on its machine)")
    console.print(f"best mean Dice {summary.best_score:.3f}; run folder: {summary.run_folder} {where}")


def _deployment(engine: Engine, capture_round: int | None, kit: Path | None, admin_kit: Path | None):
    """None for loopback; the server's kits for --engine flare; a TrainingError for a wrong combination."""
    if engine is Engine.in_process:
        raise TrainingError("--wire-dtype float16, --kit and --admin-kit are deployment settings. Fix: add "
                            "--engine flare-loopback (one machine) or --engine flare (separate machines).")
    if capture_round is not None:
        raise TrainingError(f"--engine {engine.value} does not capture yet. Fix: drop --capture-round, or train "
                            "in-process.")
    if engine is Engine.flare_loopback:
        if kit or admin_kit:
            raise TrainingError("--engine flare-loopback provisions its own kits. Fix: drop --kit and --admin-kit, "
                                "or use --engine flare to train from issued kits.")
        return None
    if kit is None or admin_kit is None:
        raise TrainingError("--engine flare starts the server from its kit and submits with the admin's. Fix: give "
                            "--kit SERVER_KIT and --admin-kit ADMIN_KIT (mucald_provision's KITS.md lists them).")
    try:
        from mucald_unet.deployment.deployed_run import ServerKits
        from mucald_unet.deployment.site_kits import Kit
    except ImportError as missing:
        raise TrainingError(f"--engine flare needs NVIDIA FLARE ({missing}). Fix: pip install 'mucald[deploy]'.") from None
    return ServerKits(Kit(kit.resolve()).expect("server"), Kit(admin_kit.resolve()).expect("admin"))


def _train_deployed(plans_path, names: list[str], config: TrainingConfig, run_folder: Path, wire_dtype: WireDtype,
                    kits, results: Path, *, overwrite: bool, resume: bool):
    """Train through FLARE into ``<run name>__flare-loopback[__wire-float16]`` (``kits`` None: on this
    machine) or ``<run name>__flare[__wire-float16]`` (the server's side, from its kits)."""
    try:
        from mucald_unet.deployment.deployed_run import train_from_kits, train_on_loopback
    except ImportError as missing:
        raise TrainingError(f"a flare engine needs NVIDIA FLARE ({missing}). Fix: pip install "
                            "'mucald[deploy]'.") from None
    # a deployed run is not bit-equal to an in-process one (clients step in arrival order): its own name
    labels = [LOOPBACK_ENGINE if kits is None else KITS_ENGINE]
    labels += ["wire-float16"] if wire_dtype is WireDtype.float16 else []
    deployed_folder = run_folder.parent.parent / "__".join([run_folder.parent.name, *labels]) / run_folder.name
    narrow = wire_dtype is WireDtype.float16
    if kits is None:
        return train_on_loopback(plans_path, names, config, deployed_folder, overwrite=overwrite, narrow_wire=narrow,
                                 resume=resume)
    return train_from_kits(plans_path, names, config, deployed_folder, kits,
                           deployed_folder.relative_to(results).as_posix(), overwrite=overwrite,
                           threads=torch.get_num_threads(), narrow_wire=narrow, resume=resume)


# the flag (its parameter name) that sets each setting a preset may name
_FLAG_OF_SETTING = {"rounds": "rounds", "local_epochs": "local_epochs", "iterations_per_epoch": "iters",
                    "fedprox_mu": "fedprox_mu", "aggregation": "aggregation", "local_norms": "local_norms",
                    "deep_supervision": "deep_supervision",
                    "optimizer.kind": "optimizer", "optimizer.lr": "lr", "optimizer.schedule": "lr_schedule",
                    "crdm.eval_timestep": "eval_timestep", "defence": "defence"}


def _explicit_settings(ctx: typer.Context) -> set[str]:
    """The settings whose flag was typed on the command line (a preset leaves those alone).

    Compared by name: typer ships its own copy of click, whose ParameterSource is not click's.
    """
    return {setting for setting, flag in _FLAG_OF_SETTING.items()
            if getattr(ctx.get_parameter_source(flag), "name", None) == "COMMANDLINE"}


def _capture_request(plans_path, names: list[str], round_number: int | None,
                     clients: str | None) -> CaptureRequest | None:
    if round_number is None:
        if clients:
            raise TrainingError("--capture-clients needs --capture-round. Fix: add e.g. --capture-round 10.")
        return None
    chosen = client_names(plans_path, [c.strip() for c in clients.split(",") if c.strip()]) if clients else names
    return CaptureRequest(frozenset(chosen), round_number - 1)


main, entry = entry_points(app, (*DATASET_FLAGS, "--federation"))

if __name__ == "__main__":
    entry()
