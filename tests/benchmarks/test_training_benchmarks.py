"""benchmarks.train_step and benchmarks.federation_quality: tiny runs give complete markdown reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from benchmarks import federation_quality, train_step
from benchmarks.train_step import Variant, goal_lines, measure_iterations, prepare_demo, results_table

NUMBER = r"\d+\.\d+"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder holding the tiny demo federation, planned (about 2 s)."""
    folder = tmp_path_factory.mktemp("bench-work")
    prepare_demo(folder, "tiny")
    return folder


@pytest.fixture
def one_thread():
    """One torch thread, as the benchmark children use on a busy machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_prepare_demo_reuses_a_finished_plan(work: Path) -> None:
    plans_path, clients = prepare_demo(work, "tiny")
    assert clients == ["Dataset001_DemoPolyp", "Dataset002_DemoLungCT", "Dataset003_DemoFetalUS"]
    before = plans_path.stat().st_mtime_ns
    assert prepare_demo(work, "tiny")[0].stat().st_mtime_ns == before


def test_ablation_variants_split_on_commas_and_join_on_plus() -> None:
    labels = [v.label for v in train_step.ablation_variants("no-daca, no-diffusion+no-crdm")]
    assert labels == ["mucald --ablate no-daca", "mucald --ablate no-crdm,no-diffusion"]
    assert Variant("mucald", "no-crdm,no-diffusion").folder_name == "mucald__no-crdm__no-diffusion"


def test_train_step_measures_each_method_and_reports_ratios(work: Path, one_thread) -> None:
    plans_path, clients = prepare_demo(work, "tiny")
    results = {}
    for variant in (Variant("splitfed"), Variant("mucald")):
        result = measure_iterations(plans_path, clients, variant, work / "runs" / variant.folder_name,
                                    warmup=1, iters=2)
        assert result["variant"] == variant.label
        assert result["seconds_per_iter"] > 0
        assert result["peak_rss_bytes"] > 0
        # per client and iteration: features to the server and back, a gradient to it and back
        assert result["bytes_per_iter"] > 0 and result["messages_per_iter"] == 4 * len(clients)
        results[variant.label] = [result]

    table = results_table([Variant("splitfed"), Variant("mucald")], results, repeats=1)
    assert re.search(rf"^\| splitfed \| {NUMBER} \| 1\.00x \| \d+ \| 1\.00x \| [\d,]+ \| 1\.00x \|$", table, re.M)
    assert re.search(rf"^\| mucald \| {NUMBER} \| {NUMBER}x \| \d+ \| {NUMBER}x \| [\d,]+ \| {NUMBER}x \|$",
                     table, re.M)
    goals = "\n".join(goal_lines(results))
    assert "time ratio <= 1.3" in goals and re.search(rf"- time ratio {NUMBER}: ", goals)
    assert re.search(rf"- bytes ratio {NUMBER}: ", goals)


def test_federation_quality_reports_dice_and_losses_and_resumes(work: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "quality.md"
    argv = ["--work", str(work), "--size", "tiny", "--rounds", "1", "--iters", "2", "--seeds", "0",
            "--methods", "splitfed,local", "--threads", "1", "--out", str(out)]
    assert federation_quality.main(argv) == 0
    text = out.read_text()
    for method in ("splitfed", "local"):
        assert re.search(rf"^\| {method} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| 1/1 \|$", text, re.M)
        assert f"### demo, {method}: last round's mean loss terms" in text
    assert re.search(rf"^\| DemoPolyp \| {NUMBER} \|", text, re.M)  # a loss-term row
    assert "mucald above splitfed on every client" in text
    summary = work / "runs" / "demo" / "splitfed" / "seed0" / federation_quality.SUMMARY_FILE
    written = summary.stat().st_mtime_ns

    capsys.readouterr()
    assert federation_quality.main(argv) == 0
    assert "finished earlier, skipped" in capsys.readouterr().err
    assert summary.stat().st_mtime_ns == written
    assert out.read_text().split("## demo")[1] == text.split("## demo")[1]
