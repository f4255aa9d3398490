"""Planner rules on synthetic fingerprints: spacing, dimensionality, budgets, the plans file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from planners.budget import CPU_EFFECTIVE_FLOPS, GPU_ACTIVATION_SHARE, TRAIN_FLOPS_PER_FORWARD_FLOP, Preset, sample_cost
from planners.errors import PlanError
from planners.fingerprint import CaseFingerprint, combine_fingerprints
from planners.planner import (ClientFacts, PlannerConfig, SiteOffer, assemble_plans, federation_dims, federation_plan,
                              make_plans,
                              shared_topology, site_plan, site_proposal, target_spacing)
from planners.plans import CausalGraphPlan, load_plans, plans_to_dict, save_plans
from planners.topology import Topology, pooling_topology
from preprocessing.dataset_json import DatasetSpec

EMPTY_GRAPH = CausalGraphPlan(nodes=(), parents={}, edge_weights={}, zscore_mean={}, zscore_std={},
                              method="none")


def client(name: str, spacing: tuple[float, ...], shape: tuple[int, ...], cases: int = 20,
           channels: dict[int, str] | None = None, classes: int = 2) -> ClientFacts:
    """A client whose every case has the given spacing and shape, with some foreground."""
    records = [CaseFingerprint(f"c{i}", spacing, shape, ((0,) * len(shape), shape), shape,
                               {0: int(np.prod(shape)) - 100, 1: 100}) for i in range(cases)]
    samples = [[np.linspace(-100, 300, 50)] * len(channels or {0: "MR"}) for _ in range(cases)]
    fingerprint = combine_fingerprints(name, records, samples)
    labels = {"background": 0, **{f"class{k}": k for k in range(1, classes)}}
    spec = DatasetSpec(channels or {0: "MR"}, labels, cases, ".nii.gz")
    return ClientFacts(spec, len(shape), fingerprint, EMPTY_GRAPH, folder=name)


def test_target_spacing_is_the_median_when_isotropic() -> None:
    spacings = np.array([[1.0, 0.8, 0.8], [1.2, 0.7, 0.7], [1.1, 0.9, 0.9]])
    shapes = np.array([[100, 200, 200]] * 3)
    assert target_spacing(spacings, shapes) == pytest.approx((1.1, 0.8, 0.8))


def test_anisotropic_axis_with_few_voxels_takes_its_tenth_percentile() -> None:
    z = np.array([5.0, 5.0, 5.0, 2.0, 2.5, 5.0, 5.0, 5.0, 5.0, 6.0])
    spacings = np.stack([z, np.full(10, 0.7), np.full(10, 0.7)], axis=1)
    shapes = np.array([[40, 512, 512]] * 10)
    expected = np.percentile(z, 10)
    assert target_spacing(spacings, shapes)[0] == pytest.approx(expected)
    assert target_spacing(spacings, shapes)[1:] == pytest.approx((0.7, 0.7))


def test_anisotropy_rule_is_floored_at_the_largest_other_spacing() -> None:
    z = np.array([0.5, 0.5] + [4.0] * 8)
    spacings = np.stack([z, np.full(10, 0.8), np.full(10, 0.9)], axis=1)
    shapes = np.array([[30, 400, 400]] * 10)
    assert target_spacing(spacings, shapes)[0] == pytest.approx(0.9)


def test_anisotropic_axis_with_many_voxels_keeps_the_median() -> None:
    z = np.array([5.0] * 9 + [1.0])
    spacings = np.stack([z, np.full(10, 0.7), np.full(10, 0.7)], axis=1)
    shapes = np.array([[300, 300, 300]] * 10)  # not 3x fewer voxels along z
    assert target_spacing(spacings, shapes)[0] == pytest.approx(5.0)


def test_mixed_2d_and_3d_federation_plans_2d_and_slices_3d_clients_across_the_coarse_axis() -> None:
    plans = make_plans([client("Dataset001_A", (1.0, 1.0), (128, 128)),
                        client("Dataset002_B", (3.0, 0.8, 0.8), (20, 80, 80))])
    assert plans.federation.dimensionality == "2d"
    ct = plans.clients["Dataset002_B"]
    assert ct.slice_axis == 0 and len(ct.patch_size) == 2 and ct.native_dimensionality == "3d"
    assert plans.clients["Dataset001_A"].slice_axis is None


def test_all_3d_federation_plans_3d_and_refuses_3d_with_a_2d_client() -> None:
    plans = make_plans([client("Dataset001_A", (2.0, 1.0, 1.0), (32, 64, 64)),
                        client("Dataset002_B", (1.0, 1.0, 1.0), (48, 48, 48))])
    assert plans.federation.dimensionality == "3d"
    assert all(len(c.patch_size) == 3 for c in plans.clients.values())
    with pytest.raises(PlanError, match="Dataset003_C is 2D"):
        make_plans([client("Dataset001_A", (1.0, 1.0, 1.0), (32, 32, 32)),
                    client("Dataset003_C", (1.0, 1.0), (64, 64))], PlannerConfig(dimensionality="3d"))


def test_patches_are_divisible_by_the_shared_server_strides() -> None:
    plans = make_plans([client("Dataset001_A", (1.0, 1.0), (100, 140)),
                        client("Dataset002_B", (0.5, 0.5), (70, 90))])
    strides = np.array(plans.federation.server_segment.strides)
    divisor = strides.prod(axis=0)
    for c in plans.clients.values():
        assert all(p % d == 0 for p, d in zip(c.patch_size, divisor)), (c.patch_size, divisor)
    assert len(plans.federation.server_segment.kernel_sizes) == len(strides)


@pytest.mark.parametrize("preset", [Preset("cpu"), Preset("gpu", memory_gb=8.0)])
def test_budget_is_respected_with_batch_at_least_two(preset: Preset) -> None:
    clients = [client("Dataset001_A", (1.0, 0.7, 0.7), (160, 256, 256), cases=200),
               client("Dataset002_B", (1.0, 1.0, 1.0), (128, 128, 128), cases=200)]
    plans = make_plans(clients, PlannerConfig(preset=preset))
    fed = plans.federation.server_segment
    for c in plans.clients.values():
        cost = sample_cost(c.patch_size, _topology(fed), c.in_channels, c.num_classes,
                           plans.federation.split_channels)
        assert c.batch_size >= 2
        if preset.target == "gpu":
            assert cost.activation_bytes * c.batch_size <= 8e9 * GPU_ACTIVATION_SHARE
        else:
            seconds = cost.forward_flops * TRAIN_FLOPS_PER_FORWARD_FLOP * c.batch_size / CPU_EFFECTIVE_FLOPS
            assert seconds <= preset.seconds_per_federation_iteration / len(clients) + 1e-9
    gpu_plans = make_plans(clients, PlannerConfig(preset=Preset("gpu")))
    cpu_patch = np.prod(make_plans(clients, PlannerConfig(preset=Preset("cpu"))).clients["Dataset001_A"].patch_size)
    assert np.prod(gpu_plans.clients["Dataset001_A"].patch_size) > cpu_patch
    assert plans.preset.startswith(preset.target)


def test_batch_covers_at_most_five_percent_of_a_small_dataset_but_never_below_two() -> None:
    plans = make_plans([client("Dataset001_A", (1.0, 1.0), (64, 64), cases=10)],
                       PlannerConfig(preset=Preset("gpu", memory_gb=80)))
    assert plans.clients["Dataset001_A"].batch_size == 2


def test_normalisation_follows_channel_names() -> None:
    ct = client("Dataset001_A", (2.0, 1.0, 1.0), (20, 40, 40), channels={0: "CT"})
    rgb = client("Dataset002_B", (1.0, 1.0), (64, 64), channels={0: "R", 1: "G", 2: "B"})
    mr = client("Dataset003_C", (1.0, 1.0), (64, 64), channels={0: "T2"})
    plans = make_plans([ct, rgb, mr])
    ct_norm = plans.clients["Dataset001_A"].normalization[0]
    assert ct_norm["kind"] == "ct" and ct_norm["lower"] == pytest.approx(np.percentile(np.tile(np.linspace(-100, 300, 50), 20), 0.5))
    assert [n["kind"] for n in plans.clients["Dataset002_B"].normalization] == ["rgb_to_01"] * 3
    assert plans.clients["Dataset003_C"].normalization[0]["kind"] == "zscore"


def test_too_few_cases_or_no_foreground_fail_clearly() -> None:
    with pytest.raises(PlanError, match="at least 2"):
        client("Dataset001_A", (1.0, 1.0), (64, 64), cases=1)
    records = [CaseFingerprint(f"c{i}", (1.0, 1.0), (8, 8), ((0, 0), (8, 8)), (8, 8), {0: 64}) for i in range(3)]
    with pytest.raises(PlanError, match="no foreground"):
        combine_fingerprints("Dataset001_A", records, [[np.zeros(0)]] * 3)


def test_plans_round_trip_and_bad_fields_are_named(tmp_path: Path) -> None:
    plans = make_plans([client("Dataset001_A", (1.0, 1.0), (64, 64))])
    path = tmp_path / "plans.json"
    save_plans(plans, path)
    assert load_plans(path) == plans
    data = json.loads(path.read_text())
    data["clients"]["Dataset001_A"]["batch_size"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=r"clients\.Dataset001_A\.batch_size"):
        load_plans(path)
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match="schema_version"):
        load_plans(path)
    assert plans_to_dict(plans)["federation"]["diffusion"]["num_train_timesteps"] == 400


def test_pooling_topology_keeps_kernel_one_on_thick_slices_until_spacing_evens_out() -> None:
    topology = pooling_topology((4.0, 1.0, 1.0), (16, 128, 128), 16, 128)
    assert topology.kernel_sizes[0] == (1, 3, 3) and topology.strides[1] == (1, 2, 2)
    assert topology.kernel_sizes[-1] == (3, 3, 3)
    assert topology.divisor[1] >= 16 and all(f <= 128 for f in topology.filters)


def _topology(fed):
    from planners.topology import Topology
    return Topology(tuple(map(tuple, fed.kernel_sizes)), tuple(map(tuple, fed.strides)), tuple(fed.filters))


def test_every_case_weighs_the_same_in_the_intensity_statistics() -> None:
    """A case with a huge lesion must not dominate CT normalisation (nnU-Net samples likewise)."""
    from planners.fingerprint import fingerprint_case

    small_label = np.zeros((40, 40), np.uint8)
    small_label[:3, :3] = 1
    big_label = np.ones((40, 40), np.uint8)
    results = [fingerprint_case(name, np.full((1, 40, 40), value, np.float32), label, (1.0, 1.0), seed=0)
               for name, value, label in (("small", 0.0, small_label), ("big", 100.0, big_label))]
    fingerprint = combine_fingerprints("Dataset001_A", [r[0] for r in results], [r[1] for r in results])
    assert fingerprint.foreground_intensity[0].mean == pytest.approx(50.0)


# ---- context the patch keeps: lowres planning and the recorded choices ------------------------

def test_cpu_budget_plans_a_coarser_spacing_instead_of_a_patch_that_sees_a_fraction_of_the_image() -> None:
    plans = make_plans([client("Dataset001_Big", (0.6, 0.6), (512, 512))])
    plan = plans.clients["Dataset001_Big"]
    factor = plan.target_spacing[0] / 0.6
    assert 1.05 < factor <= PlannerConfig().max_coarsening
    assert plan.target_spacing[0] == pytest.approx(plan.target_spacing[1])
    coverage = np.prod([min(p, s) / s for p, s in zip(plan.patch_size, plan.median_shape)])
    assert coverage >= 0.5 * 0.9  # the budget's patch covers half; fitting to the pooling may trim it a little
    assert plan.median_shape[0] == pytest.approx(512 / factor, abs=2)
    assert plan.planning_notes[0].startswith("spacing: lowres") and "8%" not in plan.planning_notes[1]
    at_full = make_plans([client("Dataset001_Big", (0.6, 0.6), (512, 512))], PlannerConfig(min_patch_coverage=0.0))
    assert at_full.clients["Dataset001_Big"].target_spacing == pytest.approx((0.6, 0.6))
    assert np.prod(at_full.clients["Dataset001_Big"].patch_size) < 0.5 * 512 * 512


def test_a_small_image_keeps_its_spacing_and_a_patch_that_spans_it() -> None:
    plan = make_plans([client("Dataset001_Small", (0.66, 0.66), (120, 45))]).clients["Dataset001_Small"]
    assert plan.target_spacing == pytest.approx((0.66, 0.66))
    assert all(p >= s for p, s in zip(plan.patch_size, (120, 45)))  # rounded up to the pooling, not down
    assert plan.planning_notes[0].startswith("spacing: median")
    assert any(note.startswith("batch: ") for note in plan.planning_notes)
    assert any(note.startswith("widths: ") for note in plan.planning_notes)


def test_coarsening_stops_at_its_limit_and_says_so() -> None:
    config = PlannerConfig(max_coarsening=1.2)
    plans = make_plans([client("Dataset001_Huge", (0.5, 0.5), (1024, 1024))], config)
    plan = plans.clients["Dataset001_Huge"]
    assert plan.target_spacing[0] <= 0.5 * 1.2 + 1e-9
    assert any("coarser than its median spacing" in w for w in plans.warnings)


def test_lowres_coarsens_only_the_patch_axes_of_a_sliced_3d_client() -> None:
    plans = make_plans([client("Dataset001_A", (1.0, 1.0), (64, 64)),
                        client("Dataset002_Ct", (5.0, 0.5, 0.5), (20, 600, 600))])
    ct = plans.clients["Dataset002_Ct"]
    assert ct.slice_axis == 0 and ct.target_spacing[0] == pytest.approx(5.0)
    assert ct.target_spacing[1] > 0.5 and ct.median_shape[0] == 20


def test_planning_site_by_site_with_only_plain_offers_crossing_gives_the_single_process_plan() -> None:
    """Each site computes alone; what reaches the server (native dims, offers) and what comes back
    (dims, topology) crosses as JSON, and the sites' plans equal make_plans' for every client."""
    sites = [client("Dataset001_A", (0.8, 0.8), (300, 260)),  # large enough for the lowres rule
             client("Dataset002_B", (3.0, 0.7, 0.7), (40, 200, 180)),  # 3D in a 2D federation: sliced
             client("Dataset003_C", (1.0, 1.0), (96, 120), channels={0: "R", 1: "G", 2: "B"}, classes=3)]
    config = PlannerConfig()
    names = [site.fingerprint.dataset_name for site in sites]

    def cross(value):  # what a network carries: plain JSON
        return json.loads(json.dumps(value))

    dims = cross(federation_dims(cross([site.native_dims for site in sites]), names, None))
    proposals = [site_proposal(site, config, dims, len(sites)) for site in sites]
    offers = [SiteOffer.from_dict(cross(p.offer.to_dict())) for p in proposals]
    topology_sent = vars(shared_topology(offers, config, dims))
    topology = Topology(*(tuple(tuple(x) if isinstance(x, list) else x for x in cross(topology_sent[k]))
                          for k in ("kernel_sizes", "strides", "filters")))
    plans = {name: site_plan(site, proposal, topology, config, len(sites))
             for name, site, proposal in zip(names, sites, proposals)}
    warnings = tuple(w for p in proposals for w in p.warnings)
    single = make_plans(sites, config)
    assert plans_to_dict(assemble_plans(plans, federation_plan(topology, config, dims), config, warnings)) == \
        plans_to_dict(single)
    assert single.clients["Dataset002_B"].slice_axis == 0
    assert any("lowres" in note for plan in single.clients.values() for note in plan.planning_notes)


def test_a_deeper_cut_moves_stages_to_the_client_and_the_plan_records_what_crosses() -> None:
    clients = [client("Dataset001_A", (1.0, 1.0), (128, 128)), client("Dataset002_B", (1.0, 1.0), (96, 96))]
    shallow = make_plans(clients, PlannerConfig(split_channels=16))
    stages = len(shallow.federation.server_segment.strides)
    assert stages >= 5  # the federation below needs room for a cut of 2
    deep = make_plans(clients, PlannerConfig(split_channels=16, cut_depth=2))
    fed = deep.federation
    assert fed.cut_depth == 2 and fed.server_segment == shallow.federation.server_segment
    body = fed.server_body()
    assert body.strides == ((1, 1), *fed.server_segment.strides[3:])
    assert body.filters == fed.server_segment.filters[2:] and body.kernel_sizes == fed.server_segment.kernel_sizes[2:]
    assert fed.crossing_channels == fed.server_segment.filters[2] and fed.crossing_pooling == (4, 4)
    for name, plan in deep.clients.items():
        patch, spacing = plan.patch_size, plan.target_spacing
        assert plan.crossing.shape == (fed.server_segment.filters[2], patch[0] // 4, patch[1] // 4)
        assert plan.crossing.spacing == pytest.approx(tuple(4 * s for s in spacing))
        assert plan.crossing.client_compute_share > shallow.clients[name].crossing.client_compute_share
        assert any(note.startswith("cut: depth 2") for note in plan.planning_notes)
    assert shallow.clients["Dataset001_A"].crossing.shape[0] == 16  # depth 0: the split width, full resolution


def test_the_client_share_of_the_cost_grows_with_the_cut_and_the_total_barely_moves() -> None:
    topology = pooling_topology((1.0, 1.0), (128, 128), 32, 128)
    costs = [sample_cost((128, 128), topology, 1, 2, 32, depth) for depth in range(len(topology.strides) - 2)]
    shares = [cost.client_compute_share for cost in costs]
    assert shares == sorted(shares) and shares[0] > 0 and shares[-1] < 1
    assert all(c.client_activation_bytes < c.activation_bytes for c in costs)
    # a deeper cut drops the full-resolution input stage and adds one at the cut: totals stay within 25 %
    assert all(abs(c.forward_flops / costs[0].forward_flops - 1) < 0.25 for c in costs)


def test_a_cut_too_deep_for_the_topology_is_refused_with_the_deepest_that_fits(tmp_path: Path) -> None:
    clients = [client("Dataset001_A", (1.0, 1.0), (40, 40))]
    stages = len(make_plans(clients).federation.server_segment.strides)
    with pytest.raises(PlanError, match=rf"--cut-depth {stages - 2} is too deep.*--cut-depth {stages - 3} or less"):
        make_plans(clients, PlannerConfig(cut_depth=stages - 2))
    with pytest.raises(PlanError, match="--cut-depth 0 or more"):
        PlannerConfig(cut_depth=-1)
    data = plans_to_dict(make_plans(clients))
    data["federation"]["cut_depth"] = stages  # a hand-edited plans file
    (tmp_path / "plans.json").write_text(json.dumps(data))
    with pytest.raises(PlanError, match=r"federation.*cut_depth .* leaves the server fewer than 3"):
        load_plans(tmp_path / "plans.json")


def test_plans_written_before_cut_depths_still_load_at_depth_zero(tmp_path: Path) -> None:
    data = plans_to_dict(make_plans([client("Dataset001_A", (1.0, 1.0), (64, 64))]))
    del data["federation"]["cut_depth"]
    for plan in data["clients"].values():
        del plan["crossing"]
    (tmp_path / "plans.json").write_text(json.dumps(data))
    plans = load_plans(tmp_path / "plans.json")
    assert plans.federation.cut_depth == 0 and plans.federation.server_body() == plans.federation.server_segment
    assert plans.clients["Dataset001_A"].crossing is None
