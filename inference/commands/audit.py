"""``mucald_audit``: attack what a trained federation's clients transmit, and report the numbers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from inference.audit.inversion import InversionBudget
from inference.audit.report import final_dice, collect, write_report
from inference.audit.runner import ATTACKS, AuditConfig, AuditStore, AuditTarget, audit_client
from inference.errors import PredictionError
from inference.model import CHECKPOINT_ALIASES
from mucald_unet.devices import Device, resolve_device
from mucald_unet.training.trainer import federation_results, trained_runs
from planners.locate import client_names, find_client_plans
from preprocessing.cli_support import DATASET_FLAGS, entry_points
from preprocessing.paths import RAW_ENV, preprocessed_root, raw_root, results_root

app = typer.Typer(add_completion=False, help="Privacy audit of a trained federation: reconstruction and "
                                             "membership attacks by an honest-but-curious server.")


@app.command()
def audit(
    datasets: Annotated[list[str], typer.Option("-d", "--dataset", help="Clients to audit: -d 1 3.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder (report.md, audit.json, PNGs).")],
    preprocessed: Annotated[Optional[Path], typer.Option(
        "--preprocessed", help="Preprocessed folder with the plans (default: $MUCALD_PREPROCESSED).")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="Results folder (default: $MUCALD_RESULTS).")] = None,
    raw: Annotated[Optional[Path], typer.Option(
        "--raw", help="Raw datasets folder (default: $MUCALD_RAW): each client's labelled imagesTs join the "
        "held-out fold as non-members of membership inference. Without either, the held-out fold alone.")] = None,
    runs: Annotated[Optional[str], typer.Option(
        "--runs", help="Comma-separated run folders to compare, e.g. splitfed,mucald,splitfed__gaussian-0.5 "
        "(default: every trained run of the federation).")] = None,
    fold: Annotated[int, typer.Option("--fold", min=0, help="Which fold's models (members = its training cases).")] = 0,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best or final.")] = "final",
    attacks: Annotated[str, typer.Option("--attacks", help=f"Comma-separated: {','.join(ATTACKS)}.")] = ",".join(ATTACKS),
    private_cases: Annotated[int, typer.Option("--private-cases", min=4, help="Member cases attacked.")] = 16,
    shadows: Annotated[int, typer.Option("--shadows", min=2, help="LiRA shadow models per client (even).")] = 4,
    decoder_steps: Annotated[int, typer.Option("--decoder-steps", min=1, help="Inverse-network training steps.")] = 600,
    whitebox_steps: Annotated[int, typer.Option("--whitebox-steps", min=1, help="White-box optimisation steps.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attacks and shadow models.")] = 0,
    device: Annotated[Device, typer.Option("--device", help="auto uses CUDA when available.")] = Device.auto,
    federation: Annotated[Optional[list[str]], typer.Option(
        "--federation", help="The federation the clients trained in, by its dataset ids (default: the one plan "
        "that holds them; needed when several do).")] = None,
) -> None:
    """Each attack's result is stored as soon as it finishes; rerunning resumes with the next one."""
    if checkpoint not in ("best", "final"):
        raise PredictionError(f"--checkpoint {checkpoint}: the audit compares runs, so it takes best or final.")
    plans_path = find_client_plans(preprocessed_root(preprocessed), datasets, federation)
    clients = client_names(plans_path, datasets)
    results_dir = results_root(results)
    chosen_runs = _runs(results_dir, plans_path, runs, fold, checkpoint)
    config = AuditConfig(attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()), fold=fold,
                         checkpoint=checkpoint, private_cases=private_cases, shadows=shadows, seed=seed,
                         budget=InversionBudget(decoder_steps=decoder_steps, whitebox_steps=whitebox_steps),
                         device=resolve_device(device), raw_root=_optional_raw(raw))
    store = AuditStore(output)
    console = Console(highlight=False, soft_wrap=True)
    total = len(chosen_runs) * len(clients) * len(config.attacks)
    done = sum(store.has(r, c, a) for r in chosen_runs for c in clients for a in config.attacks)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("auditing", total=total, completed=done)

        def on_attack(run: str, client: str, attack: str) -> None:
            progress.update(task, description=f"{run} / {client[:24]} / {attack}")

        for run in chosen_runs:
            for client in clients:
                audit_client(AuditTarget(plans_path, results_dir, run, client), config, store, on_attack)
                progress.update(task, completed=sum(store.has(r, c, a) for r in chosen_runs for c in clients
                                                    for a in config.attacks))
    dice = {(r, c): final_dice(results_dir, plans_path, r, fold, c) for r in chosen_runs for c in clients}
    header = [f"- plans: {plans_path}; runs: {', '.join(chosen_runs)}; fold {fold}, checkpoint {checkpoint}",
              f"- attacks: {', '.join(config.attacks)}; {private_cases} attacked member cases per client, "
              f"{config.aux_patches} auxiliary patches, decoder {decoder_steps} steps, white-box {whitebox_steps} "
              f"steps, {shadows} LiRA shadow models, seed {seed}",
              "- Dice: mean validation Dice of the client after the run's last round"]
    written = write_report(output, collect(store, chosen_runs, clients, dice), header, store)
    console.print((output / "report.md").read_text())
    console.print("wrote " + ", ".join(str(p) for p in written))


def _runs(results_dir: Path, plans_path: Path, runs: str | None, fold: int, checkpoint: str) -> list[str]:
    federation = federation_results(results_dir, plans_path)
    found = trained_runs(federation, fold, CHECKPOINT_ALIASES[checkpoint])
    if runs:
        chosen = [r.strip() for r in runs.split(",") if r.strip()]
        missing = [r for r in chosen if r not in found]
        if missing:
            raise PredictionError(f"{federation}: no {CHECKPOINT_ALIASES[checkpoint]} for run(s) {', '.join(missing)} "
                                  f"(fold {fold}; runs with one: {', '.join(found) or 'none'}). Fix: train them (e.g. "
                                  "mucald_train --method splitfed --defence gaussian:0.5) or drop them.")
        return chosen
    if not found:
        raise PredictionError(f"{federation}: no trained runs for fold {fold}. Fix: run mucald_train first.")
    return found


def _optional_raw(flag: Path | None) -> Path | None:
    """The raw folder when given or set in the environment; None lets the audit do without it."""
    return raw_root(flag) if flag is not None or os.environ.get(RAW_ENV) else None


main, entry = entry_points(app, (*DATASET_FLAGS, "--federation"))

if __name__ == "__main__":
    entry()
