"""Test-time mirroring follows training: a run that never mirrored is predicted without mirrors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference.model import load_client_model
from inference.predictor import Predictor
from mucald_unet.training.augmentation import AugmentationConfig
from mucald_unet.training.checkpoint import FINAL
from mucald_unet.training.trainer import FederatedTrainer, run_folder_for
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config

POLYP = CLIENTS[0]


@pytest.fixture(scope="module")
def unaugmented_predictor(tiny_federation: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    config = quick_config(method="splitfed", rounds=1, iterations=1, augmentation=AugmentationConfig(enabled=False))
    folder = run_folder_for(tmp_path_factory.mktemp("results"), tiny_federation, config)
    FederatedTrainer(tiny_federation, CLIENTS, config, folder).run()
    return Predictor(load_client_model(tiny_federation, POLYP, folder / FINAL))


def _forwards_on_one_window(predictor: Predictor) -> int:
    """Network calls to predict an image of exactly one patch (one window, one batch)."""
    calls = []
    inner = predictor.model.forward
    predictor.model.forward = lambda *args: calls.append(1) or inner(*args)
    try:
        plan = predictor.plan
        images = np.random.default_rng(0).normal(size=(plan.in_channels, *plan.patch_size)).astype(np.float32)
        predictor.predict_logits(images)
    finally:
        del predictor.model.forward
    return len(calls)


def test_a_run_trained_without_augmentation_is_predicted_without_mirrors(unaugmented_predictor: Predictor) -> None:
    assert unaugmented_predictor.model.config.augmentation.enabled is False
    assert unaugmented_predictor.mirror_axes == ()
    assert _forwards_on_one_window(unaugmented_predictor) == 1


def test_a_run_that_mirrored_is_predicted_with_every_flip_of_its_axes(unaugmented_predictor: Predictor) -> None:
    model = unaugmented_predictor.model
    mirrored = Predictor(model)
    model.config = replace(model.config, augmentation=AugmentationConfig())  # as if training had mirrored
    try:
        assert mirrored.mirror_axes == (0, 1)
        assert _forwards_on_one_window(mirrored) == 4
    finally:
        model.config = replace(model.config, augmentation=AugmentationConfig(enabled=False))
