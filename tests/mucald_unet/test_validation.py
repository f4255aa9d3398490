"""Validation through the transport predicts what the offline predictor predicts from the saved
checkpoint: the same case gives the same logits, with the server's segment shared or with its
normalisation kept per client (``local_norms``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.model import load_client_model
from mucald_unet.training.checkpoint import FINAL
from mucald_unet.training.trainer import FederatedTrainer
from mucald_unet.training.validation import predict_case_logits
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


# Forward noise: splitfed draws none; mucald draws it at both split points in evaluation too, so
# both sides get generators seeded identically (the same windows in the same order draw the same noise).
@pytest.mark.parametrize("method, ablations, local_norms", [
    ("splitfed", "", False), ("splitfed", "", True), ("mucald", "", True)])
def test_transport_validation_logits_equal_the_offline_predictor(tiny_federation: Path, tmp_path: Path, method: str,
                                                                 ablations: str, local_norms: bool) -> None:
    run = FederatedTrainer(tiny_federation, CLIENTS,
                           quick_config(method=method, ablations=ablations, iterations=1, local_norms=local_norms),
                           tmp_path)
    run.run()
    if local_norms:  # the per-client norms really differ, so a wrong copy of SS would show
        first, second = (s.state_dict() for s in list(run.server.segments.values())[:2])
        assert any(not torch.equal(first[k], second[k]) for k in first if ".norm" in k)
    for client in run.clients:
        case = client.data.validation[0]
        plan = client.plan
        model = load_client_model(tiny_federation, client.name, tmp_path / FINAL)
        for module in client.trainable_modules().values():
            module.eval()
        with torch.no_grad():
            through = predict_case_logits(
                lambda w: client.predict_window(w, 0, torch.Generator().manual_seed(11)),
                case.images, plan.patch_size, plan.slice_axis, client.device)
            offline = predict_case_logits(lambda w: model(w, torch.Generator().manual_seed(11)),
                                          case.images, plan.patch_size, plan.slice_axis, model.device)
        assert through.shape == (plan.num_classes, *case.label.shape)
        torch.testing.assert_close(through, offline, atol=1e-5, rtol=0)
