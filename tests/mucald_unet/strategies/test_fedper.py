"""FedPer: the server segment's last decoder stage(s) and its output block stay with each client."""

from __future__ import annotations

import pytest
import torch

from mucald_unet.config import StrategyOptions
from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies.fedper import FedPer
from tests.mucald_unet.strategies.conftest import WEIGHTS, client_segments, context, snapshot, toy_segment


def personal_keys(strategy: FedPer) -> set[str]:
    return set(strategy.canonical) - strategy.shared_keys()


def test_the_last_decoder_stage_its_alias_and_the_output_block_are_personal() -> None:
    strategy = FedPer(context("fedper"))
    assert personal_keys(strategy) == {
        "upsamples.1.conv1.weight", "upsamples.1.norm1.weight", "upsamples.1.norm1.bias",
        "skip_layers.upsample.conv1.weight", "skip_layers.upsample.norm1.weight", "skip_layers.upsample.norm1.bias",
        "output_block.weight", "output_block.bias"}
    two = FedPer(context("fedper", strategy=StrategyOptions(fedper_stages=2)))
    assert personal_keys(two) == personal_keys(strategy) | {
        "upsamples.0.conv1.weight", "upsamples.0.norm1.weight", "upsamples.0.norm1.bias"}
    with pytest.raises(TrainingError, match="--fedper-stages 3: the server segment has 2 decoder stages"):
        FedPer(context("fedper", strategy=StrategyOptions(fedper_stages=3)))


def test_the_aggregate_keeps_the_personal_stages_and_averages_the_rest() -> None:
    strategy = FedPer(context("fedper"))
    segments, global_segment = client_segments(), toy_segment(42)
    before = {c: snapshot(m) for c, m in segments.items()}
    strategy.aggregate(segments, global_segment, WEIGHTS)
    personal = personal_keys(strategy)
    for client, segment in segments.items():
        for key, value in segment.state_dict().items():
            assert torch.equal(value, before[client][key] if key in personal else global_segment.state_dict()[key])
