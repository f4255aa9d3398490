"""mucald_train from the command line: a short run, and the messages for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucald_unet.commands.train import main


def test_a_short_run_writes_its_run_folder(tiny_federation: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    preprocessed = tiny_federation.parent.parent
    code = main(["-d", "1", "2", "3", "--preprocessed", str(preprocessed), "--results", str(tmp_path),
                 "--method", "mucald", "--ablate", "no-causal", "--rounds", "1", "--iters", "1", "--device", "cpu"])
    assert code == 0
    run = tmp_path / tiny_federation.parent.name / "mucald__no-causal__rounds-1__iters-1" / "fold_0"
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["ablations"] == ["no-causal"] and config["training"]["rounds"] == 1
    assert (run / "checkpoint_final.pt").is_file() and (run / "curves.png").is_file()
    assert "validation Dice" in capsys.readouterr().out


def test_missing_plans_name_the_planning_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["-d", "1", "2", "--preprocessed", str(tmp_path), "--results", str(tmp_path / "r")])
    assert code == 1
    assert f"mucald_plan_and_preprocess -d 1 2 --preprocessed {tmp_path}" in capsys.readouterr().err.replace("\n", "")


def test_datasets_outside_the_plan_and_bad_ablations_are_refused(tiny_federation: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    preprocessed = str(tiny_federation.parent.parent)
    assert main(["-d", "1", "7", "--preprocessed", preprocessed, "--results", str(tmp_path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no Federation_001_007 (federations found: Federation_001_002_003 (datasets 1, 2, 3))" in err
    assert main(["-d", "1", "--preprocessed", preprocessed, "--results", str(tmp_path), "--ablate", "no-magic"]) == 1
    assert "unknown ablation 'no-magic'" in capsys.readouterr().err
    assert main(["-d", "1", "--preprocessed", preprocessed, "--results", str(tmp_path), "--method", "splitfed",
                 "--ablate", "no-daca"]) == 1
    assert "--method mucald" in capsys.readouterr().err


def test_defence_and_capture_flags(tiny_federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    preprocessed = str(tiny_federation.parent.parent)
    code = main(["-d", "1", "2", "3", "--preprocessed", preprocessed, "--results", str(tmp_path), "--method", "splitfed",
                 "--defence", "gaussian:0.5", "--rounds", "1", "--iters", "1", "--capture-round", "1",
                 "--capture-clients", "3"])
    assert code == 0
    run = tmp_path / tiny_federation.parent.name / "splitfed__gaussian-0.5__rounds-1__iters-1" / "fold_0"
    assert (run / "capture_round001.pt").is_file()
    assert main(["-d", "1", "--preprocessed", preprocessed, "--results", str(tmp_path), "--defence", "blur:2"]) == 1
    assert "KIND:STRENGTH" in capsys.readouterr().err
    assert main(["-d", "1", "2", "3", "--preprocessed", preprocessed, "--results", str(tmp_path),
                 "--capture-clients", "1"]) == 1
    assert "--capture-round" in capsys.readouterr().err
    assert main(["-d", "1", "2", "3", "--preprocessed", preprocessed, "--results", str(tmp_path), "--method", "local",
                 "--capture-round", "1"]) == 1
    assert "no client/server boundary" in capsys.readouterr().err


def test_preset_paper_sets_the_papers_settings_and_explicit_flags_win(tiny_federation: Path, tmp_path: Path) -> None:
    preprocessed = str(tiny_federation.parent.parent)
    code = main(["-d", "1", "2", "3", "--preprocessed", preprocessed, "--results", str(tmp_path), "--method",
                 "splitfed", "--preset", "paper", "--rounds", "1", "--local-epochs", "1", "--iters", "1"])
    assert code == 0
    [config_file] = (tmp_path / tiny_federation.parent.name).glob("splitfed__*/fold_0/config.json")
    trained = json.loads(config_file.read_text())["training"]
    assert (trained["rounds"], trained["local_epochs"], trained["iterations_per_epoch"]) == (1, 1, 1)  # typed: kept
    optimizer = trained["optimizer"]
    assert (optimizer["kind"], optimizer["lr"], optimizer["aux_lr"], optimizer["schedule"]) == (
        "adamw", 1e-4, 5e-5, "constant")
    assert (trained["fedprox_mu"], trained["aggregation"]) == (1e-3, "equal")


def test_preset_private_refuses_a_plan_cut_at_depth_zero(tiny_federation: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["-d", "1", "2", "3", "--preprocessed", str(tiny_federation.parent.parent), "--results",
                 str(tmp_path), "--preset", "private", "--rounds", "1", "--iters", "1"]) == 1
    assert "--preset private was measured at cut depth 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any run folder was made
