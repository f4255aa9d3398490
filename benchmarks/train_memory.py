#!/usr/bin/env python3
"""Training memory against dataset size: peak RSS and peak anonymous memory of one training round
of the demo federation at 1x, 4x, 16x ... the size preset's training cases.

Each scale is a demo federation (data seed 0) whose every dataset has ``scale`` times the preset's
training cases (test cases unchanged), planned and preprocessed once per work folder, then trained
for one round (``mucald_train --rounds 1 --iters 25``-equivalent) in its own child process
(``--child``), so no scale's allocations leak into another's numbers.

    .venv/bin/python -m benchmarks.train_memory --scales 1 4 16 --work /tmp/tm --out train_memory.md

A scale's result is kept in the work folder (``runs/x<scale>.json``) and reused by a rerun with
the same plan and settings, so scales may be measured by separate (parallel) invocations and a
last one with every scale assembles the report.

The goal is judged on peak *anonymous* memory (RssAnon): memory the process owns and that would
have to be swapped out to be given back. RSS also counts file pages a process has mapped
(RssFile); those of memory-mapped cases are clean OS page cache, shared and dropped by the kernel
whenever memory is short, so they grow with what was read, not with what training needs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.reporting import (
    emit_report,
    goal_line,
    log,
    run_json_child,
    unmeasured_goal,
)
from benchmarks.train_step import DEMO_IDS, plan_federation

GOAL_TOLERANCE = 0.10  # peak RssAnon of every scale within 10 % of the 1x run's
SAMPLE_SECONDS = 0.01  # how often the child reads /proc/self/status for RssAnon


# ------------------------------------------------------------------------------------------ data

def scaled_counts(size: str, scale: int) -> dict[str, int]:
    """Training cases per demo dataset (recipe key) at ``scale`` times the preset's."""
    from preprocessing.demo import PRESETS, RECIPES

    return {r.key: scale * PRESETS[size].for_dataset(r.key).train for r in RECIPES}


def prepare_scaled_demo(work: Path, size: str, scale: int, workers: int = 1) -> tuple[Path, list[str]]:
    """The demo federation of ``size`` with ``scale`` x its training cases under ``work``, planned;
    built once per folder (a rerun with the same work folder reuses data and plans)."""
    from preprocessing.dataset_json import load_dataset_spec
    from preprocessing.demo import RECIPES, make_demo_federation
    from preprocessing.demo.federation import demo_folders

    raw, preprocessed = work / f"raw-demo-{size}-x{scale}", work / f"preprocessed-demo-{size}-x{scale}"
    counts = scaled_counts(size, scale)
    folders = demo_folders(raw)

    def written() -> bool:
        return all((f / "dataset.json").is_file() and load_dataset_spec(f).num_training == counts[r.key]
                   for r, f in zip(RECIPES, folders))

    if not written():
        shutil.rmtree(preprocessed, ignore_errors=True)  # plans of other data must not be reused
        started = time.perf_counter()
        make_demo_federation(raw, seed=0, size=size, overwrite=True, cases=counts)
        log(f"wrote the {size} demo federation x{scale} ({sum(counts.values())} training cases) to {raw} "
            f"in {time.perf_counter() - started:.0f} s")
    return plan_federation(raw, preprocessed, DEMO_IDS, workers)


def cases_on_disk(plans_path: Path) -> tuple[int, int]:
    """(training cases, bytes of their preprocessed files) over every client of the plan."""
    from planners.pipeline import client_cases_folder
    from planners.plans import load_plans

    plans = load_plans(plans_path)
    cases = size = 0
    for client in plans.clients.values():
        folder = client_cases_folder(plans_path, client)
        cases += len(list(folder.glob("*.json")))
        size += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return cases, size


# ------------------------------------------------------------------------------- child: measure

def memory_status() -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile of this process in bytes (Linux)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) * 1024  # kB
    return values


class PeakSampler:
    """Samples RssAnon every ``interval`` seconds in a thread: the kernel keeps no peak of it."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.peak_anon = memory_status()["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_anon = max(self.peak_anon, memory_status()["RssAnon"])

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, memory_status()["RssAnon"])


def measure_round(plans_path: Path, client_names: list[str], run_folder: Path, method: str,
                  rounds: int, iters: int, seed: int = 0) -> dict:
    """Build the trainer (opens every case) and train ``rounds`` rounds, sampling memory throughout."""
    from mucald_unet.config import Method, TrainingConfig
    from mucald_unet.training.trainer import FederatedTrainer

    config = TrainingConfig(method=Method(method), rounds=rounds, local_epochs=1, iterations_per_epoch=iters,
                            seed=seed, fold=0, device="cpu")
    shutil.rmtree(run_folder, ignore_errors=True)
    imported = memory_status()
    with PeakSampler() as sampler:
        started = time.perf_counter()
        trainer = FederatedTrainer(plans_path, client_names, config, run_folder)
        built = memory_status()
        build_seconds = time.perf_counter() - started
        anon_after_build = max(sampler.peak_anon, built["RssAnon"])
        started = time.perf_counter()
        trainer.run()
        train_seconds = time.perf_counter() - started
    end = memory_status()
    return {"peak_rss_bytes": end["VmHWM"], "peak_anon_bytes": sampler.peak_anon,
            "anon_after_imports_bytes": imported["RssAnon"], "anon_after_build_bytes": anon_after_build,
            "rss_after_build_bytes": built["VmRSS"], "file_rss_end_bytes": end["RssFile"],
            "build_seconds": build_seconds, "train_seconds": train_seconds,
            "train_cases": sum(len(c.data.train) for c in trainer.clients),
            "validation_cases": sum(len(c.data.validation) for c in trainer.clients)}


def child_main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    result = measure_round(args.plans, args.clients, args.run_folder, args.method, args.rounds, args.iters,
                           args.seed)
    print(json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------- parent: report

def run_child(plans_path: Path, client_names: list[str], run_folder: Path, args: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, "-m", "benchmarks.train_memory", "--child", "--plans", str(plans_path),
           "--run-folder", str(run_folder), "--method", args.method, "--rounds", str(args.rounds),
           "--iters", str(args.iters), "--threads", str(args.threads), "--seed", str(args.seed),
           "--clients", *client_names]
    return run_json_child(cmd, args.threads)


def measured_scale(plans_path: Path, client_names: list[str], runs: Path, scale: int,
                   args: argparse.Namespace) -> dict | None:
    """The child's result for one scale; a rerun with the same work folder, plan and settings
    reuses it (``runs/x<scale>.json``), so scales can also be measured by separate invocations.
    Delete those files, or use another work folder, to measure changed code."""
    settings = {"plans_sha256": hashlib.sha256(Path(plans_path).read_bytes()).hexdigest(), "method": args.method,
                "rounds": args.rounds, "iters": args.iters, "threads": args.threads, "seed": args.seed}
    stored = runs / f"x{scale}.json"
    if stored.is_file():
        saved = json.loads(stored.read_text())
        if saved.get("settings") == settings:
            log(f"    reusing {stored}")
            return saved["result"]
    result = run_child(plans_path, client_names, runs / f"x{scale}", args)
    if result is not None:
        runs.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps({"settings": settings, "result": result}, indent=2) + "\n")
    return result


def _mb(value: float) -> str:
    return f"{value / 2**20:.0f}"


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def results_table(scales: list[int], results: dict[int, dict | None], disk: dict[int, tuple[int, int]]) -> str:
    header = ["scale", "training cases (all clients)", "cases on disk MB", "peak RSS MB", "ratio",
              "peak RssAnon MB", "ratio", "RssAnon after opening the cases MB", "build s", "round s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = results.get(scales[0])
    for scale in scales:
        cases, size = disk.get(scale, (0, 0))
        r = results.get(scale)
        if r is None:
            lines.append(f"| {scale}x | {cases} | {_mb(size)} | FAILED |" + " |" * (len(header) - 4))
            continue
        lines.append("| " + " | ".join([
            f"{scale}x", str(cases), _mb(size), _mb(r["peak_rss_bytes"]),
            _ratio(r["peak_rss_bytes"], base and base["peak_rss_bytes"]), _mb(r["peak_anon_bytes"]),
            _ratio(r["peak_anon_bytes"], base and base["peak_anon_bytes"]), _mb(r["anon_after_build_bytes"]),
            f"{r['build_seconds']:.1f}", f"{r['train_seconds']:.1f}"]) + " |")
    return "\n".join(lines)


def goal_lines(scales: list[int], results: dict[int, dict | None]) -> list[str]:
    """Peak RssAnon flat within GOAL_TOLERANCE from the first scale to the last, judged on what ran."""
    goal = f"peak RssAnon flat within {GOAL_TOLERANCE:.0%} from {scales[0]}x to {scales[-1]}x"
    if len(scales) < 2:
        return [unmeasured_goal(goal, "only one scale was asked for")]
    missing = [f"{s}x" for s in scales if results.get(s) is None]
    if missing:
        return [unmeasured_goal(goal, f"no result at {', '.join(missing)}")]
    base = results[scales[0]]["peak_anon_bytes"]
    ratios = {s: results[s]["peak_anon_bytes"] / base for s in scales}
    worst = max(scales, key=lambda s: abs(ratios[s] - 1))
    measured = ", ".join(f"{s}x {ratios[s]:.2f}" for s in scales[1:])
    return [goal_line(goal, abs(ratios[worst] - 1) <= GOAL_TOLERANCE,
                      f"ratios to {scales[0]}x: {measured}; {scales[0]}x peak {_mb(base)} MB")]


def environment_lines(args: argparse.Namespace, plans: dict[int, Path]) -> list[str]:
    import importlib.metadata

    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "?"
    counts = ", ".join(f"{k} {v}" for k, v in scaled_counts(args.size, 1).items())
    return [f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
            f"Python {platform.python_version()}, torch {torch_version}",
            f"- data: demo `{args.size}` (data seed 0) with scale x the preset's training cases ({counts}) "
            "per dataset, test cases unchanged; planned 2d for the cpu target",
            *[f"- plans {s}x: {p}" for s, p in plans.items()],
            f"- per child: `--method {args.method} --rounds {args.rounds} --iters {args.iters}`, fold 0, "
            f"seed {args.seed}, {args.threads} torch threads; trainer built (all cases opened) and trained "
            "(validation included)",
            "- peak RSS: VmHWM of the child (imports, cases, trainer, validation; mapped file pages count "
            f"once touched); peak RssAnon: /proc/self/status sampled every {SAMPLE_SECONDS * 1000:.0f} ms "
            "(anonymous memory only: what the goal is judged on, see the module docstring)"]


# ------------------------------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16],
                        help="Multiples of the preset's training cases; the first is the reference.")
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium"],
                        help="Demo size preset that is scaled (mucald_make_demo --size).")
    parser.add_argument("--method", default="mucald", choices=["mucald", "splitfed", "local", "centralized"])
    parser.add_argument("--rounds", type=int, default=1, help="Rounds per child.")
    parser.add_argument("--iters", type=int, default=25, help="Iterations per round.")
    parser.add_argument("--threads", type=int, default=2, help="Torch threads per child.")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="Preprocessing processes.")
    parser.add_argument("--seed", type=int, default=0, help="Training seed.")
    parser.add_argument("--work", type=Path, help="Work folder for data, plans and run folders "
                        "(default: a temp dir, removed at the end unless --keep).")
    parser.add_argument("--keep", action="store_true", help="Keep the temp work folder.")
    parser.add_argument("--out", type=Path, help="Also write the markdown report here.")
    # the child's interface (used by the parent; not meant to be typed)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plans", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clients", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--run-folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.scales) < 1 or args.rounds < 1 or args.iters < 1 or args.threads < 1:
        parser.error("--scales, --rounds, --iters and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="mucald-train-memory-")) if temp else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder: {work}")
    try:
        plans, results, disk = {}, {}, {}
        for scale in args.scales:
            plans_path, client_names = prepare_scaled_demo(work, args.size, scale, args.workers)
            plans[scale], disk[scale] = plans_path, cases_on_disk(plans_path)
            log(f"[{scale}x] {disk[scale][0]} training cases, {_mb(disk[scale][1])} MB on disk: training")
            results[scale] = measured_scale(plans_path, client_names, work / "runs", scale, args)
            if results[scale] is not None:
                r = results[scale]
                log(f"    peak RSS {_mb(r['peak_rss_bytes'])} MB, peak RssAnon {_mb(r['peak_anon_bytes'])} MB, "
                    f"round {r['train_seconds']:.0f} s")
        report = ["# Training memory against dataset size", "", *environment_lines(args, plans), "",
                  results_table(args.scales, results, disk), "",
                  f"Ratios are to {args.scales[0]}x.", "", *goal_lines(args.scales, results)]
        emit_report("\n".join(report) + "\n", args.out)
        return 0 if all(r is not None for r in results.values()) else 1
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
