"""benchmarks.single_client_parity, the parts that need no training: the test-set split, the generated
nnU-Net trainer, the cache key and the report's table and goal lines."""

from __future__ import annotations

import ast
import json
import os
import shutil
from types import SimpleNamespace

import pytest

from benchmarks.single_client_parity import (
    SplitOptions,
    build_parity_copy,
    cache_path,
    choose_test_cases,
    dataset_digest,
    goal_lines,
    latest_ours,
    nnunet_schedule,
    ours_schedule,
    parse_args,
    ratio,
    results_table,
    take_lock,
    trainer_class,
    trainer_source,
)
from preprocessing.dataset import RawDataset

IDS = [f"case_{i:02d}" for i in range(20)]
FOREGROUND = {c: i % 4 != 0 for i, c in enumerate(IDS)}  # 15 with foreground, 5 without


# ------------------------------------------------------------------------------------- test split

def test_moved_cases_are_seeded_training_cases_stratified_by_foreground() -> None:
    options = SplitOptions(min_test=6, fraction=0.2, min_train=8, seed=3)
    moved = choose_test_cases(IDS, FOREGROUND, existing_test=1, options=options)
    assert moved == choose_test_cases(list(reversed(IDS)), FOREGROUND, 1, options)  # order of listing is irrelevant
    assert len(moved) == 5  # max(ceil(0.2 * 20), 6 - 1)
    assert set(moved) <= set(IDS) and len(set(moved)) == 5
    assert sum(FOREGROUND[c] for c in moved) == 4  # 15/20 of 5, rounded
    assert choose_test_cases(IDS, FOREGROUND, 1, SplitOptions(seed=4)) != moved


def test_enough_test_cases_or_too_few_training_cases_move_nothing() -> None:
    assert choose_test_cases(IDS, FOREGROUND, existing_test=6, options=SplitOptions(min_test=6)) == []
    few = IDS[:4]
    assert choose_test_cases(few, FOREGROUND, existing_test=1, options=SplitOptions(min_train=8)) == []
    # reaching min_test wins over the fraction, but min_train caps both
    assert len(choose_test_cases(IDS, FOREGROUND, 0, SplitOptions(min_test=10, fraction=0.1, min_train=8))) == 10
    assert len(choose_test_cases(IDS, FOREGROUND, 0, SplitOptions(min_test=15, min_train=8))) == 12


def test_parity_copy_moves_training_cases_to_test_and_leaves_the_source_alone(make_volume_dataset, tmp_path) -> None:
    source = make_volume_dataset(channels=2, cases=12)
    before = dataset_digest(source)
    options = SplitOptions(min_test=4, fraction=0.2, min_train=8, seed=0)
    record = build_parity_copy(source, tmp_path / "work" / "raw", options)
    copy = RawDataset(tmp_path / "work" / "raw" / source.name)

    assert dataset_digest(source) == before
    train_ids = RawDataset(source).case_ids()
    assert record["moved"] == choose_test_cases(train_ids, {c: True for c in train_ids}, 1, options)
    assert len(record["moved"]) == 3 and record["original_test"] == ["vol_test"]
    assert copy.case_ids("Tr") == record["train"] and len(record["train"]) == 9
    assert copy.case_ids("Ts") == record["test"] == sorted(record["moved"] + ["vol_test"])
    assert not set(copy.case_ids("Tr")) & set(copy.case_ids("Ts"))
    assert all(copy.label_file(c, "Ts").is_file() and copy.channel_file(c, 1, "Ts").is_file() for c in record["test"])
    assert json.loads((copy.folder / "dataset.json").read_text())["numTraining"] == 9
    assert record["digest"] == dataset_digest(copy.folder)
    assert build_parity_copy(source, tmp_path / "work" / "raw", options) == record  # reused, not redrawn


# ----------------------------------------------------------------------------------------- cache key

def test_data_digest_follows_the_bytes_not_the_folder(make_volume_dataset, tmp_path) -> None:
    source = make_volume_dataset(cases=2)
    digest = dataset_digest(source)
    twin = tmp_path / "twin" / source.name
    shutil.copytree(source, twin)
    assert dataset_digest(twin) == digest
    label = twin / "labelsTr" / "vol_000.nii.gz"
    label.write_bytes(label.read_bytes()[:-1] + bytes([label.read_bytes()[-1] ^ 1]))
    assert dataset_digest(twin) != digest
    changed = dataset_digest(twin)
    (twin / "dataset.json").rename(twin / "dataset.json.bak")  # same bytes under another name
    assert dataset_digest(twin) not in (digest, changed)


def test_a_run_is_claimed_once_and_a_dead_owner_releases_it(tmp_path) -> None:
    lock = tmp_path / "result-b250.lock"
    assert take_lock(lock) and lock.read_text() == str(os.getpid())
    assert not take_lock(lock)  # this process (alive) holds it
    lock.write_text("999999999")  # no such process
    assert take_lock(lock)


def test_plan_and_train_variants_are_cached_apart_and_the_defaults_keep_their_old_keys(tmp_path) -> None:
    dataset = SimpleNamespace(work=tmp_path, data_key="0123456789ab")
    code = "f" * 40
    default = parse_args(["--work", str(tmp_path)])
    assert default.plan_flags == ["--target", "cpu"] and default.plan_key == "" and default.variant == ""
    gpu = parse_args(["--work", str(tmp_path), "--plan-flags=--target gpu", "--train-flags=--seed 1"])
    assert gpu.plan_flags == ["--target", "gpu"] and gpu.plan_key.startswith("-p") and gpu.variant
    plain = cache_path(dataset, "ours", 250, code)
    assert plain == tmp_path / "ours" / "0123456789ab-ffffffffffff" / "result-b250.json"  # as before plan variants
    planned = cache_path(dataset, "ours", 250, code, gpu.variant, gpu.plan_key)
    assert planned.parent.name == f"0123456789ab-ffffffffffff{gpu.plan_key}" and planned.name == \
        f"result-b250{gpu.variant}.json"
    for path, dice in ((plain, 0.5), (cache_path(dataset, "ours", 250, code, "", gpu.plan_key), 0.7)):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"mean_dice": dice, "finished": f"2026-12-0{int(dice * 10)}"}))
    # the newest of each plan only: a gpu-plan result never stands in for the cpu plan's
    assert latest_ours(dataset, 250)["mean_dice"] == 0.5
    assert latest_ours(dataset, 250, "", gpu.plan_key)["mean_dice"] == 0.7


# ----------------------------------------------------------------------------- schedules and trainer

@pytest.mark.parametrize("budget, expected", [(250, (250, 1)), (1000, (250, 4)), (2500, (250, 10)),
                                              (100, (100, 1)), (300, (150, 2)), (7, (7, 1))])
def test_nnunet_schedule_multiplies_to_the_budget(budget: int, expected: tuple[int, int]) -> None:
    assert nnunet_schedule(budget) == expected


def test_ours_schedule_keeps_ten_rounds_when_they_divide_the_budget() -> None:
    assert ours_schedule(250, 10) == (10, 25)
    assert ours_schedule(2500, 10) == (10, 250)
    assert ours_schedule(35, 10) == (7, 5)
    assert ours_schedule(3, 10) == (3, 1)


def test_generated_trainer_classes_train_exactly_the_budget() -> None:
    source = trainer_source([1000, 250, 2500, 300])
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert set(classes) == {"_ParityTrainer", *(trainer_class(b) for b in (250, 300, 1000, 2500))}
    for budget in (250, 300, 1000, 2500):
        node = classes[trainer_class(budget)]
        assert [b.id for b in node.bases] == ["_ParityTrainer"]
        iterations, epochs = ast.literal_eval(node.body[0].value)
        assert iterations * epochs == budget
    init = next(f for f in classes["_ParityTrainer"].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    assert [a.arg for a in init.args.args] == ["self", "plans", "configuration", "fold", "dataset_json", "device"]
    assert "self.num_val_iterations_per_epoch = 2" in source
    assert "parity_timings.json" in source and "super().train_step(batch)" in source


# -------------------------------------------------------------------------------------------- report

def result(tool: str, budget: int, dice: dict[str, float], s_per_iter: float, peak: float) -> dict:
    return {"tool": tool, "budget": budget, "dice": dice, "mean_dice": sum(dice.values()) / len(dice),
            "s_per_iter": s_per_iter, "s_per_iter_loop": s_per_iter * 1.1, "peak_pss_mb": peak, "wall_s": 100.0,
            "schedule": "x"}


RESULTS = {
    (250, "ours"): result("ours", 250, {"head": 0.8, "brain": 0.6}, 0.5, 800),
    (250, "nnU-Net"): result("nnU-Net", 250, {"head": 0.9, "brain": 0.5}, 1.0, 1600),
    (1000, "ours"): result("ours", 1000, {"head": 0.9, "brain": 0.8}, 0.6, 800),
    (1000, "nnU-Net"): {"tool": "nnU-Net", "budget": 1000, "failed": "StepFailed: rc=1"},
}


def test_ratio_is_ours_over_nnunet_and_dash_when_missing() -> None:
    assert ratio(0.5, 1.0) == "0.50x"
    assert ratio(1.5, 1.2) == "1.25x"
    assert ratio(None, 1.0) == ratio(1.0, None) == ratio(1.0, 0.0) == "-"


def test_table_rows_and_ratio_row_from_given_numbers() -> None:
    lines = results_table(["head", "brain"], RESULTS, [250, 1000, 2500])
    assert lines[0] == ("| budget | tool | Dice head | Dice brain | mean fg Dice | s/iter | s/iter (train loop) | "
                        "peak MB (tree PSS) | train command s | schedule |")
    assert lines[2] == "| 250 | ours | 0.800 | 0.600 | 0.700 | 0.500 | 0.550 | 800 | 100 | x |"
    assert lines[3] == "| 250 | nnU-Net | 0.900 | 0.500 | 0.700 | 1.000 | 1.100 | 1600 | 100 | x |"
    assert lines[4] == "| 250 | ours / nnU-Net | 0.89x | 1.20x | 1.00x | 0.50x | 0.50x | 0.50x | 1.00x | |"
    assert lines[6].startswith("| 1000 | nnU-Net | FAILED: StepFailed: rc=1 |")
    assert lines[7].startswith("| 1000 | ours / nnU-Net | - |")
    assert lines[8].startswith("| 2500 | ours | not run |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_goal_lines_judge_only_budgets_both_tools_measured() -> None:
    dice, speed = goal_lines(RESULTS, [250, 1000])
    assert dice == ("- goal our test Dice >= nnU-Net's at every budget: met (250: 0.7000 vs 0.7000; "
                    "budgets 1000 not measured for both)")
    assert speed == "- goal our s/iteration <= nnU-Net's: met (250: 0.500 vs 1.000 s; budgets 1000 not measured for both)"
    worse = {**RESULTS, (250, "ours"): result("ours", 250, {"head": 0.1, "brain": 0.1}, 2.0, 800)}
    assert [line.split(":")[1].split("(")[0].strip() for line in goal_lines(worse, [250])] == ["NOT met", "NOT met"]
    close = {**RESULTS, (250, "ours"): result("ours", 250, {"head": 0.8, "brain": 0.5996}, 0.5, 800)}
    assert goal_lines(close, [250])[0] == ("- goal our test Dice >= nnU-Net's at every budget: NOT met "
                                           "(250: 0.6998 vs 0.7000)")  # a gap under 0.001 is visible
    assert goal_lines({}, [250])[0] == ("- goal our test Dice >= nnU-Net's at every budget: not measured "
                                        "(no budget has both tools)")
