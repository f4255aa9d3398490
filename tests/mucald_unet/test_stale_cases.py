"""Cases left over from an earlier plan or dataset never reach training; replanning repairs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mucald_unet.commands.train import main
from mucald_unet.training.trainer import CaseSelection, FederatedTrainer
from planners.budget import Preset
from planners.pipeline import PipelineConfig, client_cases_folder, plan_and_preprocess
from planners.planner import PlannerConfig
from planners.plans import load_plans
from preprocessing.case_store import load_case
from preprocessing.errors import DatasetError
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config

CLIENT = "Dataset003_DemoFetalUS"
REPLAN = "mucald_plan_and_preprocess -d 1 2 3"


@pytest.fixture
def federation(tiny_federation: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny planned federation (raw data included); returns its plans path."""
    root = tiny_federation.parents[2]
    shutil.copytree(root, tmp_path / "fed")  # copy2 keeps mtimes, so the raw files' stamps still match
    return tmp_path / "fed" / tiny_federation.relative_to(root)


def cases_folder(plans_path: Path) -> Path:
    return client_cases_folder(plans_path, load_plans(plans_path).client(CLIENT))


def rewrite_properties(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def build_trainer(plans_path: Path, run_folder: Path, **kwargs) -> FederatedTrainer:
    return FederatedTrainer(plans_path, CLIENTS, quick_config(method="splitfed", iterations=1), run_folder,
                            **kwargs)


def replan(plans_path: Path) -> None:
    root = plans_path.parents[2]
    plan_and_preprocess(PipelineConfig(raw_root=root / "raw", preprocessed_root=plans_path.parents[1],
                                       datasets=("1", "2", "3"),
                                       planner=PlannerConfig(preset=Preset("cpu"), dimensionality="2d")))


def test_a_case_made_with_other_settings_stops_training(federation: Path, tmp_path: Path) -> None:
    stale = sorted(cases_folder(federation).glob("*.json"))[1]
    rewrite_properties(stale, config_digest="0123456789abcdef")  # as an earlier plan would have left it
    with pytest.raises(DatasetError, match="other settings") as error:
        build_trainer(federation, tmp_path / "run")
    assert str(stale) in str(error.value) and REPLAN in str(error.value)


def test_a_case_without_a_digest_counts_as_stale(federation: Path, tmp_path: Path) -> None:
    stale = sorted(cases_folder(federation).glob("*.json"))[0]
    rewrite_properties(stale, config_digest=None)  # written before cases recorded their settings
    with pytest.raises(DatasetError, match="older version") as error:
        build_trainer(federation, tmp_path / "run")
    assert str(stale) in str(error.value) and REPLAN in str(error.value)


def test_explicitly_selected_cases_are_checked_too(federation: Path, tmp_path: Path) -> None:
    ids = sorted(p.stem for p in cases_folder(federation).glob("*.json"))
    rewrite_properties(cases_folder(federation) / f"{ids[0]}.json", config_digest="0123456789abcdef")
    selection = {CLIENT: CaseSelection(tuple(ids[:2]), tuple(ids[2:]))}
    with pytest.raises(DatasetError, match=f"{ids[0]}.json"):
        build_trainer(federation, tmp_path / "run", case_selection=selection)


ARRAY_SUFFIXES = (".npy", "_seg.npy", "_fg.npy")  # images, label, foreground voxels


def copy_case(folder: Path, source: str, target: str, suffixes=(*ARRAY_SUFFIXES, ".json")) -> None:
    for suffix in suffixes:
        shutil.copy(folder / f"{source}{suffix}", folder / f"{target}{suffix}")


@pytest.mark.parametrize("orphan", ["arrays without properties", "properties without images",
                                    "properties without label", "properties without foreground",
                                    "a case the dataset no longer has", "a planned case never preprocessed",
                                    "a case in the older npz format"])
def test_orphaned_or_missing_case_files_stop_training(federation: Path, tmp_path: Path, orphan: str) -> None:
    folder = cases_folder(federation)
    first = sorted(folder.glob("*.json"))[0].stem
    if orphan == "arrays without properties":
        named = folder / "ghost.npy"
        copy_case(folder, first, "ghost", ARRAY_SUFFIXES)
    elif orphan.startswith("properties without"):  # any one missing file makes half a case
        suffix = {"images": ".npy", "label": "_seg.npy", "foreground": "_fg.npy"}[orphan.split()[-1]]
        named = folder / f"{first}.json"
        (folder / f"{first}{suffix}").unlink()
    elif orphan == "a planned case never preprocessed":  # training on the rest would drop it silently
        named = folder
        for suffix in (*ARRAY_SUFFIXES, ".json"):
            (folder / f"{first}{suffix}").unlink()
    elif orphan == "a case in the older npz format":
        named = folder / f"{first}.npz"
        named.write_bytes(b"PK\x03\x04")  # as an older mucald left it beside a current case
    else:  # a complete case with the current digest, but not among the planned cases
        named = folder / "ghost.json"
        copy_case(folder, first, "ghost")
    with pytest.raises(DatasetError) as error:
        build_trainer(federation, tmp_path / "run")
    assert str(named) in str(error.value) and REPLAN in str(error.value)
    if orphan == "a case in the older npz format":
        assert "older mucald" in str(error.value)


def test_mucald_train_names_the_stale_case_in_one_line(federation: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    stale = sorted(cases_folder(federation).glob("*.json"))[0]
    rewrite_properties(stale, config_digest="0123456789abcdef")
    code = main(["-d", "1", "2", "3", "--preprocessed", str(federation.parents[1]), "--results",
                 str(tmp_path / "results"), "--method", "splitfed", "--rounds", "1", "--iters", "1",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert stale.name in err and "mucald_plan_and_preprocess" in err


def test_replanning_redoes_stale_cases_and_removes_orphans(federation: Path, tmp_path: Path) -> None:
    folder = cases_folder(federation)
    stale, untouched = sorted(folder.glob("*.json"))[:2]
    rewrite_properties(stale, config_digest="0123456789abcdef")
    untouched_stamp = untouched.stat().st_mtime_ns
    copy_case(folder, untouched.stem, "ghost", ARRAY_SUFFIXES)  # arrays whose json never came
    copy_case(folder, untouched.stem, "gone")  # a complete case of a raw file since removed
    leftovers = [f"ghost{s}" for s in ARRAY_SUFFIXES] + [f"gone{s}" for s in (*ARRAY_SUFFIXES, ".json")]

    replan(federation)

    digest = load_plans(federation).client(CLIENT).case_preprocessing().digest()
    assert json.loads(stale.read_text())["config_digest"] == digest
    assert untouched.stat().st_mtime_ns == untouched_stamp  # finished cases are still skipped
    assert not any((folder / name).exists() for name in leftovers)
    run = build_trainer(federation, tmp_path / "run")  # loads every client's cases, as training starts
    client = next(c for c in run.clients if c.name == CLIENT)
    loaded = {c.case_id for c in client.data.train + client.data.validation}
    assert loaded == {p.stem for p in folder.glob("*.json")} and stale.stem in loaded


def test_replanning_replaces_cases_of_the_older_npz_format(federation: Path, tmp_path: Path) -> None:
    """A folder an older mucald wrote (CASE.npz + CASE.json) is an orphan as a whole: training
    refuses it, and replanning removes the npz files and remakes every case as memory maps."""
    folder = cases_folder(federation)
    ids = sorted(p.stem for p in folder.glob("*.json"))
    for case_id in ids:  # what an older mucald left: a compressed archive and a json without a record
        loaded = load_case(folder, case_id)
        np.savez_compressed(folder / f"{case_id}.npz", images=loaded.images, label=loaded.label)
        record = json.loads((folder / f"{case_id}.json").read_text())
        record.pop("case_store")
        (folder / f"{case_id}.json").write_text(json.dumps(record))
        for suffix in ARRAY_SUFFIXES:
            (folder / f"{case_id}{suffix}").unlink()
    with pytest.raises(DatasetError, match="older mucald"):
        build_trainer(federation, tmp_path / "run")

    replan(federation)

    assert not list(folder.glob("*.npz"))
    assert sorted(p.stem for p in folder.glob("*.json")) == ids
    for case_id in ids:
        assert all((folder / f"{case_id}{suffix}").is_file() for suffix in ARRAY_SUFFIXES)
        assert isinstance(load_case(folder, case_id, mmap=True).images, np.memmap)
    build_trainer(federation, tmp_path / "run")  # the remade folder trains
