"""The method registry: every name, the refusals that name the valid choices, and the settings a
method does not read."""

from __future__ import annotations

from pathlib import Path

import pytest

from mucald_unet.commands.train import main as train_main
from mucald_unet.config import Method, StrategyOptions, TrainingConfig, parse_ablations
from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies import CRDM, DACA, MethodSpec, method_names, method_spec, register
from mucald_unet.federation.strategies.local import NoAggregation

METHODS = ["mucald", "splitfed", "local", "centralized", "fedprox", "fedbn", "fedper", "fedrep", "scaffold", "ditto", "mocha", "fedem"]


def test_every_method_is_registered_in_order_and_only_mucald_has_crdm_and_daca() -> None:
    assert method_names() == METHODS
    assert [n for n in METHODS if method_spec(n).components] == ["mucald"]
    assert method_spec("mucald").components == {CRDM, DACA}
    assert [n for n in METHODS if not method_spec(n).split] == ["local", "centralized"]
    assert [n for n in METHODS if not method_spec(n).federated] == ["local", "centralized"]


def test_unknown_names_list_the_valid_ones_and_a_name_is_registered_once() -> None:
    with pytest.raises(TrainingError, match="unknown method 'fedavg'. Fix: use --method with one of mucald, splitfed"):
        method_spec("fedavg")
    with pytest.raises(TrainingError, match="one of mucald, splitfed, local, centralized, fedprox"):
        TrainingConfig(method="fedma")
    with pytest.raises(ValueError, match="already registered"):
        register(MethodSpec("local", "again", NoAggregation))
    assert method_names() == METHODS


def test_method_names_are_plain_strings_with_the_old_constants() -> None:
    assert Method.SPLITFED == "splitfed" and Method("ditto").value == "ditto"
    config = TrainingConfig(method="scaffold")
    assert config.method == Method("scaffold") and type(config.to_dict()["method"]) is str
    assert TrainingConfig.from_dict(config.to_dict()) == config


def test_new_methods_name_their_folders_like_the_old_ones() -> None:
    assert [TrainingConfig(method=n).run_name for n in METHODS] == METHODS
    fedper = TrainingConfig(method="fedper", strategy=StrategyOptions(fedper_stages=2))
    assert fedper.run_name == "fedper__fedper-stages-2"
    assert (TrainingConfig(method="ditto", seed=1, strategy=StrategyOptions(ditto_lambda=0.5)).run_name
            == "ditto__seed-1__ditto-lambda-0.5")
    assert TrainingConfig(method="fedrep", strategy=StrategyOptions(fedrep_head_fraction=0.8)).run_name == \
        "fedrep__fedrep-head-0.8"


def test_an_option_of_another_method_is_refused() -> None:
    with pytest.raises(TrainingError, match="--ditto-lambda is an option of --method ditto; --method splitfed does"):
        TrainingConfig(method="splitfed", strategy=StrategyOptions(ditto_lambda=1.0))
    with pytest.raises(TrainingError, match="--fedper-stages is an option of --method fedper"):
        TrainingConfig(method="fedbn", strategy=StrategyOptions(fedper_stages=2))
    with pytest.raises(TrainingError, match="out of range"):
        StrategyOptions(fedrep_head_fraction=1.0)
    with pytest.raises(TrainingError, match="--method mucald with --ablate"):
        TrainingConfig(method="scaffold", ablations=parse_ablations("no-daca"))


def test_the_command_refuses_an_unknown_method_naming_the_valid_ones(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert train_main(["-d", "1", "--preprocessed", str(tmp_path), "--results", str(tmp_path),
                       "--method", "fedma"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown method 'fedma'" in err and "scaffold, ditto" in err
    assert train_main(["-d", "1", "--preprocessed", str(tmp_path), "--method", "splitfed", "--ditto-lambda", "1"]) == 1
    assert "--ditto-lambda is an option of --method ditto" in " ".join(capsys.readouterr().err.split())
