#!/usr/bin/env python3
"""The referee of the federation methods: validation Dice of every registered method (mucald, the
paper's baselines, local and centralized training) under the same budget, split and recipe.

Every (data, regime, budget, method, seed) run trains in its own child process (``--child``) on
fold 0 and writes ``summary.json`` into its run folder; a crashed run is reported, not fatal, and
rerunning with the same ``--work`` skips the runs that finished with the same settings. Runs go
seed by seed, so a report cut short still compares every method on the seeds it has. Regimes:
``generated`` (every training case of the fold) and ``scarce`` (``--scarce-cases`` of them per
client, a fixed subset: ``mucald_train --max-train-cases``). The report is markdown: per data set,
regime and budget, the final round's validation Dice per client and its mean (mean +- std over
seeds), each method's gap to local training, the goal lines, and mucald's last-round loss terms.

    .venv/bin/python -m benchmarks.federation_quality --seeds 0 1 2 --regimes generated scarce \
        --budgets 10x25 40x25 --data both --jobs 2 --work /tmp/fq --out quality.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.reporting import REPO, emit_report, goal_line, log, unmeasured_goal
from benchmarks.train_step import Variant, ablation_variants, plan_federation, plan_table, prepare_demo
from preprocessing.errors import MucaldError

if TYPE_CHECKING:
    from mucald_unet.config import TrainingConfig

SUMMARY_FILE = "summary.json"
CHILD_LOG = "child.log"
LOG_FILE = "log.jsonl"  # the trainer's per-round log (mucald_unet.training.trainer.LOG_FILE)
REFERENCE_METHODS = ("local", "centralized")  # not federated baselines: the goals compare against the rest
FEDPROX_MU = 0.01  # fedprox's mu in the referee; at the recipe's 1e-3 it trains splitfed's weights
REAL_IDS = ("101", "102", "103")
PYRADIOMICS_CANDIDATES = (REPO / "shared" / "data" / "pyradiomics",
                          REPO.parent / "shared" / "data" / "pyradiomics")
GOAL_MARGIN_OVER_LOCAL = {"generated": 0.0, "scarce": 0.05}
REGIMES = ("generated", "scarce")


@dataclass(frozen=True)
class Budget:
    """Rounds x iterations per local epoch (one local epoch per round), written ``10x25``."""

    rounds: int
    iters: int

    @property
    def label(self) -> str:
        return f"{self.rounds}x{self.iters}"

    @classmethod
    def parse(cls, text: str) -> "Budget":
        try:
            rounds, iters = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"budget {text!r} is not ROUNDSxITERS (e.g. 10x25)") from None
        if min(rounds, iters) < 1:
            raise argparse.ArgumentTypeError(f"budget {text!r} needs at least 1 round and 1 iteration")
        return cls(rounds, iters)


@dataclass(frozen=True)
class QualityVariant(Variant):
    """A method variant as the referee trains it: its ablations plus training settings that replace
    the recipe's, as dotted keys of ``TrainingConfig.to_dict`` (``(("local_norms", True),)``).

    Labels and folder names take the settings' names from the trainer's own run names
    (``fedprox__mu-0.01``, ``mucald__local-norms``), so a variant reads the same everywhere.
    """

    overrides: tuple[tuple[str, Any], ...] = ()

    def training_config(self, **fields: Any) -> "TrainingConfig":
        """The config of one run of this variant; a setting that does not exist is refused here."""
        from mucald_unet.config import Method, TrainingConfig, parse_ablations

        base = TrainingConfig(method=Method(self.method), ablations=parse_ablations(self.ablations),
                              precision=self.precision, **fields)
        return base.with_overrides(dict(self.overrides))

    @property
    def label(self) -> str:
        if not self.overrides:
            return super().label
        config = self.training_config()
        ablations = ",".join(a.value for a in sorted(config.ablations, key=lambda a: a.value))
        return " ".join([self.method, *([f"--ablate {ablations}"] if ablations else []), *self._setting_labels(config)])

    @property
    def folder_name(self) -> str:
        if not self.overrides:
            return super().folder_name
        config = self.training_config()
        return "__".join(config.identity_labels() + self._setting_labels(config))

    def _setting_labels(self, config: "TrainingConfig") -> list[str]:
        """The trainer's setting labels, plus the execution settings (precision, device) this variant
        overrides: the trainer leaves those out of run names, but here they are what the variant
        measures, and without them it would share (and overwrite) the plain method's folder."""
        from mucald_unet.config import EXECUTION_SETTINGS

        executed = config.to_dict()
        return config.setting_labels() + [f"{key}-{executed[key]}" for key, _ in self.overrides
                                          if key in EXECUTION_SETTINGS]

    @classmethod
    def parse(cls, text: str) -> "QualityVariant":
        """``METHOD[:KEY=VALUE,...]``: ``mucald:local_norms=true,losses.adversarial=0.3``; values are
        JSON (true, 0.3, null) or else plain text (causal). ``preset=paper`` stands for the preset's
        settings less its rounds and epochs, so the row compares at the referee's budget."""
        method, _, settings = text.partition(":")
        overrides = []
        for item in (part.strip() for part in settings.split(",") if part.strip()):
            key, equals, value = item.partition("=")
            if not equals:
                raise MucaldError(f"variant {text!r}: {item!r} is not KEY=VALUE. Fix: e.g. "
                                  "--variants mucald:local_norms=true")
            if key.strip() == "preset":  # the preset's settings at the referee's budget
                from mucald_unet.presets import preset_named

                overrides += preset_named(value.strip()).without_budget().settings.items()
            else:
                overrides.append((key.strip(), parse_value(value.strip())))
        variant = cls(method.strip(), overrides=tuple(overrides))
        variant.training_config()  # unknown method, unknown setting or a refused combination: fail now
        return variant


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(frozen=True)
class Run:
    """One training run: which data, which method variant, which seed, and where it lands."""

    data: str  # "demo" or "real"
    variant: Variant
    seed: int
    plans_path: Path
    clients: tuple[str, ...]
    folder: Path
    regime: str = "generated"
    budget: Budget = Budget(10, 25)
    max_train_cases: int | None = None  # set in the scarce regime

    @property
    def label(self) -> str:
        return f"{self.data} {self.regime} {self.budget.label} {self.variant.label} seed {self.seed}"

    @property
    def section(self) -> tuple[str, str, Budget]:
        return self.data, self.regime, self.budget


def run_settings(run: Run, args: argparse.Namespace) -> dict:
    """What makes a finished run reusable: the same plan, method, data, budget and seed."""
    return {"plans": str(run.plans_path), "method": run.variant.method, "ablations": run.variant.ablations,
            "overrides": dict(getattr(run.variant, "overrides", ())), "max_train_cases": run.max_train_cases,
            "rounds": run.budget.rounds, "local_epochs": args.local_epochs, "iters": run.budget.iters,
            "fold": 0, "seed": run.seed}


# ------------------------------------------------------------------------------------------ data

def find_pyradiomics(arg: Path | None) -> Path | None:
    for candidate in ([arg] if arg else PYRADIOMICS_CANDIDATES):
        if candidate.is_dir() and any(candidate.glob("*_image.nrrd")):
            return candidate
    return None


def prepare_real(work: Path, source: Path) -> tuple[Path, list[str]]:
    """The pyradiomics slice federation (ids 101-103) under ``work``, planned 2d for the CPU."""
    from benchmarks.real_slices import make_pyradiomics_slice_federation

    raw = work / "raw-real"
    folders = sorted(raw.glob("Dataset10[123]_*")) if raw.is_dir() else []
    if len(folders) != 3 or not all((f / "dataset.json").is_file() for f in folders):
        for folder in folders:
            shutil.rmtree(folder)
        shutil.rmtree(work / "preprocessed-real", ignore_errors=True)
        names = make_pyradiomics_slice_federation(source, raw)
        log(f"wrote the pyradiomics slice federation ({', '.join(names)}) to {raw}")
    return plan_federation(raw, work / "preprocessed-real", REAL_IDS, workers=min(2, os.cpu_count() or 1))


# --------------------------------------------------------------------------------- child: train

def child_config(args: argparse.Namespace) -> "TrainingConfig":
    """The config a child trains: its variant's ablations and overrides at the run's budget and seed."""
    variant = QualityVariant(args.method, args.ablate or "", overrides=tuple(json.loads(args.overrides).items()))
    return variant.training_config(rounds=args.rounds, local_epochs=args.local_epochs,
                                   iterations_per_epoch=args.iters, seed=args.seed, fold=0,
                                   max_train_cases=args.max_train_cases)


def child_main(args: argparse.Namespace) -> int:
    import torch

    from mucald_unet.training.trainer import FederatedTrainer
    from preprocessing.atomic import write_json_atomic

    torch.set_num_threads(args.threads)
    config = child_config(args)
    started = time.perf_counter()
    # the parent found no finished summary here, so what a killed child left is discarded
    summary = FederatedTrainer(args.plans, args.clients, config, args.run_folder).run(overwrite=True)
    write_json_atomic(args.run_folder / SUMMARY_FILE, {
        "settings": json.loads(args.settings), "rounds_done": summary.rounds_done,
        "final_dice": {k: finite_or_none(v) for k, v in summary.final_dice.items()},
        "best_score": finite_or_none(summary.best_score), "seconds": time.perf_counter() - started,
        "threads": args.threads})
    return 0


def finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# ------------------------------------------------------------------------------ parent: run all

def finished_summary(run: Run, settings: dict) -> dict | None:
    path = run.folder / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("settings") == settings else None


def run_child(run: Run, settings: dict, threads: int) -> dict:
    """Train ``run`` in a child process; its summary, or {"error": ...} with the log's tail."""
    run.folder.mkdir(parents=True, exist_ok=True)
    (run.folder / SUMMARY_FILE).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.federation_quality", "--child",
           "--plans", str(run.plans_path), "--clients", *run.clients, "--method", run.variant.method,
           "--seed", str(run.seed), "--rounds", str(settings["rounds"]), "--iters", str(settings["iters"]),
           "--local-epochs", str(settings["local_epochs"]), "--run-folder", str(run.folder),
           "--threads", str(threads), "--settings", json.dumps(settings)]
    if run.variant.ablations:
        cmd += ["--ablate", run.variant.ablations]
    if settings["overrides"]:
        cmd += ["--overrides", json.dumps(settings["overrides"])]
    if settings["max_train_cases"] is not None:
        cmd += ["--max-train-cases", str(settings["max_train_cases"])]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(run.folder / CHILD_LOG, "wb") as child_log:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=child_log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL).returncode
    summary = finished_summary(run, settings)
    if rc == 0 and summary is not None:
        return summary
    tail = (run.folder / CHILD_LOG).read_text(errors="replace").splitlines()[-12:]
    return {"error": f"rc={rc}", "log_tail": tail}


def run_all(runs: list[Run], args: argparse.Namespace) -> dict[Run, dict]:
    """Every run, ``args.jobs`` at a time; prints a progress line as each starts and ends."""
    threads = max(1, args.threads // args.jobs)
    started = time.perf_counter()
    results: dict[Run, dict] = {}

    def elapsed() -> str:
        seconds = int(time.perf_counter() - started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def one(numbered: tuple[int, Run]) -> None:
        index, run = numbered
        tag = f"[{index}/{len(runs)}] {run.label}"
        settings = run_settings(run, args)
        if (summary := finished_summary(run, settings)) is not None:
            log(f"{tag}: finished earlier, skipped ({run.folder / SUMMARY_FILE})")
            results[run] = summary
            return
        log(f"{tag}: started (elapsed {elapsed()})")
        child_started = time.perf_counter()
        result = run_child(run, settings, threads)
        child_seconds = time.perf_counter() - child_started
        results[run] = result
        if "error" in result:
            log(f"{tag}: FAILED {result['error']} (elapsed {elapsed()}); log {run.folder / CHILD_LOG}:\n    "
                + "\n    ".join(result["log_tail"]))
        else:
            dice = [v for v in result["final_dice"].values() if v is not None]
            mean = f"{statistics.fmean(dice):.3f}" if dice else "nan"
            log(f"{tag}: done in {child_seconds:.1f} s (training {result['seconds']:.1f} s), mean Dice {mean} "
                f"(elapsed {elapsed()})")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, enumerate(runs, start=1)))
    return results


# ---------------------------------------------------------------------------------------- report

def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "nan"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def dice_by_seed(runs: list[Run], results: dict[Run, dict], label: str) -> list[dict[str, float | None]]:
    return [results[r]["final_dice"] for r in runs if r.variant.label == label and "error" not in results[r]]


def client_mean(dice: dict[str, float | None]) -> float | None:
    values = [v for v in dice.values() if v is not None]
    return statistics.fmean(values) if values else None


def short(client: str) -> str:
    return client.split("_", 1)[-1]


def dice_table(runs: list[Run], results: dict[Run, dict], labels: list[str], clients: tuple[str, ...]) -> str:
    """Per method: each client's Dice and the mean over clients (mean ± std over seeds), then the
    mean's gap to local training (difference of the seed means) and how many runs finished."""
    header = ["method", *(short(c) for c in clients), "mean over clients", "gap to local", "runs ok"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    local = mean_over_seeds(runs, results, "local", None)
    for label in labels:
        total = sum(1 for r in runs if r.variant.label == label)
        per_seed = dice_by_seed(runs, results, label)
        if not per_seed:
            status = " FAILED |" if total else " not run |"
            lines.append(f"| {label} |" + status * (len(clients) + 2) + f" 0/{total} |")
            continue
        cells = [mean_std([d.get(c) for d in per_seed]) for c in clients]
        cells.append(mean_std([client_mean(d) for d in per_seed]))
        mean = mean_over_seeds(runs, results, label, None)
        cells.append("-" if local is None or mean is None else f"{mean - local:+.3f}")
        lines.append("| " + " | ".join([label, *cells, f"{len(per_seed)}/{total}"]) + " |")
    return "\n".join(lines)


def mean_over_seeds(runs: list[Run], results: dict[Run, dict], label: str, client: str | None) -> float | None:
    values = [client_mean(d) if client is None else d.get(client) for d in dice_by_seed(runs, results, label)]
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def federated_baselines(runs: list[Run]) -> list[str]:
    """Labels of the federated methods mucald is judged against: all but mucald, local, centralized."""
    labels = dict.fromkeys(r.variant.label for r in runs)
    return [label for label in labels if label.split()[0] not in ("mucald", *REFERENCE_METHODS)]


def goal_lines(runs: list[Run], results: dict[Run, dict], clients: tuple[str, ...],
               regime: str = "generated") -> list[str]:
    """The issue's quality goals, each judged on the Dice measured, or 'not measured' with the reason."""
    return [best_federated_goal(runs, results, clients), above_splitfed_goal(runs, results, clients),
            local_goal(runs, results, clients, regime)]


def best_federated_goal(runs: list[Run], results: dict[Run, dict], clients: tuple[str, ...]) -> str:
    goal = "mucald mean >= every other federated method's mean"
    rivals = federated_baselines(runs)
    means = {label: mean_over_seeds(runs, results, label, None) for label in ["mucald", *rivals]}
    reason = unmeasured_reason(runs, results, {"mucald": {"the mean": means["mucald"]}})
    if reason or not rivals:
        return unmeasured_goal(goal, reason or "no other federated method ran")
    measured_rivals = {label: v for label, v in means.items() if label != "mucald" and v is not None}
    if not measured_rivals:
        return unmeasured_goal(goal, "every other federated run failed")
    best = max(measured_rivals, key=measured_rivals.get)
    beaten = [label for label, v in measured_rivals.items() if v > means["mucald"]]
    measured = f"mucald {means['mucald']:.3f}, best other {best} {measured_rivals[best]:.3f}"
    if beaten:
        measured += "; above mucald: " + ", ".join(beaten)
    unmeasured = [label for label in rivals if means[label] is None]
    if unmeasured:
        measured += "; not measured: " + ", ".join(unmeasured)
    return goal_line(goal, not beaten, measured)


def above_splitfed_goal(runs: list[Run], results: dict[Run, dict], clients: tuple[str, ...]) -> str:
    goal = "mucald > splitfed on every client"
    mucald = {c: mean_over_seeds(runs, results, "mucald", c) for c in clients}
    splitfed = {c: mean_over_seeds(runs, results, "splitfed", c) for c in clients}
    reason = unmeasured_reason(runs, results, {"mucald": mucald, "splitfed": splitfed})
    if reason:
        return unmeasured_goal(goal, reason)
    measured = ", ".join(f"{short(c)} {mucald[c]:.3f} vs {splitfed[c]:.3f}" for c in clients)
    return goal_line(goal, all(mucald[c] > splitfed[c] for c in clients), measured)


def local_goal(runs: list[Run], results: dict[Run, dict], clients: tuple[str, ...], regime: str) -> str:
    margin = GOAL_MARGIN_OVER_LOCAL[regime]
    goal = f"mucald mean >= local mean + {margin:g}" if margin else "mucald mean >= local mean"
    ours, local = (mean_over_seeds(runs, results, m, None) for m in ("mucald", "local"))
    reason = unmeasured_reason(runs, results, {"mucald": {"any client": ours}, "local": {"any client": local}})
    if reason:
        return unmeasured_goal(goal, reason)
    # rounded as printed, so a verdict never contradicts the numbers beside it
    met = round(ours - local, 3) >= margin
    return goal_line(goal, met, f"mucald {ours:.3f} vs local {local:.3f}, difference {ours - local:+.3f}")


def unmeasured_reason(runs: list[Run], results: dict[Run, dict], values: dict[str, dict[str, float | None]]) -> str:
    """Why a goal comparing these methods cannot be judged ('' when it can)."""
    for label, by_client in values.items():
        method_runs = [r for r in runs if r.variant.label == label]
        if not method_runs:
            return f"{label} did not run"
        if all("error" in results[r] for r in method_runs):
            return f"every {label} run failed"
        missing = [short(c) for c, v in by_client.items() if v is None]
        if missing:
            return f"{label} has no Dice for {', '.join(missing)}"
    return ""


LATE_ROUNDS = 3  # the steadier estimate averages validation Dice over this many last rounds


def round_records(run: Run) -> list[dict]:
    """The run's per-client round records (its log), oldest first; [] before the first round."""
    from mucald_unet.training.run_log import RunLog

    path = run.folder / LOG_FILE
    return [r for r in RunLog(path).records() if r.get("event", "round") == "round"] if path.is_file() else []


def late_rounds_mean(run: Run, rounds: int = LATE_ROUNDS) -> float | None:
    """Mean over clients of each client's validation Dice averaged over the last ``rounds`` rounds:
    the final round's Dice swings by up to 0.2 from one round to the next at constant learning rate,
    so this separates methods with fewer seeds (the deployed model is still the last round's)."""
    records = round_records(run)
    if not records:
        return None
    last = max(r["round"] for r in records)
    values = [r["mean_val_dice"] for r in records if r["round"] > last - rounds
              and isinstance(r.get("mean_val_dice"), (int, float)) and math.isfinite(r["mean_val_dice"])]
    return statistics.fmean(values) if values else None


def late_rounds_table(runs: list[Run], results: dict[Run, dict], labels: list[str]) -> str:
    header = ["method", f"mean over clients, last {LATE_ROUNDS} rounds", "gap to local"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_label = {label: [late_rounds_mean(r) for r in runs if r.variant.label == label and "error" not in results[r]]
                for label in labels}
    by_label = {label: [v for v in values if v is not None] for label, values in by_label.items()}
    local = statistics.fmean(by_label["local"]) if by_label.get("local") else None
    for label, values in by_label.items():
        gap = "-" if local is None or not values else f"{statistics.fmean(values) - local:+.3f}"
        lines.append(f"| {label} | {mean_std(values) if values else '-'} | {gap} |")
    return "\n".join(lines)


def last_round_terms(run: Run) -> dict[str, dict[str, float]]:
    """client -> {loss term: value, "val_loss": value} of the last round in the run's log."""
    records = round_records(run)
    if not records:
        return {}
    last = max(r["round"] for r in records)
    return {r["client"]: {**(r.get("losses") or {}), "val_loss": r.get("val_loss")}
            for r in records if r["round"] == last}


def loss_table(runs: list[Run], results: dict[Run, dict], label: str, clients: tuple[str, ...]) -> str | None:
    per_seed = [last_round_terms(r) for r in runs if r.variant.label == label and "error" not in results[r]]
    per_seed = [t for t in per_seed if t]
    if not per_seed:
        return None
    terms = list(dict.fromkeys(["seg", *(k for t in per_seed for c in clients for k in t.get(c, {}))]))
    lines = ["| client | " + " | ".join(terms) + " |", "|" + "---|" * (len(terms) + 1)]
    for client in clients:
        cells = []
        for term in terms:
            values = [t[client][term] for t in per_seed
                      if isinstance(t.get(client, {}).get(term), (int, float))]
            cells.append(f"{statistics.fmean(values):.4g}" if values else "-")
        lines.append(f"| {short(client)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def regime_text(regime: str, args: argparse.Namespace) -> str:
    if regime == "scarce":
        return f"scarce ({args.scarce_cases} labelled training cases per client, the same subset every seed)"
    return "generated (every training case of fold 0)"


def report(datasets: dict[str, tuple[Path, list[str]]], runs: list[Run], results: dict[Run, dict],
           labels: list[str], args: argparse.Namespace, seconds: float) -> str:
    import importlib.metadata
    import platform

    lines = ["# Federation quality: every method under the same budget, split and recipe", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"torch {importlib.metadata.version('torch')}",
             f"- budgets (rounds x iterations, {args.local_epochs} local epoch(s) per round), the same for "
             f"every method: {', '.join(b.label for b in args.budgets)}; fold 0; seeds "
             f"{', '.join(map(str, args.seeds))}",
             f"- {args.jobs} run(s) at a time, {max(1, args.threads // args.jobs)} torch thread(s) each; "
             f"wall time {seconds / 60:.1f} min (runs finished earlier are reused, not retimed)",
             "- Dice: each client's mean validation Dice (foreground classes, whole fold-0 validation set) "
             "after the last round; mean ± std over seeds; 'mean over clients' averages the clients per seed "
             "first; 'gap to local' is that mean minus local training's",
             f"- fedprox runs at mu {FEDPROX_MU:g}: at the recipe's default mu (1e-3, which splitfed and mucald "
             "carry) it trains the same weights as splitfed"]
    sections = list(dict.fromkeys(r.section for r in runs))
    for data, regime, budget in sections:
        plans_path, clients = datasets[data]
        section_runs = [r for r in runs if r.section == (data, regime, budget)]
        lines += ["", f"## {data}, {regime}, {budget.label}: validation Dice after round {budget.rounds}", "",
                  f"Regime: {regime_text(regime, args)}. Plan: {plans_path}", *plan_table(plans_path), "",
                  dice_table(section_runs, results, labels, tuple(clients)), "",
                  *goal_lines(section_runs, results, tuple(clients), regime), "",
                  f"Steadier view (not the goals' measure): each client's validation Dice averaged over the "
                  f"last {LATE_ROUNDS} rounds, then over clients; mean ± std over seeds.", "",
                  late_rounds_table(section_runs, results, labels)]
        for label in (label for label in labels if label.startswith("mucald")):
            table = loss_table(section_runs, results, label, tuple(clients))
            if table:
                lines += ["", f"### {data}, {regime}, {budget.label}, {label}: last round's mean loss terms "
                          "(mean over seeds)", "", table]
        for run in (r for r in section_runs if "error" in results[r]):
            lines += ["", f"FAILED {run.label} ({results[run]['error']}): see {run.folder / CHILD_LOG}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main

def registered_methods() -> list[str]:
    from mucald_unet.federation.strategies import method_names

    return list(method_names())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=Budget.parse, nargs="+", default=[Budget(10, 25)],
                        help="ROUNDSxITERS budgets, e.g. 10x25 40x25 (default: 10x25).")
    parser.add_argument("--local-epochs", type=int, default=1, help="Local epochs per round.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds.")
    parser.add_argument("--methods", help="Comma-separated methods (default: every registered one).")
    parser.add_argument("--ablations", help="Extra mucald variants, comma-separated (e.g. no-daca,no-crdm); "
                        "join ablations of one variant with + (no-daca+no-crdm).")
    parser.add_argument("--variants", nargs="+", default=[], metavar="METHOD:KEY=VALUE,...",
                        help="Extra variants with training settings replaced, e.g. mucald:local_norms=true "
                        "'mucald:losses.adversarial=0.3,crdm.eval_timestep=100' (keys: TrainingConfig.to_dict).")
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=["generated"],
                        help="generated (whole fold) and/or scarce (--scarce-cases per client).")
    parser.add_argument("--scarce-cases", type=int, default=8, help="Training cases per client when scarce.")
    parser.add_argument("--data", choices=["demo", "real", "both"], default="demo",
                        help="demo federation, the pyradiomics slice federation, or both.")
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium"], help="Demo size.")
    parser.add_argument("--pyradiomics", type=Path, help="Folder of the pyradiomics NRRD scans "
                        "(default: shared/data/pyradiomics beside or inside the repo).")
    parser.add_argument("--jobs", type=int, default=1, help="Runs in parallel (child processes).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads shared by the parallel runs.")
    parser.add_argument("--work", type=Path, help="Work folder for data, plans and runs (reuse it to resume; "
                        "default: a temp dir, removed at the end unless --keep).")
    parser.add_argument("--keep", action="store_true", help="Keep the temp work folder.")
    parser.add_argument("--report-only", action="store_true",
                        help="Train nothing: report the runs of --work that finished (e.g. to put the methods "
                             "of several earlier commands in one table).")
    parser.add_argument("--out", type=Path, help="Also write the markdown report here.")
    # the child's interface (used by the parent; not meant to be typed)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--ablate", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--iters", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--max-train-cases", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plans", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clients", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--run-folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.child and (args.rounds or args.iters):
        parser.error("give the budget as --budgets ROUNDSxITERS (e.g. --budgets 10x25), not --rounds/--iters")
    if min(args.local_epochs, args.jobs, args.threads, args.scarce_cases) < 1:
        parser.error("--local-epochs, --jobs, --threads and --scarce-cases must be >= 1")
    return args


def variants_of(args: argparse.Namespace) -> list[Variant]:
    known = registered_methods()
    methods = [m.strip() for m in (args.methods or ",".join(known)).split(",") if m.strip()]
    unknown = sorted(set(methods) - set(known))
    if unknown:
        raise SystemExit(f"error: unknown method(s) {', '.join(unknown)}; use any of {', '.join(known)}.")
    try:
        return ([QualityVariant(m, overrides=(("fedprox_mu", FEDPROX_MU),) if m == "fedprox" else ())
                 for m in dict.fromkeys(methods)] + ablation_variants(args.ablations)
                + [QualityVariant.parse(text) for text in args.variants])
    except MucaldError as error:  # an unknown ablation name; the message lists the valid ones
        raise SystemExit(f"error: {error}") from None


def plan_runs(datasets: dict[str, tuple[Path, list[str]]], variants: list[Variant], args: argparse.Namespace,
              work: Path) -> list[Run]:
    """Every run, seed by seed (then data, regime, budget, method): a cut-short report still
    compares every method on the seeds that finished."""
    return [Run(data, variant, seed, plans_path, tuple(clients),
                work / "runs" / data / regime / budget.label / variant.folder_name / f"seed{seed}",
                regime, budget, args.scarce_cases if regime == "scarce" else None)
            for seed in args.seeds
            for data, (plans_path, clients) in datasets.items()
            for regime in args.regimes for budget in args.budgets for variant in variants]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    variants = variants_of(args)
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="mucald-quality-")) if temp else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder: {work}")
    started = time.perf_counter()
    try:
        datasets: dict[str, tuple[Path, list[str]]] = {}
        if args.data in ("demo", "both"):
            datasets["demo"] = prepare_demo(work, args.size, workers=min(2, os.cpu_count() or 1))
        if args.data in ("real", "both"):
            source = find_pyradiomics(args.pyradiomics)
            if source is None:
                looked = [args.pyradiomics] if args.pyradiomics else PYRADIOMICS_CANDIDATES
                log("pyradiomics scans not found (looked in " + ", ".join(map(str, looked))
                    + "); skipping the real-data federation.")
            else:
                datasets["real"] = prepare_real(work, source)
        if not datasets:
            log("nothing to run.")
            return 1
        runs = plan_runs(datasets, variants, args, work)
        if args.report_only:
            finished = [r for r in runs if finished_summary(r, run_settings(r, args)) is not None]
            log(f"--report-only: {len(finished)} of {len(runs)} runs finished earlier; the rest are left out.")
            runs = finished
        results = run_all(runs, args)
        text = report(datasets, runs, results, [v.label for v in variants], args,
                      time.perf_counter() - started)
        emit_report(text, args.out)
        return 1 if any("error" in r for r in results.values()) else 0
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
