"""The plans file: every decision of self-configuration, for the federation and each client.

One ``plans.json`` per federation is the single source of truth that preprocessing, training
and prediction read. It is schema-versioned, written atomically, and loaded into validated
frozen dataclasses; a bad file raises ``PlanError`` naming the offending field. A federation planned
site by site has no such file at the server: each hospital's ``plans.json`` holds the shared plan
and its own, and the server's ``federation.json`` (``SharedPlan``) the shared plan and the sites.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PositiveInt, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from planners.errors import PlanError
from preprocessing.atomic import write_json_atomic
from preprocessing.case_preprocessing import CasePreprocessingConfig

SCHEMA_VERSION = 1
PLANS_FILE = "plans.json"
SHARED_PLAN_FILE = "federation.json"  # a server's plan of a federation planned site by site
_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_STRICT)
class NetworkTopologyPlan:
    """The server segment as MONAI's DynUNet takes it: kernels and strides per stage."""

    spatial_dims: Literal[2, 3]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    filters: tuple[int, ...]


@dataclass(frozen=True, config=_STRICT)
class DiffusionPlan:
    """Forward noising at the split points (the schedule object is built from this)."""

    num_train_timesteps: int = Field(400, ge=2)
    beta_schedule: str = "squaredcos_cap_v2"
    eval_timestep: int = Field(200, ge=0)


@dataclass(frozen=True, config=_STRICT)
class CausalNodesPlan:
    """Shape of the causal latent shared by all clients, so CRDM modules can be averaged."""

    num_nodes: int = Field(4, ge=1)
    node_dim: int = Field(1, ge=1)


MIN_SERVER_STAGES = 3  # MONAI's DynUNet needs at least an input, a down and a bottleneck stage


@dataclass(frozen=True, config=_STRICT)
class FederationPlan:
    """The shared decisions. ``server_segment`` is the U-Net body planned for the whole federation;
    the client runs its first ``cut_depth`` stages (encoder and decoder, with their skips) and the
    server the rest, so what crosses shrinks by those stages' pooling and widens to their filters."""

    dimensionality: Literal["2d", "3d"]
    split_channels: PositiveInt
    server_segment: NetworkTopologyPlan
    diffusion: DiffusionPlan
    causal: CausalNodesPlan
    cut_depth: int = Field(0, ge=0)

    def __post_init__(self) -> None:
        deepest = max_cut_depth(self.server_segment.strides)
        if self.cut_depth > deepest:
            raise ValueError(f"cut_depth {self.cut_depth} leaves the server fewer than {MIN_SERVER_STAGES} "
                             f"of the {len(self.server_segment.strides)} planned stages (at most {deepest})")

    @property
    def crossing_channels(self) -> int:
        return cut_channels(self.server_segment.filters, self.split_channels, self.cut_depth)

    @property
    def crossing_pooling(self) -> tuple[int, ...]:
        return cut_pooling(self.server_segment.strides, self.cut_depth)

    def server_body(self) -> NetworkTopologyPlan:
        """The stages the server runs: the planned body without the client's first ``cut_depth``;
        its first stage keeps the resolution of what crosses."""
        segment, depth = self.server_segment, self.cut_depth
        if depth == 0:
            return segment
        return NetworkTopologyPlan(segment.spatial_dims, segment.kernel_sizes[depth:],
                                   ((1,) * segment.spatial_dims, *segment.strides[depth + 1:]),
                                   segment.filters[depth:])


def max_cut_depth(strides: tuple[tuple[int, ...], ...]) -> int:
    """The deepest cut that leaves the server a U-Net of its own."""
    return max(0, len(strides) - MIN_SERVER_STAGES)


def cut_channels(filters: tuple[int, ...], split_channels: int, depth: int) -> int:
    """Channels of what crosses either split: the split width at the full-resolution cut, else
    the filters of the deepest client stage."""
    return split_channels if depth == 0 else filters[depth]


def cut_pooling(strides: tuple[tuple[int, ...], ...], depth: int) -> tuple[int, ...]:
    """Per axis, how much coarser what crosses is than the patch (the client stages' strides)."""
    return tuple(math.prod(s[axis] for s in strides[1:depth + 1]) for axis in range(len(strides[0])))


@dataclass(frozen=True, config=_STRICT)
class CausalGraphPlan:
    """A client's causal nodes (proxy columns), DAG and the z-score statistics of its proxies."""

    nodes: tuple[str, ...]
    parents: dict[str, tuple[str, ...]]
    edge_weights: dict[str, float]
    zscore_mean: dict[str, float]
    zscore_std: dict[str, float]
    method: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, config=_STRICT)
class CrossingPlan:
    """What one training sample sends to the server at split 1 and receives back at split 2 (the
    same shape at both), and the client's share of the network's cost at this cut."""

    shape: tuple[int, ...]  # (channels, *spatial) per sample
    spacing: tuple[float, ...]  # mm per voxel of what crosses, patch axes
    client_compute_share: Annotated[float, Field(ge=0.0, le=1.0)]  # of the forward FLOPs
    client_feature_mb: Annotated[float, Field(ge=0.0)]  # feature maps the client keeps for backward


@dataclass(frozen=True, config=_STRICT)
class ClientPlan:
    """Everything one client's preprocessing, network ends and sampling need."""

    dataset_name: str
    native_dimensionality: Literal["2d", "3d"]
    file_ending: str
    channel_names: dict[int, str]
    labels: dict[str, int]
    in_channels: PositiveInt
    num_classes: Annotated[int, Field(ge=2)]
    original_median_spacing: tuple[float, ...]
    target_spacing: tuple[float, ...]  # array order (z, y, x) / (y, x)
    median_shape: tuple[int, ...]  # after cropping and resampling, array order
    slice_axis: int | None  # 3D data under a 2D federation: the array axis slices are cut across
    patch_size: tuple[int, ...]
    batch_size: PositiveInt
    normalization: tuple[dict[str, Any], ...]  # one scheme per channel (preprocessing.normalization)
    use_nonzero_mask: bool
    resampling: dict[str, Any]
    fe_channels: PositiveInt
    be_channels: PositiveInt
    foreground_oversampling: Annotated[float, Field(ge=0.0, le=1.0)]
    causal_graph: CausalGraphPlan
    folder: str  # the client's own preprocessed folder, relative to the plans file
    crossing: CrossingPlan | None = None  # what crosses at each split (plans before cut depths have none)
    planning_notes: tuple[str, ...] = ()  # every choice the preset made for this client, and why

    def case_preprocessing(self) -> CasePreprocessingConfig:
        """What ``preprocess_case`` needs from this plan; training data and prediction inputs share it."""
        return CasePreprocessingConfig.from_plan_fields(self.target_spacing, self.normalization,
                                                        self.use_nonzero_mask, self.resampling)


@dataclass(frozen=True, config=_STRICT)
class Plans:
    schema_version: int
    preset: str  # which preset made the plan and its budget, in words
    federation: FederationPlan
    clients: dict[str, ClientPlan]
    warnings: tuple[str, ...] = ()

    def client(self, dataset_name: str) -> ClientPlan:
        if dataset_name not in self.clients:
            raise PlanError(f"{dataset_name} is not in this plan (it has {', '.join(self.clients)}). "
                            "Fix: run mucald_plan_and_preprocess with that dataset.")
        return self.clients[dataset_name]


_ADAPTER = TypeAdapter(Plans)


def plans_to_dict(plans: Plans) -> dict[str, Any]:
    return _ADAPTER.dump_python(plans, mode="json")


def plans_from_dict(data: Any, source: str = "plans") -> Plans:
    """Validate a parsed plans document; the error names every bad field by its path."""
    if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
        raise PlanError(f"{source}: schema_version is {data.get('schema_version')!r}, this mucald "
                        f"reads {SCHEMA_VERSION}. Fix: re-run mucald_plan_and_preprocess.")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise PlanError(f"{source}: invalid plan ({fields}). Fix: re-run "
                        "mucald_plan_and_preprocess, or correct the named field.") from None


def save_plans(plans: Plans, path: Path) -> None:
    write_json_atomic(path, plans_to_dict(plans))


def load_plans(path: Path) -> Plans:
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: no plans file. Fix: run mucald_plan_and_preprocess -d ... first.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PlanError(f"{path}: not valid JSON ({err}). Fix: re-run mucald_plan_and_preprocess.") from None
    return plans_from_dict(data, source=str(path))


@dataclass(frozen=True, config=_STRICT)
class SharedPlan:
    """What the server of a federation trains from: the shared plan and the sites in it, without any
    site's own plan (its normalisation statistics and causal graph never leave the hospital). Planned
    site by site, it is the server's ``federation.json``, with what each site offered; else it is the
    shared part of a ``plans.json``."""

    schema_version: int
    preset: str
    federation: FederationPlan
    clients: tuple[str, ...]
    offers: tuple[dict[str, Any], ...] = ()  # each site's SiteOffer, as it crossed
    warnings: tuple[str, ...] = ()


_SHARED_ADAPTER = TypeAdapter(SharedPlan)


def document_digest(document: dict[str, Any]) -> str:
    """A short, stable digest of a plan document: what two machines compare to agree on a plan."""
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def federation_digest(federation: FederationPlan) -> str:
    """What every site and the server of a federation agree on: the shared plan."""
    return document_digest(federation_to_dict(federation))


def federation_to_dict(federation: FederationPlan) -> dict[str, Any]:
    return TypeAdapter(FederationPlan).dump_python(federation, mode="json")


def federation_from_dict(data: Any, source: str) -> FederationPlan:
    """A shared plan as it crossed the network; ``source`` names the sender in the error."""
    try:
        return TypeAdapter(FederationPlan).validate_python(data)
    except ValidationError as err:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise PlanError(f"{source}: invalid shared plan ({fields}). Fix: run the same mucald version at the "
                        "server and every site.") from None


def shared_plan_to_dict(shared: SharedPlan) -> dict[str, Any]:
    return _SHARED_ADAPTER.dump_python(shared, mode="json")


def save_shared_plan(shared: SharedPlan, path: Path) -> None:
    write_json_atomic(path, shared_plan_to_dict(shared))


def load_shared_plan(path: Path) -> SharedPlan:
    """From a server's ``federation.json``, or the shared part of a ``plans.json``."""
    path = Path(path)
    if path.name != SHARED_PLAN_FILE:
        plans = load_plans(path)
        return SharedPlan(plans.schema_version, plans.preset, plans.federation, tuple(plans.clients),
                          warnings=plans.warnings)
    if not path.is_file():
        raise PlanError(f"{path}: no shared plan. Fix: plan the federation with mucald_server plan first.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") != SCHEMA_VERSION:
            raise PlanError(f"{path}: schema_version is {data.get('schema_version')!r}, this mucald reads "
                            f"{SCHEMA_VERSION}. Fix: plan the federation again with mucald_server plan.")
        return _SHARED_ADAPTER.validate_python(data)
    except (json.JSONDecodeError, AttributeError, ValidationError) as err:
        raise PlanError(f"{path}: not a valid shared plan ({err}). Fix: plan the federation again with "
                        "mucald_server plan.") from None
