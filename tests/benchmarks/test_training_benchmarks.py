"""benchmarks.train_step and benchmarks.federation_quality: tiny runs give complete markdown reports,
and every goal line is judged on measured values (or says that nothing was measured)."""

from __future__ import annotations

import hashlib
import math
import re
import resource
from pathlib import Path

import pytest

from benchmarks import federation_quality, train_step
from benchmarks.federation_quality import Run
from benchmarks.train_step import Variant, cpu_table, goal_lines, measure_iterations, prepare_demo, results_table
from planners.plans import load_plans

NUMBER = r"\d+\.\d+"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder holding the tiny demo federation, planned (about 2 s)."""
    folder = tmp_path_factory.mktemp("bench-work")
    prepare_demo(folder, "tiny")
    return folder



def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prepare_demo_reuses_a_finished_plan(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plans_path, clients = prepare_demo(work, "tiny")
    assert clients == ["Dataset001_DemoPolyp", "Dataset002_DemoLungCT", "Dataset003_DemoFetalUS"]
    before = digest(plans_path)
    calls = []
    import planners.pipeline
    import preprocessing.demo
    monkeypatch.setattr(planners.pipeline, "plan_and_preprocess", lambda *a, **k: calls.append("plan"))
    monkeypatch.setattr(preprocessing.demo, "make_demo_federation", lambda *a, **k: calls.append("demo"))
    again, _ = prepare_demo(work, "tiny")
    assert calls == [] and again == plans_path and digest(again) == before  # nothing rebuilt, nothing rewritten


def test_ablation_variants_split_on_commas_and_join_on_plus() -> None:
    labels = [v.label for v in train_step.ablation_variants("no-daca, no-diffusion+no-crdm")]
    assert labels == ["mucald --ablate no-daca", "mucald --ablate no-crdm,no-diffusion"]
    assert Variant("mucald", "no-crdm,no-diffusion").folder_name == "mucald__no-crdm__no-diffusion"


def test_train_step_measures_each_method_and_reports_ratios(work: Path, one_thread) -> None:
    plans_path, clients = prepare_demo(work, "tiny")
    plans = load_plans(plans_path)
    # per client and iteration: features to the server and back, a gradient to it and back, float32
    expected_bytes = sum(4 * 4 * c.batch_size * plans.federation.split_channels * math.prod(c.patch_size)
                         for c in (plans.client(name) for name in clients))
    results = {}
    for variant in (Variant("splitfed"), Variant("mucald")):
        result = measure_iterations(plans_path, clients, variant, work / "runs" / variant.folder_name,
                                    warmup=1, iters=2)
        assert result["variant"] == variant.label
        assert result["seconds_min"] <= result["seconds_per_iter"] <= result["seconds_max"]
        assert 2**26 <= result["peak_rss_bytes"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert result["bytes_per_iter"] == expected_bytes and result["messages_per_iter"] == 4 * len(clients)
        assert result["clients"] == len(clients) and result["threads"] == 1
        assert 0 < result["batch_cpu_seconds_per_iter"] < result["cpu_seconds_per_iter"] * 100
        results[variant.label] = [result]

    table = results_table([Variant("splitfed"), Variant("mucald")], results, repeats=1)
    assert re.search(rf"^\| splitfed \| {NUMBER} \| 1\.00x \| \d+ \| 1\.00x \| [\d,]+ \| 1\.00x \|$", table, re.M)
    ratio = results["mucald"][0]["seconds_per_iter"] / results["splitfed"][0]["seconds_per_iter"]
    assert re.search(rf"^\| mucald \| {NUMBER} \| {ratio:.2f}x \| \d+ \| {NUMBER}x \| [\d,]+ \| 1\.00x \|$",
                     table, re.M)
    time_line, bytes_line = goal_lines(results)
    verdict = "met" if ratio <= train_step.GOAL_TIME_RATIO else "NOT met"
    assert time_line.startswith(f"- goal time mucald / splitfed <= 1.3: {verdict} ({ratio:.2f} = ")
    assert bytes_line == (f"- goal bytes mucald / splitfed within 5%: met (1.000 = {expected_bytes:,} / "
                          f"{expected_bytes:,} bytes per iteration)")


def measured(seconds: float, bytes_per_iter: float) -> list[dict]:
    return [{"seconds_per_iter": seconds, "bytes_per_iter": bytes_per_iter, "peak_rss_bytes": 1}]


def test_train_step_goal_lines_follow_the_measured_values() -> None:
    cheap = {"splitfed": measured(0.40, 1000), "mucald": measured(0.48, 1020)}
    assert goal_lines(cheap) == [
        "- goal time mucald / splitfed <= 1.3: met (1.20 = 0.480 s / 0.400 s)",
        "- goal bytes mucald / splitfed within 5%: met (1.020 = 1,020 / 1,000 bytes per iteration)"]
    costly = {"splitfed": measured(0.40, 1000), "mucald": measured(0.60, 1200)}
    assert goal_lines(costly) == [
        "- goal time mucald / splitfed <= 1.3: NOT met (1.50 = 0.600 s / 0.400 s)",
        "- goal bytes mucald / splitfed within 5%: NOT met (1.200 = 1,200 / 1,000 bytes per iteration)"]
    median = {"splitfed": measured(0.4, 1000) + measured(0.5, 1000) + measured(9.0, 1000),
              "mucald": measured(0.6, 1000)}
    assert goal_lines(median)[0] == "- goal time mucald / splitfed <= 1.3: met (1.20 = 0.600 s / 0.500 s)"
    assert goal_lines({"splitfed": measured(0.4, 1000)}) == [
        "- goal time mucald / splitfed <= 1.3: not measured (mucald did not run)",
        "- goal bytes mucald / splitfed within 5%: not measured (mucald did not run)"]
    assert goal_lines({"splitfed": measured(0.4, 1000), "mucald": []})[0] == \
        "- goal time mucald / splitfed <= 1.3: not measured (no result from mucald)"


def test_cpu_table_shows_batch_production_beside_the_step() -> None:
    def child(cpu: float, batches: float | None) -> dict:
        run = {"cpu_seconds_per_iter": cpu, "cpu_seconds_min": cpu / 2}
        return run if batches is None else {**run, "batch_cpu_seconds_per_iter": batches}

    results = {"splitfed": [child(0.8, 0.2), child(1.2, 0.4)], "mucald": [child(1.5, None)]}
    table = cpu_table([Variant("splitfed"), Variant("mucald")], results).splitlines()
    assert table[2] == "| splitfed | 1.000 | 1.00x | 0.400 | 0.300 | 30% |"
    assert table[3] == "| mucald | 1.500 | 1.50x | 0.750 | - | - |"  # an older child: not measured


def fake_runs(dice: dict[str, list[dict[str, float | None] | None]]) -> tuple[list[Run], dict[Run, dict]]:
    """Runs of each method, one per seed; None stands for a run that crashed."""
    runs, results = [], {}
    for method, per_seed in dice.items():
        for seed, values in enumerate(per_seed):
            run = Run("demo", Variant(method), seed, Path("plans.json"), ("D1_A", "D2_B"), Path(f"{method}{seed}"))
            runs.append(run)
            results[run] = {"error": "rc=1"} if values is None else {"final_dice": values}
    return runs, results


def test_federation_quality_goal_lines_follow_the_measured_dice() -> None:
    clients = ("D1_A", "D2_B")
    runs, results = fake_runs({"mucald": [{"D1_A": 0.8, "D2_B": 0.7}, {"D1_A": 0.6, "D2_B": 0.7}],
                               "splitfed": [{"D1_A": 0.5, "D2_B": 0.6}], "local": [{"D1_A": 0.5, "D2_B": 0.55}]})
    assert federation_quality.goal_lines(runs, results, clients) == [
        "- goal mucald > splitfed on every client: met (A 0.700 vs 0.500, B 0.700 vs 0.600)",
        "- goal mucald mean >= local mean + 0.05: met (mucald 0.700 vs local 0.525, difference +0.175)"]
    runs, results = fake_runs({"mucald": [{"D1_A": 0.8, "D2_B": 0.5}], "splitfed": [{"D1_A": 0.5, "D2_B": 0.6}],
                               "local": [{"D1_A": 0.7, "D2_B": 0.6}]})
    assert federation_quality.goal_lines(runs, results, clients) == [
        "- goal mucald > splitfed on every client: NOT met (A 0.800 vs 0.500, B 0.500 vs 0.600)",
        "- goal mucald mean >= local mean + 0.05: NOT met (mucald 0.650 vs local 0.650, difference +0.000)"]


def test_federation_quality_goals_are_not_judged_without_a_measurement() -> None:
    clients = ("D1_A", "D2_B")
    runs, results = fake_runs({"splitfed": [{"D1_A": 0.5, "D2_B": 0.6}], "local": [{"D1_A": 0.5, "D2_B": 0.6}]})
    assert federation_quality.goal_lines(runs, results, clients) == [
        "- goal mucald > splitfed on every client: not measured (mucald did not run)",
        "- goal mucald mean >= local mean + 0.05: not measured (mucald did not run)"]
    runs, results = fake_runs({"mucald": [None, None], "splitfed": [{"D1_A": 0.5, "D2_B": 0.6}]})
    assert federation_quality.goal_lines(runs, results, clients) == [
        "- goal mucald > splitfed on every client: not measured (every mucald run failed)",
        "- goal mucald mean >= local mean + 0.05: not measured (every mucald run failed)"]
    runs, results = fake_runs({"mucald": [{"D1_A": 0.8, "D2_B": None}], "splitfed": [{"D1_A": 0.5, "D2_B": 0.6}],
                               "local": [None]})
    assert federation_quality.goal_lines(runs, results, clients) == [
        "- goal mucald > splitfed on every client: not measured (mucald has no Dice for B)",
        "- goal mucald mean >= local mean + 0.05: not measured (every local run failed)"]


def test_federation_quality_reports_dice_and_losses_and_resumes(work: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "quality.md"
    argv = ["--work", str(work), "--size", "tiny", "--rounds", "1", "--iters", "2", "--seeds", "0",
            "--methods", "splitfed,local", "--threads", "1", "--out", str(out)]
    assert federation_quality.main(argv) == 0
    text = out.read_text()
    for method in ("splitfed", "local"):
        assert re.search(rf"^\| {method} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| 1/1 \|$", text, re.M)
        assert f"### demo, {method}: last round's mean loss terms" in text
    assert re.search(rf"^\| DemoPolyp \| {NUMBER} \|", text, re.M)  # a loss-term row
    assert "- goal mucald > splitfed on every client: not measured (mucald did not run)" in text.splitlines()
    assert "- goal mucald mean >= local mean + 0.05: not measured (mucald did not run)" in text.splitlines()
    assert not re.search(r": (met|NOT met) \(", text)  # no verdict without mucald
    summary = work / "runs" / "demo" / "splitfed" / "seed0" / federation_quality.SUMMARY_FILE
    written = digest(summary)

    capsys.readouterr()
    children = []
    monkeypatch.setattr(federation_quality, "run_child", lambda *a, **k: children.append(a))
    assert federation_quality.main(argv) == 0
    assert children == []  # both runs reused: no child trained
    assert capsys.readouterr().err.count("finished earlier, skipped") == 2
    assert digest(summary) == written
    assert out.read_text().split("## demo")[1] == text.split("## demo")[1]
