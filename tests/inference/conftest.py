"""A briefly trained tiny federation shared by the prediction tests (trained once per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mucald_unet.training.trainer import FederatedTrainer, run_folder
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


@dataclass(frozen=True)
class TrainedRun:
    raw: Path
    preprocessed: Path
    results: Path
    plans_path: Path

    def cli_roots(self) -> list[str]:
        return ["--preprocessed", str(self.preprocessed), "--results", str(self.results)]


@pytest.fixture(scope="session")
def trained_run(tiny_federation: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    results = tmp_path_factory.mktemp("results")
    config = quick_config(rounds=1, iterations=2)
    # named like a default run so that tests can say --run mucald (its real name carries the short budget)
    FederatedTrainer(tiny_federation, CLIENTS, config, run_folder(results, tiny_federation, "mucald", 0)).run()
    preprocessed = tiny_federation.parent.parent
    return TrainedRun(preprocessed.parent / "raw", preprocessed, results, tiny_federation)
