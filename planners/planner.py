"""The planner's rules: per-client spacing, patch, batch and normalisation, and the federation's
shared dimensionality and server-segment topology. Pure functions of fingerprints and a preset,
split into what each site computes on its own and what the server decides from the sites' offers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from planners.budget import Preset, sample_cost
from planners.errors import PlanError
from planners.fingerprint import DatasetFingerprint
from planners.plans import (MIN_SERVER_STAGES, SCHEMA_VERSION, CausalGraphPlan, CausalNodesPlan, ClientPlan,
                            CrossingPlan, DiffusionPlan, FederationPlan, NetworkTopologyPlan, Plans, cut_channels,
                            cut_pooling, max_cut_depth)
from planners.topology import MIN_FEATURE_MAP, Topology, fit_to_divisor, pooling_topology
from preprocessing.dataset_json import DatasetSpec
from preprocessing.normalization import CTNormalization, RGBTo01Normalization, ZScoreNormalization

RGB_CHANNEL_NAMES = {"r", "g", "b", "red", "green", "blue", "rgb", "rgb_to_0_1"}
NONZERO_MASK_BELOW = 0.75  # crop kept < 75% of the image: normalise inside the nonzero mask only
BATCH_DATASET_SHARE = 0.05  # a batch covers at most 5% of a dataset's voxels
MIN_BATCH = 2
COARSENING_STEP = 1.05  # lowres search: spacing grows by 5% per step, as nnU-Net's 3d_lowres does


@dataclass(frozen=True)
class PlannerConfig:
    preset: Preset = field(default_factory=lambda: Preset("cpu"))
    dimensionality: Literal["2d", "3d"] | None = None  # None: 3d only if every client is 3D
    num_nodes: int = 4
    anisotropy_threshold: float = 3.0
    foreground_oversampling: float = 0.33
    diffusion_steps: int = 400
    # A patch the budget shrinks below this share of the median image loses the context the
    # task needs: the client is then planned at a coarser spacing (nnU-Net's lowres idea) ...
    min_patch_coverage: float = 0.5
    # ... at most this much coarser than its median spacing.
    max_coarsening: float = 4.0

    # Width of what crosses each split, of FE/BE and of the server's first stage: nnU-Net's base
    # 32 on every target (16 learned measurably less per iteration on CPU, docs/training_recipe.md).
    split_channels: int = 32
    # How many of the body's first stages the client runs (0: the cut sits after FE, at full
    # resolution); deeper cuts send coarser, wider features (docs/privacy.md).
    cut_depth: int = 0

    def __post_init__(self) -> None:
        if self.cut_depth < 0:
            raise PlanError(f"cut depth {self.cut_depth} is negative. Fix: use --cut-depth 0 or more.")
        if self.split_channels < 4:
            raise PlanError(f"split width {self.split_channels} is too narrow. Fix: use --split-width 4 or more "
                            "(32 is nnU-Net's base width).")

    def to_dict(self) -> dict:
        """Plain values, for a planning job that carries the same settings to every site."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PlannerConfig:
        return cls(**{**data, "preset": Preset(**data["preset"])})

    def max_filters(self, dims: int) -> int:
        if self.preset.target == "cpu":
            return 128
        return 320 if dims == 3 else 512


@dataclass(frozen=True)
class ClientFacts:
    """What the planner knows about one client: its declaration, fingerprint and causal graph."""

    spec: DatasetSpec
    native_dims: int  # 2 also for 2D slices stored as (1, y, x) volumes, as nnU-Net does
    fingerprint: DatasetFingerprint
    causal_graph: CausalGraphPlan
    folder: str


def target_spacing(spacings: np.ndarray, shapes: np.ndarray, threshold: float = 3.0) -> tuple[float, ...]:
    """Median spacing; a much coarser axis with few voxels takes its 10th-percentile spacing instead.

    The exception keeps strongly anisotropic scans (thick slices) from being upsampled to the
    median, which would invent slices; it is floored at the largest other spacing.
    """
    target = np.median(spacings, axis=0)
    if len(target) < 3:
        return tuple(float(v) for v in target)
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    coarse = target[worst] > threshold * max(target[others])
    few = median_shape[worst] * threshold < min(median_shape[others])
    if coarse and few:
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]))
    return tuple(float(v) for v in target)


def normalization_for(name: str, channel: int, fingerprint: DatasetFingerprint,
                      use_nonzero_mask: bool) -> dict:
    """CT: clip + z-score with dataset foreground statistics; RGB: to 0..1; else per-image z-score."""
    key = name.strip().lower()
    if key == "ct":
        stats = fingerprint.foreground_intensity[channel]
        return CTNormalization(mean=stats.mean, std=stats.std, lower=stats.percentile_00_5,
                               upper=stats.percentile_99_5).to_dict()
    if key in RGB_CHANNEL_NAMES:
        return RGBTo01Normalization().to_dict()
    return ZScoreNormalization(use_nonzero_mask=use_nonzero_mask).to_dict()


def make_plans(clients: list[ClientFacts], config: PlannerConfig = PlannerConfig()) -> Plans:
    """Plan every client, then the shared server segment, then fit patches and batches to it.

    The stages of a federation planned site by site, here in one process over every client's
    facts: each site's native dimensionality -> the server fixes ``federation_dims``; each site's
    ``site_proposal`` -> its ``SiteOffer`` -> the server's ``shared_topology`` -> each site's
    ``site_plan``. Only the dimensionality, the offers and the topology cross.
    """
    if not clients:
        raise PlanError("no datasets to plan. Fix: pass -d with at least one dataset.")
    dims = federation_dims([c.native_dims for c in clients], [c.fingerprint.dataset_name for c in clients],
                           config.dimensionality)
    proposals = [site_proposal(facts, config, dims, len(clients)) for facts in clients]
    topology = shared_topology([p.offer for p in proposals], config, dims)
    plans = {facts.fingerprint.dataset_name: site_plan(facts, proposal, topology, config, len(clients))
             for facts, proposal in zip(clients, proposals)}
    warnings = tuple(w for proposal in proposals for w in proposal.warnings)
    return assemble_plans(plans, federation_plan(topology, config, dims), config, warnings)


@dataclass(frozen=True)
class SiteOffer:
    """All a site tells the server to fix the shared topology: the patch the budget allows it and
    that patch's spacing. Nothing of its images' intensities or its labels."""

    dataset_name: str
    patch_spacing: tuple[float, ...]  # the spacing of the patch's axes (a 2D federation's slice axis dropped)
    patch: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"dataset_name": self.dataset_name, "patch_spacing": list(self.patch_spacing),
                "patch": list(self.patch)}

    @classmethod
    def from_dict(cls, data: dict) -> SiteOffer:
        """From what crossed the network; a malformed offer is the sending site's fault, named."""
        try:
            return cls(str(data["dataset_name"]), tuple(float(v) for v in data["patch_spacing"]),
                       tuple(int(v) for v in data["patch"]))
        except (KeyError, TypeError, ValueError) as err:
            raise PlanError(f"a site's offer is malformed ({err!r}: {data!r}). Fix: run the same mucald "
                            "version at every site.") from None


@dataclass(frozen=True)
class SiteProposal:
    """A site's resolution choice, kept at the site, and the offer it sends."""

    resolution: Resolution
    slice_axis: int | None
    offer: SiteOffer
    warnings: tuple[str, ...]


def federation_dims(native_dims: list[int], names: list[str], requested: str | None) -> int:
    """2 or 3: 3D only if every client is (or as requested, when possible)."""
    all_3d = all(d == 3 for d in native_dims)
    if requested == "3d" and not all_3d:
        flat = ", ".join(name for name, d in zip(names, native_dims) if d == 2)
        raise PlanError(f"--config 3d is impossible: {flat} is 2D. Fix: use --config 2d, or plan "
                        "the 3D datasets as their own federation.")
    if requested is not None:
        return 3 if requested == "3d" else 2
    return 3 if all_3d else 2


def site_proposal(facts: ClientFacts, config: PlannerConfig, dims: int, num_clients: int) -> SiteProposal:
    """At the site: its target spacing, slice axis and the budget's patch (lowres when the patch
    would see too little of the median image)."""
    fingerprint = facts.fingerprint
    full_spacing = target_spacing(fingerprint.spacings, fingerprint.shapes_after_crop, config.anisotropy_threshold)
    resampled = fingerprint.shapes_after_crop * fingerprint.spacings / full_spacing
    full_shape = tuple(int(round(v)) for v in np.median(resampled, axis=0))
    slice_axis = _slice_axis(full_spacing, full_shape, facts.native_dims, dims)
    warnings: list[str] = []
    resolution = _choose_resolution(full_spacing, full_shape, slice_axis, facts, config, dims, num_clients, warnings)
    offer = SiteOffer(fingerprint.dataset_name, tuple(_view(resolution.spacing, slice_axis)), resolution.patch)
    return SiteProposal(resolution, slice_axis, offer, tuple(warnings))


def shared_topology(offers: list[SiteOffer], config: PlannerConfig, dims: int) -> Topology:
    """At the server: one server segment for all, planned for the median spacing and the smallest patch."""
    reference_spacing = tuple(np.median([offer.patch_spacing for offer in offers], axis=0))
    reference_patch = tuple(np.min([offer.patch for offer in offers], axis=0))
    topology = pooling_topology(reference_spacing, reference_patch, config.split_channels, config.max_filters(dims))
    deepest = max_cut_depth(topology.strides)
    if config.cut_depth > deepest:
        raise PlanError(f"--cut-depth {config.cut_depth} is too deep for this federation: its shared topology has "
                        f"{len(topology.strides)} stages for the patch {_fmt(reference_patch)}, and the server keeps "
                        f"at least {MIN_SERVER_STAGES}. Fix: use --cut-depth {deepest} or less, or raise the "
                        "budget (--target gpu) for larger patches.")
    return topology


def site_plan(facts: ClientFacts, proposal: SiteProposal, topology: Topology, config: PlannerConfig,
              num_clients: int) -> ClientPlan:
    """At the site again: its patch fitted to the shared pooling, its batch, and the reasons."""
    resolution, slice_axis = proposal.resolution, proposal.slice_axis
    shape_view = _view(resolution.shape, slice_axis)
    patch = fit_to_divisor(resolution.patch, topology.divisor, shape_view)
    batch, batch_note = _batch_size(patch, topology, facts, config, num_clients,
                                    _resampled_voxels(facts.fingerprint, resolution.spacing))
    crossing = crossing_plan(patch, _view(resolution.spacing, slice_axis), topology, facts, config)
    notes = (resolution.note, _patch_note(resolution.patch, patch, shape_view), batch_note,
             f"widths: front and back end {config.split_channels}, split {config.split_channels} "
             f"channels ({config.preset.target} preset)", _crossing_note(crossing, config.cut_depth))
    return _client_plan(facts, config, resolution.spacing, resolution.shape, slice_axis, patch, batch, notes,
                        crossing)


def crossing_plan(patch: tuple[int, ...], spacing: tuple[float, ...], topology: Topology, facts: ClientFacts,
                  config: PlannerConfig) -> CrossingPlan:
    """What one sample sends at each split at the planned cut, and the client's share of the work."""
    depth = config.cut_depth
    pooling = cut_pooling(topology.strides, depth)
    channels = cut_channels(topology.filters, config.split_channels, depth)
    cost = sample_cost(patch, topology, facts.spec.num_channels, len(facts.spec.labels), config.split_channels,
                       depth)
    return CrossingPlan(shape=(channels, *(p // f for p, f in zip(patch, pooling))),
                        spacing=tuple(round(float(s * f), 6) for s, f in zip(spacing, pooling)),
                        client_compute_share=round(cost.client_compute_share, 4),
                        client_feature_mb=round(cost.client_activation_bytes / 1e6, 3))


def _crossing_note(crossing: CrossingPlan, depth: int) -> str:
    channels, *spatial = crossing.shape
    return (f"cut: depth {depth}; each sample sends {channels} x {_fmt(tuple(spatial))} values at "
            f"{_fmt(crossing.spacing, 3)} mm at split 1 and gets as many back at split 2; the client runs "
            f"{crossing.client_compute_share:.0%} of the forward FLOPs and keeps {crossing.client_feature_mb:g} MB "
            "of feature maps per sample")


def federation_plan(topology: Topology, config: PlannerConfig, dims: int) -> FederationPlan:
    """At the server: the shared decisions every site trains with, built around the shared topology."""
    return FederationPlan(
        dimensionality="3d" if dims == 3 else "2d",
        split_channels=config.split_channels,
        server_segment=NetworkTopologyPlan(dims, topology.kernel_sizes, topology.strides, topology.filters),
        diffusion=DiffusionPlan(config.diffusion_steps, "squaredcos_cap_v2", config.diffusion_steps // 2),
        causal=CausalNodesPlan(config.num_nodes, 1),
        cut_depth=config.cut_depth,
    )


def topology_of(segment: NetworkTopologyPlan) -> Topology:
    """The shared topology again, as a site rebuilds it from the federation plan the server sent."""
    return Topology(segment.kernel_sizes, segment.strides, segment.filters)


def assemble_plans(clients: dict[str, ClientPlan], federation: FederationPlan, config: PlannerConfig,
                   warnings: tuple[str, ...]) -> Plans:
    return Plans(SCHEMA_VERSION, config.preset.describe(), federation, clients, warnings)


def _slice_axis(spacing: tuple[float, ...], shape: tuple[int, ...], native_dims: int,
                dims: int) -> int | None:
    """3D arrays in a 2D federation are cut across their coarsest axis (axis 0 when isotropic);
    2D slices stored as (1, y, x) volumes across their single-voxel axis."""
    if len(shape) == dims:
        return None
    if native_dims == 2:
        return shape.index(1) if 1 in shape else 0
    return int(np.argmax(spacing)) if max(spacing) > min(spacing) * 1.0001 else 0


def _view(values: tuple, slice_axis: int | None) -> tuple:
    return tuple(v for a, v in enumerate(values) if a != slice_axis)


def _shrink_to_budget(spacing: tuple[float, ...], shape: tuple[int, ...], facts: ClientFacts,
                      config: PlannerConfig, dims: int, num_clients: int, warnings: list[str]) -> tuple[int, ...]:
    """Start from the median shape; shrink the axis largest relative to it until batch 2 fits."""
    patch = [max(int(s), 2 * MIN_FEATURE_MAP) for s in shape]
    floor = 2 * MIN_FEATURE_MAP
    while True:
        topology = pooling_topology(spacing, tuple(patch), config.split_channels, config.max_filters(dims))
        cost = sample_cost(tuple(patch), topology, facts.spec.num_channels, len(facts.spec.labels),
                           config.split_channels, min(config.cut_depth, max_cut_depth(topology.strides)))
        if config.preset.fits(cost, MIN_BATCH, num_clients):
            return tuple(patch)
        ratios = [p / s if p > floor else -1.0 for p, s in zip(patch, shape)]
        axis = int(np.argmax(ratios))
        if ratios[axis] < 0:
            warnings.append(f"{facts.fingerprint.dataset_name}: even the smallest patch {tuple(patch)} "
                            f"exceeds the {config.preset.target} budget; training will be slower")
            return tuple(patch)
        patch[axis] = max(floor, patch[axis] - topology.divisor[axis])  # as nnU-Net: one pooling unit


@dataclass(frozen=True)
class Resolution:
    """The spacing a client trains at, its median shape there, the patch the budget allows, and why."""

    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    patch: tuple[int, ...]
    note: str


def _choose_resolution(spacing: tuple[float, ...], shape: tuple[int, ...], slice_axis: int | None,
                       facts: ClientFacts, config: PlannerConfig, dims: int, num_clients: int,
                       warnings: list[str]) -> Resolution:
    """Full resolution when the budget's patch covers enough of the median image; else the
    finest coarser spacing (5% steps, at most ``max_coarsening``) at which it does.

    Only the axes a patch spans are coarsened (not a 2D federation's slice axis), all by the same
    factor, so the anisotropy the topology was planned for is kept.
    """
    def view(values: tuple) -> tuple:  # the patch's axes of a full-array tuple
        return _view(values, slice_axis)

    patch = _shrink_to_budget(view(spacing), view(shape), facts, config, dims, num_clients, warnings)
    coverage = patch_coverage(patch, view(shape))
    in_words = f"{_fmt(view(spacing), 3)} mm"
    if coverage >= config.min_patch_coverage:
        return Resolution(spacing, shape, patch, f"spacing: median {in_words}; the {config.preset.target} budget's "
                          f"patch covers {coverage:.0%} of the median image (at least {config.min_patch_coverage:.0%})")
    factor, best = 1.0, (1.0, spacing, shape, patch, coverage)
    while factor * COARSENING_STEP <= config.max_coarsening:
        factor *= COARSENING_STEP
        coarse_spacing = tuple(s * factor if a != slice_axis else s for a, s in enumerate(spacing))
        coarse_shape = tuple(max(1, int(round(n / factor))) if a != slice_axis else n for a, n in enumerate(shape))
        coarse_patch = _shrink_to_budget(view(coarse_spacing), view(coarse_shape), facts, config, dims,
                                         num_clients, [])
        best = (factor, coarse_spacing, coarse_shape, coarse_patch, patch_coverage(coarse_patch, view(coarse_shape)))
        if best[4] >= config.min_patch_coverage:
            break
    factor, coarse_spacing, coarse_shape, coarse_patch, coarse_coverage = best
    note = (f"spacing: lowres {_fmt(view(coarse_spacing), 3)} mm ({factor:.2f}x the median {in_words}), because "
            f"at the median spacing the {config.preset.target} budget fits a {_fmt(patch)} patch, only "
            f"{coverage:.0%} of the median {_fmt(view(shape))} image (below {config.min_patch_coverage:.0%}); at "
            f"lowres a {_fmt(coarse_patch)} patch covers {coarse_coverage:.0%} of the median {_fmt(view(coarse_shape))}")
    if coarse_coverage < config.min_patch_coverage:
        warnings.append(f"{facts.fingerprint.dataset_name}: even {factor:.2f}x coarser than its median spacing "
                        f"the patch covers only {coarse_coverage:.0%} of the median image; raise the budget "
                        "(--target gpu) for more context")
    return Resolution(coarse_spacing, coarse_shape, coarse_patch, note)


def patch_coverage(patch: tuple[int, ...], shape: tuple[int, ...]) -> float:
    """Share of the median image's voxels one patch sees (1.0 when the patch is at least as large)."""
    return float(np.prod([min(p, s) / s for p, s in zip(patch, shape)]))


def _patch_note(budget_patch: tuple[int, ...], patch: tuple[int, ...], shape: tuple[int, ...]) -> str:
    fitted = "" if tuple(budget_patch) == tuple(patch) else f", fitted to the pooling as {_fmt(patch)}"
    if all(p >= s for p, s in zip(budget_patch, shape)):
        return f"patch: {_fmt(budget_patch)}, the median image {_fmt(shape)} (at least 2 x the deepest feature map){fitted}"
    return f"patch: {_fmt(budget_patch)}, the median image {_fmt(shape)} shrunk to the budget at batch {MIN_BATCH}{fitted}"


def _fmt(values: tuple, digits: int | None = None) -> str:
    return " x ".join(f"{v:.{digits}g}" if digits else str(v) for v in values)


def _batch_size(patch: tuple[int, ...], topology: Topology, facts: ClientFacts, config: PlannerConfig,
                num_clients: int, dataset_voxels: float) -> tuple[int, str]:
    """Largest batch within budget and within 5% of the dataset's voxels, never below 2; and why."""
    cost = sample_cost(patch, topology, facts.spec.num_channels, len(facts.spec.labels),
                       config.split_channels, config.cut_depth)
    fits = MIN_BATCH
    while fits < 512 and config.preset.fits(cost, fits + 1, num_clients):
        fits += 1
    share_cap = int(BATCH_DATASET_SHARE * dataset_voxels / math.prod(patch))
    batch = max(MIN_BATCH, min(fits, share_cap))
    limit = (f"the {config.preset.target} budget" if fits <= share_cap
             else f"{BATCH_DATASET_SHARE:.0%} of the dataset's voxels")
    return batch, f"batch: {batch}, limited by {limit} (budget {fits}, dataset share {share_cap}, floor {MIN_BATCH})"


def _resampled_voxels(fingerprint: DatasetFingerprint, spacing: tuple[float, ...]) -> float:
    volumes = fingerprint.shapes_after_crop * fingerprint.spacings / np.asarray(spacing)
    return float(np.prod(volumes, axis=1).sum())


def _client_plan(facts: ClientFacts, config: PlannerConfig, spacing: tuple[float, ...],
                 shape: tuple[int, ...], slice_axis: int | None, patch: tuple[int, ...],
                 batch: int, notes: tuple[str, ...], crossing: CrossingPlan) -> ClientPlan:
    fingerprint = facts.fingerprint
    use_mask = fingerprint.median_relative_size_after_crop < NONZERO_MASK_BELOW
    return ClientPlan(
        dataset_name=fingerprint.dataset_name,
        native_dimensionality="3d" if facts.native_dims == 3 else "2d",
        file_ending=facts.spec.file_ending,
        channel_names=dict(facts.spec.channel_names),
        labels=dict(facts.spec.labels),
        in_channels=facts.spec.num_channels,
        num_classes=len(facts.spec.labels),
        original_median_spacing=tuple(float(v) for v in np.median(fingerprint.spacings, axis=0)),
        target_spacing=spacing,
        median_shape=shape,
        slice_axis=slice_axis,
        patch_size=patch,
        batch_size=batch,
        normalization=tuple(normalization_for(name, c, fingerprint, use_mask)
                            for c, name in sorted(facts.spec.channel_names.items())),
        use_nonzero_mask=use_mask,
        resampling={"image_order": 3, "label_mode": "onehot_linear",
                    "anisotropy_threshold": config.anisotropy_threshold, "out_of_plane_order": 0},
        fe_channels=config.split_channels,
        be_channels=config.split_channels,
        foreground_oversampling=config.foreground_oversampling,
        causal_graph=facts.causal_graph,
        folder=facts.folder,
        crossing=crossing,
        planning_notes=notes,
    )
