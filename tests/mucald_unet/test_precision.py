"""bf16 compute (``--precision bf16``): the networks run under bfloat16 autocast while parameters,
gradients, losses and everything that crosses the boundary stay float32.

A bf16 split step must give the gradients of the whole network computed in bf16 (the split adds
only lossless casts), must not change what the server sees on the wire, and a run must train,
predict and be named so. (Against float32 the gradients of the first layers differ markedly at
initialisation, as for any bf16 network: whether that costs Dice is the benchmark's question.)
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.model import load_client_model
from mucald_unet.config import Precision, TrainingConfig
from mucald_unet import devices
from mucald_unet.devices import PrecisionChoice, compute_context
from mucald_unet.errors import TrainingError
from mucald_unet.training.batch_stream import RoundBatch
from mucald_unet.training.checkpoint import FINAL, check_compatible, load_checkpoint, load_plain
from mucald_unet.training.trainer import FederatedTrainer, run_folder_for
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import (CrashAfterRound, assert_every_client_predicts, assert_whole_network_gradients,
                                        quick_config, record_step_gradients)


def _record_step(run: FederatedTrainer, batch: RoundBatch) -> tuple[tuple[dict, dict], list]:
    """One split step of the first client: its and the server's clipped gradients, and the dtype of
    every tensor of every message."""
    recorded = record_step_gradients(run)
    seen, handle = [], run.server.handle

    def recording(message):
        reply = handle(message)
        seen.extend(t.dtype for t in (*message.tensors.values(), *reply.tensors.values()))
        return reply
    run.server.handle = recording
    run.clients[0].train_step(0, 0, batch)
    return recorded, seen


def test_a_bf16_split_step_gives_the_whole_networks_bf16_gradients_and_crosses_float32(
        tiny_federation: Path, tmp_path: Path) -> None:
    run = FederatedTrainer(tiny_federation, CLIENTS[:1], quick_config(method="splitfed", iterations=1,
                                                                      precision="bf16"), tmp_path)
    client, segment = run.clients[0], run.server.segments[CLIENTS[0]]
    whole_client, whole_segment = copy.deepcopy(client.network), copy.deepcopy(segment)
    drawn = client.sampler.sample_batch()
    batch = RoundBatch(drawn.images, drawn.labels, drawn.case_ids)
    recorded, seen = _record_step(run, batch)

    assert seen and set(seen) == {torch.float32}  # the wire never sees bf16
    images, labels = torch.from_numpy(batch.images), torch.from_numpy(batch.labels.astype(np.int64))
    with compute_context(Precision.BF16, "cpu"):
        head = whole_client.head(images)
        logits = whole_client.decode(whole_segment(head.features), head.skips)
        assert logits.dtype == torch.bfloat16  # the reference really computes in bf16
    assert_whole_network_gradients(client.seg_weight * client.seg_loss(logits.float(), labels), client,
                                   (whole_client, whole_segment), recorded, rtol=1e-3, atol=1e-5)
    assert all(p.dtype == torch.float32 for p in client.network.parameters())


def test_bf16_compute_really_runs_the_convolutions_in_bf16() -> None:
    conv = torch.nn.Conv2d(2, 4, 3)
    x = torch.randn(1, 2, 8, 8)
    with compute_context(Precision.BF16, "cpu"):
        assert conv(x).dtype == torch.bfloat16
    with compute_context(Precision.FP32, "cpu"):
        assert conv(x).dtype == torch.float32


def test_a_bf16_run_trains_predicts_and_is_named_so(tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="mucald", iterations=2, precision="bf16")
    summary = FederatedTrainer(tiny_federation, CLIENTS, config, tmp_path).run()
    assert summary.rounds_done == 1 and all(np.isfinite(list(summary.final_dice.values())))
    assert_every_client_predicts(tiny_federation, tmp_path / FINAL)
    model = load_client_model(tiny_federation, CLIENTS[0], tmp_path / FINAL)
    convolutions = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: convolutions.append(out.dtype) if isinstance(module, torch.nn.Conv2d) else None)
    try:
        with torch.no_grad():
            logits = model(torch.randn(1, model.plan.in_channels, *model.plan.patch_size))
    finally:
        hook.remove()
    assert logits.dtype == torch.float32 and set(convolutions) == {torch.bfloat16}  # predicts as it validated
    saved = TrainingConfig.from_dict(load_plain(tmp_path / FINAL)["config"])
    assert saved.precision is Precision.BF16
    # like the device, the precision is where a run computes, not what it is: the name stays
    assert run_folder_for(tmp_path, tiny_federation, TrainingConfig(precision="bf16")).parent.name == "mucald"


def test_a_run_resumes_in_another_precision_and_from_before_precision_was_recorded(tiny_federation: Path,
                                                                                   tmp_path: Path) -> None:
    killed = FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=2), tmp_path,
                              reporter=CrashAfterRound(0))
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    summary = FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=2, precision="bf16"),
                               tmp_path).run(resume=True)  # a machine with native bf16 takes over
    assert summary.rounds_done == 2
    checkpoint = load_checkpoint(tmp_path / FINAL)
    older = {k: v for k, v in checkpoint.config.items() if k != "precision"}  # a checkpoint of an earlier version
    check_compatible(replace(checkpoint, config=older), tmp_path / FINAL, quick_config(rounds=2).to_dict(),
                     checkpoint.plans_digest)
    with pytest.raises(TrainingError, match="seed: 0 -> 1"):  # what a run is still may not change
        check_compatible(checkpoint, tmp_path / FINAL, quick_config(rounds=2, seed=1).to_dict(),
                         checkpoint.plans_digest)


@pytest.mark.parametrize("native, device, expected", [(True, "cpu", "bf16"), (False, "cpu", "fp32"),
                                                      (True, "cuda", "bf16"), (False, "cuda", "fp32")])
def test_auto_precision_is_bf16_exactly_where_the_hardware_has_it(monkeypatch, native: bool, device: str,
                                                                  expected: str) -> None:
    seen = []
    monkeypatch.setattr(devices, "bf16_is_native", lambda where: seen.append(where) or native)
    assert devices.resolve_precision(PrecisionChoice.auto, device) is Precision(expected)
    assert seen == [device]
    assert devices.resolve_precision(PrecisionChoice.fp32, device) is Precision.FP32
    assert devices.resolve_precision(PrecisionChoice.bf16, device) is Precision.BF16


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(TrainingError, match="unknown precision 'fp16'. Fix: --precision fp32 or bf16"):
        TrainingConfig(precision="fp16")


def test_a_deployed_run_resumes_in_another_precision_but_not_with_other_settings(tmp_path: Path) -> None:
    from mucald_unet.deployment.deployed_run import _resumable

    started = {"training": {k: v for k, v in TrainingConfig().to_dict().items() if k != "precision"},
               "plans_digest": "d", "clients": ["a"], "flare_jobs": ["job-1"]}  # a run of an earlier version
    (tmp_path / "config.json").write_text(json.dumps(started))
    (tmp_path / FINAL).write_bytes(b"")
    now = {"training": TrainingConfig(precision="bf16").to_dict(), "plans_digest": "d", "clients": ["a"]}
    assert _resumable(tmp_path, now) == ["job-1"]
    with pytest.raises(TrainingError, match="other training settings"):
        _resumable(tmp_path, {**now, "training": TrainingConfig(precision="bf16", seed=3).to_dict()})
