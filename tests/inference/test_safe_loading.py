"""Loading never runs code: every .pt is read as plain weights, and a hospital gets only its own model.

A file whose unpickling would run code is refused by resume, prediction and the audit, and the
code does not run; old-format checkpoints say to retrain; ``mucald_export`` writes one client's
weights only, and predictions from it equal those from the full checkpoint.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.commands.audit import main as audit_main
from inference.commands.export_model import main as export_main
from inference.commands.predict import main as predict_main
from inference.errors import PredictionError
from inference.model import EXPORT_KIND, load_client_model
from inference.predictor import PredictionSettings, Predictor
from mucald_unet.commands.train import main as train_main
from mucald_unet.config import TrainingConfig
from mucald_unet.errors import TrainingError
from mucald_unet.training.checkpoint import BEST, FINAL, load_checkpoint, load_plain, save_checkpoint
from mucald_unet.training.trainer import run_folder, run_folder_for, run_is_finished
from tests.conftest import CLIENTS
from tests.inference.conftest import TrainedRun

POLYP, LUNG, FETAL = CLIENTS
REFUSED = "not a plain-weights mucald checkpoint"


class WritesAFile:
    """Unpickling this writes ``target``: the stand-in for code hidden in a checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return Path.write_text, (self.target, "pwned")


def plant(path: Path, target: Path) -> Path:
    """A checkpoint-shaped torch file at ``path`` whose loading would write ``target``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format_version": 2, "kind": "checkpoint", "rounds_done": WritesAFile(target)}, path)
    return path


def trained_final(run: TrainedRun) -> Path:
    """The fixture run's final checkpoint (tests/inference/conftest.py names its folder mucald)."""
    return run_folder(run.results, run.plans_path, "mucald", 0) / FINAL


def all_keys_and_strings(value) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value} | {s for v in value.values() for s in all_keys_and_strings(v)}
    if isinstance(value, (list, tuple)):
        return {s for v in value for s in all_keys_and_strings(v)}
    return {value} if isinstance(value, str) else set()


def test_the_planted_payload_really_runs_when_unpickled_unsafely(tmp_path: Path) -> None:
    """The control: without weights_only the file would write its target."""
    target = tmp_path / "pwned"
    pickle.loads(pickle.dumps(WritesAFile(target)))
    assert target.read_text() == "pwned"


# ---- code in a checkpoint is refused, unrun, everywhere a .pt is read ---------------------------
def test_resume_refuses_a_checkpoint_that_would_run_code(tiny_federation: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "pwned"
    config = TrainingConfig(rounds=1, iterations_per_epoch=1, device="cpu")
    planted = plant(run_folder_for(tmp_path / "results", tiny_federation, config) / FINAL, target)
    code = train_main(["-d", "1", "2", "3", "--preprocessed", str(tiny_federation.parent.parent),
                       "--results", str(tmp_path / "results"), "--rounds", "1", "--iters", "1",
                       "--device", "cpu", "--resume"])
    err = capsys.readouterr().err
    assert code == 1 and not target.exists()
    assert str(planted.name) in err and REFUSED in err and "not executed" in err and "mucald_export" in err
    assert "Traceback" not in err


def test_predict_refuses_a_checkpoint_file_that_would_run_code(trained_run: TrainedRun, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "pwned"
    planted = plant(tmp_path / "from_elsewhere.pt", target)
    code = predict_main(["-d", "3", "-i", str(trained_run.raw / FETAL / "imagesTs"), "-o", str(tmp_path / "out"),
                         *trained_run.cli_roots(), "--checkpoint", str(planted)])
    err = capsys.readouterr().err
    assert code == 1 and not target.exists() and not list((tmp_path / "out").glob("*.nii.gz"))
    assert "from_elsewhere.pt" in err and REFUSED in err and "may contain code" in err and "not executed" in err


def test_the_audit_refuses_target_and_shadow_checkpoints_that_would_run_code(trained_run: TrainedRun, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "pwned"
    results = tmp_path / "results"
    plant(run_folder(results, trained_run.plans_path, "evil", 0) / FINAL, target)
    code = audit_main(["-d", "3", "-o", str(tmp_path / "audit"), "--preprocessed", str(trained_run.preprocessed),
                       "--results", str(results), "--runs", "evil", "--attacks", "dcor", "--checkpoint", "final"])
    err = capsys.readouterr().err
    assert code == 1 and REFUSED in err and "evil" in err
    shadow = plant(tmp_path / "shadow_0" / FINAL, target)
    with pytest.raises(PredictionError, match=REFUSED):
        load_client_model(trained_run.plans_path, FETAL, shadow)
    with pytest.raises(TrainingError, match=REFUSED):
        run_is_finished(shadow.parent)
    assert not target.exists()


def test_checkpoints_load_as_plain_weights_and_old_formats_say_retrain(trained_run: TrainedRun,
                                                                       tmp_path: Path) -> None:
    checkpoint = load_checkpoint(trained_final(trained_run))  # what training writes reads back safely
    assert checkpoint.rounds_done == 1 and set(checkpoint.clients) == set(CLIENTS)
    assert isinstance(load_plain(trained_final(trained_run)), dict)
    numpy_state = tmp_path / "numpy_state.pt"  # format 1 stored numpy's RNG state as it comes
    torch.save({"format_version": 1, "rng": {"augmentation": {"numpy": np.random.get_state()}}}, numpy_state)
    with pytest.raises(TrainingError, match=f"{REFUSED}.*numpy.*older than format 2.*retrain"):
        load_checkpoint(numpy_state)
    old = tmp_path / "old.pt"
    torch.save({"format_version": 1, "rounds_done": 3}, old)
    with pytest.raises(TrainingError, match="old.pt: a mucald checkpoint of format 1.*retrain"):
        load_checkpoint(old)


# ---- a hospital's export holds its model only, and predicts the same ---------------------------
def test_an_export_holds_one_client_and_predicts_like_the_full_checkpoint(trained_run: TrainedRun,
                                                                          tmp_path: Path) -> None:
    exported = tmp_path / "fetal_model.pt"
    run_name = trained_final(trained_run).parent.parent.name
    assert export_main(["-d", "3", "--run", run_name, "--checkpoint", "final", *trained_run.cli_roots(),
                        "-o", str(exported)]) == 0
    data = load_plain(exported)
    assert data["kind"] == EXPORT_KIND and data["client"] == FETAL and data["format_version"] == 2
    assert set(data) == {"format_version", "kind", "client", "config", "plans_digest", "modules", "server_segment"}
    assert set(data["modules"]) == {"front_end", "back_end", "crdm1", "crdm2"}
    assert data["config"] == load_checkpoint(trained_final(trained_run)).config
    assert not any(other in text for other in (POLYP, LUNG) for text in all_keys_and_strings(data))
    weights = [data["server_segment"], *data["modules"].values()]
    assert all(isinstance(t, torch.Tensor) for state in weights for t in state.values())  # no optimiser state
    assert not any(word in text for word in ("discriminator", "param_groups")
                   for state in weights for text in all_keys_and_strings(state))
    assert exported.stat().st_size < trained_final(trained_run).stat().st_size / 2

    images = np.random.default_rng(0).normal(size=(1, 70, 90)).astype(np.float32)
    settings = PredictionSettings(mirror=False)
    full = Predictor(load_client_model(trained_run.plans_path, FETAL, trained_final(trained_run)), settings)
    alone = Predictor(load_client_model(trained_run.plans_path, FETAL, exported), settings)
    assert torch.allclose(full.predict_logits(images), alone.predict_logits(images))
    out = tmp_path / "out"
    assert predict_main(["-d", "3", "-i", str(trained_run.raw / FETAL / "imagesTs"), "-o", str(out),
                         *trained_run.cli_roots(), "--checkpoint", str(exported), "--no-tta"]) == 0
    assert list(out.glob("*.nii.gz"))
    with pytest.raises(PredictionError, match=f"model of {FETAL}, not of {POLYP}"):
        load_client_model(trained_run.plans_path, POLYP, exported)
    with pytest.raises(TrainingError, match="client-export file, not a full training checkpoint"):
        load_checkpoint(exported)


def test_exporting_a_client_the_run_lacks_or_a_missing_run_writes_nothing(trained_run: TrainedRun, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    partial = load_checkpoint(trained_final(trained_run))
    del partial.clients[LUNG]
    folder = run_folder(results, trained_run.plans_path, "mucald", 0)
    save_checkpoint(folder / BEST, partial)
    roots = ["--preprocessed", str(trained_run.preprocessed), "--results", str(results)]
    out = tmp_path / "lung.pt"
    assert export_main(["-d", "2", *roots, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(folder / BEST) in err and f"no weights for {LUNG}" in err and "Fix:" in err
    assert export_main(["-d", "2", *roots, "--run", "splitfed", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(folder.parent.parent / "splitfed" / "fold_0") in err and "runs with one: mucald" in err and "Fix:" in err
    assert export_main(["-d", "7", *roots, "-o", str(out)]) == 1
    assert "Fix:" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".lung.pt.*"))
