"""The audit report: a markdown table per client (Dice beside every attack), one JSON with every
number, and a PNG grid per client (originals, the prior-only answer, each run's reconstructions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.audit.runner import ATTACKS, RECONSTRUCTIONS, AuditStore
from mucald_unet.training.run_log import RunLog
from mucald_unet.training.trainer import LOG_FILE, run_folder
from preprocessing.atomic import atomic_output, write_json_atomic, write_text_atomic

REPORT_FILE, NUMBERS_FILE = "report.md", "audit.json"
ATTACK_OF = {"prior": "inverse", "inverse": "inverse", "inverse-adaptive": "inverse",
             "inverse-averaged": "inverse", "whitebox": "whitebox"}
GRID_COLUMNS = 4


def final_dice(results_root: Path, plans_path: Path, run: str, fold: int, client: str) -> float | None:
    """The client's mean validation Dice after the run's last round (from its log)."""
    path = run_folder(results_root, plans_path, run, fold) / LOG_FILE
    if not path.is_file():
        return None
    rounds = [r for r in RunLog(path).records() if r.get("event") == "round" and r.get("client") == client]
    return float(rounds[-1]["mean_val_dice"]) if rounds else None


def collect(store: AuditStore, runs: list[str], clients: list[str],
            dice: dict[tuple[str, str], float | None]) -> dict:
    """Everything stored for these runs and clients (also by earlier calls with other --attacks), as one
    JSON-ready dict: client -> run -> numbers."""
    numbers: dict = {}
    for client in clients:
        for run in runs:
            entry = {"dice": dice.get((run, client))}
            for attack in ATTACKS:
                if store.has(run, client, attack):
                    entry[attack] = store.load(run, client, attack)
            entry["strongest"] = _strongest(entry)
            numbers.setdefault(client, {})[run] = entry
    return numbers


def _strongest(entry: dict) -> dict | None:
    """The reconstruction attack with the highest mean SSIM (the prior-only answer excluded)."""
    scores = {name: value for attack in ("inverse", "whitebox") if attack in entry
              for name, value in entry[attack]["scores"].items() if name != "prior"}
    if not scores:
        return None
    name = max(scores, key=lambda n: scores[n]["ssim"]["mean"])
    return {"attack": name, **scores[name]}


def markdown(numbers: dict, header: list[str]) -> str:
    lines = ["# Privacy audit", "", *header, ""]
    columns = ["run", "Dice", "dCor^2", "SSIM prior", "SSIM inverse", "SSIM adaptive", "SSIM averaged",
               "SSIM white-box", "strongest SSIM [95% CI]", "re-id (strongest)", "re-id in gallery (strongest)",
               "MIA AUC loss",
               "MIA AUC LiRA [95% CI] (members vs held-out+test non-members)",
               "LiRA TPR@1%FPR", "label acc prior", "label acc gradients (better of norm, direction)",
               "label acc completion [95% CI]",
               "label fg Dice gradients / completion"]
    for client, runs in numbers.items():
        lines += [f"## {client}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for run, entry in runs.items():
            lines.append("| " + " | ".join([run, _num(entry.get("dice")), _dcor(entry), *_ssims(entry),
                                             *_strongest_cells(entry), *_mia(entry), *_labels(entry)]) + " |")
        lines.append("")
    lines += ["SSIM/PSNR/MSE are computed in a fixed intensity window per client (auxiliary 0.5-99.5 "
              "percentiles -> 0..1); 'prior' is an attacker that outputs the auxiliary mean image; "
              "re-id is top-1 re-identification of the strongest attack's reconstructions among the attacked "
              "cases (chance = 1 / cases); re-id in gallery is the same among the attacked cases and the "
              "attacker's auxiliary patches of other patients (chance = 1 / gallery size, in audit.json). "
              "MIA balanced accuracy is at the best threshold. Labels: voxel "
              "accuracy of the server's label inference at the resolution of what crosses, from the split-2 "
              "gradients (k-means) and by model completion on labelled auxiliary patches, against guessing "
              "the most common class everywhere. Every number with its interval is in audit.json."]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _score(entry: dict, attack: str, name: str) -> float | None:
    return entry.get(attack, {}).get("scores", {}).get(name, {}).get("ssim", {}).get("mean")


def _ssims(entry: dict) -> list[str]:
    return [_num(_score(entry, ATTACK_OF[name], name)) for name in RECONSTRUCTIONS]


def _dcor(entry: dict) -> str:
    return _num(entry["dcor"]["transmitted"]) if "dcor" in entry else "-"


def _strongest_cells(entry: dict) -> list[str]:
    best = entry.get("strongest")
    if not best:
        return ["-", "-", "-"]
    ssim = best["ssim"]
    gallery = best.get("reid_gallery")  # absent from results stored before the gallery was scored
    return [f"{ssim['mean']:.3f} [{ssim['ci95'][0]:.3f}, {ssim['ci95'][1]:.3f}] ({best['attack']})",
            _num(best["reid"]["mean"], 2), _num(gallery["mean"], 2) if gallery else "-"]


def _mia(entry: dict) -> list[str]:
    if "mia" not in entry:
        return ["-", "-", "-"]
    mia = entry["mia"]
    loss, lira = mia["loss_threshold"], mia["lira_offline"]
    auc = lira["auc"]
    counted = (f" ({mia['members']} vs {mia['held_out_non_members']}+{mia['test_non_members']})"
               if "members" in mia else "")
    return [_num(loss["auc"]["mean"]), f"{auc['mean']:.3f} [{auc['ci95'][0]:.3f}, {auc['ci95'][1]:.3f}]{counted}",
            _num(lira["tpr_at_1pct_fpr"], 2)]


def _labels(entry: dict) -> list[str]:
    """Prior, the better gradient attack, model completion (with its interval), and foreground Dice."""
    if "labels" not in entry:
        return ["-"] * 4
    found = entry["labels"]
    gradient = max(("gradient_norm", "gradient_direction"), key=lambda a: found[a]["accuracy"]["mean"])
    completion = found["model_completion"]["accuracy"]
    dice = [_num(found[a]["foreground_dice"]["mean"], 2) for a in (gradient, "model_completion")]
    return [_num(found["prior"]["accuracy"]["mean"]),
            f"{found[gradient]['accuracy']['mean']:.3f} ({gradient.split('_')[1]})",
            f"{completion['mean']:.3f} [{completion['ci95'][0]:.3f}, {completion['ci95'][1]:.3f}]", " / ".join(dice)]


def write_report(out: Path, numbers: dict, header: list[str], store: AuditStore) -> list[Path]:
    out = Path(out)
    write_json_atomic(out / NUMBERS_FILE, numbers)
    write_text_atomic(out / REPORT_FILE, markdown(numbers, header))
    written = [out / NUMBERS_FILE, out / REPORT_FILE]
    for client, runs in numbers.items():
        rows = _grid_rows(store, client, list(runs))
        if rows:
            path = out / f"reconstructions_{client}.png"
            _plot_grid(rows, path, client)
            written.append(path)
    return written


def _grid_rows(store: AuditStore, client: str, runs: list[str]) -> list[tuple[str, np.ndarray]]:
    rows: list[tuple[str, np.ndarray]] = []
    for run in runs:
        for attack in ("inverse", "whitebox"):
            images = store.images(run, client, attack)
            if not images:
                continue
            if not rows:
                rows += [("original", images["original"]), ("prior (aux mean)", images["prior"])]
            rows += [(f"{run}: {name}", images[name]) for name in images if name not in ("original", "prior")]
    return rows


def _plot_grid(rows: list[tuple[str, np.ndarray]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    columns = min(GRID_COLUMNS, len(rows[0][1]))
    fig = Figure(figsize=(1.6 * columns + 2.6, 1.5 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.imshow(_displayable(images[c]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{title}: private patches and what each attack reconstructs from the transmissions", fontsize=9)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def _displayable(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in 0..1 -> RGB (H, W, 3) or gray (H, W)."""
    return np.moveaxis(image[:3], 0, -1) if image.shape[0] >= 3 else image[0]
