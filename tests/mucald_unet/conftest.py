"""A planned, preprocessed tiny demo federation shared by the training tests (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mucald_unet.config import AuxiliarySchedule, Method, TrainingConfig, parse_ablations
from mucald_unet.training.augmentation import AugmentationConfig
from planners.budget import Preset
from planners.pipeline import PipelineConfig, plan_and_preprocess
from planners.planner import PlannerConfig
from preprocessing.demo import make_demo_federation

CLIENTS = ["Dataset001_DemoPolyp", "Dataset002_DemoLungCT", "Dataset003_DemoFetalUS"]


@pytest.fixture(scope="session")
def tiny_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plans.json of the tiny demo (2D federation: PNG RGB, 3D CT cut into slices, 2D US)."""
    root = tmp_path_factory.mktemp("federation")
    make_demo_federation(root / "raw", seed=0, size="tiny")
    config = PipelineConfig(raw_root=root / "raw", preprocessed_root=root / "preprocessed",
                            datasets=("1", "2", "3"),
                            planner=PlannerConfig(preset=Preset("cpu"), dimensionality="2d"))
    return plan_and_preprocess(config)


def quick_config(method: str = "mucald", ablations: str = "", rounds: int = 1, iterations: int = 2,
                 seed: int = 0, **changes) -> TrainingConfig:
    """A short run in which the auxiliary terms are on from the first step (no warm-up)."""
    return TrainingConfig(method=Method(method), ablations=parse_ablations(ablations), rounds=rounds,
                          iterations_per_epoch=iterations, seed=seed,
                          schedule=AuxiliarySchedule(warmup_fraction=0.0, ramp_fraction=0.0),
                          augmentation=changes.pop("augmentation", AugmentationConfig()), **changes)
