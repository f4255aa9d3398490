"""benchmarks.train_memory: scaled demo federations are built once, the child's memory numbers
come from /proc, and the report's goal line is judged on peak anonymous memory as measured."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import train_memory
from benchmarks.train_memory import PeakSampler, cases_on_disk, goal_lines, memory_status, prepare_scaled_demo
from preprocessing.demo import PRESETS

TINY_TRAIN = sum(PRESETS["tiny"].for_dataset(k).train for k in ("polyp", "lung_ct", "fetal_us"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train-memory")
    for scale in (1, 2):
        prepare_scaled_demo(folder, "tiny", scale)
    return folder



def test_a_scaled_federation_has_scale_times_the_presets_cases_and_is_built_once(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import preprocessing.demo

    calls = []
    monkeypatch.setattr(preprocessing.demo, "make_demo_federation", lambda *a, **k: calls.append(k))
    plans = {scale: prepare_scaled_demo(work, "tiny", scale)[0] for scale in (1, 2)}
    assert calls == []  # the data and plans of the module fixture were reused
    assert cases_on_disk(plans[1])[0] == TINY_TRAIN and cases_on_disk(plans[2])[0] == 2 * TINY_TRAIN
    assert cases_on_disk(plans[2])[1] > cases_on_disk(plans[1])[1] > 0


def test_memory_status_and_the_sampler_see_a_short_lived_allocation() -> None:
    status = memory_status()
    assert {"VmRSS", "VmHWM", "RssAnon", "RssFile"} <= set(status) and status["RssAnon"] > 0
    with PeakSampler(interval=0.005) as sampler:
        before = memory_status()["RssAnon"]
        block = np.ones(200 * 2**20 // 8)  # 200 MB, touched, then freed before the block ends
        time.sleep(0.1)
        del block
    assert sampler.peak_anon >= before + 150 * 2**20


def fake(peak_anon_mb: float) -> dict:
    mb = 2**20
    return {"peak_rss_bytes": 2 * peak_anon_mb * mb, "peak_anon_bytes": peak_anon_mb * mb,
            "anon_after_build_bytes": peak_anon_mb * mb, "build_seconds": 1.0, "train_seconds": 2.0}


def test_the_goal_is_judged_on_peak_anonymous_memory() -> None:
    assert goal_lines([1, 4, 16], {1: fake(500), 4: fake(520), 16: fake(549)})[0].startswith(
        "- goal peak RssAnon flat within 10% from 1x to 16x: met (ratios to 1x: 4x 1.04, 16x 1.10")
    assert "NOT met (ratios to 1x: 4x 1.20, 16x 1.80" in goal_lines([1, 4, 16], {1: fake(500), 4: fake(600),
                                                                                16: fake(900)})[0]
    assert "not measured (no result at 16x)" in goal_lines([1, 16], {1: fake(500), 16: None})[0]


def test_main_reports_every_scale_with_ratios_and_a_goal_line(work: Path, tmp_path: Path, one_thread,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    children = []

    def in_process(plans_path, clients, run_folder, args):  # the child's measurement, without the child
        children.append(run_folder.name)
        return train_memory.measure_round(plans_path, clients, run_folder, args.method, args.rounds, args.iters)

    monkeypatch.setattr(train_memory, "run_child", in_process)
    out = tmp_path / "report.md"
    assert train_memory.main(["--size", "tiny", "--scales", "1", "2", "--iters", "1", "--workers", "1",
                              "--work", str(work), "--out", str(out)]) == 0
    text = out.read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\d+)x \|.*$", text, re.M)}
    assert sorted(rows) == ["1", "2"]
    assert re.match(rf"\| 2x \| {2 * TINY_TRAIN} \| \d+ \| \d+ \| \d\.\d\dx \| \d+ \| \d\.\d\dx \|", rows["2"])
    assert re.search(r"^- goal peak RssAnon flat within 10% from 1x to 2x: (met|NOT met) \(ratios to 1x: 2x "
                     r"\d\.\d\d", text, re.M)
    assert children == ["x1", "x2"]
    arguments = ["--size", "tiny", "--scales", "1", "2", "--iters", "1", "--work", str(work), "--out", str(out)]
    assert train_memory.main(arguments) == 0 and children == ["x1", "x2"]  # measured scales are reused
    assert out.read_text() == text
    assert train_memory.main([*arguments, "--seed", "1"]) == 0 and children[2:] == ["x1", "x2"]  # not for others
