"""The case store: a case is memory-mappable .npy arrays and a json written last; any one file
missing makes half a case, which every check reports and ``remove_orphans`` clears, and cases of
the older .npz format are orphans that preprocessing again replaces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from preprocessing import case_store, runner
from preprocessing.case_preprocessing import CasePreprocessingConfig, CaseProperties, PreprocessedCase
from preprocessing.case_store import (ExpectedCases, check_case, check_folder, find_orphans, is_complete,
                                      load_case, remove_orphans, save_case, stored_case_ids)
from preprocessing.cropping import BoundingBox
from preprocessing.dataset import RawDataset
from preprocessing.demo import make_demo_federation
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry
from preprocessing.normalization import ZScoreNormalization

SHAPE = (4, 6, 5)
FILES = ("{}.npy", "{}_seg.npy", "{}_fg.npy", "{}.json")


def stored(case_id: str, labelled: bool = True, digest: str = "digest") -> PreprocessedCase:
    rng = np.random.default_rng(len(case_id))
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 2:4, 1:3] = 1
    label[3, 5, 4] = 3
    properties = CaseProperties(case_id, Geometry.default(SHAPE), BoundingBox.full(SHAPE), SHAPE, SHAPE,
                                (1.0, 1.0, 1.0), digest)
    foreground = {1: np.argwhere(label == 1).astype(np.int32), 3: np.argwhere(label == 3).astype(np.int32)}
    return PreprocessedCase(rng.normal(size=(2, *SHAPE)).astype(np.float32), label if labelled else None,
                            foreground if labelled else {}, properties)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def expected(ids, digest: str = "digest") -> ExpectedCases:
    return ExpectedCases(digest, frozenset(ids), "mucald_plan_and_preprocess -d 1")


def test_a_labelled_case_is_three_mappable_arrays_and_a_json(tmp_path: Path) -> None:
    case = stored("a")
    save_case(tmp_path, case)
    assert names(tmp_path) == ["a.json", "a.npy", "a_fg.npy", "a_seg.npy"]  # no .npz, no temp folder
    images = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert isinstance(images, np.memmap) and images.dtype == np.float32
    np.testing.assert_array_equal(images, case.images)
    np.testing.assert_array_equal(np.load(tmp_path / "a_seg.npy", mmap_mode="r"), case.label)
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["case_id"] == "a" and record["case_store"]["labelled"] is True


@pytest.mark.parametrize("mmap", [True, False])
def test_load_case_gives_back_what_was_saved(tmp_path: Path, mmap: bool) -> None:
    case = stored("a")
    save_case(tmp_path, case)
    loaded = load_case(tmp_path, "a", mmap=mmap)
    assert loaded.properties == case.properties
    np.testing.assert_array_equal(loaded.images, case.images)
    np.testing.assert_array_equal(loaded.label, case.label)
    assert loaded.label.dtype == np.uint8 and sorted(loaded.foreground) == [1, 3]
    for value, coords in case.foreground.items():
        np.testing.assert_array_equal(loaded.foreground[value], coords)
    assert isinstance(loaded.images, np.memmap) == mmap
    assert loaded.images.flags.writeable == (not mmap) and loaded.label.flags.writeable == (not mmap)
    if mmap:
        with pytest.raises(ValueError, match="read-only"):
            loaded.images[0, 0, 0, 0] = 1.0


def test_an_unlabelled_case_and_a_case_without_foreground(tmp_path: Path) -> None:
    save_case(tmp_path, stored("u", labelled=False))
    empty = stored("e")
    save_case(tmp_path, PreprocessedCase(empty.images, np.zeros(SHAPE, np.uint8), {}, empty.properties))
    assert names(tmp_path) == ["e.json", "e.npy", "e_fg.npy", "e_seg.npy", "u.json", "u.npy"]
    assert load_case(tmp_path, "u").label is None and load_case(tmp_path, "u", mmap=True).foreground == {}
    assert load_case(tmp_path, "e", mmap=True).foreground == {}
    assert find_orphans(tmp_path, {"u", "e"}) == [] and stored_case_ids(tmp_path) == ["e", "u"]


@pytest.mark.parametrize("missing", FILES)
def test_a_case_missing_any_one_file_is_half_a_case(tmp_path: Path, missing: str) -> None:
    save_case(tmp_path, stored("a"))
    save_case(tmp_path, stored("b"))
    (tmp_path / missing.format("a")).unlink()
    assert not is_complete(tmp_path, "a", "digest") and is_complete(tmp_path, "b", "digest")
    assert stored_case_ids(tmp_path) == ["b"]
    orphans = find_orphans(tmp_path, {"a", "b"})
    left = sorted(f.format("a") for f in FILES if f != missing)
    assert sorted(p.name for p, _ in orphans) == left
    assert all("half a case" in why for _, why in orphans)
    with pytest.raises(DatasetError, match="half a case"):
        check_folder(tmp_path, expected({"a", "b"}))
    if missing != "{}.json":
        with pytest.raises(DatasetError, match=f"{missing.format('a')}: preprocessed case file is missing"):
            check_case(tmp_path, "a", expected({"a", "b"}))
    assert sorted(p.name for p in remove_orphans(tmp_path, {"a", "b"})) == left
    assert names(tmp_path) == sorted(f.format("b") for f in FILES)


def test_files_that_belong_to_no_planned_case_are_orphans(tmp_path: Path) -> None:
    save_case(tmp_path, stored("a"))
    save_case(tmp_path, stored("gone"))
    save_case(tmp_path, stored("u", labelled=False))
    np.save(tmp_path / "u_seg.npy", np.zeros(SHAPE, np.uint8))  # not a file the json of u lists
    (tmp_path / "notes.json").write_text("{}")
    why = dict((p.name, reason) for p, reason in find_orphans(tmp_path, {"a", "u"}))
    assert sorted(why) == ["gone.json", "gone.npy", "gone_fg.npy", "gone_seg.npy", "notes.json", "u_seg.npy"]
    assert why["gone.npy"] == "is not a training case of the dataset any more"
    assert "u.json" in why["u_seg.npy"] and why["notes.json"] == "is not a case record"
    remove_orphans(tmp_path, {"a", "u"})
    assert stored_case_ids(tmp_path) == ["a", "u"] and find_orphans(tmp_path, {"a", "u"}) == []


def test_a_crash_while_rewriting_a_case_never_leaves_it_looking_complete(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    save_case(tmp_path, stored("a"))
    real_save = case_store._save_array

    def crash_on_label(path, array):
        if path.name.endswith("_seg.npy"):
            raise KeyboardInterrupt("killed")
        real_save(path, array)

    monkeypatch.setattr(case_store, "_save_array", crash_on_label)
    with pytest.raises(KeyboardInterrupt):
        save_case(tmp_path, stored("a"))
    # the new images beside the old label and json would pass for a finished case: the json went first
    assert not (tmp_path / "a.json").exists() and not is_complete(tmp_path, "a", "digest")
    assert sorted(p.name for p, _ in find_orphans(tmp_path, {"a"})) == ["a.npy", "a_fg.npy", "a_seg.npy"]
    assert not list(tmp_path.glob(".*partial"))  # atomic writes: no temporary file left either


def test_saving_replaces_what_another_layout_left(tmp_path: Path) -> None:
    save_case(tmp_path, stored("a"))
    np.savez_compressed(tmp_path / "a.npz", images=np.zeros(1))
    save_case(tmp_path, stored("a", labelled=False))  # now unlabelled: label and foreground go
    assert names(tmp_path) == ["a.json", "a.npy"] and find_orphans(tmp_path, {"a"}) == []


def older_format(folder: Path, case_id: str) -> None:
    """Turn a stored case into what mucald wrote before memory maps: CASE.npz + CASE.json."""
    case = load_case(folder, case_id)
    arrays = {"images": case.images, "label": case.label,
              **{f"foreground_{v}": c for v, c in case.foreground.items()}}
    np.savez_compressed(folder / f"{case_id}.npz", **arrays)
    record = json.loads((folder / f"{case_id}.json").read_text())
    del record["case_store"]
    (folder / f"{case_id}.json").write_text(json.dumps(record))
    for pattern in FILES[:3]:
        (folder / pattern.format(case_id)).unlink()


def test_cases_of_the_older_npz_format_are_orphans_that_preprocessing_remakes(tmp_path: Path) -> None:
    make_demo_federation(tmp_path / "raw", seed=0, size="tiny")
    dataset = RawDataset.open(tmp_path / "raw", 3)
    cases = dataset.case_ids()
    spacing = dataset.read_label(cases[0])[1].array_spacing
    config = CasePreprocessingConfig(spacing, (ZScoreNormalization(),), False)
    out = tmp_path / "pre"
    runner.preprocess_dataset(dataset, config, out)
    for case_id in cases[:2]:
        older_format(out, case_id)

    orphans = dict(find_orphans(out, cases))
    assert sorted(p.name for p in orphans) == sorted(f"{c}{s}" for c in cases[:2] for s in (".json", ".npz"))
    assert all("older mucald" in why for why in orphans.values())
    assert not is_complete(out, cases[0], config.digest(), "")
    with pytest.raises(DatasetError, match="older mucald"):
        check_case(out, cases[0], expected(cases, config.digest()))

    remove_orphans(out, cases)  # what mucald_plan_and_preprocess does before preprocessing
    assert runner.preprocess_dataset(dataset, config, out) == cases[:2]  # remade, the rest skipped
    assert not list(out.glob("*.npz")) and find_orphans(out, cases) == []
    assert stored_case_ids(out) == cases
