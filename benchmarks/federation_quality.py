#!/usr/bin/env python3
"""Validation Dice of mucald against splitfed, local and centralized training with the same budget.

Every (data, method, seed) run trains in its own child process (``--child``) with the same
rounds, local epochs, iterations per epoch and fold 0, and writes ``summary.json`` into its run
folder; a crashed run is reported, not fatal, and rerunning with the same ``--work`` skips the
runs that finished with the same settings. The report is markdown: per data set, the final
round's validation Dice per client (mean +- std over seeds), the goal lines, and per method the
last round's loss terms per client from ``log.jsonl``.

    .venv/bin/python -m benchmarks.federation_quality --seeds 0 1 2 --work /tmp/fq --out quality.md
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

from benchmarks.reporting import REPO, emit_report, goal_line, log, unmeasured_goal
from benchmarks.train_step import Variant, ablation_variants, plan_federation, plan_table, prepare_demo
from preprocessing.errors import MucaldError

SUMMARY_FILE = "summary.json"
CHILD_LOG = "child.log"
LOG_FILE = "log.jsonl"  # the trainer's per-round log (mucald_unet.training.trainer.LOG_FILE)
METHODS = ("mucald", "splitfed", "local", "centralized")
REAL_IDS = ("101", "102", "103")
PYRADIOMICS_CANDIDATES = (REPO / "shared" / "data" / "pyradiomics",
                          REPO.parent / "shared" / "data" / "pyradiomics")
GOAL_MARGIN_OVER_LOCAL = 0.05


@dataclass(frozen=True)
class Run:
    """One training run: which data, which method variant, which seed, and where it lands."""

    data: str  # "demo" or "real"
    variant: Variant
    seed: int
    plans_path: Path
    clients: tuple[str, ...]
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.data} {self.variant.label} seed {self.seed}"


def run_settings(run: Run, args: argparse.Namespace) -> dict:
    """What makes a finished run reusable: the same plan, method, budget and seed."""
    return {"plans": str(run.plans_path), "method": run.variant.method, "ablations": run.variant.ablations,
            "rounds": args.rounds, "local_epochs": args.local_epochs, "iters": args.iters,
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

def child_main(args: argparse.Namespace) -> int:
    import torch

    from mucald_unet.config import Method, TrainingConfig, parse_ablations
    from mucald_unet.training.trainer import FederatedTrainer
    from preprocessing.atomic import write_json_atomic

    torch.set_num_threads(args.threads)
    config = TrainingConfig(method=Method(args.method), ablations=parse_ablations(args.ablate),
                            rounds=args.rounds, local_epochs=args.local_epochs,
                            iterations_per_epoch=args.iters, seed=args.seed, fold=0)
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
    header = ["method", *(short(c) for c in clients), "mean over clients", "runs ok"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        total = sum(1 for r in runs if r.variant.label == label)
        per_seed = dice_by_seed(runs, results, label)
        if not per_seed:
            lines.append(f"| {label} |" + " FAILED |" * (len(clients) + 1) + f" 0/{total} |")
            continue
        cells = [mean_std([d.get(c) for d in per_seed]) for c in clients]
        cells.append(mean_std([client_mean(d) for d in per_seed]))
        lines.append("| " + " | ".join([label, *cells, f"{len(per_seed)}/{total}"]) + " |")
    return "\n".join(lines)


def mean_over_seeds(runs: list[Run], results: dict[Run, dict], label: str, client: str | None) -> float | None:
    values = [client_mean(d) if client is None else d.get(client) for d in dice_by_seed(runs, results, label)]
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def goal_lines(runs: list[Run], results: dict[Run, dict], clients: tuple[str, ...]) -> list[str]:
    """The quality goals, each judged on the Dice measured, or 'not measured' with the reason."""
    above_goal = "mucald > splitfed on every client"
    local_goal = f"mucald mean >= local mean + {GOAL_MARGIN_OVER_LOCAL}"
    mucald = {c: mean_over_seeds(runs, results, "mucald", c) for c in clients}
    splitfed = {c: mean_over_seeds(runs, results, "splitfed", c) for c in clients}
    reason = unmeasured_reason(runs, results, {"mucald": mucald, "splitfed": splitfed})
    if reason:
        lines = [unmeasured_goal(above_goal, reason)]
    else:
        above = all(mucald[c] > splitfed[c] for c in clients)
        measured = ", ".join(f"{short(c)} {mucald[c]:.3f} vs {splitfed[c]:.3f}" for c in clients)
        lines = [goal_line(above_goal, above, measured)]
    ours, local = (mean_over_seeds(runs, results, m, None) for m in ("mucald", "local"))
    reason = unmeasured_reason(runs, results, {"mucald": {"any client": ours}, "local": {"any client": local}})
    if reason:
        lines.append(unmeasured_goal(local_goal, reason))
    else:
        lines.append(goal_line(local_goal, ours >= local + GOAL_MARGIN_OVER_LOCAL,
                               f"mucald {ours:.3f} vs local {local:.3f}, difference {ours - local:+.3f}"))
    return lines


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


def last_round_terms(run: Run) -> dict[str, dict[str, float]]:
    """client -> {loss term: value, "val_loss": value} of the last round in the run's log."""
    from mucald_unet.training.run_log import RunLog

    path = run.folder / LOG_FILE
    records = [r for r in RunLog(path).records() if r.get("event", "round") == "round"] if path.is_file() else []
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


def report(datasets: dict[str, tuple[Path, list[str]]], runs: list[Run], results: dict[Run, dict],
           labels: list[str], args: argparse.Namespace, seconds: float) -> str:
    import importlib.metadata
    import platform

    lines = ["# Federation quality: mucald vs splitfed, local and centralized", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"torch {importlib.metadata.version('torch')}",
             f"- budget, the same for every method: {args.rounds} round(s) x {args.local_epochs} local "
             f"epoch(s) x {args.iters} iterations, fold 0; seeds {', '.join(map(str, args.seeds))}",
             f"- {args.jobs} run(s) at a time, {max(1, args.threads // args.jobs)} torch thread(s) each; "
             f"wall time {seconds / 60:.1f} min (runs finished earlier are reused, not retimed)",
             "- Dice: each client's mean validation Dice (foreground classes) after the last round; "
             "mean ± std over seeds; 'mean over clients' averages the clients per seed first"]
    for data, (plans_path, clients) in datasets.items():
        data_runs = [r for r in runs if r.data == data]
        lines += ["", f"## {data}: validation Dice after round {args.rounds}", "",
                  f"Plan: {plans_path}", *plan_table(plans_path), "",
                  dice_table(data_runs, results, labels, tuple(clients)), "",
                  *goal_lines(data_runs, results, tuple(clients))]
        for label in labels:
            table = loss_table(data_runs, results, label, tuple(clients))
            if table:
                lines += ["", f"### {data}, {label}: last round's mean loss terms (mean over seeds)", "", table]
        failed = [r for r in data_runs if "error" in results[r]]
        for run in failed:
            lines += ["", f"FAILED {run.label} ({results[run]['error']}): see {run.folder / CHILD_LOG}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="Communication rounds.")
    parser.add_argument("--local-epochs", type=int, default=1, help="Local epochs per round.")
    parser.add_argument("--iters", type=int, default=25, help="Iterations per local epoch.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated methods.")
    parser.add_argument("--ablations", help="Extra mucald variants, comma-separated (e.g. no-daca,no-crdm); "
                        "join ablations of one variant with + (no-daca+no-crdm).")
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
    parser.add_argument("--out", type=Path, help="Also write the markdown report here.")
    # the child's interface (used by the parent; not meant to be typed)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--ablate", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plans", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clients", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--run-folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.local_epochs, args.iters, args.jobs, args.threads) < 1:
        parser.error("--rounds, --local-epochs, --iters, --jobs and --threads must be >= 1")
    return args


def variants_of(args: argparse.Namespace) -> list[Variant]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"error: unknown method(s) {', '.join(unknown)}; use any of {', '.join(METHODS)}.")
    try:
        return [Variant(m) for m in dict.fromkeys(methods)] + ablation_variants(args.ablations)
    except MucaldError as error:  # an unknown ablation name; the message lists the valid ones
        raise SystemExit(f"error: {error}") from None


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
        runs = [Run(data, variant, seed, plans_path, tuple(clients),
                    work / "runs" / data / variant.folder_name / f"seed{seed}")
                for data, (plans_path, clients) in datasets.items()
                for seed in args.seeds for variant in variants]
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
