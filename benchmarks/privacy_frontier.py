#!/usr/bin/env python3
"""The privacy frontier: Dice against the strongest attack for every method, defence and cut depth.

On the demo federation (data seed 0), each cut depth gets its own plan; every (cut, method,
defence, seed) trains under the same budget, and seed 0 of each is audited (``mucald_audit``:
inverse networks, white-box inversion, label inference at split 2). The report is markdown: per
client, Dice (mean +- std over seeds), the strongest reconstruction's SSIM with its interval and its
re-identification rate, the best label attack's foreground Dice and accuracy beside the prior's,
whether the point is on the Pareto frontier (no other point has both higher Dice and lower
SSIM), and the issue's goal lines; plus a plot of the frontier. Finished trainings and attacks are
reused when the same ``--work`` is given again.

    .venv/bin/python -m benchmarks.privacy_frontier --work /tmp/pf --cut-depths 0 1 \\
        --methods splitfed mucald --defences none quantise:2 adversary:0.3 --seeds 0 1 2 --out frontier.md

``--points METHOD/DEFENCE/CUT ...`` measures exactly those configurations instead of the grid (e.g. to
report, in one table, points that earlier runs of the same ``--work`` trained: nothing is redone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.reporting import emit_report, goal_line, log
from benchmarks.train_step import DEMO_IDS, plan_federation

GOAL_DICE_GAP = 0.02  # within 2 Dice points of splitfed at the full-resolution cut ...
GOAL_SSIM = 0.30  # ... with the strongest reconstruction at SSIM <= 0.3
GOAL_REID = 0.25  # ... top-1 re-identification <= 25 %
GOAL_LABEL_POINTS = 0.10  # ... and label inference within 10 points of the prior's accuracy


@dataclass(frozen=True)
class Point:
    """One (cut, method, defence) on one client."""

    cut: int
    method: str
    defence: str
    client: str
    dice: list[float]
    ssim: dict | None  # the strongest reconstruction: attack, mean, ci95
    reid: float | None  # top-1 among the attacked cases (saturates: 8 candidates)
    labels: dict | None  # best label attack: name, accuracy, foreground Dice; the prior's accuracy
    reid_gallery: float | None = None  # top-1 among them plus the attacker's auxiliary patches

    @property
    def reid_for_goal(self) -> float | None:
        """The gallery's re-identification where the audit scored it (the issue's bound means a
        search among many patients, not among the 8 attacked), else the attacked-set one."""
        return self.reid if self.reid_gallery is None else self.reid_gallery

    @property
    def name(self) -> str:
        return f"{self.method}, {self.defence}, cut {self.cut}"

    @property
    def mean_dice(self) -> float:
        return statistics.mean(self.dice)


def train(plans_path: Path, results: Path, method: str, defence: str, seed: int, rounds: int, iters: int) -> str:
    """One training (reused when finished); its run name."""
    from mucald_unet.config import DefenceConfig, Method, TrainingConfig
    from mucald_unet.training.trainer import FederatedTrainer, run_folder_for, run_is_finished

    config = TrainingConfig(method=Method(method), defence=DefenceConfig.parse(None if defence == "none" else defence),
                            rounds=rounds, iterations_per_epoch=iters, seed=seed)
    folder = run_folder_for(results, plans_path, config)
    if not run_is_finished(folder):
        started = time.perf_counter()
        FederatedTrainer(plans_path, _clients(plans_path), config, folder).run(overwrite=True)
        log(f"trained {folder.parent.name} in {time.perf_counter() - started:.0f} s")
    return folder.parent.name


def _clients(plans_path: Path) -> list[str]:
    from planners.plans import load_plans
    return list(load_plans(plans_path).clients)


def final_dice(results: Path, plans_path: Path, run: str, client: str) -> float:
    from inference.audit.report import final_dice as logged
    value = logged(results, plans_path, run, 0, client)
    if value is None:
        raise RuntimeError(f"{run} has no validation Dice for {client}")
    return value


def audit(plans_path: Path, results: Path, out: Path, runs: list[str], args: argparse.Namespace) -> dict:
    """``mucald_audit`` on ``runs`` (finished attacks are reused); its audit.json."""
    from inference.commands.audit import main as audit_main
    argv = ["-d", *DEMO_IDS, "-o", str(out), "--preprocessed", str(plans_path.parent.parent),
            "--results", str(results), "--federation", *DEMO_IDS, "--runs", ",".join(runs),
            "--attacks", "inverse,whitebox,labels", "--private-cases", str(args.private_cases),
            "--decoder-steps", str(args.decoder_steps), "--whitebox-steps", str(args.whitebox_steps)]
    started = time.perf_counter()
    if audit_main(argv) != 0:
        raise RuntimeError(f"mucald_audit failed: {' '.join(argv)}")
    log(f"audited {len(runs)} run(s) in {time.perf_counter() - started:.0f} s")
    return json.loads((out / "audit.json").read_text())


def best_label_attack(entry: dict) -> dict | None:
    """The label attack with the highest foreground Dice, with the prior's accuracy beside it."""
    if "labels" not in entry:
        return None
    found = entry["labels"]
    name = max(("gradient_norm", "gradient_direction", "model_completion"),
               key=lambda a: found[a]["foreground_dice"]["mean"])
    return {"attack": name, "fg_dice": found[name]["foreground_dice"]["mean"],
            "accuracy": found[name]["accuracy"]["mean"], "prior_accuracy": found["prior"]["accuracy"]["mean"]}


def on_frontier(point: Point, points: list[Point]) -> bool:
    """No other point of the client has at least its Dice at a lower strongest SSIM."""
    if point.ssim is None:
        return False
    return not any(o is not point and o.ssim is not None and o.mean_dice >= point.mean_dice
                   and o.ssim["mean"] < point.ssim["mean"] for o in points)


def report(points: list[Point], args: argparse.Namespace) -> str:
    lines = ["# Privacy frontier", "",
             f"- demo federation ({args.size}, data seed 0), {args.rounds} rounds x {args.iters} iterations, "
             f"seeds {' '.join(map(str, args.seeds))} for Dice, seed 0 audited: {args.private_cases} private cases, "
             f"decoders {args.decoder_steps} steps, white-box {args.whitebox_steps} steps",
             "- strongest: the reconstruction attack with the highest mean SSIM (plain, adaptive and averaged "
             "inverse networks, white-box inversion); labels: the label attack with the highest foreground Dice "
             "(gradient norm, gradient direction, model completion), its voxel accuracy beside the prior's", ""]
    clients = sorted({p.client for p in points})
    for client in clients:
        mine = [p for p in points if p.client == client]
        lines += [f"## {client}", "", "| method, defence, cut | Dice (n) | strongest SSIM [95% CI] | re-id "
                  "attacked / gallery | "
                  "label fg Dice (attack) | label acc / prior | frontier |", "|---|---|---|---|---|---|---|"]
        for p in sorted(mine, key=lambda p: (p.cut, p.method, p.defence)):
            spread = statistics.pstdev(p.dice) if len(p.dice) > 1 else 0.0
            ssim = (f"{p.ssim['mean']:.3f} [{p.ssim['ci95'][0]:.3f}, {p.ssim['ci95'][1]:.3f}] ({p.ssim['attack']})"
                    if p.ssim else "-")
            labels = (f"{p.labels['fg_dice']:.2f} ({p.labels['attack']})", f"{p.labels['accuracy']:.3f} / "
                      f"{p.labels['prior_accuracy']:.3f}") if p.labels else ("-", "-")
            lines.append(f"| {p.name} | {p.mean_dice:.3f} +- {spread:.3f} ({len(p.dice)}) | {ssim} | "
                         f"{_share(p.reid)} / {_share(p.reid_gallery)} | {labels[0]} | {labels[1]} | "
                         f"{'yes' if on_frontier(p, mine) else ''} |")
        lines.append("")
    lines += ["## Goals (issue 15)", "", *goal_lines(points, clients)]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def goal_lines(points: list[Point], clients: list[str]) -> list[str]:
    """Is there one configuration that meets every goal on every client?"""
    reference = {p.client: p.mean_dice for p in points if (p.method, p.defence, p.cut) == ("splitfed", "none", 0)}
    if not reference:
        return ["- goal: not measured (no splitfed run without a defence at cut 0 to compare Dice with)"]
    lines = []
    for name in sorted({p.name for p in points}):
        mine = {p.client: p for p in points if p.name == name}
        if set(mine) != set(clients) or any(p.ssim is None or p.labels is None for p in mine.values()):
            continue
        gaps = [reference[c] - mine[c].mean_dice for c in clients]
        worst_ssim = max(p.ssim["mean"] for p in mine.values())
        worst_reid = max(p.reid_for_goal for p in mine.values())
        worst_label = max(p.labels["accuracy"] - p.labels["prior_accuracy"] for p in mine.values())
        met = (max(gaps) <= GOAL_DICE_GAP and worst_ssim <= GOAL_SSIM and worst_reid <= GOAL_REID
               and worst_label <= GOAL_LABEL_POINTS)
        lines.append(goal_line(f"{name}: Dice within {GOAL_DICE_GAP:.2f} of splitfed, SSIM <= {GOAL_SSIM}, re-id <= "
                               f"{GOAL_REID}, label accuracy within {GOAL_LABEL_POINTS:.2f} of the prior", met,
                               f"largest Dice gap {max(gaps):+.3f}, worst SSIM {worst_ssim:.3f}, worst re-id "
                               f"{worst_reid:.2f}, worst label accuracy over the prior {worst_label:+.3f}"))
    return lines


def configurations(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(method, defence, cut) to measure: ``--points`` as given, else every method x defence x cut."""
    if not args.points:
        return [(m, d, c) for c in args.cut_depths for m in args.methods for d in args.defences]
    chosen = []
    for text in args.points:
        method, defence, cut = (text.split("/") + ["", ""])[:3]
        if not method or not defence or not cut.isdigit():
            raise SystemExit(f"--points {text!r} is not METHOD/DEFENCE/CUT. Fix: e.g. splitfed/quantise:2/1.")
        chosen.append((method, defence, int(cut)))
    return chosen


def plot(points: list[Point], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = sorted({p.client for p in points})
    figure, axes = plt.subplots(1, len(clients), figsize=(5 * len(clients), 4.2), squeeze=False)
    for axis, client in zip(axes[0], clients):
        for p in (p for p in points if p.client == client and p.ssim is not None):
            axis.scatter(p.ssim["mean"], p.mean_dice, marker="o" if p.cut == 0 else "s",
                         color="tab:red" if on_frontier(p, [q for q in points if q.client == client]) else "tab:gray")
            axis.annotate(p.name, (p.ssim["mean"], p.mean_dice), fontsize=6, xytext=(3, 3), textcoords="offset points")
        axis.axvline(GOAL_SSIM, linestyle=":", color="tab:green")
        axis.set(title=client, xlabel="strongest attack SSIM (lower is more private)", ylabel="validation Dice")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130)
    plt.close(figure)
    log(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "medium"))
    parser.add_argument("--cut-depths", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=["splitfed", "mucald"])
    parser.add_argument("--defences", nargs="+", default=["none", "quantise:2", "adversary:0.3"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--private-cases", type=int, default=8)
    parser.add_argument("--decoder-steps", type=int, default=300)
    parser.add_argument("--whitebox-steps", type=int, default=150)
    parser.add_argument("--points", nargs="+", default=[], metavar="METHOD/DEFENCE/CUT",
                        help="These configurations instead of the methods x defences x cut depths grid.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if 0 not in args.seeds:
        parser.error("--seeds must include 0 (the audited seed)")
    from preprocessing.demo import make_demo_federation
    from preprocessing.demo.federation import demo_folders

    raw = args.work / f"raw-demo-{args.size}"
    if not all((folder / "dataset.json").is_file() for folder in demo_folders(raw)):
        make_demo_federation(raw, seed=0, size=args.size, overwrite=True)
    results = args.work / "results"
    points: list[Point] = []
    chosen = configurations(args)
    for cut in sorted({c for _, _, c in chosen}):
        at_cut = [(m, d) for m, d, c in chosen if c == cut]
        plans_path, clients = plan_federation(raw, args.work / f"preprocessed-cut-{cut}", DEMO_IDS, cut_depth=cut)
        runs = {(m, d, s): train(plans_path, results, m, d, s, args.rounds, args.iters)
                for m, d in at_cut for s in args.seeds}
        audited = audit(plans_path, results, args.work / f"audit-cut-{cut}",
                        sorted({runs[m, d, 0] for m, d in at_cut}), args)
        for method, defence in at_cut:
            for client in clients:
                entry = audited[client][runs[method, defence, 0]]
                strongest = entry.get("strongest")
                points.append(Point(cut, method, defence, client,
                                    [final_dice(results, plans_path, runs[method, defence, s], client)
                                     for s in args.seeds],
                                    {"attack": strongest["attack"], **strongest["ssim"]} if strongest else None,
                                    strongest["reid"]["mean"] if strongest else None, best_label_attack(entry),
                                    strongest.get("reid_gallery", {}).get("mean") if strongest else None))
    text = report(points, args)
    plot(points, (args.out.with_suffix(".png") if args.out else args.work / "frontier.png"))
    emit_report(text, args.out)


if __name__ == "__main__":
    main()
