#!/usr/bin/env python3
"""Cost of the deployment: one federation iteration in-process against the same training with the
server and every client as separate NVIDIA FLARE processes over mutual TLS on loopback, float32 and
float16 on the wire, in one run.

An iteration is one training step of every client. In-process the clients step interleaved in one
process (``--threads`` torch threads); deployed they step concurrently, one process per site
(``--site-threads`` each), so a federation iteration costs the slowest client's step. Seconds per
iteration are the training seconds of the rounds after the first (the first pays for warm-up), over
the iterations; bytes per iteration count what crossed during training steps (in-process: the
messages' float32 tensors, so not for the in-process float16 row; deployed: the bytes FLARE carried). Dice: the mean final validation Dice over the
clients; float16's cost in Dice is also measured in-process through the wire codec, where the
runs are deterministic and differ only by the narrowing (deployed clients step in arrival order);
``--seeds 0 1 2`` repeats the in-process pair per seed and reports the paired differences.

    .venv/bin/python -m benchmarks.deploy_step --size small --rounds 3 --iters 10 --work /tmp/deploy --out deploy.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.reporting import emit_report, goal_line, log
from benchmarks.train_step import prepare_demo
from mucald_unet.config import Method, TrainingConfig
from mucald_unet.training.trainer import LOG_FILE, MANIFEST_FILE, FederatedTrainer

GOAL_RATIO = 1.5  # deployed <= 1.5x the in-process step
GOAL_BYTES = 0.5  # float16: half the bytes
GOAL_DICE = 0.01  # float16: Dice within 0.01


@dataclass(frozen=True)
class Measured:
    label: str
    seconds_per_iteration: float
    bytes_per_iteration: float | None  # None: not measured in that variant
    mean_dice: float
    wall_seconds: float


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def measure_in_process(plans: Path, clients: list[str], config: TrainingConfig, folder: Path,
                       narrow: bool) -> Measured:
    started = time.perf_counter()
    FederatedTrainer(plans, clients, config, folder, narrow_wire=narrow).run(overwrite=True)
    records = read_lines(folder / LOG_FILE)
    later = [r for r in records if r["round"] > 0 and r["client"] == clients[0]]
    seconds = statistics.mean(r["train_seconds"] for r in later) / config.iterations_per_round
    manifest = [e for e in read_lines(folder / MANIFEST_FILE) if e["step"] >= 0 and e["round"] > 0]
    # the manifest counts the messages' float32 tensors; what float16 carries is measured by the deployed row
    bytes_per_iteration = (None if narrow else
                           sum(e["bytes"] for e in manifest) / (len(later) * config.iterations_per_round))
    final = [r["mean_val_dice"] for r in records if r["round"] == config.rounds - 1]
    label = "in-process" + (", float16 through the wire codec" if narrow else "") + f", seed {config.seed}"
    return Measured(label, seconds, bytes_per_iteration, statistics.mean(final), time.perf_counter() - started)


def measure_deployed(plans: Path, clients: list[str], config: TrainingConfig, work: Path, narrow: bool,
                     site_threads: int) -> Measured:
    from mucald_unet.deployment.flare_job import FlareJob, run_on_loopback  # nvflare: the deploy extra

    results = work / "results"
    shutil.rmtree(work, ignore_errors=True)
    job = FlareJob(plans, tuple(clients), config, results, call_timeout=600.0, threads=site_threads,
                   narrow_wire=narrow)
    started = time.perf_counter()
    statuses = run_on_loopback(job, work / "flare")
    if len(statuses) > 1:  # a resubmitted job measures recovery, not the step
        raise SystemExit(f"the deployed run lost a site and was resubmitted ({statuses}); rerun the benchmark")
    wall = time.perf_counter() - started
    per_client = {c: [r for r in read_lines(results / c / "log.jsonl") if r["round"] > 0] for c in clients}
    rounds = sorted({r["round"] for records in per_client.values() for r in records})
    slowest = [max(r["train_seconds"] for c in clients for r in per_client[c] if r["round"] == k) for k in rounds]
    carried = sum(r["train_wire_bytes"] for records in per_client.values() for r in records)
    final = [next(r["mean_val_dice"] for r in per_client[c] if r["round"] == config.rounds - 1) for c in clients]
    label = "deployed (FLARE, mTLS, loopback)" + (", float16 on the wire" if narrow else "")
    return Measured(label, statistics.mean(slowest) / config.iterations_per_round,
                    carried / (len(rounds) * config.iterations_per_round), statistics.mean(final), wall)


def report(rows: list[Measured], args: argparse.Namespace, plans: Path) -> str:
    base = rows[0]
    lines = ["# Deployment step cost", "",
             f"Demo federation `{args.size}`, method {args.method}, {args.rounds} rounds x {args.iters} iterations; "
             f"in-process {args.threads} torch threads, deployed sites {args.site_threads} each; "
             f"torch {torch.__version__}; plan `{plans}`.", "",
             "| variant | s / iteration | ratio | bytes / iteration | ratio | mean final val Dice | wall s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.label} | {row.seconds_per_iteration:.3f} | "
                     f"{row.seconds_per_iteration / base.seconds_per_iteration:.2f} | "
                     f"{_bytes_cells(row.bytes_per_iteration, base.bytes_per_iteration)}"
                     f" | {row.mean_dice:.4f} | {row.wall_seconds:.0f} |")
    lines.append("")
    deployed = next((r for r in rows if r.label.startswith("deployed") and "float16" not in r.label), None)
    deployed16 = next((r for r in rows if r.label.startswith("deployed") and "float16" in r.label), None)
    wire16 = next((r for r in rows if r.label.startswith("in-process") and "float16" in r.label), None)
    if deployed:
        ratio = deployed.seconds_per_iteration / base.seconds_per_iteration
        lines.append(goal_line(f"deployed step <= {GOAL_RATIO}x in-process", ratio <= GOAL_RATIO, f"{ratio:.2f}x"))
    if deployed and deployed16:
        ratio = deployed16.bytes_per_iteration / deployed.bytes_per_iteration
        lines.append(goal_line(f"float16 bytes <= {GOAL_BYTES}x float32", ratio <= GOAL_BYTES + 0.01, f"{ratio:.3f}x"))
    if wire16:
        lines += dice_lines(rows)
    return "\n".join(lines) + "\n"


def dice_lines(rows: list[Measured]) -> list[str]:
    """float16's change in final Dice against float32 in-process, paired by seed, and the goal on their mean."""
    in_process = [r for r in rows if r.label.startswith("in-process")]
    by_seed: dict[str, dict[bool, float]] = {}
    for row in in_process:
        seed = row.label.rsplit("seed ", 1)[-1]
        by_seed.setdefault(seed, {})["float16" in row.label] = row.mean_dice
    changes = [pair[True] - pair[False] for pair in by_seed.values() if len(pair) == 2]
    mean = statistics.mean(changes)
    spread = f", per seed {', '.join(f'{c:+.4f}' for c in changes)}" if len(changes) > 1 else ""
    return [goal_line(f"float16 Dice within {GOAL_DICE} (in-process, paired by seed, mean of {len(changes)})",
                      abs(mean) <= GOAL_DICE, f"{mean:+.4f}{spread}")]


def _bytes_cells(value: float | None, base: float) -> str:
    return "- (see the deployed float16 row) | -" if value is None else f"{value / 1e6:.3f} MB | {value / base:.2f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium"])
    parser.add_argument("--method", default="mucald", type=Method, help="A registered method (mucald_train --method).")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds (the first is not timed).")
    parser.add_argument("--iters", type=int, default=10, help="Iterations per round.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the in-process run.")
    parser.add_argument("--site-threads", type=int, default=1, help="torch threads of each deployed site.")
    parser.add_argument("--skip-deployed", action="store_true", help="Only the in-process rows (no FLARE).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="Seeds of the in-process float32/float16 pair (the deployed rows use the first).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mucald-deploy-step"))
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    plans, clients = prepare_demo(args.work / "demo", args.size)
    configs = [TrainingConfig(method=Method(args.method), rounds=args.rounds, iterations_per_epoch=args.iters, seed=seed)
               for seed in args.seeds]
    config = configs[0]
    rows = []
    for seeded in configs:
        for narrow in (False, True):
            log(f"in-process, seed {seeded.seed}, narrow={narrow}")
            rows.append(measure_in_process(plans, clients, seeded, args.work / f"inprocess_{seeded.seed}_{int(narrow)}",
                                           narrow))
    if not args.skip_deployed:
        for narrow in (False, True):
            log(f"deployed, narrow={narrow}")
            rows.append(measure_deployed(plans, clients, config, args.work / f"deployed_{int(narrow)}", narrow,
                                         args.site_threads))
    emit_report(report(rows, args, plans), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
