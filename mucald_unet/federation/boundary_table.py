"""What leaves a hospital, as tables generated from the code: every message kind that crosses the
client/server boundary, and every field of plans.json with who needs it and what it is derived from.

Each ``Kind`` member and each plans field must be classified here; an unclassified one is an
error, so a new message or plan field cannot cross unnoticed. ``python -m
mucald_unet.federation.boundary_table README.md docs/architecture.md`` rewrites the tables there.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

from mucald_unet.federation.messages import Direction, Kind
from planners.plans import Plans

START, END = "<!-- boundary-table:start -->", "<!-- boundary-table:end -->"
UP, DOWN = Direction.TO_SERVER, Direction.TO_CLIENT
# B: the plan's batch in training, windows per call otherwise; the rest is clients.*.crossing.shape
# (split_channels at full resolution at cut depth 0, each deeper cut pooled once more and wider)
FEATURE_SHAPE = "(B, *crossing.shape)"


@dataclass(frozen=True)
class Crossing:
    """One message (kind, name, direction) with what it carries and whether labels shaped it."""

    kind: Kind
    name: str
    direction: Direction
    tensors: str
    scalars: str
    when: str
    label_derived: str


MESSAGES: tuple[Crossing, ...] = (
    Crossing(Kind.FEATURES, "split1", UP, f"features {FEATURE_SHAPE}; --defence bottleneck:C: C channels", "",
             "every training step; every validation window (step -1)",
             "no: a function of the image (FE, CRDM1, the split-1 defence)"),
    Crossing(Kind.FEATURES, "split2", DOWN, f"features {FEATURE_SHAPE}; fedem: M x B maps, one per component; "
             "--deep-supervision N, training steps: also coarse0..coarseN-1, the body's coarser maps at 1/2, 1/4, "
             "... of the split-2 resolution", "", "reply to features/split1",
             "no: the server segment applied to split-1 features"),
    Crossing(Kind.GRADIENT, "split2", UP, f"gradient {FEATURE_SHAPE}; fedem: M x B; --deep-supervision N: also "
             "coarse0..coarseN-1, the gradients of the coarser maps", "", "every training step",
             "yes: d(segmentation loss + CRDM2's proxy loss)/d(split-2 features), computed from the "
             "labels and proxies (what split learning must send); with deep supervision the coarse "
             "gradients are d(coarse-scale segmentation losses)/d(coarse maps), from the downsampled labels"),
    Crossing(Kind.GRADIENT, "split1", DOWN, f"gradient {FEATURE_SHAPE}; --defence bottleneck:C: C channels", "", "reply to gradient/split2",
             "yes: the client's split-2 gradient carried back through the server segment"),
    Crossing(Kind.WEIGHTS, "shared", UP, "crdm1/crdm2 exogenous encoder and denoiser state", "",
             "round end, runs with CRDM", "trained weights (like any federated weights)"),
    Crossing(Kind.WEIGHTS, "fetch", UP, "none", "", "round end, runs with CRDM", "no"),
    Crossing(Kind.WEIGHTS, "shared", DOWN, "the weighted average of every client's upload", "",
             "reply to weights/fetch", "trained weights (averaged)"),
    Crossing(Kind.REPORT, "join", UP, "none", "num_samples", "once, when the client joins",
             "no: the number of training cases"),
    Crossing(Kind.REPORT, "roster", UP, "none", "", "once, after every client joined", "no"),
    Crossing(Kind.REPORT, "roster", DOWN, "none", "largest_num_samples", "reply to report/roster (refused until "
             "every client joined)", "no: the largest client's number of training cases, against which each "
             "client scales its segmentation weight"),
    Crossing(Kind.REPORT, "round", UP, "none", "num_samples; with --aggregation causal also proxy_mse, val_loss",
             "round end", "only with --aggregation causal: proxy_mse (error of the proxy prediction) and "
             "val_loss (segmentation loss on validation labels), which causal-invariant fusion weighs by"),
    Crossing(Kind.ACK, "join / shared / round", DOWN, "none", "", "reply to report/join, weights/shared, "
             "report/round", "no"),
    Crossing(Kind.ERROR, "the request's name", DOWN, "none", "", "instead of a reply, when the server refuses "
             "a request (raised at the client as ServerRefusal)", "no: the server's reason, as text"),
)


@dataclass(frozen=True)
class PlanField:
    """Who needs a plans.json field, and what it was computed from."""

    needed_by: str
    derived_from: str
    label_derived: bool = False


SERVER = "server and every client"
EVERY = "every client (same value, so shared modules average)"
OWN = "own client only"
META = "whoever reads plans.json"
SETTING = "planner setting"
META_JSON = "dataset.json"
IMAGES = "the client's images (headers, crop, resampled shape)"
ALL_IMAGES = "every client's image-derived spacing and patch"

PLAN_FIELDS: dict[str, PlanField] = {
    "schema_version": PlanField(META, SETTING),
    "preset": PlanField(META, SETTING),
    "warnings": PlanField(META, "patch fitting of every client (image-derived)"),
    "federation.dimensionality": PlanField(SERVER, "every client's native dimensionality"),
    "federation.split_channels": PlanField(SERVER, SETTING),
    "federation.cut_depth": PlanField(SERVER, SETTING),
    "federation.server_segment.spatial_dims": PlanField(SERVER, ALL_IMAGES),
    "federation.server_segment.kernel_sizes": PlanField(SERVER, ALL_IMAGES),
    "federation.server_segment.strides": PlanField(SERVER, ALL_IMAGES),
    "federation.server_segment.filters": PlanField(SERVER, ALL_IMAGES),
    "federation.diffusion.num_train_timesteps": PlanField(EVERY, SETTING),
    "federation.diffusion.beta_schedule": PlanField(EVERY, SETTING),
    "federation.diffusion.eval_timestep": PlanField(EVERY, SETTING),
    "federation.causal.num_nodes": PlanField(EVERY, SETTING),
    "federation.causal.node_dim": PlanField(EVERY, SETTING),
    "clients.*.dataset_name": PlanField(SERVER, "the dataset folder name (the client's id in every message)"),
    "clients.*.native_dimensionality": PlanField(OWN, IMAGES),
    "clients.*.file_ending": PlanField(OWN, META_JSON),
    "clients.*.channel_names": PlanField(OWN, META_JSON),
    "clients.*.labels": PlanField(OWN, META_JSON + " (class names, not label voxels)"),
    "clients.*.in_channels": PlanField(OWN, META_JSON),
    "clients.*.num_classes": PlanField(OWN, META_JSON),
    "clients.*.original_median_spacing": PlanField(OWN, IMAGES),
    "clients.*.target_spacing": PlanField(OWN, IMAGES),
    "clients.*.median_shape": PlanField(OWN, IMAGES),
    "clients.*.slice_axis": PlanField(OWN, IMAGES),
    "clients.*.patch_size": PlanField(OWN, IMAGES + " and the budget"),
    "clients.*.batch_size": PlanField(OWN, IMAGES + " and the budget"),
    "clients.*.normalization": PlanField(OWN, "CT channels: foreground (label > 0) intensity mean, std and "
                                               "0.5/99.5 percentiles; other channels: none", True),
    "clients.*.use_nonzero_mask": PlanField(OWN, IMAGES),
    "clients.*.planning_notes": PlanField(OWN, IMAGES + " and the budget (why each spacing, patch and batch)"),
    "clients.*.resampling": PlanField(OWN, SETTING),
    "clients.*.fe_channels": PlanField(OWN, SETTING),
    "clients.*.be_channels": PlanField(OWN, SETTING),
    "clients.*.foreground_oversampling": PlanField(OWN, SETTING),
    "clients.*.causal_graph.nodes": PlanField(OWN, "proxy columns kept (chosen from the label-derived proxies)", True),
    "clients.*.causal_graph.parents": PlanField(OWN, "the DAG learned from the proxies", True),
    "clients.*.causal_graph.edge_weights": PlanField(OWN, "edge strengths learned from the proxies", True),
    "clients.*.causal_graph.zscore_mean": PlanField(OWN, "proxy means over the client's cases", True),
    "clients.*.causal_graph.zscore_std": PlanField(OWN, "proxy standard deviations over the client's cases", True),
    "clients.*.causal_graph.method": PlanField(OWN, SETTING),
    "clients.*.causal_graph.warnings": PlanField(OWN, "graph learning (e.g. too few labelled cases)", True),
    "clients.*.folder": PlanField(OWN, "path of the client's folder, relative to plans.json"),
    "clients.*.crossing": PlanField(OWN, "the patch and the cut depth (what crosses per sample; the client's "
                                         "share of compute and feature memory)"),
}


class BoundaryTableError(ValueError):
    """A message kind or plans field is not classified here (or a classified one no longer exists)."""


def plan_field_paths(cls: type = Plans, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field of the plans dataclasses; a dict of plans is ``name.*``."""
    hints = typing.get_type_hints(cls)
    paths: list[str] = []
    for f in dataclasses.fields(cls):
        path, hint = f"{prefix}{f.name}", hints[f.name]
        args = typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            paths += plan_field_paths(hint, f"{path}.")
        elif typing.get_origin(hint) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            paths += plan_field_paths(args[1], f"{path}.*.")
        else:
            paths.append(path)
    return paths


def _check_classified() -> list[str]:
    paths = plan_field_paths()
    unclassified = [p for p in paths if p not in PLAN_FIELDS]
    stale = sorted(set(PLAN_FIELDS) - set(paths))
    missing_kinds = [k.value for k in Kind if k not in {m.kind for m in MESSAGES}]
    if unclassified or stale or missing_kinds:
        raise BoundaryTableError(
            f"unclassified plans fields {unclassified}, classified fields that no longer exist {stale}, "
            f"message kinds without a row {missing_kinds}. Fix: classify them in "
            "mucald_unet/federation/boundary_table.py, then regenerate the README and docs tables.")
    return paths


def _row(cells: typing.Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") or "-" for c in cells) + " |"


def boundary_markdown() -> str:
    """Both tables as markdown (what goes between the README's and the docs' markers)."""
    paths = _check_classified()
    lines = ["Messages (every one is a manifest.jsonl entry):", "",
             _row(["kind", "name", "direction", "tensors", "scalars", "when", "label-derived"]),
             _row(["---"] * 7)]
    lines += [_row([m.kind.value, m.name, m.direction.value, m.tensors, m.scalars, m.when, m.label_derived])
               for m in MESSAGES]
    lines += ["", "plans.json fields:", "", _row(["field", "needed by", "derived from", "label-derived"]),
              _row(["---"] * 4)]
    for path in paths:
        f = PLAN_FIELDS[path]
        lines.append(_row([f"`{path}`", f.needed_by, f.derived_from, "yes" if f.label_derived else "no"]))
    return "\n".join(lines) + "\n"


def table_in(text: str, source: str = "text") -> str:
    """The block between the markers in ``text``."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise BoundaryTableError(f"{source}: needs exactly one {START} ... {END} block")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def rewrite(path: Path) -> None:
    """Replace the block between the markers in ``path`` with the generated tables."""
    text = Path(path).read_text(encoding="utf-8")
    old = table_in(text, str(path))
    before, after = text.split(START, 1)[0], text.split(END, 1)[1]
    if old != boundary_markdown():
        Path(path).write_text(f"{before}{START}\n{boundary_markdown()}{END}{after}", encoding="utf-8")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        rewrite(Path(name))
    if len(sys.argv) == 1:
        print(boundary_markdown(), end="")
