#!/usr/bin/env python3
"""Benchmark ``mucald_plan_and_preprocess`` against nnU-Net's ``nnUNetv2_plan_and_preprocess``.

Both tools run as subprocesses on the same raw datasets (nnU-Net v2 raw layout, which nnU-Net reads
directly), for one 3D dataset per run (so ours plans 3d and nnU-Net preprocesses 3d_fullres), with
the same number of worker processes. For each run the script records

* wall time (``time.perf_counter`` around the subprocess, start to reap),
* peak memory of the whole process tree: every ~50 ms psutil lists the process and all its
  descendants and sums their RSS (and their PSS, which splits pages shared between processes,
  e.g. copy-on-write pages of forked workers, instead of counting them once per process),
* the largest single process's max RSS (``ru_maxrss`` from ``os.wait4``: what ``/usr/bin/time -v``
  reports; it is *not* the tree's total),
* the size of the preprocessed output on disk.

It repeats every measurement ``--repeats`` times (variants interleaved) and reports medians, as a
markdown table printed and optionally written to ``--out``. Run it with the project venv's python;
nnU-Net runs from its own venv (``--nnunet-venv``, default ``benchmarks/.venv``), which
``--setup-nnunet`` creates (idempotent; see benchmarks/README.md for why it is a separate venv).

    .venv/bin/python -m benchmarks.plan_preprocess --setup-nnunet --workers 2 --out results.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.process_meter import Measurement, measure, median_measurement, psutil
from benchmarks.reporting import emit_report, log

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO / "benchmarks" / ".venv"  # git-ignored by the ".venv/" rule of .gitignore
REQUIREMENTS = REPO / "benchmarks" / "requirements-nnunet.txt"
NNUNET_NO_DEPS = ("nnunetv2==2.8.1", "dynamic-network-architectures==0.4.4")
PYRADIOMICS_CANDIDATES = (REPO / "shared" / "data" / "pyradiomics",
                          REPO.parent / "shared" / "data" / "pyradiomics")
# (dataset id, name, --include glob, channel name) converted from the pyradiomics sample scans
PYRADIOMICS_DATASETS = ((10, "Lung", "lung*", "CT"), (11, "Brain", "brain*", "MR"))
DEMO_DATASET_ID, DEMO_DATASET = 2, "Dataset002_DemoLungCT"

# variant -> (tool, verifies?)
VARIANTS = {
    "ours": ("ours", True),
    "nnunet": ("nnU-Net", True),
    "ours-noverify": ("ours", False),
    "nnunet-noverify": ("nnU-Net", False),
    "nnunet-npfp8": ("nnU-Net", True),  # the literal `-np N` command: fingerprinting uses 8 workers
}
# ours variant -> the nnU-Net variant its ratio is taken against
RATIO_PAIRS = {"ours": "nnunet", "ours-noverify": "nnunet-noverify"}
DEFAULT_VARIANTS = ("ours", "nnunet", "ours-noverify", "nnunet-noverify")
NNUNET_ENV = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc")


# --------------------------------------------------------------------------------------- helpers

def run_checked(cmd: list[str], **kwargs) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def project_bin(name: str) -> str:
    """A console script of the project venv (the one running this file), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"error: {name} not found; run this script with the project venv's python "
                         f"(.venv/bin/python -m benchmarks.plan_preprocess).")
    return found


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def project_torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "2.13.0"


# ---------------------------------------------------------------------------------- nnU-Net venv

def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def nnunet_status(venv: Path) -> tuple[str | None, str | None]:
    """(torch version, nnunetv2 version) of the venv, None where it does not import."""
    python = venv_python(venv)
    if not python.exists():
        return None, None
    probe = ("import importlib.metadata as m, torch\n"
             "print(torch.__version__)\n"
             "try:\n"
             "    import nnunetv2.experiment_planning.plan_and_preprocess_entrypoints\n"
             "    print(m.version('nnunetv2'))\n"
             "except Exception as e:\n"
             "    print('')\n")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return None, None
    lines = result.stdout.strip().splitlines() + ["", ""]
    return lines[0] or None, lines[1] or None


def setup_nnunet(venv: Path, torch_version: str) -> None:
    """Create nnU-Net's own venv with the CPU torch kept (idempotent)."""
    have_torch, have_nnunet = nnunet_status(venv)
    if have_torch == torch_version and have_nnunet and (venv / "bin" / "nnUNetv2_plan_and_preprocess").exists():
        log(f"nnU-Net venv ready: {venv} (torch {have_torch}, nnunetv2 {have_nnunet})")
        return
    if not venv_python(venv).exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        run_checked([base, "-m", "venv", venv])
    pip = [venv_python(venv), "-m", "pip", "install", "--disable-pip-version-check"]
    if have_torch != torch_version:
        run_checked(pip + [f"torch=={torch_version}"])
    with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as constraints:
        constraints.write(f"torch=={torch_version}\n")
    try:
        run_checked(pip + ["-r", REQUIREMENTS, "-c", constraints.name])
        run_checked(pip + ["--no-deps", *NNUNET_NO_DEPS])
    finally:
        os.unlink(constraints.name)
    have_torch, have_nnunet = nnunet_status(venv)
    if have_torch != torch_version or not have_nnunet:
        raise SystemExit(f"error: nnU-Net venv {venv} is not usable after setup "
                         f"(torch {have_torch}, nnunetv2 {have_nnunet}; expected torch {torch_version}).")
    log(f"nnU-Net venv ready: {venv} (torch {have_torch}, nnunetv2 {have_nnunet})")


# ------------------------------------------------------------------------------------------ data

@dataclass(frozen=True)
class Dataset:
    label: str          # row name in the table
    raw_root: Path
    dataset_id: int
    folder: str         # DatasetXXX_Name

    @property
    def path(self) -> Path:
        return self.raw_root / self.folder

    def num_cases(self) -> int:
        spec = json.loads((self.path / "dataset.json").read_text())
        return int(spec.get("numTraining", len(list((self.path / "labelsTr").iterdir()))))


def build_datasets(work: Path, demo_sizes: list[str], pyradiomics: Path | None) -> list[Dataset]:
    datasets = []
    for size in demo_sizes:
        raw = work / f"raw-demo-{size}"
        if not (raw / DEMO_DATASET / "dataset.json").exists():
            run_checked([project_bin("mucald_make_demo"), raw, "--size", size, "--overwrite"],
                        stdout=subprocess.DEVNULL)
        datasets.append(Dataset(f"demo-{size} {DEMO_DATASET}", raw, DEMO_DATASET_ID, DEMO_DATASET))
    if pyradiomics is None:
        log("pyradiomics scans not found (looked in "
            + ", ".join(str(p) for p in PYRADIOMICS_CANDIDATES) + "); skipping the real-scan datasets.")
        return datasets
    raw = work / "raw-pyradiomics"
    for dataset_id, name, include, channel in PYRADIOMICS_DATASETS:
        folder = f"Dataset{dataset_id:03d}_{name}"
        if not (raw / folder / "dataset.json").exists():
            run_checked([project_bin("mucald_convert"), "volumes", "--input", pyradiomics, "--out", raw,
                         "--dataset-id", str(dataset_id), "--name", name, "--include", include,
                         "--channel-name", channel, "--overwrite"], stdout=subprocess.DEVNULL)
        datasets.append(Dataset(f"pyradiomics {folder}", raw, dataset_id, folder))
    return datasets


# ------------------------------------------------------------------------------------ commands

def command(variant: str, dataset: Dataset, out: Path, workers: int, venv: Path) -> tuple[list[str], dict]:
    """The command line and environment of one variant; outputs go under ``out``."""
    env = dict(os.environ)
    if VARIANTS[variant][0] == "ours":
        cmd = [project_bin("mucald_plan_and_preprocess"), "-d", str(dataset.dataset_id), "-np", str(workers),
               "--target", "cpu", "--raw", str(dataset.raw_root), "--preprocessed", str(out / "preprocessed")]
        if variant == "ours-noverify":
            cmd.append("--no-verify")
        return cmd, env
    env.update(nnUNet_raw=str(dataset.raw_root), nnUNet_preprocessed=str(out / "preprocessed"),
               nnUNet_results=str(out / "results"),
               VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    if variant != "nnunet-npfp8":  # that one is the literal `-np N` command, nnU-Net's defaults otherwise
        env["nnUNet_def_n_proc"] = str(workers)
    else:
        env.pop("nnUNet_def_n_proc", None)
    cmd = [str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset.dataset_id),
           "-c", "3d_fullres", "-np", str(workers)]
    if variant != "nnunet-npfp8":
        cmd += ["-npfp", str(workers)]
    if variant in ("nnunet", "nnunet-npfp8"):
        cmd.append("--verify_dataset_integrity")
    return cmd, env


# ------------------------------------------------------------------------------- plan summaries

def plan_summary(variant: str, dataset: Dataset, out: Path) -> dict:
    """Target spacing, median shape, patch, batch and CT/MR intensity statistics each tool chose."""
    pre = out / "preprocessed"
    try:
        if VARIANTS[variant][0] == "ours":
            plans_file = next(pre.glob("Federation_*/plans.json"))
            client = json.loads(plans_file.read_text())["clients"][dataset.folder]
            norm = client["normalization"][0]
            return {"dimensionality": json.loads(plans_file.read_text())["federation"]["dimensionality"],
                    "spacing": client["target_spacing"], "median_shape": client["median_shape"],
                    "patch": client["patch_size"], "batch": client["batch_size"],
                    "norm": norm.get("kind"),
                    "intensity": [norm.get(k) for k in ("mean", "std", "lower", "upper")]}
        plans = json.loads((pre / dataset.folder / "nnUNetPlans.json").read_text())
        fingerprint = json.loads((pre / dataset.folder / "dataset_fingerprint.json").read_text())
        config = plans["configurations"].get("3d_fullres")
        props = fingerprint["foreground_intensity_properties_per_channel"]["0"]
        return {"dimensionality": "3d_fullres" if config else "no 3d_fullres",
                "spacing": config and config["spacing"], "median_shape": config and config["median_image_size_in_voxels"],
                "patch": config and config["patch_size"], "batch": config and config["batch_size"],
                "norm": config and config["normalization_schemes"][0],
                "intensity": [props.get(k) for k in ("mean", "std", "percentile_00_5", "percentile_99_5")]}
    except (StopIteration, KeyError, OSError, json.JSONDecodeError) as error:
        return {"error": f"{type(error).__name__}: {error}"}


# -------------------------------------------------------------------------------------- report

def mb(value: float) -> str:
    return f"{value / 2**20:.0f}"


def fmt_list(values, digits: int = 3) -> str:
    if values is None:
        return "-"
    return " x ".join(f"{float(v):.{digits}g}" for v in values)


def fmt_intensity(values) -> str:
    return ", ".join("-" if v is None else f"{float(v):.4g}" for v in values)


def results_table(datasets: list[Dataset], variants: list[str], results: dict, repeats: int, pss: bool) -> str:
    header = ["dataset", "cases", "tool", "verify", "seconds", "peak MB (tree RSS sum)"]
    if pss:
        header.append("peak MB (tree PSS sum)")
    header += ["largest process MB", "output MB", "ratio time ours/nnU-Net", "ratio peak ours/nnU-Net"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in datasets:
        medians = {v: median_measurement(results[(dataset.label, v)]) for v in variants
                   if (dataset.label, v) in results}
        for variant in variants:
            if variant not in medians:
                continue
            m = medians[variant]
            tool, verify = VARIANTS[variant]
            tool_name = tool + (" (-npfp 8)" if variant == "nnunet-npfp8" else "")
            runs = results[(dataset.label, variant)]
            seconds = f"{m.seconds:.2f}"
            if repeats > 1:
                seconds += f" ({min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f})"
            if m.returncode != 0:
                seconds += f" FAILED rc={m.returncode}"
            row = [dataset.label, str(dataset.num_cases()), tool_name, "yes" if verify else "no", seconds,
                   mb(m.peak_rss)]
            if pss:
                row.append(mb(m.peak_pss))
            row += [mb(m.max_single_rss), f"{m.output_bytes / 2**20:.2f}"]
            partner = RATIO_PAIRS.get(variant)
            if partner in medians and medians[partner].seconds > 0:
                other = medians[partner]
                memory = (m.peak_pss / other.peak_pss) if pss and other.peak_pss else m.peak_rss / other.peak_rss
                row += [f"**{m.seconds / other.seconds:.2f}x**", f"{memory:.2f}x"]
            elif variant == "nnunet-npfp8" and "ours" in medians:
                row += [f"{medians['ours'].seconds / m.seconds:.2f}x", "-"]
            else:
                row += ["", ""]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plans_table(datasets: list[Dataset], summaries: dict) -> str:
    header = ["dataset", "tool", "config", "target spacing mm", "median shape", "patch", "batch",
              "normalisation", "intensity mean, std, lo, hi"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in datasets:
        for tool in ("ours", "nnU-Net"):
            s = summaries.get((dataset.label, tool))
            if s is None:
                continue
            if "error" in s:
                lines.append(f"| {dataset.label} | {tool} | {s['error']} |" + " |" * 6)
                continue
            lines.append("| " + " | ".join([
                dataset.label, tool, str(s["dimensionality"]), fmt_list(s["spacing"]),
                fmt_list(s["median_shape"], 4), fmt_list(s["patch"], 4), str(s["batch"]), str(s["norm"]),
                fmt_intensity(s["intensity"])]) + " |")
    return "\n".join(lines)


def environment_lines(venv: Path, workers: int, repeats: int, interval: float, pss: bool) -> list[str]:
    torch_nn, nnunet_version = nnunet_status(venv)
    try:
        ours_version = importlib.metadata.version("mucald")
    except importlib.metadata.PackageNotFoundError:
        ours_version = "?"
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                           text=True).stdout.strip()
    return [
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.platform()}, Python {platform.python_version()}",
        f"- ours: mucald {ours_version} (git {rev}{' + uncommitted changes' if dirty else ''}), "
        f"torch {project_torch_version()} in {Path(sys.executable).parent.parent}",
        f"- nnU-Net: nnunetv2 {nnunet_version}, torch {torch_nn} in {venv}",
        f"- workers: {workers} for both (ours `-np {workers}`; nnU-Net `-np {workers} -npfp {workers}`, "
        f"nnUNet_def_n_proc={workers}); repeats: {repeats} (median; range in brackets)",
        f"- memory: psutil every {interval * 1000:.0f} ms over the process and all its descendants, summed "
        f"RSS{' and PSS' if pss else ''}, max over the run; 'largest process' is ru_maxrss from wait4 "
        f"(the number `/usr/bin/time -v` gives: the biggest single process, not the tree)",
    ]


# ------------------------------------------------------------------------------------------ main

def find_pyradiomics(arg: str | None) -> Path | None:
    if arg == "none":
        return None
    candidates = [Path(arg)] if arg else list(PYRADIOMICS_CANDIDATES)
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*_image.nrrd")):
            return candidate
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="Work folder for raw data, outputs and logs "
                        "(default: a temp dir, removed at the end unless --keep).")
    parser.add_argument("--keep", action="store_true", help="Keep the temp work folder and every run's output.")
    parser.add_argument("--workers", "-np", type=int, default=2, help="Worker processes for both tools.")
    parser.add_argument("--repeats", type=int, default=1, help="Measurements per tool and dataset (median).")
    parser.add_argument("--out", type=Path, help="Also write the markdown report here.")
    parser.add_argument("--demo-sizes", nargs="*", default=["small"], choices=["tiny", "small", "medium"],
                        help="mucald_make_demo sizes to benchmark (Dataset002_DemoLungCT).")
    parser.add_argument("--pyradiomics", help="Folder of the pyradiomics NRRD scans "
                        "(default: shared/data/pyradiomics beside or inside the repo; 'none' to skip).")
    parser.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS),
                        help="Which runs per dataset. ours/nnunet verify the dataset, *-noverify do not, "
                        "nnunet-npfp8 is `-np N --verify_dataset_integrity` with nnU-Net's default 8 "
                        "fingerprint workers.")
    parser.add_argument("--nnunet-venv", type=Path, default=DEFAULT_VENV, help="nnU-Net's own venv.")
    parser.add_argument("--setup-nnunet", action="store_true", help="Create/complete the nnU-Net venv first.")
    parser.add_argument("--setup-only", action="store_true", help="With --setup-nnunet: stop after the setup.")
    parser.add_argument("--no-warmup", action="store_true", help="Skip the untimed first run of each tool "
                        "(which fills the OS file cache and byte-compiles both venvs).")
    parser.add_argument("--interval", type=float, default=0.05, help="Memory sampling interval, seconds.")
    parser.add_argument("--no-pss", action="store_true", help="Sample RSS only (PSS costs ~1 ms per process "
                        "per sample).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if psutil is None:
        raise SystemExit("error: psutil is missing in this venv: .venv/bin/pip install psutil")
    torch_version = project_torch_version()
    if args.setup_nnunet:
        setup_nnunet(args.nnunet_venv, torch_version)
        if args.setup_only:
            return 0
    needs_nnunet = any(VARIANTS[v][0] == "nnU-Net" for v in args.variants)
    if needs_nnunet and not (args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess").exists():
        raise SystemExit(f"error: no nnU-Net in {args.nnunet_venv}; add --setup-nnunet "
                         f"(see benchmarks/README.md).")
    if needs_nnunet:
        nn_torch, _ = nnunet_status(args.nnunet_venv)
        if nn_torch != torch_version:
            log(f"warning: nnU-Net venv has torch {nn_torch}, the project venv {torch_version}.")

    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="mucald-bench-")) if temp else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work folder: {work}")
    try:
        datasets = build_datasets(work, args.demo_sizes, find_pyradiomics(args.pyradiomics))
        runs_root = work / "runs"
        if runs_root.exists():
            shutil.rmtree(runs_root)
        if not args.no_warmup and datasets:
            for variant in dict.fromkeys(("ours" if VARIANTS[v][0] == "ours" else "nnunet") for v in args.variants):
                out = runs_root / "warmup" / variant
                cmd, env = command(variant, datasets[0], out, args.workers, args.nnunet_venv)
                log(f"warm-up {variant} on {datasets[0].label}")
                m = measure(cmd, env, out / "log.txt", args.interval, pss=False)
                if m.returncode != 0:
                    log(f"warning: warm-up {variant} failed (rc {m.returncode}); see {out / 'log.txt'}")
                shutil.rmtree(out / "preprocessed", ignore_errors=True)

        results: dict[tuple[str, str], list[Measurement]] = {}
        summaries: dict[tuple[str, str], dict] = {}
        commands: dict[str, list[str]] = {}
        for dataset in datasets:
            for repeat in range(args.repeats):
                for variant in args.variants:
                    out = runs_root / f"{dataset.raw_root.name}-{dataset.folder}" / variant / f"rep{repeat}"
                    cmd, env = command(variant, dataset, out, args.workers, args.nnunet_venv)
                    shown = [f"{k}={env[k]}" for k in NNUNET_ENV
                             if VARIANTS[variant][0] == "nnU-Net" and k in env]
                    commands.setdefault(f"{dataset.label} / {variant}", shown + cmd)
                    log(f"[{dataset.label}] {variant} repeat {repeat + 1}/{args.repeats}")
                    m = measure(cmd, env, out / "log.txt", args.interval, pss=not args.no_pss)
                    m.output_bytes = folder_bytes(out / "preprocessed") if (out / "preprocessed").exists() else 0
                    status = "ok" if m.returncode == 0 else f"FAILED rc={m.returncode}, log {out / 'log.txt'}"
                    log(f"    {m.seconds:.2f} s, tree RSS {mb(m.peak_rss)} MB, PSS {mb(m.peak_pss)} MB, "
                        f"largest process {mb(m.max_single_rss)} MB: {status}")
                    if m.returncode != 0:
                        log("    " + "\n    ".join((out / "log.txt").read_text(errors="replace").splitlines()[-15:]))
                    results.setdefault((dataset.label, variant), []).append(m)
                    tool = VARIANTS[variant][0]
                    if m.returncode == 0 and (dataset.label, tool) not in summaries:
                        summaries[(dataset.label, tool)] = plan_summary(variant, dataset, out)
                    if not (args.keep or (temp is False and repeat == args.repeats - 1)):
                        shutil.rmtree(out / "preprocessed", ignore_errors=True)
                        shutil.rmtree(out / "results", ignore_errors=True)

        report = ["# plan_and_preprocess: mucald vs nnU-Net", ""]
        report += environment_lines(args.nnunet_venv, args.workers, args.repeats, args.interval, not args.no_pss)
        report += ["", results_table(datasets, args.variants, results, args.repeats, not args.no_pss), "",
                   "Ratios: ours / nnU-Net with the same verify setting (time; peak memory uses the PSS sum "
                   "when sampled, else the RSS sum). Below 1.0x means ours is faster / smaller.", "",
                   "## What each tool planned", "",
                   plans_table(datasets, summaries), "",
                   "Intensity: ours = the CT/normalisation parameters in plans.json (mean, std, clip lower, "
                   "upper); nnU-Net = foreground intensity mean, std, 0.5 and 99.5 percentiles of "
                   "dataset_fingerprint.json (used only for CTNormalization).", "",
                   "## Commands", ""]
        for name, cmd in commands.items():
            report.append(f"- {name}: `{' '.join(cmd)}`")
        text = "\n".join(report) + "\n"
        emit_report(text, args.out)
        failed = [key for key, runs in results.items() if any(r.returncode != 0 for r in runs)]
        return 1 if failed else 0
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
