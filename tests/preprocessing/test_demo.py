"""The demo federation: deterministic, valid raw datasets with a planted, measurable graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from preprocessing.commands.make_demo import main
from preprocessing.dataset import RawDataset
from preprocessing.errors import DatasetError
from preprocessing.demo import CAUSAL_GRAPH_JSON, PRESETS, RECIPES, demo_folders, make_demo_federation
from preprocessing.demo import measure
from preprocessing.demo.causal import CausalGraphSpec, sample_nodes
from preprocessing.integrity import verify_dataset
from preprocessing.io import read_image

DOCUMENTED_EDGES = {
    "Dataset001_DemoPolyp": [["size", "elongation"], ["size", "asymmetry"],
                             ["contrast", "asymmetry"]],
    "Dataset002_DemoLungCT": [["size", "contrast"], ["size", "elongation"],
                              ["elongation", "asymmetry"]],
    "Dataset003_DemoFetalUS": [["size", "inner_size"], ["size", "elongation"],
                               ["inner_size", "contrast"]],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_demo_federation(tmp_path_factory.mktemp("tiny"), seed=0, size="tiny")


def _image_files(folder: Path) -> list[Path]:
    """Every image and label file, relative to the dataset folder, in a stable order."""
    return sorted(p.relative_to(folder) for p in folder.glob("*/*") if p.parent.name[:6] in
                  ("images", "labels"))


def _by_name(folders: list[Path]) -> dict[str, Path]:
    return {f.name: f for f in folders}


def test_writes_the_three_datasets_with_the_preset_case_counts(tiny: list[Path]) -> None:
    assert [f.name for f in tiny] == list(DOCUMENTED_EDGES)
    for recipe, folder in zip(RECIPES, tiny):
        size = PRESETS["tiny"].for_dataset(recipe.key)
        dataset = RawDataset(folder)
        assert len(dataset.case_ids("Tr")) == size.train == dataset.spec.num_training
        assert len(dataset.case_ids("Ts")) == size.test
        assert dataset.case_ids("Tr")[0] == f"{recipe.case_prefix}_000"
        assert len(list(dataset.labels_dir("Ts").iterdir())) == size.test


def test_same_seed_gives_identical_arrays_and_geometry(tiny: list[Path], tmp_path: Path) -> None:
    again = make_demo_federation(tmp_path, seed=0, size="tiny")
    for first, second in zip(tiny, again):
        files = _image_files(first)
        assert files == _image_files(second) and files
        for relative in files:
            a, geo_a = read_image(first / relative)
            b, geo_b = read_image(second / relative)
            assert a.dtype == b.dtype and np.array_equal(a, b), relative
            assert geo_a == geo_b, relative


def test_different_seed_gives_different_images(tiny: list[Path], tmp_path: Path) -> None:
    other = make_demo_federation(tmp_path, seed=1, size="tiny")
    for first, second in zip(tiny, other):
        for relative in (p for p in _image_files(first) if p.parts[0].startswith("images")):
            assert not np.array_equal(read_image(first / relative)[0],
                                      read_image(second / relative)[0]), relative


def test_tiny_is_exactly_its_preset_and_stays_small(tiny: list[Path]) -> None:
    """What keeps tiny fast, checked by counting instead of timing: the case counts and array
    shapes of the preset table, and a small total voxel count for the whole federation."""
    total = 0
    by_name = _by_name(tiny)
    for recipe in RECIPES:
        size = PRESETS["tiny"].for_dataset(recipe.key)
        folder = by_name[f"Dataset{recipe.dataset_id:03d}_{recipe.name}"]
        for split, count in (("Tr", size.train), ("Ts", size.test)):
            images = sorted((folder / f"images{split}").iterdir())
            assert len({path.name.rsplit("_", 1)[0] for path in images}) == count, (folder.name, split)
            for path in images:
                array = read_image(path)[0]
                assert array.shape[-len(size.shape):] == size.shape, path
                total += array.size
    assert total < 250_000, total


def test_every_dataset_passes_the_integrity_check(tiny: list[Path]) -> None:
    for folder in tiny:
        report = verify_dataset(folder)
        assert report.ok, report.format()
        assert report.cases_checked == len(list((folder / "imagesTr").iterdir())) + len(
            list((folder / "imagesTs").iterdir()))


def test_ct_geometry_is_anisotropic_oblique_and_offset(tiny: list[Path]) -> None:
    folder = _by_name(tiny)["Dataset002_DemoLungCT"]
    for path in sorted(folder.glob("*/*.nii.gz")):
        array, geometry = read_image(path)
        assert array.shape == (1, *PRESETS["tiny"].lung_ct.shape)
        assert np.allclose(geometry.spacing, (0.8, 0.8, 3.0), atol=1e-5)
        assert np.allclose(geometry.origin, (-160.0, -140.0, 35.0), atol=1e-3)
        matrix = geometry.direction_matrix
        assert not np.allclose(matrix, np.eye(3), atol=1e-3)
        assert np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-5)
    image, _ = read_image(folder / "imagesTr" / "lung_000_0000.nii.gz")
    assert image.dtype == np.int16 and image.min() <= -1000 and image.max() > 0


def test_polyp_images_are_rgb_and_us_labels_hold_all_three_classes(tiny: list[Path]) -> None:
    folders = _by_name(tiny)
    for path in sorted((folders["Dataset001_DemoPolyp"] / "imagesTr").iterdir()):
        array, _ = read_image(path)
        assert array.shape == (3, 48, 48) and array.dtype == np.uint8
    us = folders["Dataset003_DemoFetalUS"]
    for path in sorted(us.glob("labels*/*.nii.gz")):
        label, geometry = read_image(path)
        assert set(np.unique(label).tolist()) == {0, 1, 2}, path.name
        assert np.allclose(geometry.spacing, (0.2, 0.2), atol=1e-6) and any(geometry.origin)


def test_every_lesion_is_non_empty_and_fully_inside_the_image(tiny: list[Path]) -> None:
    for folder in tiny:
        for path in sorted(folder.glob("labels*/*")):
            label = read_image(path)[0][0] > 0
            assert label.any(), path
            for axis in range(label.ndim):
                edges = np.take(label, [0, label.shape[axis] - 1], axis=axis)
                assert not edges.any(), f"{path} touches the border along axis {axis}"


def test_causal_graph_json_lists_the_documented_edges(tiny: list[Path]) -> None:
    for folder in tiny:
        truth = json.loads((folder / CAUSAL_GRAPH_JSON).read_text(encoding="utf-8"))
        assert truth["edges"] == DOCUMENTED_EDGES[folder.name]
        assert len(truth["nodes"]) == 4 and all(n["measured_by"] for n in truth["nodes"])
        assert truth["seed"] == 0 and "tanh" in truth["mechanism"]
        assert set(truth["cases"]) == {p.name.split(".")[0] for p in folder.glob("labels*/*")}
        spec = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        assert "planted causal graph" in spec["description"]


def test_sample_nodes_is_standardised_and_follows_the_edges() -> None:
    spec = CausalGraphSpec(nodes=("b", "a"), edges=(("a", "b"),), measured_by={"a": "x", "b": "y"})
    values = sample_nodes(spec, 2000, np.random.default_rng(0))
    assert list(values) == ["b", "a"]
    for column in values.values():
        assert abs(column.mean()) < 1e-9 and abs(column.std() - 1.0) < 1e-9
    assert spearmanr(values["a"], values["b"])[0] > 0.8
    with pytest.raises(ValueError, match="cycle"):
        CausalGraphSpec(nodes=("a", "b"), edges=(("a", "b"), ("b", "a")),
                        measured_by={"a": "x", "b": "y"})


def test_planted_polyp_structure_is_visible_in_measured_labels(tmp_path: Path) -> None:
    folder = _by_name(make_demo_federation(tmp_path, seed=0, size="small"))["Dataset001_DemoPolyp"]
    dataset = RawDataset(folder)
    planted = json.loads((folder / CAUSAL_GRAPH_JSON).read_text(encoding="utf-8"))["cases"]
    rows = []
    for split in ("Tr", "Ts"):
        for case in dataset.case_ids(split):
            label, geometry = dataset.read_label(case, split)
            polyp = label == 1
            image = dataset.read_images(case, split).array
            rows.append((measure.area(polyp, geometry.array_spacing), measure.asymmetry(polyp),
                         measure.ring_contrast(image, polyp, (5, 5)),
                         planted[case]["size"], planted[case]["contrast"]))
    area, asym, contrast, size_node, contrast_node = np.array(rows).T
    assert spearmanr(area, size_node)[0] > 0.9
    assert spearmanr(contrast, contrast_node)[0] > 0.7
    assert spearmanr(asym, size_node)[0] > 0.3  # size -> asymmetry
    assert spearmanr(asym, contrast)[0] > 0.3  # contrast -> asymmetry, both measured
    assert abs(spearmanr(area, contrast)[0]) < 0.4  # no edge between the two roots


def test_command_writes_then_refuses_to_overwrite(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    assert main([str(out), "--size", "tiny", "--seed", "1"]) == 0
    assert "Dataset002_DemoLungCT" in capsys.readouterr().out
    assert json.loads((out / "Dataset001_DemoPolyp" / CAUSAL_GRAPH_JSON).read_text())["seed"] == 1
    assert main([str(out), "--size", "tiny"]) == 1
    assert "Dataset001_DemoPolyp" in capsys.readouterr().err
    assert main([str(out), "--size", "tiny", "--seed", "2", "--overwrite"]) == 0
    assert json.loads((out / "Dataset001_DemoPolyp" / CAUSAL_GRAPH_JSON).read_text())["seed"] == 2


def test_command_rejects_an_unknown_size(tmp_path: Path) -> None:
    assert main([str(tmp_path / "d"), "--size", "huge"]) == 2


def test_cases_sets_the_training_cases_of_every_dataset_and_the_description_says_so(tmp_path: Path) -> None:
    folders = make_demo_federation(tmp_path, seed=0, size="tiny", cases=11)
    for recipe, folder in zip(RECIPES, folders):
        dataset = RawDataset(folder)
        assert len(dataset.case_ids("Tr")) == 11 == dataset.spec.num_training
        assert len(dataset.case_ids("Ts")) == PRESETS["tiny"].for_dataset(recipe.key).test  # unchanged
        assert "size tiny, 11 training cases" in dataset.spec.description
        assert len(json.loads((folder / CAUSAL_GRAPH_JSON).read_text())["cases"]) == 11 + len(dataset.case_ids("Ts"))
        assert verify_dataset(folder).ok
    preset = make_demo_federation(tmp_path / "preset", seed=0, size="tiny")
    assert "training cases" not in RawDataset(preset[0]).spec.description  # no count unless asked for


def test_cases_per_dataset_can_differ(tmp_path: Path) -> None:
    folders = make_demo_federation(tmp_path, seed=0, size="tiny", cases={"polyp": 3, "fetal_us": 5})
    counts = [len(RawDataset(f).case_ids("Tr")) for f in folders]
    assert counts == [3, PRESETS["tiny"].lung_ct.train, 5]
    with pytest.raises(ValueError, match="unknown demo dataset"):
        make_demo_federation(tmp_path / "x", size="tiny", cases={"brain": 3})


def test_command_with_cases_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    for name in ("one", "two"):
        assert main([str(tmp_path / name), "--size", "tiny", "--cases", "6", "--seed", "4"]) == 0
    assert main([str(tmp_path / "other"), "--size", "tiny", "--cases", "6", "--seed", "5"]) == 0
    for folder in demo_folders(tmp_path / "one"):
        files = _image_files(folder)
        assert len([f for f in files if f.parts[0] == "imagesTr"]) == 6
        assert files == _image_files(tmp_path / "two" / folder.name)
        for relative in files:
            a, b = read_image(folder / relative)[0], read_image(tmp_path / "two" / folder.name / relative)[0]
            assert np.array_equal(a, b), relative
        first = Path("imagesTr") / files[0].name
        assert not np.array_equal(read_image(folder / first)[0],
                                  read_image(tmp_path / "other" / folder.name / first)[0])
    assert main([str(tmp_path / "zero"), "--size", "tiny", "--cases", "0"]) == 2


def test_test_cases_sets_the_labelled_test_cases_of_every_dataset(tmp_path: Path) -> None:
    assert main([str(tmp_path / "d"), "--size", "tiny", "--cases", "4", "--test-cases", "7"]) == 0
    for folder in demo_folders(tmp_path / "d"):
        dataset = RawDataset(folder)
        assert len(dataset.case_ids("Tr")) == 4 and len(dataset.case_ids("Ts")) == 7
        assert len(list((folder / "labelsTs").iterdir())) == 7  # labelled: non-members for the audit
        assert verify_dataset(folder).ok
    with pytest.raises(DatasetError, match="--test-cases 1 or more"):
        make_demo_federation(tmp_path / "x", size="tiny", test_cases=0)
