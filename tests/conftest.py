"""Shared fixtures: small, valid raw datasets built in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from planners.budget import Preset
from planners.pipeline import PipelineConfig, plan_and_preprocess
from planners.planner import PlannerConfig
from preprocessing.dataset import dataset_folder_name
from preprocessing.dataset_json import DatasetSpec
from preprocessing.demo import make_demo_federation
from preprocessing.geometry import Geometry
from preprocessing.io import write_image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pyradiomics"

OBLIQUE = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z


def volume_geometry(shape: tuple[int, int, int]) -> Geometry:
    return Geometry(shape, spacing=(0.8, 0.7, 3.0), origin=(-12.5, 40.0, 7.25), direction=OBLIQUE,
                    source_format="nifti")


def write_volume_case(folder: Path, case: str, rng: np.random.Generator, channels: int = 1,
                      shape: tuple[int, int, int] = (6, 10, 12), split: str = "Tr",
                      ending: str = ".nii.gz") -> None:
    geometry = volume_geometry(shape)
    for c in range(channels):
        image = rng.normal(0, 1, (1, *shape)).astype(np.float32)
        write_image(folder / f"images{split}" / f"{case}_{c:04d}{ending}", image, geometry)
    label = np.zeros((1, *shape), np.uint8)
    label[0, 2:4, 3:7, 4:8] = 1
    write_image(folder / f"labels{split}" / f"{case}{ending}", label, geometry)


@pytest.fixture
def make_volume_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Build Dataset001_Vol: 3 training cases, 1 test case, NIfTI, oblique anisotropic grid."""

    def build(channels: int = 1, cases: int = 3, ending: str = ".nii.gz") -> Path:
        folder = tmp_path / "raw" / dataset_folder_name(1, "Vol")
        rng = np.random.default_rng(0)
        for i in range(cases):
            write_volume_case(folder, f"vol_{i:03d}", rng, channels, ending=ending)
        write_volume_case(folder, "vol_test", rng, channels, split="Ts", ending=ending)
        names = {i: ("CT" if i == 0 else f"MR{i}") for i in range(channels)}
        DatasetSpec(names, {"background": 0, "lesion": 1}, cases, ending).save(folder)
        return folder

    return build


@pytest.fixture
def make_png_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Build Dataset002_Rgb: 3 RGB PNG training cases with 0/1 masks."""

    def build(cases: int = 3) -> Path:
        folder = tmp_path / "raw" / dataset_folder_name(2, "Rgb")
        rng = np.random.default_rng(1)
        for i in range(cases):
            image = rng.integers(0, 256, (3, 16, 20), dtype=np.uint8)
            label = np.zeros((1, 16, 20), np.uint8)
            label[0, 4:9, 5:12] = 1
            geometry = Geometry.default((16, 20), "png")
            write_image(folder / "imagesTr" / f"rgb_{i:03d}_0000.png", image, geometry)
            write_image(folder / "labelsTr" / f"rgb_{i:03d}.png", label, geometry)
        DatasetSpec({0: "R", 1: "G", 2: "B"}, {"background": 0, "polyp": 1}, cases, ".png").save(folder)
        return folder

    return build


CLIENTS = ["Dataset001_DemoPolyp", "Dataset002_DemoLungCT", "Dataset003_DemoFetalUS"]


@pytest.fixture(scope="session")
def tiny_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plans.json of the tiny demo (2D federation: PNG RGB, 3D CT cut into slices, 2D US)."""
    root = tmp_path_factory.mktemp("federation")
    make_demo_federation(root / "raw", seed=0, size="tiny")
    config = PipelineConfig(raw_root=root / "raw", preprocessed_root=root / "preprocessed",
                            datasets=("1", "2", "3"),
                            # width 16: the suite stays fast; the code path is the same at 32
                            planner=PlannerConfig(preset=Preset("cpu"), dimensionality="2d", split_channels=16))
    return plan_and_preprocess(config)
