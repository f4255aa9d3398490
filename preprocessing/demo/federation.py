"""Write the demo federation: three raw datasets that differ the way the paper's hospitals do.

Every dataset gets dataset.json, images/labels for Tr and Ts, and causal_graph.json with the
planted graph and each case's node values. The same seed gives the same arrays on any machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from preprocessing.atomic import write_json_atomic
from preprocessing.dataset import dataset_folder_name
from preprocessing.dataset_json import DatasetSpec
from preprocessing.demo.causal import sample_nodes
from preprocessing.demo.fetal_us import FETAL_US
from preprocessing.demo.lung_ct import LUNG_CT
from preprocessing.demo.polyp import POLYP
from preprocessing.demo.presets import DatasetSize, preset
from preprocessing.demo.recipe import DemoRecipe
from preprocessing.errors import DatasetError
from preprocessing.io import write_image

RECIPES: tuple[DemoRecipe, ...] = (POLYP, LUNG_CT, FETAL_US)
CAUSAL_GRAPH_JSON = "causal_graph.json"


@dataclass(frozen=True)
class WrittenDataset:
    """What was written for one dataset, for the command's summary table."""

    folder: Path
    train: int
    test: int
    shape: tuple[int, ...]
    file_ending: str


def demo_folders(out: Path) -> list[Path]:
    """The dataset folders ``make_demo_federation`` writes under ``out``."""
    return [Path(out) / dataset_folder_name(r.dataset_id, r.name) for r in RECIPES]


# training cases per dataset: one count for all three, or one per recipe key (missing: the preset's)
CaseCounts = int | Mapping[str, int] | None


def make_demo_federation(out: Path, seed: int = 0, size: str = "small", *,
                         overwrite: bool = False, cases: CaseCounts = None,
                         test_cases: int | None = None) -> list[Path]:
    """Write the three demo datasets under ``out`` and return their folders.

    ``cases`` replaces the size preset's number of training cases, ``test_cases`` its number of
    labelled test cases (imagesTs: the non-members a membership audit needs by the hundred).
    Refuses (DatasetError) to write into a non-empty dataset folder unless ``overwrite``, which
    deletes that folder first so no stale case of an earlier, larger run survives.
    """
    return [written.folder for written in write_demo_federation(out, seed, size, overwrite=overwrite,
                                                                cases=cases, test_cases=test_cases)]


def write_demo_federation(out: Path, seed: int = 0, size: str = "small", *,
                          overwrite: bool = False, cases: CaseCounts = None,
                          test_cases: int | None = None) -> list[WrittenDataset]:
    """Like ``make_demo_federation`` but reports counts and shapes of what was written."""
    sizes = preset(size)
    counts = _case_counts(cases)
    if test_cases is not None and (isinstance(test_cases, bool) or not isinstance(test_cases, int) or test_cases < 1):
        raise DatasetError(f"the number of test cases must be a whole number >= 1, got {test_cases!r}. Fix: pass "
                           "--test-cases 1 or more.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder. Fix: choose another output folder.")
    folders = demo_folders(out)
    _make_room(folders, overwrite)
    streams = np.random.SeedSequence(seed).spawn(len(RECIPES))
    written = []
    for recipe, folder, stream in zip(RECIPES, folders, streams):
        dataset_size = sizes.for_dataset(recipe.key)
        if recipe.key in counts:
            dataset_size = replace(dataset_size, train=counts[recipe.key])
        if test_cases is not None:
            dataset_size = replace(dataset_size, test=test_cases)
        _write_dataset(recipe, folder, dataset_size, stream, seed, size, recipe.key in counts)
        written.append(WrittenDataset(folder, dataset_size.train, dataset_size.test,
                                      dataset_size.shape, recipe.file_ending))
    return written


def _case_counts(cases: CaseCounts) -> dict[str, int]:
    """Recipe key -> training cases asked for; checked before anything is written."""
    if cases is None:
        return {}
    counts = {r.key: cases for r in RECIPES} if isinstance(cases, int) else dict(cases)
    unknown = sorted(set(counts) - {r.key for r in RECIPES})
    if unknown:
        raise ValueError(f"unknown demo dataset {unknown[0]!r}; use one of {', '.join(r.key for r in RECIPES)}")
    for key, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise DatasetError(f"{key}: the number of training cases must be a whole number >= 1, got "
                               f"{count!r}. Fix: pass --cases 1 or more.")
    return counts


def _make_room(folders: list[Path], overwrite: bool) -> None:
    """Check every folder before deleting any, so a refusal leaves everything untouched."""
    occupied = [f for f in folders if f.exists() and (not f.is_dir() or any(f.iterdir()))]
    if occupied and not overwrite:
        raise DatasetError(f"{occupied[0]}: dataset folder exists and is not empty. Fix: pass "
                           "--overwrite to replace it, or choose another output folder.")
    for folder in occupied:
        if folder.is_dir():
            shutil.rmtree(folder)
        else:
            folder.unlink()


def _write_dataset(recipe: DemoRecipe, folder: Path, size: DatasetSize,
                   stream: np.random.SeedSequence, seed: int, size_name: str, cases_given: bool) -> None:
    count = size.train + size.test
    node_stream, *case_streams = stream.spawn(1 + count)
    nodes = sample_nodes(recipe.graph, count, np.random.default_rng(node_stream))
    geometry = recipe.geometry(size.shape)
    ending = recipe.file_ending
    case_values: dict[str, dict[str, float]] = {}
    for index, case_stream in enumerate(case_streams):
        split = "Tr" if index < size.train else "Ts"
        case = f"{recipe.case_prefix}_{index:03d}"
        values = {name: float(column[index]) for name, column in nodes.items()}
        image, label = recipe.render(values, size.shape, np.random.default_rng(case_stream))
        write_image(folder / f"images{split}" / f"{case}_0000{ending}", image, geometry)
        write_image(folder / f"labels{split}" / f"{case}{ending}", label[None].astype(np.uint8),
                    geometry)
        case_values[case] = {name: round(value, 6) for name, value in values.items()}

    counts = f", {size.train} training cases" if cases_given else ""
    description = (f"{recipe.look} Demo data from mucald_make_demo (seed {seed}, size "
                   f"{size_name}{counts}); {recipe.graph.summary()}; ground truth and per-case node "
                   f"values in {CAUSAL_GRAPH_JSON}.")
    DatasetSpec(channel_names=dict(recipe.channel_names), labels=dict(recipe.labels),
                num_training=size.train, file_ending=ending, description=description).save(folder)
    truth = recipe.graph.to_json(seed)
    truth["cases"] = case_values
    write_json_atomic(folder / CAUSAL_GRAPH_JSON, truth)
