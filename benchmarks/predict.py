#!/usr/bin/env python3
"""Cost of prediction per case: ``mucald_predict`` against a plain MONAI sliding window of the same
weights, and against nnU-Net's ``nnUNetv2_predict``.

Part 1 (same weights, same preprocessed cases, one child process per variant so allocations never
leak between variants; variants alternated ``--repeats`` times, medians reported):

* ``monai``: MONAI ``sliding_window_inference`` (Gaussian, overlap 0.5) over the trained client
  network, then softmax: the floor any predictor of these weights pays.
* ``mucald network``: ``Predictor.predict_probabilities`` on the same preprocessed arrays (no TTA,
  with TTA).
* ``mucald case``: a whole case as ``mucald_predict`` does it in one process: read the files,
  preprocess, network, resample back, write (no TTA, with TTA).

Per case: seconds (median over cases, after one warm-up case) and the peak memory the cases add
(RSS sampled every 2 ms by a thread, above the process's RSS once the model is loaded).

Part 2 (whole commands as subprocesses, wall time and peak RSS of the process tree): ``mucald_predict``
and, in its own venv (see benchmarks/README.md), ``nnUNetv2_predict`` with a 2d model planned by
nnU-Net on the same raw dataset. The nnU-Net model is initialised, not trained: its checkpoint is
written by nnU-Net's own trainer (``initialize`` + ``save_checkpoint``) because nnU-Net's trainer
runs 1000 epochs and its shorter variants need torchvision; prediction time does not depend on
the weights' values. The networks differ in size (nnU-Net's 2d U-Net is much larger); the table
gives both parameter counts.

    .venv/bin/python -m benchmarks.predict --size small --repeats 3 --out predict.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.process_meter import measure, psutil
from benchmarks.reporting import REPO, emit_report, log, run_json_child
from benchmarks.train_step import busy_cpus, prepare_demo

DEFAULT_NNUNET_VENV = REPO / "benchmarks" / ".venv"
GOAL_RATIO = 1.15
CHILD_VARIANTS = ("monai", "mucald-network", "mucald-network-tta", "mucald-case", "mucald-case-tta")
BASELINE = "monai"


# ------------------------------------------------------------------------------ trained weights

def train_briefly(plans_path: Path, client_names: list[str], results: Path, rounds: int, iters: int) -> Path:
    """A short mucald run (timing does not depend on how well it segments); reused when present."""
    from mucald_unet.config import TrainingConfig
    from mucald_unet.training.checkpoint import FINAL
    from mucald_unet.training.trainer import FederatedTrainer, run_folder_for

    config = TrainingConfig(rounds=rounds, iterations_per_epoch=iters)
    run_folder = run_folder_for(results, plans_path, config)
    if not (run_folder / FINAL).is_file():
        started = time.perf_counter()
        FederatedTrainer(plans_path, client_names, config, run_folder).run()
        log(f"trained {rounds} x {iters} in {time.perf_counter() - started:.0f} s: {run_folder}")
    return run_folder / FINAL


# ----------------------------------------------------------------------------------- the child

class PeakSampler:
    """Peak RSS of this process while a block runs, sampled by a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.process = psutil.Process()

    def __enter__(self) -> "PeakSampler":
        self.baseline = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra_bytes(self) -> int:
        return self.peak - self.baseline


def child_main(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from inference.batch import BatchOptions, export_case
    from inference.inputs import discover_cases
    from inference.model import ModelSource
    from inference.predictor import PredictionSettings, Predictor, read_and_prepare

    torch.set_num_threads(args.threads)
    variant = args.child
    tta = variant.endswith("-tta")
    settings = PredictionSettings(mirror=tta)
    predictor = Predictor.from_trained(args.dataset, preprocessed_root=args.preprocessed, results_root=args.results,
                                       source=ModelSource(checkpoint="final"), settings=settings)
    cases = discover_cases([args.images])
    prepared = {c.case_id: read_and_prepare(c, predictor.requirements) for c in cases}
    model, plan = predictor.model, predictor.plan
    out = Path(args.scratch)

    def plain_monai(images: np.ndarray) -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        x = torch.from_numpy(images)
        inputs = x.unsqueeze(0) if plan.slice_axis is None else x.movedim(plan.slice_axis + 1, 0)
        with torch.inference_mode():
            logits = sliding_window_inference(inputs, list(plan.patch_size), 4, lambda w: model(w, generator),
                                              overlap=0.5, mode="gaussian")
            return torch.softmax(logits, dim=1).numpy()

    def run(case) -> None:
        if variant == "monai":
            plain_monai(prepared[case.case_id].images)
        elif variant.startswith("mucald-network"):
            predictor.predict_probabilities(prepared[case.case_id].images)
        else:  # the whole case, as mucald_predict does it with -np 1
            ready = read_and_prepare(case, predictor.requirements)
            probabilities = predictor.predict_probabilities(ready.images)
            export_case(probabilities, ready.properties, predictor.resampling, BatchOptions(out),
                        case.output_ending, list(plan.labels))

    seconds = []
    with PeakSampler() as sampler:  # from after model load and input preprocessing to the last case
        run(cases[0])  # warm-up: first-call allocations and thread pools
        for case in cases:
            tic = time.perf_counter()
            run(case)
            seconds.append(time.perf_counter() - tic)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"variant": variant, "seconds": statistics.median(seconds), "seconds_all": seconds,
                      "extra_bytes": sampler.extra_bytes, "cases": len(cases), "parameters": params,
                      "shapes": [list(prepared[c.case_id].images.shape) for c in cases]}), flush=True)
    return 0


def run_child(variant: str, args: argparse.Namespace, paths: dict[str, Path]) -> dict | None:
    cmd = [sys.executable, "-m", "benchmarks.predict", "--child", variant, "--dataset", args.dataset,
           "--preprocessed", str(paths["preprocessed"]), "--results", str(paths["results"]),
           "--images", str(paths["images"]), "--scratch", str(paths["scratch"] / variant),
           "--threads", str(args.threads)]
    return run_json_child(cmd, args.threads)


# ------------------------------------------------------------------------------ whole commands

def project_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def measure_command(cmd: list[str], env: dict, log_path: Path, cases: int) -> dict:
    started = time.perf_counter()
    m = measure(cmd, env, log_path, interval=0.05, pss=True)
    if m.returncode != 0:
        log(f"    FAILED rc={m.returncode}; see {log_path}")
        return {"failed": True}
    return {"wall": m.seconds, "per_case": m.seconds / cases, "peak_rss": m.peak_rss, "peak_pss": m.peak_pss,
            "elapsed": time.perf_counter() - started}


def mucald_commands(args: argparse.Namespace, paths: dict[str, Path]) -> dict[str, list[str]]:
    base = [project_bin("mucald_predict"), "-d", args.dataset, "-i", str(paths["images"]),
            "--preprocessed", str(paths["preprocessed"]), "--results", str(paths["results"]),
            "--checkpoint", "final", "--device", "cpu", "-np", str(args.workers)]
    return {"mucald_predict --no-tta": base + ["-o", str(paths["scratch"] / "cmd-notta"), "--no-tta"],
            "mucald_predict (TTA)": base + ["-o", str(paths["scratch"] / "cmd-tta")]}


NNUNET_CHECKPOINT_SCRIPT = """
import shutil, sys, torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
pre, name = sys.argv[1], sys.argv[2]
plans = load_json(join(pre, name, "nnUNetPlans.json"))
plans["continue_training"] = False  # nnUNetv2_train sets this key before building a trainer
dataset_json = load_json(join(pre, name, "dataset.json"))
trainer = nnUNetTrainer(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
trainer.initialize()
trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
save_json(trainer.plans_manager.plans, join(trainer.output_folder_base, "plans.json"), sort_keys=False)
save_json(trainer.dataset_json, join(trainer.output_folder_base, "dataset.json"), sort_keys=False)
trainer.save_checkpoint(join(trainer.output_folder, "checkpoint_final.pth"))
print(sum(p.numel() for p in trainer.network.parameters()))
"""


def prepare_nnunet(args: argparse.Namespace, paths: dict[str, Path], venv: Path) -> tuple[dict, int] | None:
    """nnU-Net's 2d plan of the same raw dataset, and an initialised 2d model; (env, parameters)."""
    from preprocessing.dataset import find_dataset_folder

    nn_root = paths["work"] / "nnunet"
    env = dict(os.environ, nnUNet_raw=str(paths["raw"]), nnUNet_preprocessed=str(nn_root / "preprocessed"),
               nnUNet_results=str(nn_root / "results"), nnUNet_def_n_proc=str(args.workers),
               OMP_NUM_THREADS=str(args.threads))
    name = find_dataset_folder(paths["raw"], args.dataset).name
    dataset_id = str(int(name[7:10]))
    bins = venv / "bin"
    if not (bins / "nnUNetv2_predict").exists():
        log(f"no nnU-Net in {venv}: run benchmarks.plan_preprocess --setup-nnunet first; skipping nnU-Net")
        return None
    steps = [[str(bins / "nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", "2d", "-np", str(args.workers)],
             [str(bins / "python"), "-c", NNUNET_CHECKPOINT_SCRIPT, str(nn_root / "preprocessed"), name]]
    outputs = []
    for step in steps:
        result = subprocess.run(step, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            log("nnU-Net setup failed:\n    " + "\n    ".join(result.stderr.splitlines()[-15:]))
            return None
        outputs.append(result.stdout)
    return env, int(outputs[-1].strip().splitlines()[-1])


def nnunet_commands(args: argparse.Namespace, paths: dict[str, Path], venv: Path) -> dict[str, list[str]]:
    base = [str(venv / "bin" / "nnUNetv2_predict"), "-i", str(paths["images"]), "-d", args.dataset, "-c", "2d",
            "-f", "0", "-chk", "checkpoint_final.pth", "-device", "cpu", "-npp", str(args.workers),
            "-nps", str(args.workers)]
    return {"nnUNetv2_predict --disable_tta": base + ["-o", str(paths["scratch"] / "nn-notta"), "--disable_tta"],
            "nnUNetv2_predict (TTA)": base + ["-o", str(paths["scratch"] / "nn-tta")]}


# ---------------------------------------------------------------------------------------- report

def part1_table(results: dict[str, list[dict]]) -> list[str]:
    med = {v: {k: statistics.median(r[k] for r in runs) for k in ("seconds", "extra_bytes")}
           for v, runs in results.items() if runs}
    base = med.get(BASELINE)
    lines = ["| variant | s per case | ratio to monai | peak MB added by the cases | ratio |", "|---|---|---|---|---|"]
    for variant in CHILD_VARIANTS:
        m = med.get(variant)
        if m is None:
            lines.append(f"| {variant} | FAILED | | | |")
            continue
        lines.append(f"| {variant} | {m['seconds']:.3f} | {m['seconds'] / base['seconds']:.2f}x | "
                     f"{m['extra_bytes'] / 2**20:.1f} | {m['extra_bytes'] / max(base['extra_bytes'], 1):.2f}x |"
                     if base else f"| {variant} | {m['seconds']:.3f} | - | {m['extra_bytes'] / 2**20:.1f} | - |")
    if base and "mucald-network" in med:
        ratio = med["mucald-network"]["seconds"] / base["seconds"]
        whole = med.get("mucald-case", {}).get("seconds", float("nan")) / base["seconds"]
        lines += ["", f"Goal: without TTA <= {GOAL_RATIO}x the plain MONAI run. Network stage "
                  f"{ratio:.2f}x ({'met' if ratio <= GOAL_RATIO else 'NOT met'}); whole case (read, preprocess, "
                  f"resample back, write) {whole:.2f}x."]
    return lines


def part2_table(results: dict[str, list[dict]]) -> list[str]:
    lines = ["| command | wall s (all cases) | s per case | peak RSS MB (tree) | peak PSS MB (tree) |",
             "|---|---|---|---|---|"]
    for name, runs in results.items():
        good = [r for r in runs if not r.get("failed")]
        if not good:
            lines.append(f"| {name} | FAILED | | | |")
            continue
        lines.append(f"| {name} | {statistics.median(r['wall'] for r in good):.1f} | "
                     f"{statistics.median(r['per_case'] for r in good):.2f} | "
                     f"{statistics.median(r['peak_rss'] for r in good) / 2**20:.0f} | "
                     f"{statistics.median(r['peak_pss'] for r in good) / 2**20:.0f} |")
    return lines


# ------------------------------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium"], help="Demo size.")
    parser.add_argument("--dataset", default="2", help="Which demo client's imagesTs to predict (default: the 3D CT).")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of the short training run.")
    parser.add_argument("--iters", type=int, default=10, help="Iterations per round of that run.")
    parser.add_argument("--repeats", type=int, default=3, help="Children per variant, alternated (median).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per child.")
    parser.add_argument("--workers", type=int, default=2, help="-np of mucald_predict, -npp/-nps of nnU-Net.")
    parser.add_argument("--nnunet-venv", type=Path, default=DEFAULT_NNUNET_VENV, help="nnU-Net's venv.")
    parser.add_argument("--no-nnunet", action="store_true", help="Skip the nnU-Net comparison.")
    parser.add_argument("--work", type=Path, help="Work folder (default: a temp dir).")
    parser.add_argument("--out", type=Path, help="Also write the markdown report here.")
    for hidden in ("--child", "--preprocessed", "--results", "--images", "--scratch"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if psutil is None:
        raise SystemExit("error: psutil is missing. Fix: pip install -e '.[bench]'")
    if args.child:
        args.preprocessed, args.results, args.images = map(Path, (args.preprocessed, args.results, args.images))
        return child_main(args)
    from preprocessing.dataset import find_dataset_folder

    work = (args.work or Path(tempfile.mkdtemp(prefix="mucald-predict-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder: {work}")
    plans_path, client_names = prepare_demo(work, args.size, workers=args.workers)
    raw = work / f"raw-demo-{args.size}"
    paths = {"work": work, "raw": raw, "preprocessed": plans_path.parent.parent, "results": work / "results",
             "images": find_dataset_folder(raw, args.dataset) / "imagesTs", "scratch": work / "scratch"}
    train_briefly(plans_path, client_names, paths["results"], args.rounds, args.iters)
    busy_before = busy_cpus()
    part1: dict[str, list[dict]] = {v: [] for v in CHILD_VARIANTS}
    for repeat in range(args.repeats):
        for variant in CHILD_VARIANTS:
            log(f"[{variant}] repeat {repeat + 1}/{args.repeats}")
            result = run_child(variant, args, paths)
            if result:
                part1[variant].append(result)
                log(f"    {result['seconds']:.3f} s per case, +{result['extra_bytes'] / 2**20:.1f} MB")
    commands = mucald_commands(args, paths)
    nnunet = None if args.no_nnunet else prepare_nnunet(args, paths, args.nnunet_venv)
    if nnunet:
        commands.update(nnunet_commands(args, paths, args.nnunet_venv))
    cases = len(list(paths["images"].glob("*_0000*")))
    part2: dict[str, list[dict]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        for name, cmd in commands.items():
            env = nnunet[0] if name.startswith("nnUNet") else dict(os.environ)
            env = dict(env, OMP_NUM_THREADS=str(args.threads))
            log(f"[{name}] repeat {repeat + 1}/{args.repeats}")
            part2[name].append(measure_command(cmd, env, work / "logs" / f"{name.split()[0]}-{repeat}.log", cases))
    busy_after = busy_cpus()
    first = next((runs[0] for runs in part1.values() if runs), {})
    report = ["# Prediction cost per case", "",
              f"- data: demo `{args.size}`, client {args.dataset} imagesTs ({cases} cases), preprocessed shapes "
              f"{first.get('shapes')}; mucald network {first.get('parameters', 0):,} parameters",
              f"- {args.threads} torch threads per process, {args.workers} worker processes for the commands, "
              f"{args.repeats} repeat(s), medians; CPUs busy with other work: {busy_before:.1f} before, {busy_after:.1f} after",
              "", "## Same weights, same preprocessed cases (per case, after a warm-up case)", "", *part1_table(part1),
              "", "## Whole commands (interpreter start, model load and every case; process tree, PSS splits pages forked workers share)", "",
              *part2_table(part2)]
    if nnunet:
        report += ["", f"nnU-Net 2d model: {nnunet[1]:,} parameters (initialised, not trained)."]
    emit_report("\n".join(report) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
