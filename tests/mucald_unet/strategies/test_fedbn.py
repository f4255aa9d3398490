"""FedBN: the server segment's norm layers stay with each client, everything else is averaged."""

from __future__ import annotations

import pytest
import torch

from mucald_unet.config import TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies.fedbn import FedBN
from tests.mucald_unet.strategies.conftest import WEIGHTS, client_segments, context, snapshot, toy_segment


def test_norm_keys_are_personal_and_the_rest_is_averaged() -> None:
    strategy = FedBN(context("fedbn"))
    segments, global_segment = client_segments(), toy_segment(42)
    before = {c: snapshot(m) for c, m in segments.items()}
    strategy.aggregate(segments, global_segment, WEIGHTS)
    keys = set(global_segment.state_dict())
    norms = {k for k in keys if ".norm" in k}
    assert strategy.shared_keys() == keys - norms
    for client, segment in segments.items():
        for key, value in segment.state_dict().items():
            assert torch.equal(value, before[client][key] if key in norms else global_segment.state_dict()[key])


def test_fedbn_has_no_proximal_term_and_refuses_local_norms() -> None:
    segment = toy_segment(1)
    assert FedBN(context("fedbn")).extra_terms("a", segment, snapshot(toy_segment(2))) == {}
    with pytest.raises(TrainingError, match="fedbn keeps the server segment's norms local already.*drop --local-norms"):
        TrainingConfig(method="fedbn", local_norms=True)  # refused before any training is set up
