"""The cut at depth K > 0: the client runs the body's first K stages, the server the rest.

What crosses must be what the plan records, a split step must give the gradients of the whole
network (FE's skips reach BE without crossing), and every code path must train and predict.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mucald_unet.config import DefenceConfig, Method, TrainingConfig
from mucald_unet.federation.client_network import ClientNetwork, latent_downsample
from mucald_unet.networks.segments import build_back_end, build_front_end, build_server_segment
from mucald_unet.training.batch_stream import RoundBatch
from mucald_unet.training.checkpoint import FINAL
from mucald_unet.training.trainer import FederatedTrainer, run_folder_for
from planners.budget import Preset
from planners.pipeline import PipelineConfig, plan_and_preprocess
from planners.planner import PlannerConfig
from planners.plans import CausalNodesPlan, DiffusionPlan, FederationPlan, NetworkTopologyPlan, load_plans
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import assert_every_client_predicts, quick_config


@pytest.fixture(scope="module")
def cut_federation(tiny_federation: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo planned like ``tiny_federation``, with the cut one stage deeper."""
    raw = tiny_federation.parent.parent.parent / "raw"
    return plan_and_preprocess(PipelineConfig(
        raw_root=raw, preprocessed_root=tmp_path_factory.mktemp("cut") / "preprocessed", datasets=("1", "2", "3"),
        planner=PlannerConfig(preset=Preset("cpu"), dimensionality="2d", split_channels=16, cut_depth=1)))


class _Client:
    in_channels, fe_channels, be_channels, num_classes = 2, 8, 8, 3


def test_fe_and_be_take_the_first_stages_in_2d_and_3d() -> None:
    for dims, shape in ((2, (2, 2, 32, 48)), (3, (1, 2, 16, 32, 32))):
        strides = ((1,) * dims, *([(1, 2, 2) if dims == 3 else (2, 2)] + [(2,) * dims] * 3))
        body = NetworkTopologyPlan(dims, ((3,) * dims,) * 5, strides, (8, 16, 32, 64, 64))
        plan = FederationPlan(f"{dims}d", 8, body, DiffusionPlan(), CausalNodesPlan(), cut_depth=2)
        fe, ss, be = build_front_end(plan, _Client), build_server_segment(plan), build_back_end(plan, _Client)
        crossing, skips = fe.encode(torch.randn(shape))
        pooled = tuple(n // p for n, p in zip(shape[2:], plan.crossing_pooling))
        assert plan.crossing_pooling == ((2, 4, 4) if dims == 3 else (4, 4))
        assert crossing.shape == (shape[0], 32, *pooled)
        assert [s.shape[1] for s in skips] == [8, 16] and skips[0].shape[2:] == shape[2:]
        assert ss(crossing).shape == crossing.shape
        assert be(ss(crossing), skips).shape == (shape[0], 3, *shape[2:])
        # CRDM's denoiser pools only as far as the server does (twice here), whatever it is allowed
        assert latent_downsample(plan, 8) == (4,) * dims
        with pytest.raises(ValueError):
            be(crossing, skips[:1])  # BE refuses a skip short rather than silently skipping a stage


def test_what_crosses_is_what_the_plan_records(cut_federation: Path) -> None:
    plans = load_plans(cut_federation)
    federation = plans.federation
    assert federation.cut_depth == 1
    segment = build_server_segment(federation)
    for name in CLIENTS:
        plan = plans.clients[name]
        network = ClientNetwork(federation, plan, quick_config()).eval()
        images = torch.randn(2, plan.in_channels, *plan.patch_size)
        with torch.no_grad():
            head = network.head(images)
            assert head.features.shape == (2, *plan.crossing.shape)
            assert plan.crossing.shape[1:] == tuple(p // 2 for p in plan.patch_size)
            assert segment(head.features).shape == head.features.shape
            assert network.segment(images, segment).shape == (2, plan.num_classes, *plan.patch_size)


def test_a_split_step_gives_the_gradients_of_the_whole_network(cut_federation: Path, tmp_path: Path) -> None:
    run = FederatedTrainer(cut_federation, CLIENTS[:1], quick_config(method="splitfed", iterations=1), tmp_path)
    client, server = run.clients[0], run.server
    segment = server.segments[client.name]
    whole_client, whole_segment = copy.deepcopy(client.network), copy.deepcopy(segment)
    drawn = client.sampler.sample_batch()
    batch = RoundBatch(drawn.images, drawn.labels, drawn.case_ids)

    def captured(module: torch.nn.Module, into: dict) -> callable:
        return lambda *args, **kwargs: into.update({k: p.grad.clone() for k, p in module.named_parameters()})
    split_client, split_server = {}, {}
    client.optimizer.step = captured(client.network, split_client)
    server.optimizers[client.name].step = captured(segment, split_server)
    client.train_step(0, 0, batch)

    logits = whole_client.segment(torch.from_numpy(batch.images), whole_segment)
    loss = client.seg_weight * client.seg_loss(logits, torch.from_numpy(batch.labels.astype(np.int64)))
    loss.backward()
    clip = client.config.optimizer.grad_clip
    torch.nn.utils.clip_grad_norm_(whole_client.parameters(), clip)
    torch.nn.utils.clip_grad_norm_(whole_segment.parameters(), clip)
    for got, module in ((split_client, whole_client), (split_server, whole_segment)):
        expected = dict(module.named_parameters())
        assert set(got) == set(expected)
        for key, gradient in got.items():
            torch.testing.assert_close(gradient, expected[key].grad, rtol=1e-4, atol=1e-6, msg=key)
    stem = split_client["front_end.stem.conv1.conv.weight"]
    assert stem.abs().sum() > 0  # FE learns through both the skip and the crossing


@pytest.mark.parametrize("method, defence", [("mucald", None), ("fedem", None), ("local", None),
                                             ("splitfed", "quantise:2")])
def test_every_code_path_trains_and_predicts_at_depth_one(cut_federation: Path, tmp_path: Path, method: str,
                                                          defence: str | None) -> None:
    config = quick_config(method=method, iterations=2, defence=DefenceConfig.parse(defence))
    run = FederatedTrainer(cut_federation, CLIENTS, config, tmp_path)
    summary = run.run()
    assert summary.rounds_done == 1 and all(np.isfinite(list(summary.final_dice.values())))
    assert_every_client_predicts(cut_federation, tmp_path / FINAL)


def test_runs_of_a_deeper_cut_never_share_a_folder_with_the_full_resolution_cut(cut_federation: Path,
                                                                               tiny_federation: Path,
                                                                               tmp_path: Path) -> None:
    config = TrainingConfig(method=Method.SPLITFED, iterations_per_epoch=3)
    assert run_folder_for(tmp_path, cut_federation, config).parent.name == "splitfed__cut-1__iters-3"
    assert run_folder_for(tmp_path, tiny_federation, config).parent.name == "splitfed__iters-3"
