"""benchmarks.train_step and benchmarks.federation_quality: tiny runs give complete markdown reports,
and every goal line is judged on measured values (or says that nothing was measured)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import resource
from pathlib import Path

import pytest

from benchmarks import federation_quality, train_step
from benchmarks.federation_quality import Run
from preprocessing.errors import MucaldError
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


def test_precisions_give_every_variant_at_each_with_fp32_first() -> None:
    labels = [v.label for v in train_step.all_variants("no-daca", ["bf16", "fp32"])]
    assert labels == ["splitfed", "mucald", "mucald --ablate no-daca", "splitfed --precision bf16",
                      "mucald --precision bf16", "mucald --ablate no-daca --precision bf16"]
    assert Variant("mucald", "no-daca", precision="bf16").folder_name == "mucald__no-daca__precision-bf16"
    bf16 = {"splitfed": measured(0.40, 1000), "mucald": measured(0.60, 1000),
            "splitfed --precision bf16": measured(0.20, 1000), "mucald --precision bf16": measured(0.25, 1000)}
    assert goal_lines(bf16)[1] == ("- goal time mucald / splitfed <= 1.3, both at --precision bf16: met (1.25 = "
                                   "0.250 s / 0.200 s; bf16 mucald is 0.62x fp32 splitfed and 2.40x faster than "
                                   "fp32 mucald)")


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
                               "splitfed": [{"D1_A": 0.5, "D2_B": 0.6}], "fedbn": [{"D1_A": 0.6, "D2_B": 0.6}],
                               "local": [{"D1_A": 0.6, "D2_B": 0.7}], "centralized": [{"D1_A": 0.9, "D2_B": 0.9}]})
    assert federation_quality.goal_lines(runs, results, clients, "scarce") == [
        "- goal mucald mean >= every other federated method's mean: met (mucald 0.700, best other fedbn 0.600)",
        "- goal mucald > splitfed on every client: met (A 0.700 vs 0.500, B 0.700 vs 0.600)",
        "- goal mucald mean >= local mean + 0.05: met (mucald 0.700 vs local 0.650, difference +0.050)"]
    runs, results = fake_runs({"mucald": [{"D1_A": 0.8, "D2_B": 0.5}], "splitfed": [{"D1_A": 0.5, "D2_B": 0.6}],
                               "fedrep": [{"D1_A": 0.7, "D2_B": 0.7}], "ditto": [None],
                               "local": [{"D1_A": 0.7, "D2_B": 0.61}]})
    assert federation_quality.goal_lines(runs, results, clients, "generated") == [
        "- goal mucald mean >= every other federated method's mean: NOT met (mucald 0.650, best other fedrep "
        "0.700; above mucald: fedrep; not measured: ditto)",
        "- goal mucald > splitfed on every client: NOT met (A 0.800 vs 0.500, B 0.500 vs 0.600)",
        "- goal mucald mean >= local mean: NOT met (mucald 0.650 vs local 0.655, difference -0.005)"]


def test_federation_quality_goals_are_not_judged_without_a_measurement() -> None:
    clients = ("D1_A", "D2_B")
    runs, results = fake_runs({"splitfed": [{"D1_A": 0.5, "D2_B": 0.6}], "local": [{"D1_A": 0.5, "D2_B": 0.6}]})
    assert federation_quality.goal_lines(runs, results, clients) == [
        "- goal mucald mean >= every other federated method's mean: not measured (mucald did not run)",
        "- goal mucald > splitfed on every client: not measured (mucald did not run)",
        "- goal mucald mean >= local mean: not measured (mucald did not run)"]
    runs, results = fake_runs({"mucald": [None, None], "splitfed": [{"D1_A": 0.5, "D2_B": 0.6}]})
    assert federation_quality.goal_lines(runs, results, clients)[1:] == [
        "- goal mucald > splitfed on every client: not measured (every mucald run failed)",
        "- goal mucald mean >= local mean: not measured (every mucald run failed)"]
    runs, results = fake_runs({"mucald": [{"D1_A": 0.8, "D2_B": None}], "splitfed": [None], "local": [None]})
    assert federation_quality.goal_lines(runs, results, clients, "scarce") == [
        "- goal mucald mean >= every other federated method's mean: not measured (every other federated run "
        "failed)",
        "- goal mucald > splitfed on every client: not measured (mucald has no Dice for B)",
        "- goal mucald mean >= local mean + 0.05: not measured (every local run failed)"]


def test_federation_quality_table_shows_the_gap_to_local() -> None:
    runs, results = fake_runs({"mucald": [{"D1_A": 0.8, "D2_B": 0.6}, {"D1_A": 0.6, "D2_B": 0.6}],
                               "local": [{"D1_A": 0.5, "D2_B": 0.6}], "fedbn": [None]})
    table = federation_quality.dice_table(runs, results, ["mucald", "local", "fedbn"], ("D1_A", "D2_B"))
    assert table.splitlines()[2:] == [
        "| mucald | 0.700 ± 0.141 | 0.600 ± 0.000 | 0.650 ± 0.071 | +0.100 | 2/2 |",
        "| local | 0.500 | 0.600 | 0.550 | +0.000 | 1/1 |",
        "| fedbn | FAILED | FAILED | FAILED | FAILED | 0/1 |"]


def test_the_steadier_view_averages_each_clients_last_rounds_then_the_clients(tmp_path: Path) -> None:
    from mucald_unet.training.run_log import RunLog

    runs, results = fake_runs({"mucald": [{}, {}], "local": [{}]})
    dice = {"mucald0": [0.1, 0.5, 0.6, 0.7], "mucald1": [0.2, 0.8, 0.8, 0.8], "local0": [0.9, 0.4, 0.5, 0.6]}
    placed = []
    for run in runs:
        run = Run(run.data, run.variant, run.seed, run.plans_path, run.clients, tmp_path / run.folder.name)
        for round_index, value in enumerate(dice[run.folder.name]):  # client B is 0.1 lower every round
            RunLog(run.folder / federation_quality.LOG_FILE).extend(
                {"event": "round", "round": round_index, "client": c, "mean_val_dice": value - 0.1 * i}
                for i, c in enumerate(run.clients))
        placed.append(run)
    results = {run: {"final_dice": {}} for run in placed}
    assert federation_quality.late_rounds_mean(placed[0]) == pytest.approx(0.55)  # rounds 1-3, A 0.6 and B 0.5
    table = federation_quality.late_rounds_table(placed, results, ["mucald", "local", "fedbn"])
    assert table.splitlines()[2:] == ["| mucald | 0.650 ± 0.141 | +0.200 |", "| local | 0.450 | +0.000 |",
                                      "| fedbn | - | - |"]


def test_federation_quality_budgets_and_methods_are_checked() -> None:
    assert federation_quality.Budget.parse("40x25") == federation_quality.Budget(40, 25)
    with pytest.raises(SystemExit):
        federation_quality.parse_args(["--budgets", "40"])
    with pytest.raises(SystemExit):
        federation_quality.parse_args(["--rounds", "3"])  # the budget is one flag, not two
    variants = federation_quality.variants_of(federation_quality.parse_args([]))
    labels = [v.label for v in variants]
    assert {"mucald", "splitfed", "local", "centralized", "fedbn", "fedper", "fedrep", "scaffold", "ditto", "mocha",
            "fedem"} <= set(labels)
    assert "fedprox mu-0.01" in labels  # at the recipe's mu it would repeat splitfed
    with pytest.raises(SystemExit, match="unknown method"):
        federation_quality.variants_of(federation_quality.parse_args(["--methods", "fedma"]))


def test_federation_quality_variants_replace_settings_and_name_them_as_the_trainer_does() -> None:
    variant = federation_quality.QualityVariant.parse("mucald:local_norms=true,losses.adversarial=0.3")
    assert variant.overrides == (("local_norms", True), ("losses.adversarial", 0.3))
    assert variant.label == "mucald local-norms losses-adversarial-0.3"
    assert variant.folder_name == "mucald__local-norms__losses-adversarial-0.3"
    config = variant.training_config(seed=2)
    assert (config.local_norms, config.losses.adversarial, config.seed) == (True, 0.3, 2)
    assert federation_quality.QualityVariant.parse("mucald:aggregation=causal").training_config().aggregation == "causal"
    paper = federation_quality.QualityVariant.parse("mucald:preset=paper").training_config(rounds=10)
    assert (paper.rounds, paper.optimizer.lr, paper.optimizer.encoder_lr) == (10, 1e-4, 5e-5)  # budget kept
    with pytest.raises(MucaldError, match="unknown training setting 'local_norm'"):
        federation_quality.QualityVariant.parse("mucald:local_norm=true")
    with pytest.raises(MucaldError, match="is not KEY=VALUE"):
        federation_quality.QualityVariant.parse("mucald:local_norms")
    with pytest.raises(MucaldError, match="--local-norms has no meaning"):  # refused as the trainer refuses it
        federation_quality.QualityVariant.parse("fedbn:local_norms=true")


def test_a_precision_variant_never_shares_the_plain_methods_folder() -> None:
    bf16 = federation_quality.QualityVariant.parse("mucald:precision=bf16")
    assert bf16.folder_name == "mucald__precision-bf16" and bf16.label == "mucald precision-bf16"
    both = federation_quality.QualityVariant.parse("mucald:local_norms=true,precision=bf16")
    assert both.folder_name == "mucald__local-norms__precision-bf16"
    assert federation_quality.QualityVariant.parse("mucald").folder_name == "mucald"
    inherited = federation_quality.QualityVariant("splitfed", precision="bf16")  # the step benchmark's field
    assert inherited.folder_name == "splitfed__precision-bf16" and inherited.training_config().precision.value == "bf16"


def test_a_federation_quality_child_trains_its_variants_settings() -> None:
    """What the parent passes a child (method, ablations, overrides as JSON) is what it trains."""
    parser_args = federation_quality.parse_args(
        ["--child", "--method", "mucald", "--ablate", "no-daca", "--seed", "1", "--rounds", "3", "--iters", "4",
         "--overrides", json.dumps({"precision": "bf16", "crdm.eval_timestep": 100})])
    config = federation_quality.child_config(parser_args)
    assert (config.precision.value, config.crdm.eval_timestep, config.seed, config.rounds) == ("bf16", 100, 1, 3)
    assert [a.value for a in config.ablations] == ["no-daca"] and config.iterations_per_epoch == 4


def test_federation_quality_reports_dice_and_losses_and_resumes(work: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "quality.md"
    # one regime (scarce: its setting must reach the trainer); the others differ only in the cases' count
    argv = ["--work", str(work), "--size", "tiny", "--budgets", "1x2", "--seeds", "0", "--regimes", "scarce",
            "--scarce-cases", "2", "--methods", "mucald,local", "--variants", "mucald:local_norms=true",
            "--threads", "1", "--out", str(out)]
    assert federation_quality.main(argv) == 0
    text = out.read_text()
    lines = text.splitlines()
    assert "## demo, scarce, 1x2: validation Dice after round 1" in lines
    assert "### demo, scarce, 1x2, mucald: last round's mean loss terms (mean over seeds)" in lines
    for method in ("mucald", "local"):  # one row, with its gap to local
        rows = re.findall(rf"^\| {method} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| ([+-]{NUMBER}) "
                          r"\| 1/1 \|$", text, re.M)
        assert len(rows) == 1 and (method != "local" or rows == ["+0.000"])
    assert re.search(rf"^\| DemoPolyp \| {NUMBER} \|", text, re.M)  # a loss-term row
    assert lines.count("- goal mucald > splitfed on every client: not measured (splitfed did not run)") == 1
    assert lines.count("- goal mucald mean >= every other federated method's mean: not measured "
                       "(no other federated method ran)") == 1
    # scarce data asks more of a federation: its goal is local + 0.05, not the generated regime's local
    assert sum(bool(re.match(r"- goal mucald mean >= local mean: (met|NOT met) \(", line)) for line in lines) == 0
    assert sum(bool(re.match(r"- goal mucald mean >= local mean \+ 0.05: (met|NOT met) \(", line))
               for line in lines) == 1
    scarce = work / "runs" / "demo" / "scarce" / "1x2" / "mucald" / "seed0"
    trained = json.loads((scarce / "config.json").read_text())["training"]
    assert trained["max_train_cases"] == 2  # the scarce regime reached the trainer
    variant = work / "runs" / "demo" / "scarce" / "1x2" / "mucald__local-norms" / "seed0" / "config.json"
    assert json.loads(variant.read_text())["training"]["local_norms"] is True  # the variant's setting too
    assert re.search(rf"^\| mucald local-norms \| {NUMBER} \|", text, re.M)
    summary = scarce / federation_quality.SUMMARY_FILE
    written = digest(summary)

    capsys.readouterr()
    children = []
    monkeypatch.setattr(federation_quality, "run_child", lambda *a, **k: children.append(a))
    assert federation_quality.main(argv) == 0
    assert children == []  # every run reused: no child trained
    assert capsys.readouterr().err.count("finished earlier, skipped") == 3
    assert digest(summary) == written
    assert out.read_text().split("## demo", 1)[1] == text.split("## demo", 1)[1]
    local_mean = re.search(rf"^\| local \| {NUMBER} \| {NUMBER} \| {NUMBER} \| ({NUMBER}) \|", text, re.M).group(1)
    assert f"| local | {local_mean} | +0.000 |" in lines  # one round: the steadier view is the last round

    capsys.readouterr()
    only = argv[:argv.index("--methods")] + ["--methods", "mucald,local,splitfed", "--threads", "1", "--out", str(out),
                                             "--report-only"]
    assert federation_quality.main(only) == 0
    assert children == []  # splitfed never ran, and --report-only does not train it
    assert "--report-only: 2 of 3 runs finished earlier" in capsys.readouterr().err
    assert re.search(r"^\| splitfed \| not run \|", out.read_text(), re.M)
