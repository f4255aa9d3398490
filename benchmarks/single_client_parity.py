#!/usr/bin/env python3
"""Single-client parity: our trainer (``mucald_train --method local``) against nnU-Net v2's ``2d``
trainer, at equal iterations, on the same raw dataset, the same fold-0 split and the same test cases.

For every dataset (real-scan slices, the demo clients, ``--raw DIR -d ID``) and budget it trains each
tool alone, predicts imagesTs, scores both with ``mucald_evaluate`` and reports test Dice, seconds per
training iteration (training only) and the peak memory of the training process tree. Every run is
cached in ``--work`` (nnU-Net by data digest; ours by data + code digest), so a rerun after our code
changed trains only ours. See benchmarks/README.md for what it measures and how.

    .venv/bin/python -m benchmarks.single_client_parity --budgets 250 --work /work/parity_work --out parity.md
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from benchmarks.process_meter import measure, psutil
from benchmarks.reporting import REPO, emit_report, goal_line, log, unmeasured_goal

DEFAULT_VENV = REPO / "benchmarks" / ".venv"
PYRADIOMICS = REPO.parent / "shared" / "data" / "pyradiomics"
DEFAULT_BUDGETS = (250, 1000, 2500)
DEFAULT_PLAN_FLAGS = ("--target", "cpu")  # the cpu preset, as a hospital without a GPU plans
TRAINER_FILE = "nnUNetTrainer_Parity.py"
TRAINER_VERSION = 1        # bump when the generated trainer changes what nnU-Net learns or measures
NNUNET_EPOCH = 250         # nnU-Net's own iterations per epoch
NNUNET_VAL_ITERATIONS = 2  # its per-epoch pseudo-validation batches (not timed, kept cheap)
CODE_PACKAGES = ("mucald_unet", "planners", "preprocessing", "inference")
TOOLS = ("ours", "nnU-Net")
SAMPLE_SECONDS = 2.0       # memory sampling of training trees: reading PSS of big processes costs CPU


# ------------------------------------------------------------------------------ small utilities

def digest_files(paths: Sequence[Path], root: Path) -> str:
    """sha256 over the relative names and bytes of ``paths``: equal data, equal digest."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def dataset_digest(folder: Path) -> str:
    """Digest of everything in a raw dataset folder (images, labels, dataset.json)."""
    return digest_files([p for p in Path(folder).rglob("*") if p.is_file()], Path(folder))


def code_digest() -> str:
    """Digest of our pipeline's source: a changed trainer, planner or predictor means a new run of ours."""
    files = [p for pkg in CODE_PACKAGES for p in (REPO / pkg).rglob("*.py")] + [REPO / "pyproject.toml"]
    return digest_files([p for p in files if p.is_file()], REPO)


def project_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


class StepFailed(RuntimeError):
    """A command of one run failed; the run is reported as failed and the others go on."""


def run_step(cmd: list[str], env: Mapping[str, str], log_path: Path, commands: list[str]) -> None:
    """Run one command (output to ``log_path``), remembered in ``commands``; StepFailed on error."""
    commands.append(" ".join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        result = subprocess.run(cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise StepFailed(f"rc={result.returncode}: {' '.join(cmd[:3])} ...; see {log_path}")


def run_once(marker: Path, cmd: list[str], env: Mapping[str, str], log_path: Path, commands: list[str]) -> None:
    """A step whose output is kept (planning): run it unless ``marker`` says it finished before."""
    if marker.is_file():
        commands.append(f"{marker.read_text()}   # reused")
        return
    run_step(cmd, env, log_path, commands)
    marker.write_text(commands[-1])


def measured_step(cmd: list[str], env: Mapping[str, str], log_path: Path, commands: list[str]) -> dict:
    """Like run_step, with wall time and the peak RSS/PSS of the whole process tree."""
    commands.append(" ".join(cmd))
    load = os.getloadavg()[0]
    m = measure(cmd, dict(env), log_path, interval=SAMPLE_SECONDS, pss=True)
    if m.returncode != 0:
        raise StepFailed(f"rc={m.returncode}: {' '.join(cmd[:3])} ...; see {log_path}")
    return {"wall_s": m.seconds, "peak_pss_mb": m.peak_pss / 2**20, "peak_rss_mb": m.peak_rss / 2**20,
            "load_before": load, "load_after": os.getloadavg()[0]}


# ------------------------------------------------------------------------- datasets and test sets

@dataclass(frozen=True)
class SplitOptions:
    min_test: int = 6
    fraction: float = 0.2
    min_train: int = 8
    seed: int = 0


def choose_test_cases(train_ids: Sequence[str], has_foreground: Mapping[str, bool], existing_test: int,
                      options: SplitOptions) -> list[str]:
    """Training cases to move to the test set when it holds fewer than ``min_test`` labelled cases.

    ``ceil(fraction * n)`` cases, at least enough to reach ``min_test``, never leaving fewer than
    ``min_train`` for training; drawn with ``seed``, stratified by whether a case has foreground so
    the test set keeps the training set's share of lesion-free cases.
    """
    ids = sorted(train_ids)
    if existing_test >= options.min_test:
        return []
    wanted = max(math.ceil(options.fraction * len(ids)), options.min_test - existing_test)
    count = min(wanted, len(ids) - options.min_train)
    if count <= 0:
        return []
    positive = [i for i in ids if has_foreground[i]]
    negative = [i for i in ids if not has_foreground[i]]
    from_positive = min(len(positive), max(count - len(negative), round(count * len(positive) / len(ids))))
    rng = np.random.default_rng(options.seed)
    chosen = list(rng.choice(positive, from_positive, replace=False)) if from_positive else []
    if count > from_positive:
        chosen += list(rng.choice(negative, count - from_positive, replace=False))
    return sorted(str(c) for c in chosen)


def case_files(folder: Path, case: str, ending: str) -> list[Path]:
    """Every channel file of ``case`` in an images folder (``CASE_XXXX<ending>``)."""
    from preprocessing.dataset import parse_channel_file

    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (parsed := parse_channel_file(p.name, ending)) and parsed[0] == case)


def build_parity_copy(source: Path, raw_root: Path, options: SplitOptions) -> dict:
    """Copy ``source`` into ``raw_root`` with its labelled test cases plus the moved training cases in
    imagesTs/labelsTs; reused while source and options are unchanged. Returns the split record."""
    from preprocessing.dataset import RawDataset

    record_path = raw_root.parent / "test_split.json"
    wanted = {"source": str(source), "source_digest": dataset_digest(source), "options": options.__dict__}
    record = read_json(record_path)
    if record and {k: record.get(k) for k in wanted} == wanted and (raw_root / source.name).is_dir():
        return record
    dataset = RawDataset(source)
    labelled_test = [c for c in dataset.case_ids("Ts") if dataset.label_file(c, "Ts").is_file()]
    train_ids = dataset.case_ids("Tr")
    foreground = {c: bool(np.any(dataset.read_label(c)[0])) for c in train_ids}
    foreground.update({c: bool(np.any(dataset.read_label(c, "Ts")[0])) for c in labelled_test})
    moved = choose_test_cases(train_ids, foreground, len(labelled_test), options)
    target = copy_dataset(dataset, raw_root, {**{c: "Tr" for c in train_ids}, **{c: "Ts" for c in moved}},
                          labelled_test)
    test = sorted(labelled_test + moved)
    record = {**wanted, "train": sorted(set(train_ids) - set(moved)), "test": test, "moved": moved,
              "original_test": labelled_test, "test_with_foreground": sum(foreground[c] for c in test),
              "digest": dataset_digest(target)}
    write_json(record_path, record)
    return record


def copy_dataset(dataset, raw_root: Path, training_to: Mapping[str, str], test: Sequence[str]) -> Path:
    """Write the copy: each training case into split ``training_to[case]``, the ``test`` cases into Ts;
    staged beside the target and renamed into place, so it is complete or absent."""
    ending = dataset.spec.file_ending
    shutil.rmtree(raw_root, ignore_errors=True)
    staging = raw_root / (dataset.name + ".partial")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (staging / sub).mkdir(parents=True)
    for case, (source_split, split) in [*((c, ("Tr", s)) for c, s in training_to.items()),
                                       *((c, ("Ts", "Ts")) for c in test)]:
        for path in case_files(dataset.images_dir(source_split), case, ending):
            shutil.copy2(path, staging / f"images{split}" / path.name)
        shutil.copy2(dataset.label_file(case, source_split), staging / f"labels{split}" / f"{case}{ending}")
    spec = json.loads((dataset.folder / "dataset.json").read_text())
    spec["numTraining"] = sum(split == "Tr" for split in training_to.values())
    (staging / "dataset.json").write_text(json.dumps(spec, indent=1))
    return staging.rename(raw_root / dataset.name)


def demo_sources(work: Path) -> list[Path]:
    root = work / "source" / "demo-small"
    if len(list(root.glob("Dataset00[123]_*/dataset.json"))) < 3:
        subprocess.run([project_bin("mucald_make_demo"), str(root), "--size", "small", "--overwrite"],
                       check=True, stdout=subprocess.DEVNULL)
    return sorted(p.parent for p in root.glob("Dataset*/dataset.json"))


def real_sources(work: Path, pyradiomics: Path) -> list[Path]:
    from benchmarks.real_slices import make_pyradiomics_slice_federation

    root = work / "source" / "real"
    if not pyradiomics.is_dir():
        log(f"{pyradiomics}: no pyradiomics scans; skipping the real-slice datasets")
        return []
    if len(list(root.glob("Dataset*/dataset.json"))) < 3:
        shutil.rmtree(root, ignore_errors=True)
        make_pyradiomics_slice_federation(pyradiomics, root)
    return sorted(p.parent for p in root.glob("Dataset*/dataset.json"))


@dataclass
class ParityDataset:
    """One dataset of the comparison: its own raw root (only this dataset), work folder and split."""

    label: str
    work: Path
    split: dict
    folder: str = field(init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.split["source"]).name

    @property
    def raw_root(self) -> Path:
        return self.work / "raw"

    @property
    def dataset_id(self) -> str:
        return str(int(self.folder[7:10]))

    @property
    def data_key(self) -> str:
        return self.split["digest"][:12]

    @property
    def classes(self) -> list[str]:
        labels = json.loads((self.raw_root / self.folder / "dataset.json").read_text())["labels"]
        return [name for name, value in labels.items() if int(value) != 0]


# ---------------------------------------------------------------------------------- shared steps

def evaluate(dataset: ParityDataset, pred: Path, out: Path, commands: list[str], logs: Path) -> dict:
    """Test Dice per class and the foreground mean, by our evaluator, for either tool's predictions."""
    run_step([project_bin("mucald_evaluate"), "--ref", str(dataset.raw_root / dataset.folder / "labelsTs"),
              "--pred", str(pred), "-o", str(out), "-d", dataset.folder, "--raw", str(dataset.raw_root)],
             os.environ, logs / "evaluate.log", commands)
    summary = json.loads((out / "summary.json").read_text())
    return {"dice": {name: c["dice"]["mean"] for name, c in summary["classes"].items()},
            "mean_dice": summary["foreground_mean"]["dice"], "test_cases": summary["n_cases"]}


def thread_env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# ------------------------------------------------------------------------------------ our trainer

def ours_schedule(budget: int, rounds: int) -> tuple[int, int]:
    """(rounds, iterations per round) with rounds * iterations == budget; fewer rounds if needed."""
    rounds = max(1, min(rounds, budget))
    while budget % rounds:
        rounds -= 1
    return rounds, budget // rounds


def ours_plan_summary(plans_path: Path, folder: str) -> dict:
    plans = json.loads(plans_path.read_text())
    client = plans["clients"][folder]
    return {"patch": client["patch_size"], "batch": client["batch_size"], "spacing": client["target_spacing"],
            "widths": f"FE {client['fe_channels']}, BE {client['be_channels']}, split "
                      f"{plans['federation']['split_channels']}, server {plans['federation']['server_segment']['filters']}"}


def run_ours(dataset: ParityDataset, budget: int, args: argparse.Namespace, code: str) -> dict:
    """Plan (once per data + code), train ``budget`` iterations, predict imagesTs, evaluate."""
    base = ours_folder(dataset, code, args.plan_key)
    commands: list[str] = []
    run_key = f"b{budget}{args.variant}"  # the plan is shared by every --train-flags variant
    pre, logs = base / "preprocessed", base / "logs" / run_key
    env = thread_env(args.threads)
    if not (base / "plan.done").is_file():
        fresh(pre)
    run_once(base / "plan.done", [project_bin("mucald_plan_and_preprocess"), "-d", dataset.dataset_id, "--config",
                                  "2d", *args.plan_flags, "--raw", str(dataset.raw_root), "--preprocessed", str(pre),
                                  "-np", str(args.workers)], env, base / "logs" / "plan.log", commands)
    rounds, iters = ours_schedule(budget, args.rounds)
    results = fresh(base / "results" / run_key)
    train = measured_step([project_bin("mucald_train"), "-d", dataset.dataset_id, "--method", "local",
                           "--rounds", str(rounds), "--iters", str(iters), "--preprocessed", str(pre),
                           "--results", str(results), "--device", "cpu", "--fold", "0", *args.train_flags],
                          env, logs / "train.log", commands)
    run_folder = next(results.glob("*/*/fold_0/config.json")).parent
    records = [json.loads(line) for line in (run_folder / "log.jsonl").read_text().splitlines() if line.strip()]
    train_seconds = sum({r["round"]: r["train_seconds"] for r in records if r.get("event") == "round"}.values())
    pred = fresh(base / "pred" / run_key)
    run_step([project_bin("mucald_predict"), "-d", dataset.dataset_id, "-i",
              str(dataset.raw_root / dataset.folder / "imagesTs"), "-o", str(pred), "--preprocessed", str(pre),
              "--results", str(results), "--run", run_folder.parent.name, "--checkpoint", "final",
              "--device", "cpu", "-np", str(args.workers)], env, logs / "predict.log", commands)
    scores = evaluate(dataset, pred, base / "eval" / run_key, commands, logs)
    return {"tool": "ours", "budget": budget, **scores, "s_per_iter": train_seconds / budget,
            "s_per_iter_loop": train_seconds / budget, **train, "schedule": f"{rounds} rounds x {iters}",
            "plan": ours_plan_summary(next(pre.glob("Federation_*/plans.json")), dataset.folder),
            "code": code[:12], "train_flags": args.train_flags, "plan_flags": args.plan_flags, "commands": commands}


# ---------------------------------------------------------------------------------------- nnU-Net

def nnunet_schedule(budget: int) -> tuple[int, int]:
    """(iterations per epoch, epochs) with the product == budget, epochs of nnU-Net's 250 when possible."""
    epochs = max(1, math.ceil(budget / NNUNET_EPOCH))
    while budget % epochs:
        epochs += 1
    return budget // epochs, epochs


def trainer_class(budget: int) -> str:
    return f"nnUNetTrainer_Parity{budget}"


TRAINER_HEADER = '''"""Generated by benchmarks/single_client_parity.py (version {version}); do not edit.

nnU-Net's own trainer with a shorter schedule, torch threads from OMP_NUM_THREADS (nnUNetv2_train
on cpu would take every core), and the wall time of every train_step (the step only, as ours
reports training without validation) and of every epoch's training loop written to
parity_timings.json in the fold folder.
"""
import json
import os
import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class _ParityTrainer(nnUNetTrainer):
    ITERATIONS, EPOCHS = {epoch}, 1

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = self.ITERATIONS
        self.num_epochs = self.EPOCHS
        self.num_val_iterations_per_epoch = {val}
        self.parity_steps, self.parity_loops = [], []
        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    def train_step(self, batch):
        start = time.perf_counter()
        result = super().train_step(batch)
        self.parity_steps.append(time.perf_counter() - start)
        return result

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._loop_start = time.perf_counter()

    def on_train_epoch_end(self, train_outputs):
        self.parity_loops.append(time.perf_counter() - self._loop_start)
        super().on_train_epoch_end(train_outputs)

    def on_train_end(self):
        super().on_train_end()
        timings = {{"train_step_seconds": self.parity_steps, "train_loop_seconds": self.parity_loops,
                    "iterations_per_epoch": self.num_iterations_per_epoch, "epochs": self.num_epochs,
                    "batch_size": self.batch_size, "torch_threads": torch.get_num_threads()}}
        with open(os.path.join(self.output_folder, "parity_timings.json"), "w") as f:
            json.dump(timings, f)
'''

TRAINER_CLASS = '''

class {name}(_ParityTrainer):
    ITERATIONS, EPOCHS = {iterations}, {epochs}
'''


def trainer_source(budgets: Sequence[int]) -> str:
    """The trainer file: one class per budget, ``ITERATIONS * EPOCHS == budget``."""
    text = TRAINER_HEADER.format(version=TRAINER_VERSION, epoch=NNUNET_EPOCH, val=NNUNET_VAL_ITERATIONS)
    for budget in sorted(set(budgets)):
        iterations, epochs = nnunet_schedule(budget)
        text += TRAINER_CLASS.format(name=trainer_class(budget), iterations=iterations, epochs=epochs)
    return text


def install_trainer(venv: Path, budgets: Sequence[int]) -> Path:
    """Write the trainer file into the venv's trainer folder (top level: found before any variant)."""
    folders = sorted(venv.glob("lib/python3*/site-packages/nnunetv2/training/nnUNetTrainer"))
    if not folders:
        raise StepFailed(f"no nnunetv2 in {venv}. Fix: python -m benchmarks.plan_preprocess --setup-only --setup-nnunet")
    path = folders[0] / TRAINER_FILE
    text = trainer_source([*DEFAULT_BUDGETS, *budgets])
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def nnunet_env(base: Path, dataset: ParityDataset, args: argparse.Namespace) -> dict:
    venv = args.nnunet_venv
    return dict(thread_env(args.threads), nnUNet_raw=str(dataset.raw_root),
                nnUNet_preprocessed=str(base / "preprocessed"), nnUNet_results=str(base / "results"),
                nnUNet_n_proc_DA=str(args.da_workers), nnUNet_def_n_proc=str(args.workers), nnUNet_compile="false",
                VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")


def our_splits(train_ids: Sequence[str]) -> list[dict]:
    """Every fold of our split, in nnU-Net's splits_final.json format."""
    from mucald_unet.training.data import fold_split

    folds = min(5, len(train_ids))
    return [dict(zip(("train", "val"), fold_split(list(train_ids), f))) for f in range(folds)]


NNUNET_SPLIT_PROBE = ("import json, sys\nfrom nnunetv2.utilities.crossval_split import generate_crossval_split\n"
                      "ids = json.loads(sys.argv[1])\n"
                      "print(json.dumps([{k: [str(i) for i in v] for k, v in s.items()} "
                      "for s in generate_crossval_split(sorted(ids), seed=12345, n_splits=5)]))")


def nnunet_split_agrees(train_ids: Sequence[str], env: Mapping[str, str], venv: Path) -> bool | None:
    """Whether nnU-Net's own generate_crossval_split gives our fold 0 (None: it cannot split these)."""
    if len(train_ids) < 5:
        return None
    out = subprocess.run([str(venv / "bin" / "python"), "-c", NNUNET_SPLIT_PROBE, json.dumps(list(train_ids))],
                         env=dict(env), capture_output=True, text=True, check=True).stdout
    theirs = json.loads(out.strip().splitlines()[-1])[0]
    ours = our_splits(train_ids)[0]
    return sorted(theirs["train"]) == sorted(ours["train"]) and sorted(theirs["val"]) == sorted(ours["val"])


def prepare_nnunet(dataset: ParityDataset, base: Path, env: Mapping[str, str], args: argparse.Namespace,
                   commands: list[str]) -> dict:
    """nnU-Net's 2d plan and preprocessing (once per data digest) and our split as splits_final.json."""
    pre = base / "preprocessed" / dataset.folder
    done = base / "preprocessed.done"
    if not done.is_file():
        fresh(base / "preprocessed")
    run_once(done, [str(args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", dataset.dataset_id, "-c",
                    "2d", "-np", str(args.workers), "-npfp", str(args.workers), "--verify_dataset_integrity"],
             env, base / "logs" / "plan.log", commands)
    write_json(pre / "splits_final.json", our_splits(dataset.split["train"]))  # list, as nnU-Net reads it
    config = json.loads((pre / "nnUNetPlans.json").read_text())["configurations"]["2d"]
    arch = config.get("architecture", {}).get("arch_kwargs", {})
    return {"patch": config["patch_size"], "batch": config["batch_size"], "spacing": config["spacing"],
            "widths": f"{arch.get('features_per_stage')} ({arch.get('n_stages')} stages)"}


def run_nnunet(dataset: ParityDataset, budget: int, args: argparse.Namespace) -> dict:
    """Train nnU-Net 2d fold 0 for ``budget`` iterations, predict imagesTs, evaluate with ours."""
    base = dataset.work / "nnunet" / dataset.data_key
    env = nnunet_env(base, dataset, args)
    commands: list[str] = []
    install_trainer(args.nnunet_venv, [budget])
    plan = prepare_nnunet(dataset, base, env, args, commands)
    name, bins, logs = trainer_class(budget), args.nnunet_venv / "bin", base / "logs" / f"b{budget}"
    output = base / "results" / dataset.folder / f"{name}__nnUNetPlans__2d"
    shutil.rmtree(output, ignore_errors=True)  # an interrupted run starts again from scratch
    train = measured_step([str(bins / "nnUNetv2_train"), dataset.dataset_id, "2d", "0", "-tr", name, "-device", "cpu"],
                          env, logs / "train.log", commands)
    timings = json.loads((output / "fold_0" / "parity_timings.json").read_text())
    pred = fresh(base / "pred" / f"b{budget}")
    run_step([str(bins / "nnUNetv2_predict"), "-i", str(dataset.raw_root / dataset.folder / "imagesTs"),
              "-o", str(pred), "-d", dataset.dataset_id, "-c", "2d", "-f", "0", "-tr", name,
              "-chk", "checkpoint_final.pth", "-device", "cpu", "-npp", str(args.workers), "-nps", str(args.workers)],
             env, logs / "predict.log", commands)
    scores = evaluate(dataset, pred, base / "eval" / f"b{budget}", commands, logs)
    steps = len(timings["train_step_seconds"])
    return {"tool": "nnU-Net", "budget": budget, **scores, "s_per_iter": sum(timings["train_step_seconds"]) / steps,
            "s_per_iter_loop": sum(timings["train_loop_seconds"]) / steps, "iterations": steps, **train,
            "schedule": f"{timings['epochs']} epochs x {timings['iterations_per_epoch']}",
            "torch_threads": timings["torch_threads"], "plan": plan,
            "split_agrees": nnunet_split_agrees(dataset.split["train"], env, args.nnunet_venv),
            "trainer_version": TRAINER_VERSION, "commands": commands}


# ------------------------------------------------------------------------------------------ cache

def ours_folder(dataset: ParityDataset, code: str, plan_key: str = "") -> Path:
    """Our plan and runs of this data, code and ``--plan-flags`` variant (``-p<digest>``; none for the default)."""
    return dataset.work / "ours" / f"{dataset.data_key}-{code[:12]}{plan_key}"


def cache_path(dataset: ParityDataset, tool: str, budget: int, code: str, variant: str = "",
               plan_key: str = "") -> Path:
    """nnU-Net: dataset + budget + data digest (+ trainer version); ours: also our code digest, the
    ``--plan-flags`` variant and the ``--train-flags`` variant."""
    if tool == "ours":
        return ours_folder(dataset, code, plan_key) / f"result-b{budget}{variant}.json"
    return dataset.work / "nnunet" / dataset.data_key / f"result-b{budget}-v{TRAINER_VERSION}.json"


def latest_ours(dataset: ParityDataset, budget: int, variant: str = "", plan_key: str = "") -> dict | None:
    """Our newest result of this data, budget and variants under any code digest (shown when ours is skipped)."""
    folder = re.compile(rf"{re.escape(dataset.data_key)}-[0-9a-f]{{12}}{re.escape(plan_key)}")
    found = [r for p in dataset.work.glob(f"ours/{dataset.data_key}-*/result-b{budget}{variant}.json")
             if folder.fullmatch(p.parent.name) and (r := read_json(p))]
    return max(found, key=lambda r: r.get("finished", ""), default=None)


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs (signal 0 only asks; psutil is an optional extra)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def take_lock(lock: Path) -> bool:
    """Claim a run for this process, so two invocations sharing a work folder never train the same run;
    a lock left by a process that no longer exists is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            with open(lock, "x") as handle:
                handle.write(str(os.getpid()))
            return True
        except FileExistsError:
            owner = (lock.read_text() or "0").strip()
            if owner.isdigit() and process_exists(int(owner)):
                return False
            lock.unlink(missing_ok=True)
    return False


def get_result(dataset: ParityDataset, tool: str, budget: int, args: argparse.Namespace) -> dict | None:
    """The cached result, else (unless the tool is skipped) a new run; a failed run returns its error.

    Our code digest is taken now, not at start-up, since other work may change the code meanwhile."""
    code = code_digest() if tool == "ours" else ""
    path = cache_path(dataset, tool, budget, code, args.variant, args.plan_key)
    skip, retrain = (args.skip_ours, args.retrain_ours) if tool == "ours" else (args.skip_nnunet, args.retrain_nnunet)
    cached = read_json(path)
    if cached and not retrain:
        return {**cached, "cached": True}
    if skip:
        older = latest_ours(dataset, budget, args.variant, args.plan_key) if tool == "ours" else None
        return {**older, "cached": True, "stale": True} if older else None
    lock = path.with_name(path.stem + ".lock")
    if not take_lock(lock):
        log(f"[{dataset.label}] {tool} budget {budget}: another process is training it ({lock}); skipped")
        return None
    log(f"[{dataset.label}] {tool} budget {budget}: training ({time.strftime('%H:%M:%S')})")
    started = time.perf_counter()
    try:
        result = run_ours(dataset, budget, args, code) if tool == "ours" else run_nnunet(dataset, budget, args)
    except (StepFailed, subprocess.CalledProcessError, OSError, KeyError, StopIteration, json.JSONDecodeError) as error:
        log(f"    FAILED: {type(error).__name__}: {error}")
        return {"tool": tool, "budget": budget, "failed": f"{type(error).__name__}: {error}"}
    finally:
        lock.unlink(missing_ok=True)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(path, result)
    log(f"    done in {time.perf_counter() - started:.0f} s: mean Dice {fmt(result['mean_dice'])}, "
        f"{result['s_per_iter']:.3f} s/iter, peak {result['peak_pss_mb']:.0f} MB")
    return {**result, "cached": False}


# ----------------------------------------------------------------------------------------- report

def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    """``0.85x`` (ours / nnU-Net), ``-`` where either is missing or nnU-Net's is 0."""
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def ok(result: dict | None) -> bool:
    return bool(result) and "failed" not in result


def result_row(budget: int, tool: str, result: dict | None, classes: Sequence[str]) -> str:
    if result and result.get("stale"):
        tool = f"ours (older code {result['code']})"
    if not result:
        return f"| {budget} | {tool} | not run |" + " |" * (len(classes) + 5)
    if "failed" in result:
        return f"| {budget} | {tool} | FAILED: {result['failed'][:80]} |" + " |" * (len(classes) + 5)
    dice = " | ".join(fmt(result["dice"].get(c)) for c in classes)
    return (f"| {budget} | {tool} | {dice} | {fmt(result['mean_dice'])} | {result['s_per_iter']:.3f} | "
            f"{result['s_per_iter_loop']:.3f} | {result['peak_pss_mb']:.0f} | {result['wall_s']:.0f} | "
            f"{result['schedule']} |")


def ratio_row(budget: int, ours: dict | None, theirs: dict | None, classes: Sequence[str]) -> str:
    if not (ok(ours) and ok(theirs)):
        return f"| {budget} | ours / nnU-Net | - |" + " - |" * (len(classes) + 5)
    cells = [ratio(ours["dice"].get(c), theirs["dice"].get(c)) for c in classes]
    cells += [ratio(ours[k], theirs[k]) for k in ("mean_dice", "s_per_iter", "s_per_iter_loop", "peak_pss_mb", "wall_s")]
    return f"| {budget} | ours / nnU-Net | " + " | ".join(cells) + " | |"


def results_table(classes: Sequence[str], results: Mapping[tuple[int, str], dict | None],
                  budgets: Sequence[int]) -> list[str]:
    """One row per budget and tool, then the ratio row ours / nnU-Net."""
    header = (["budget", "tool"] + [f"Dice {c}" for c in classes]
              + ["mean fg Dice", "s/iter", "s/iter (train loop)", "peak MB (tree PSS)", "train command s", "schedule"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for budget in budgets:
        ours, theirs = results.get((budget, "ours")), results.get((budget, "nnU-Net"))
        lines += [result_row(budget, "ours", ours, classes), result_row(budget, "nnU-Net", theirs, classes),
                  ratio_row(budget, ours, theirs, classes)]
    return lines


def goal_lines(results: Mapping[tuple[int, str], dict | None], budgets: Sequence[int]) -> list[str]:
    """Dice ours >= nnU-Net at every budget; s/iter ours <= nnU-Net; judged on measured pairs only."""
    pairs = [(b, results[(b, "ours")], results[(b, "nnU-Net")]) for b in budgets
             if ok(results.get((b, "ours"))) and ok(results.get((b, "nnU-Net")))]
    dice_goal, time_goal = "our test Dice >= nnU-Net's at every budget", "our s/iteration <= nnU-Net's"
    if not pairs:
        return [unmeasured_goal(dice_goal, "no budget has both tools"), unmeasured_goal(time_goal, "no budget has both tools")]
    missing = [str(b) for b in budgets if b not in {p[0] for p in pairs}]
    note = f"; budgets {', '.join(missing)} not measured for both" if missing else ""
    dice = all((o["mean_dice"] or 0) >= (n["mean_dice"] or 0) for _, o, n in pairs)
    speed = all(o["s_per_iter"] <= n["s_per_iter"] for _, o, n in pairs)
    # four digits: a verdict must be readable from its numbers, also when they differ by < 0.001
    return [goal_line(dice_goal, dice, "; ".join(f"{b}: {fmt(o['mean_dice'], 4)} vs {fmt(n['mean_dice'], 4)}"
                                                 for b, o, n in pairs) + note),
            goal_line(time_goal, speed, "; ".join(f"{b}: {o['s_per_iter']:.3f} vs {n['s_per_iter']:.3f} s"
                                                  for b, o, n in pairs) + note)]


def test_set_line(dataset: ParityDataset, results: Mapping[tuple[int, str], dict | None]) -> str:
    split, options = dataset.split, dataset.split["options"]
    agrees = next((r.get("split_agrees") for r in results.values() if ok(r) and r["tool"] == "nnU-Net"), "unknown")
    agree_text = {True: "yes", False: "no", None: "n/a (< 5 cases)"}.get(agrees, str(agrees))
    if split["moved"]:
        moved = (f"{len(split['moved'])} moved from imagesTr (seed {options['seed']}, fraction {options['fraction']}, "
                 "stratified by foreground)")
    elif len(split["original_test"]) >= options["min_test"]:
        moved = f"none moved: imagesTs already holds >= {options['min_test']}"
    else:
        moved = f"none moved: training would keep fewer than {options['min_train']} cases"
    return (f"test set: {len(split['test'])} cases ({len(split['original_test'])} labelled imagesTs cases, {moved}; "
            f"{split['test_with_foreground']} with foreground); training {len(split['train'])} cases, fold 0 of our "
            f"5-fold split written as nnU-Net's splits_final.json; nnU-Net's own generate_crossval_split gives the "
            f"same fold 0: {agree_text}")


def plans_table(datasets: Sequence[ParityDataset], all_results: Mapping[str, Mapping]) -> list[str]:
    lines = ["| dataset | tool | patch | batch | spacing (mm) | network widths |", "|---|---|---|---|---|---|"]
    for dataset in datasets:
        for tool in TOOLS:
            plan = next((r["plan"] for (_, t), r in all_results[dataset.label].items() if t == tool and ok(r)), None)
            if plan:
                spacing = " x ".join(f"{float(s):.3g}" for s in plan["spacing"])
                lines.append(f"| {dataset.label} | {tool} | {' x '.join(map(str, plan['patch']))} | {plan['batch']} | "
                             f"{spacing} | {plan['widths']} |")
    return lines


def command_lines(dataset: ParityDataset, results: Mapping[tuple[int, str], dict | None]) -> list[str]:
    lines = ["```"]
    for (budget, tool), result in sorted(results.items()):
        if ok(result):
            state = f"cached, finished {result.get('finished')}" if result.get("cached") else "ran now"
            lines += [f"# {tool}, budget {budget} ({state})", *result["commands"]]
    return lines + ["```"]


def machine_lines(args: argparse.Namespace, busy: tuple[float, float]) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    import torch

    nnunet = sorted(args.nnunet_venv.glob("lib/python3*/site-packages/nnunetv2-*.dist-info"))
    return [f"- machine: {cpu}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; Python "
            f"{platform.python_version()}, torch {torch.__version__}, "
            f"nnunetv2 {nnunet[-1].name.removesuffix('.dist-info').split('-')[1] if nnunet else 'not installed'}",
            f"- our runs' extra mucald_train flags: {' '.join(args.train_flags) or 'none (the defaults)'}; "
            f"plan flags: {' '.join(args.plan_flags)}",
            f"- {args.threads} torch threads per training process (OMP_NUM_THREADS), {args.workers} worker processes "
            f"for planning/prediction, nnU-Net nnUNet_n_proc_DA={args.da_workers}; device cpu for both",
            f"- CPUs busy with other work: {busy[0]:.1f} at the start, {busy[1]:.1f} at the end (shared machine: "
            f"timings are noisy; each run's 1-minute load average is in its cached result JSON)"]


def build_report(datasets: Sequence[ParityDataset], all_results: Mapping[str, Mapping], budgets: Sequence[int],
                 args: argparse.Namespace, busy: tuple[float, float]) -> str:
    lines = ["# Single-client parity: ours (`mucald_train --method local`) vs nnU-Net v2 `2d`, equal iterations", "",
             *machine_lines(args, busy),
             "- s/iter: ours = sum of `train_seconds` in log.jsonl / budget (the round's step loop: batch sampling, "
             "augmentation, step); nnU-Net = sum of `train_step` wall times / budget (augmentation runs in its "
             "background workers). s/iter (train loop): both tools' training loop wall time per iteration, "
             "nnU-Net's including waiting for its workers' batches. Validation is excluded from both.",
             "- peak MB: peak PSS sum of the training command's process tree (nnU-Net's augmentation workers "
             "included); test Dice: `mucald_evaluate` of each tool's predictions of imagesTs (checkpoint final, "
             "default test-time mirroring) against labelsTs; mean fg Dice = mean over classes of the case mean", ""]
    for dataset in datasets:
        results = all_results[dataset.label]
        lines += [f"## {dataset.label}", "", f"- {test_set_line(dataset, results)}", "",
                  *results_table(dataset.classes, results, budgets), "", *goal_lines(results, budgets), ""]
    lines += ["## Plans", "", *plans_table(datasets, all_results), "", "## Commands", ""]
    for dataset in datasets:
        lines += [f"### {dataset.label}", "", *command_lines(dataset, all_results[dataset.label]), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["real", "demo"], choices=["real", "demo"],
                        help="Dataset groups (default: real demo); --datasets with nothing: only --raw.")
    parser.add_argument("--raw", type=Path, help="Your own raw datasets folder (nnU-Net v2 layout), with -d.")
    parser.add_argument("-d", "--dataset-ids", nargs="+", default=[], help="Dataset ids in --raw.")
    parser.add_argument("--only", nargs="+", default=[], help="Keep datasets whose name contains one of these.")
    parser.add_argument("--budgets", nargs="+", type=int, default=list(DEFAULT_BUDGETS), help="Training iterations.")
    parser.add_argument("--rounds", type=int, default=10, help="Our rounds per run (iterations = budget / rounds).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mucald-parity"), help="Work folder and cache.")
    parser.add_argument("--out", type=Path, help="Also write the markdown report here.")
    parser.add_argument("--nnunet-venv", type=Path, default=DEFAULT_VENV, help="nnU-Net's venv.")
    parser.add_argument("--pyradiomics", type=Path, default=PYRADIOMICS, help="The pyradiomics scans folder.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each training process.")
    parser.add_argument("--workers", type=int, default=2, help="Worker processes for planning and prediction.")
    parser.add_argument("--da-workers", type=int, default=2, help="nnU-Net's nnUNet_n_proc_DA.")
    parser.add_argument("--min-test", type=int, default=6, help="Fewer labelled test cases: move training cases.")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="Share of training cases moved to test.")
    parser.add_argument("--min-train", type=int, default=8, help="Never leave fewer training cases than this.")
    parser.add_argument("--split-seed", type=int, default=0, help="Seed of the moved test cases.")
    parser.add_argument("--train-flags", default="", help="Extra mucald_train flags of our runs, one string "
                        "(--train-flags='--deep-supervision 2'): a recipe variant, cached apart from the defaults.")
    parser.add_argument("--plan-flags", default=" ".join(DEFAULT_PLAN_FLAGS), help="mucald_plan_and_preprocess "
                        "flags of our plan, one string (default: the cpu preset; --plan-flags='--target gpu' plans "
                        "at nnU-Net's resolution): a plan variant, planned and cached apart.")
    for flag in ("--skip-nnunet", "--skip-ours", "--retrain-ours", "--retrain-nnunet"):
        parser.add_argument(flag, action="store_true")
    args = parser.parse_args(argv)
    args.train_flags = shlex.split(args.train_flags)
    args.variant = ("-" + hashlib.sha256(" ".join(args.train_flags).encode()).hexdigest()[:8]
                    if args.train_flags else "")
    args.plan_flags = shlex.split(args.plan_flags)
    args.plan_key = ("" if args.plan_flags == list(DEFAULT_PLAN_FLAGS)
                     else "-p" + hashlib.sha256(" ".join(args.plan_flags).encode()).hexdigest()[:8])
    if args.raw and not args.dataset_ids:
        parser.error("--raw needs -d ID")
    args.work, args.nnunet_venv = args.work.resolve(), args.nnunet_venv.resolve()
    return args


def collect_datasets(args: argparse.Namespace) -> list[ParityDataset]:
    """Every chosen source, copied into the work folder with its test set."""
    from preprocessing.dataset import find_dataset_folder

    sources = [("real", s) for s in (real_sources(args.work, args.pyradiomics) if "real" in args.datasets else [])]
    sources += [("demo", s) for s in (demo_sources(args.work) if "demo" in args.datasets else [])]
    sources += [("raw", find_dataset_folder(args.raw, i)) for i in args.dataset_ids]
    options = SplitOptions(args.min_test, args.test_fraction, args.min_train, args.split_seed)
    datasets = []
    for group, source in sources:
        if args.only and not any(o in source.name for o in args.only):
            continue
        work = args.work / "datasets" / f"{group}-{source.name}"
        datasets.append(ParityDataset(f"{group} {source.name}", work, build_parity_copy(source, work / "raw", options)))
    return datasets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if psutil is None:
        raise SystemExit("error: psutil is missing. Fix: pip install -e '.[bench]'")
    from benchmarks.train_step import busy_cpus

    if not args.skip_nnunet and not (args.nnunet_venv / "bin" / "nnUNetv2_train").exists():
        log(f"no nnU-Net in {args.nnunet_venv} (python -m benchmarks.plan_preprocess --setup-nnunet --setup-only); "
            "showing cached nnU-Net results only")
        args.skip_nnunet = True
    busy_start = busy_cpus()
    datasets = collect_datasets(args)
    log(f"work folder {args.work}; {len(datasets)} datasets; budgets {args.budgets}; our code {code_digest()[:12]}")
    all_results: dict[str, dict] = {}
    for dataset in datasets:
        all_results[dataset.label] = {(b, t): get_result(dataset, t, b, args)
                                      for b in args.budgets for t in ("nnU-Net", "ours")}
    emit_report(build_report(datasets, all_results, args.budgets, args, (busy_start, busy_cpus())), args.out)
    failed = any(r and "failed" in r for results in all_results.values() for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
