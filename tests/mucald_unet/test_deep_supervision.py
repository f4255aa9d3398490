"""Deep supervision through the split: the server's coarser decoder maps cross back to the client,
whose coarse heads score them against its own downsampled labels; their gradients cross to the server.

A split step must give exactly the gradients of the whole network under the same loss, what crosses
must be the coarser maps at their own resolution (not upsampled), and a run must train and predict.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mucald_unet.config import TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.federation.messages import Direction, Kind, Message, coarse_name
from mucald_unet.networks.segments import build_server_segment, deep_supervision_scales
from mucald_unet.training.batch_stream import RoundBatch
from mucald_unet.training.checkpoint import FINAL, load_plain
from mucald_unet.training.losses import coarse_scales_loss
from mucald_unet.training.trainer import FederatedTrainer, run_folder_for
from planners.plans import CausalNodesPlan, DiffusionPlan, FederationPlan, NetworkTopologyPlan, load_plans
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import (assert_every_client_predicts, assert_whole_network_gradients, quick_config,
                                        record_step_gradients)


def _body(stages: int) -> FederationPlan:
    strides = ((1, 1), *([(2, 2)] * (stages - 1)))
    topology = NetworkTopologyPlan(2, ((3, 3),) * stages, strides, tuple(8 * 2 ** k for k in range(stages)))
    return FederationPlan("2d", 8, topology, DiffusionPlan(), CausalNodesPlan())


def test_the_body_returns_its_coarser_maps_at_their_own_resolution() -> None:
    federation = _body(4)
    segment = build_server_segment(federation, deep_supervision=2).train()
    features = torch.randn(2, 8, 32, 48)
    out, coarse = segment.forward_with_coarse(features)
    assert out.shape == (2, 8, 32, 48)
    assert [c.shape for c in coarse] == [(2, 8, 16, 24), (2, 8, 8, 12)]
    # forward is the full-resolution map in training mode too (DynUNet's own would stack the scales)
    torch.testing.assert_close(segment(features), out)
    # without supervision the state dict is a plain DynUNet's, so earlier checkpoints still load
    plain = build_server_segment(federation)
    assert not [k for k in plain.state_dict() if "supervision" in k or "super_head" in k]
    assert plain.forward_with_coarse(features)[1] == []


def test_a_shallow_body_gets_fewer_scales_than_asked_for() -> None:
    assert [deep_supervision_scales(_body(n), 2) for n in (2, 3, 4, 6)] == [0, 1, 2, 2]
    assert deep_supervision_scales(_body(6), 0) == 0


def test_coarse_loss_weighs_each_scale_half_the_one_above() -> None:
    seg_loss = torch.nn.Module()
    seen = []

    def record(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen.append((logits.shape[2:], labels.shape[2:], set(labels.unique().tolist())))
        return torch.tensor(1.0)
    seg_loss.forward = record
    labels = torch.randint(0, 3, (2, 1, 16, 16))
    total = coarse_scales_loss(seg_loss, [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)], labels)
    assert float(total) == pytest.approx(0.5 + 0.25)
    assert [s[:2] for s in seen] == [((8, 8), (8, 8)), ((4, 4), (4, 4))]
    assert all(values <= {0.0, 1.0, 2.0} for *_, values in seen)  # nearest neighbour: no new label values


def test_a_split_step_gives_the_gradients_of_the_whole_deeply_supervised_network(tiny_federation: Path,
                                                                                 tmp_path: Path) -> None:
    config = quick_config(method="splitfed", iterations=1, deep_supervision=2)
    run = FederatedTrainer(tiny_federation, CLIENTS[:1], config, tmp_path)
    client, server = run.clients[0], run.server
    segment = server.segments[client.name]
    assert len(client.network.coarse_heads) == 2
    whole_client, whole_segment = copy.deepcopy(client.network), copy.deepcopy(segment)
    drawn = client.sampler.sample_batch()
    batch = RoundBatch(drawn.images, drawn.labels, drawn.case_ids)

    split_client, split_server = record_step_gradients(run)
    client.train_step(0, 0, batch)

    images, labels = torch.from_numpy(batch.images), torch.from_numpy(batch.labels.astype(np.int64))
    head = whole_client.head(images)
    out, coarse = whole_segment.forward_with_coarse(head.features)
    logits = whole_client.decode(out, head.skips)
    coarse_logits = [h(c) for h, c in zip(whole_client.coarse_heads, coarse)]
    loss = client.seg_weight * (client.seg_loss(logits, labels)
                                + coarse_scales_loss(client.seg_loss, coarse_logits, labels))
    assert_whole_network_gradients(loss, client, (whole_client, whole_segment), (split_client, split_server),
                                   rtol=1e-4, atol=1e-6)
    assert split_client["coarse_heads.1.conv.conv.weight"].abs().sum() > 0
    assert any("supervision" in k and g.abs().sum() > 0 for k, g in split_server.items())


def test_what_crosses_is_the_coarse_maps_and_their_gradients(tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="splitfed", iterations=1, deep_supervision=2)
    run = FederatedTrainer(tiny_federation, CLIENTS[:1], config, tmp_path)
    client = run.clients[0]
    client.train_step(0, 0)
    entries = run.transport.drain_manifest()
    reply = next(e for e in entries if e.kind is Kind.FEATURES and e.direction is Direction.TO_CLIENT)
    gradient = next(e for e in entries if e.kind is Kind.GRADIENT and e.direction is Direction.TO_SERVER)
    split2 = reply.shapes["features"]
    for entry, full in ((reply, "features"), (gradient, "gradient")):
        assert set(entry.shapes) == {full, coarse_name(0), coarse_name(1)}
        for k in range(2):
            assert entry.shapes[coarse_name(k)] == (*split2[:2], *(n // 2 ** (k + 1) for n in split2[2:]))
        # 2D: 1/4 + 1/16 of the split-2 map's bytes extra in each direction
        assert entry.num_bytes == pytest.approx(4 * np.prod(split2) * (1 + 1 / 4 + 1 / 16))


def test_the_server_refuses_a_gradient_without_the_coarse_maps(tiny_federation: Path, tmp_path: Path) -> None:
    run = FederatedTrainer(tiny_federation, CLIENTS[:1], quick_config(method="splitfed", deep_supervision=1),
                           tmp_path)
    server, name = run.server, CLIENTS[0]
    plan = load_plans(tiny_federation).clients[name]
    features = torch.randn(2, *plan.crossing.shape)
    reply = server.handle(Message(name, Kind.FEATURES, "split1", 0, 0, {"features": features}))
    with pytest.raises(TrainingError, match="--deep-supervision"):
        server.handle(Message(name, Kind.GRADIENT, "split2", 0, 0,
                              {"gradient": torch.ones_like(reply.tensors["features"])}))


def test_a_deeply_supervised_run_trains_predicts_and_is_named_so(tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="mucald", iterations=2, deep_supervision=2)
    summary = FederatedTrainer(tiny_federation, CLIENTS, config, tmp_path).run()
    assert summary.rounds_done == 1 and all(np.isfinite(list(summary.final_dice.values())))
    log = [line for line in (tmp_path / "log.jsonl").read_text().splitlines() if "deep_supervision" in line]
    assert len(log) == len(CLIENTS)
    assert_every_client_predicts(tiny_federation, tmp_path / FINAL)
    saved = load_plain(tmp_path / FINAL)
    assert TrainingConfig.from_dict(saved["config"]).deep_supervision == 2
    assert run_folder_for(tmp_path, tiny_federation, TrainingConfig(deep_supervision=2)).parent.name == "mucald__ds-2"


def test_deep_supervision_is_refused_where_it_has_no_meaning() -> None:
    with pytest.raises(TrainingError, match="mixes several server bodies"):
        TrainingConfig(method="fedem", deep_supervision=1)
    with pytest.raises(TrainingError, match=">= 0"):
        TrainingConfig(deep_supervision=-1)
