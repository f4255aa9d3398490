#!/usr/bin/env python3
"""Cost of one training iteration, mucald against splitfed on the same plan: seconds, peak memory,
and bytes crossing the client/server boundary.

Besides wall seconds each child reports the CPU seconds its process used per iteration (all its
threads). On a machine shared with other work, wall time with more torch threads than idle cores
grows erratically (threads wait on each other at every operation) while CPU time at
``--threads 1`` barely moves, so the CPU table is the comparison to trust there.

An iteration is one ``train_step`` of every client, interleaved as the trainer runs them. Each
method (and each ``--ablations`` variant of mucald) is measured in its own child process
(``--child``), so one variant's allocations and thread pools never leak into another's numbers;
the parent alternates the variants ``--repeats`` times and reports medians as a markdown table.

    .venv/bin/python -m benchmarks.train_step --size small --repeats 3 --out train_step.md

This module also owns building the demo federation and its plan in a work folder
(``prepare_demo``), which ``benchmarks.federation_quality`` reuses.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from benchmarks.reporting import emit_report, goal_line, log, run_json_child, unmeasured_goal
from preprocessing.errors import MucaldError

# The project's heavy modules (torch, the planners) are imported inside the functions that use
# them, so that a child process loads only the trainer and the parent only the planners.

BASELINE = "splitfed"
DEMO_IDS = ("1", "2", "3")
GOAL_TIME_RATIO = 1.3
GOAL_BYTES_TOLERANCE = 0.05
PLANNED_MARKER = "planned.txt"  # written into a work folder's preprocessed root once it is complete


# ------------------------------------------------------------------------------------------ data

def plan_federation(raw: Path, preprocessed: Path, dataset_ids: tuple[str, ...],
                    workers: int = 1, cut_depth: int = 0) -> tuple[Path, list[str]]:
    """Plan and preprocess ``dataset_ids`` as a 2D federation with the CPU budget (as
    ``mucald_plan_and_preprocess -d IDS --config 2d --target cpu --cut-depth K``); reuses finished plans."""
    from planners.budget import Preset
    from planners.locate import client_names, find_plans
    from planners.pipeline import PipelineConfig, plan_and_preprocess
    from planners.planner import PlannerConfig

    done = preprocessed / PLANNED_MARKER  # plans.json is written before the cases: it alone proves little
    if not done.is_file():
        shutil.rmtree(preprocessed, ignore_errors=True)
        config = PipelineConfig(raw_root=raw, preprocessed_root=preprocessed, datasets=tuple(dataset_ids),
                                planner=PlannerConfig(preset=Preset("cpu"), dimensionality="2d", cut_depth=cut_depth),
                                num_processes=workers)
        started = time.perf_counter()
        plans_path = plan_and_preprocess(config)
        done.write_text(" ".join(dataset_ids) + "\n")
        log(f"planned {', '.join(dataset_ids)} in {time.perf_counter() - started:.1f} s: {plans_path}")
    plans_path = find_plans(preprocessed, dataset_ids)
    return plans_path, client_names(plans_path, dataset_ids)


def prepare_demo(work: Path, size: str, workers: int = 1) -> tuple[Path, list[str]]:
    """The demo federation (data seed 0) of ``size`` under ``work``, planned; built once per folder."""
    from preprocessing.demo import make_demo_federation
    from preprocessing.demo.federation import demo_folders

    raw, preprocessed = work / f"raw-demo-{size}", work / f"preprocessed-demo-{size}"
    if not all((folder / "dataset.json").is_file() for folder in demo_folders(raw)):
        shutil.rmtree(preprocessed, ignore_errors=True)  # plans of other data must not be reused
        make_demo_federation(raw, seed=0, size=size, overwrite=True)
        log(f"wrote the {size} demo federation to {raw}")
    return plan_federation(raw, preprocessed, DEMO_IDS, workers)


def plan_table(plans_path: Path) -> list[str]:
    """Markdown bullets of what each client trains on: patch and batch size."""
    from planners.plans import load_plans

    plans = load_plans(plans_path)
    return [f"- {name}: patch {' x '.join(map(str, c.patch_size))}, batch {c.batch_size}"
            for name, c in plans.clients.items()]


# ------------------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Variant:
    """A method, the ablations switched off in it and its compute precision; ``label`` is what the
    tables show."""

    method: str
    ablations: str = ""  # comma-separated, as `mucald_train --ablate`
    # as `mucald_train --precision`; keyword-only, so subclasses' positional fields keep their places
    precision: str = field(default="fp32", kw_only=True)

    @property
    def label(self) -> str:
        return (self.method + (f" --ablate {self.ablations}" if self.ablations else "")
                + (f" --precision {self.precision}" if self.precision != "fp32" else ""))

    @property
    def folder_name(self) -> str:
        """As the trainer names run folders: ``mucald__no-daca__no-diffusion__precision-bf16``."""
        precision = [f"precision-{self.precision}"] if self.precision != "fp32" else []
        return "__".join([self.method, *(a for a in self.ablations.split(",") if a), *precision])


def ablation_variants(text: str | None, precision: str = "fp32") -> list[Variant]:
    """``"no-daca,no-diffusion"`` -> one mucald variant each; ``+`` joins ablations into one variant
    (``"no-daca+no-crdm"``). Names are checked by the config's own parser."""
    from mucald_unet.config import parse_ablations

    variants = []
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        names = ",".join(sorted(a.value for a in parse_ablations(part.replace("+", ","))))
        variants.append(Variant("mucald", names, precision=precision))
    return variants


def all_variants(ablations: str | None, precisions: Sequence[str]) -> list[Variant]:
    """splitfed, mucald and each ablation, at every precision asked for (fp32 first: the baseline)."""
    ordered = sorted(set(precisions), key=lambda p: p != "fp32")
    return [v for p in ordered for v in (Variant(BASELINE, precision=p), Variant("mucald", precision=p),
                                         *ablation_variants(ablations, p))]


# ------------------------------------------------------------------------------- child: measure

def measure_iterations(plans_path: Path, client_names: list[str], variant: Variant, run_folder: Path,
                       warmup: int, iters: int, seed: int = 0, device: str = "cpu") -> dict:
    """Build the trainer, run ``warmup`` untimed iterations, then time ``iters``.

    Steps are numbered from the middle of a long epoch, where the auxiliary weights are at
    their targets, so the losses computed are those of the run's steady state.
    """
    import torch

    from mucald_unet.config import Method, TrainingConfig, parse_ablations
    from mucald_unet.training.trainer import FederatedTrainer

    total = warmup + iters
    config = TrainingConfig(method=Method(variant.method), ablations=parse_ablations(variant.ablations),
                            rounds=1, local_epochs=1, iterations_per_epoch=20 * total, seed=seed, fold=0,
                            device=device, precision=variant.precision)
    first_step = config.iterations_per_round // 2
    started = time.perf_counter()
    trainer = FederatedTrainer(plans_path, client_names, config, run_folder)
    build_seconds = time.perf_counter() - started

    def iteration(step: int) -> None:
        for client in trainer.clients:
            client.train_step(0, step)
        if device == "cuda":
            torch.cuda.synchronize()

    for i in range(warmup):
        iteration(first_step + i)
    trainer.transport.drain_manifest()
    seconds, cpu_seconds = [], []
    for i in range(warmup, total):
        started, cpu_started = time.perf_counter(), time.process_time()
        iteration(first_step + i)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    manifest = trainer.transport.drain_manifest()
    crossed = sum(e.num_bytes for e in manifest if e.step >= 0)
    batch_cpu_seconds = batch_production_cpu_seconds(trainer.clients, iters)
    return {"variant": variant.label, "seconds_per_iter": statistics.median(seconds),
            "seconds_min": min(seconds), "seconds_max": max(seconds), "build_seconds": build_seconds,
            "cpu_seconds_per_iter": statistics.median(cpu_seconds), "cpu_seconds_min": min(cpu_seconds),
            "batch_cpu_seconds_per_iter": statistics.median(batch_cpu_seconds),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
            "bytes_per_iter": crossed / iters, "messages_per_iter": len(manifest) / iters,
            "threads": torch.get_num_threads(), "clients": len(trainer.clients)}


def batch_production_cpu_seconds(clients: Sequence, iters: int) -> list[float]:
    """CPU seconds of making one iteration's batches (every client's patch cut and augmentation),
    ``iters`` times: the work the trainer's background thread must finish within one step for
    the network never to wait. Run after the timed steps, so it does not change them."""
    seconds = []
    for _ in range(iters):
        started = time.process_time()
        for client in clients:
            batch = client.sampler.sample_batch()
            client.augment(batch.images, batch.labels)
        seconds.append(time.process_time() - started)
    return seconds


def child_main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    variant = Variant(args.child, args.ablate or "", precision=args.precision)
    result = measure_iterations(args.plans, args.clients, variant, args.run_folder, args.warmup,
                                args.iters, args.seed, args.device)
    print(json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------- parent: report

def run_child(variant: Variant, plans_path: Path, client_names: list[str], run_folder: Path,
              args: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--child", variant.method,
           "--plans", str(plans_path), "--run-folder", str(run_folder), "--warmup", str(args.warmup),
           "--iters", str(args.iters), "--threads", str(args.threads), "--seed", str(args.seed),
           "--device", args.device, "--precision", variant.precision, "--clients", *client_names]
    if variant.ablations:
        cmd += ["--ablate", variant.ablations]
    return run_json_child(cmd, args.threads)


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def results_table(variants: list[Variant], results: dict[str, list[dict]], repeats: int) -> str:
    header = ["method", "s/iter", "ratio to splitfed", "peak RSS MB", "ratio", "bytes/iter", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    medians = {label: {key: statistics.median(r[key] for r in runs)
                       for key in ("seconds_per_iter", "peak_rss_bytes", "bytes_per_iter")}
               for label, runs in results.items() if runs}
    base = medians.get(BASELINE)
    for variant in variants:
        m = medians.get(variant.label)
        if m is None:
            lines.append(f"| {variant.label} | FAILED |" + " |" * (len(header) - 2))
            continue
        seconds = f"{m['seconds_per_iter']:.3f}"
        if repeats > 1:
            runs = results[variant.label]
            seconds += (f" ({min(r['seconds_per_iter'] for r in runs):.3f}-"
                        f"{max(r['seconds_per_iter'] for r in runs):.3f})")
        lines.append("| " + " | ".join([
            variant.label, seconds, ratio(m["seconds_per_iter"], base and base["seconds_per_iter"]),
            f"{m['peak_rss_bytes'] / 2**20:.0f}", ratio(m["peak_rss_bytes"], base and base["peak_rss_bytes"]),
            f"{m['bytes_per_iter']:,.0f}", ratio(m["bytes_per_iter"], base and base["bytes_per_iter"])]) + " |")
    return "\n".join(lines)


def cpu_table(variants: list[Variant], results: dict[str, list[dict]]) -> str:
    """CPU seconds per iteration (median over the repeats of each child's median) and their ratio,
    beside the CPU seconds of producing that iteration's batches (the background thread's work)
    and its share of the step's; children of older versions, without a measurement, show "-"."""
    lines = ["| method | CPU s/iter | ratio to splitfed | fastest iteration CPU s | batch production CPU s/iter "
             "| share of the step |", "|---|---|---|---|---|---|"]

    def median(runs: list[dict], key: str) -> float | None:
        return statistics.median(r[key] for r in runs) if all(key in r for r in runs) else None

    medians = {label: (median(runs, "cpu_seconds_per_iter"), min(r["cpu_seconds_min"] for r in runs),
                       median(runs, "batch_cpu_seconds_per_iter"))
               for label, runs in results.items() if runs and median(runs, "cpu_seconds_per_iter") is not None}
    base = medians.get(BASELINE, (None, None, None))[0]
    for variant in variants:
        if variant.label in medians:
            cpu, fastest, batches = medians[variant.label]
            production = ("- | -" if batches is None else f"{batches:.3f} | {batches / cpu:.0%}" if cpu > 0
                          else f"{batches:.3f} | -")
            lines.append(f"| {variant.label} | {cpu:.3f} | {ratio(cpu, base)} | {fastest:.3f} | {production} |")
    return "\n".join(lines)


def goal_lines(results: dict[str, list[dict]]) -> list[str]:
    """The cost goals of mucald against splitfed, judged on the medians measured (never assumed)."""
    def median(label: str, key: str) -> float | None:
        runs = results.get(label) or []
        return statistics.median(r[key] for r in runs) if runs else None

    time_goal = f"time mucald / {BASELINE} <= {GOAL_TIME_RATIO}"
    bytes_goal = f"bytes mucald / {BASELINE} within {GOAL_BYTES_TOLERANCE:.0%}"
    missing = [label for label in ("mucald", BASELINE) if median(label, "seconds_per_iter") is None]
    if missing:
        reason = f"{' and '.join(missing)} did not run" if all(label not in results for label in missing) \
            else f"no result from {' and '.join(missing)}"
        return [unmeasured_goal(time_goal, reason), unmeasured_goal(bytes_goal, reason)]
    ours, base = median("mucald", "seconds_per_iter"), median(BASELINE, "seconds_per_iter")
    lines = [goal_line(time_goal, ours / base <= GOAL_TIME_RATIO, f"{ours / base:.2f} = {ours:.3f} s / {base:.3f} s")
             if base > 0 else unmeasured_goal(time_goal, f"{BASELINE} measured 0 s")]
    bf16_ours, bf16_base = (median(f"{m} --precision bf16", "seconds_per_iter") for m in ("mucald", BASELINE))
    if bf16_ours and bf16_base and base > 0:
        lines.append(goal_line(f"{time_goal}, both at --precision bf16", bf16_ours / bf16_base <= GOAL_TIME_RATIO,
                               f"{bf16_ours / bf16_base:.2f} = {bf16_ours:.3f} s / {bf16_base:.3f} s; bf16 mucald is "
                               f"{bf16_ours / base:.2f}x fp32 splitfed and {ours / bf16_ours:.2f}x faster than fp32 mucald"))
    ours, base = median("mucald", "bytes_per_iter"), median(BASELINE, "bytes_per_iter")
    if base > 0:
        within = abs(ours / base - 1) <= GOAL_BYTES_TOLERANCE
        lines.append(goal_line(bytes_goal, within, f"{ours / base:.3f} = {ours:,.0f} / {base:,.0f} bytes per iteration"))
    else:
        lines.append(unmeasured_goal(bytes_goal, f"{BASELINE} sent 0 bytes"))
    return lines


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs other work keeps busy right now (this process sleeps while sampling)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):  # not Linux: the 1-minute load average instead
        return os.getloadavg()[0]
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def environment_lines(args: argparse.Namespace, plans_path: Path, busy: tuple[float, float]) -> list[str]:
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "?"
    cpus = os.cpu_count() or 1
    lines = [f"- machine: {platform.machine()}, {cpus} CPUs, {platform.platform()}, "
             f"Python {platform.python_version()}, torch {torch_version}",
             f"- data: demo `{args.size}` (data seed 0), planned 2d for the cpu target: {plans_path}",
             *plan_table(plans_path),
             f"- per child: {args.threads} torch threads, {args.warmup} warm-up + {args.iters} timed "
             f"iterations (median), training seed {args.seed}; {args.repeats} repeat(s), variants "
             "alternated, median of the repeats (min-max of the repeats in brackets)",
             "- peak RSS: ru_maxrss of the child (imports, data and trainer included); bytes: manifest "
             "bytes of training messages (step >= 0) in both directions, all clients, per iteration",
             f"- CPUs busy with other work: {busy[0]:.1f} before the first child, {busy[1]:.1f} after the last"]
    if max(busy) > 0.5 and max(busy) + args.threads > cpus:
        lines.append(f"- WARNING: other work was running ({max(busy):.1f} of {cpus} CPUs busy). With more "
                     "torch threads than idle cores, iteration times can grow by orders of magnitude "
                     "(threads wait on each other at every operation); rerun on an idle machine or "
                     "with fewer --threads.")
    return lines


# ------------------------------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium"],
                        help="Demo federation size (mucald_make_demo --size).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed iterations per child.")
    parser.add_argument("--iters", type=int, default=20, help="Timed iterations per child (median).")
    parser.add_argument("--repeats", type=int, default=3, help="Children per variant, alternated (median).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per child.")
    parser.add_argument("--seed", type=int, default=0, help="Training seed.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Where the children train.")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="Compute precisions to measure every variant at (ratios stay to fp32 splitfed).")
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--ablations", help="Extra mucald variants, comma-separated (e.g. no-daca,no-diffusion); "
                        "join ablations of one variant with + (no-daca+no-crdm).")
    parser.add_argument("--work", type=Path, help="Work folder for data, plans and run folders "
                        "(default: a temp dir, removed at the end unless --keep).")
    parser.add_argument("--keep", action="store_true", help="Keep the temp work folder.")
    parser.add_argument("--out", type=Path, help="Also write the markdown report here.")
    # the child's interface (used by the parent; not meant to be typed)
    parser.add_argument("--child", choices=["mucald", "splitfed"], help=argparse.SUPPRESS)
    parser.add_argument("--ablate", help=argparse.SUPPRESS)
    parser.add_argument("--plans", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clients", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--run-folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.iters < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--warmup must be >= 0 and --iters, --repeats, --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    try:
        variants = all_variants(args.ablations, args.precisions)
    except MucaldError as error:  # an unknown ablation name; the message lists the valid ones
        raise SystemExit(f"error: {error}") from None
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="mucald-train-step-")) if temp else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder: {work}")
    try:
        plans_path, client_names = prepare_demo(work, args.size, workers=min(2, os.cpu_count() or 1))
        busy_before = busy_cpus()
        results: dict[str, list[dict]] = {v.label: [] for v in variants}
        for repeat in range(args.repeats):
            for variant in variants:
                run_folder = work / "runs" / "train_step" / variant.folder_name / f"rep{repeat}"
                log(f"[{variant.label}] repeat {repeat + 1}/{args.repeats}")
                result = run_child(variant, plans_path, client_names, run_folder, args)
                if result is not None:
                    results[variant.label].append(result)
                    log(f"    {result['seconds_per_iter']:.3f} s/iter ({result['cpu_seconds_per_iter']:.3f} CPU s), peak RSS "
                        f"{result['peak_rss_bytes'] / 2**20:.0f} MB, {result['bytes_per_iter']:,.0f} bytes/iter")
        report = ["# Training iteration: mucald vs splitfed", "",
                  *environment_lines(args, plans_path, (busy_before, busy_cpus())), "",
                  results_table(variants, results, args.repeats), "",
                  "Ratios are to splitfed (below 1.00x: cheaper). An iteration is one step of every client.", "",
                  "CPU time per iteration (the child's process, all threads; robust to other work on the machine "
                  "at --threads 1):", "", cpu_table(variants, results), "",
                  *goal_lines(results)]
        text = "\n".join(report) + "\n"
        emit_report(text, args.out)
        return 0 if all(results.values()) else 1
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
