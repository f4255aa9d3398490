"""RunLog: a JSON-lines log that survives crashes and rewinds with a resumed checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mucald_unet.training.run_log import RunLog, RunLogError


def test_append_and_read_round_trip(tmp_path):
    log = RunLog(tmp_path / "logs" / "run.jsonl")
    assert log.records() == []
    first = {"event": "config", "lr": 1e-4}
    second = {"event": "round", "round": 0, "client": "a", "val_dice": {"lobe": 0.5}, "tags": [1, 2]}
    log.append(first)
    log.append(second)
    assert log.records() == [first, second]
    lines = log.path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    log = RunLog(tmp_path / "run.jsonl")
    log.append({"round": 1, "loss": float("nan"), "losses": {"kl": float("inf"), "seg": -float("inf")},
                "series": [1.0, float("nan")], "np": np.float32(0.5), "count": np.int64(3)})
    text = log.path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert log.records() == [{"round": 1, "loss": None, "losses": {"kl": None, "seg": None},
                              "series": [1.0, None], "np": 0.5, "count": 3}]


def test_partial_trailing_line_is_skipped_and_cut_before_the_next_append(tmp_path):
    log = RunLog(tmp_path / "run.jsonl")
    log.append({"round": 0})
    with open(log.path, "ab") as handle:
        handle.write(b'{"round": 1, "los')  # crash mid-write
    assert log.records() == [{"round": 0}]
    log.append({"round": 1})
    assert log.records() == [{"round": 0}, {"round": 1}]
    assert log.path.read_bytes().endswith(b"\n")


def test_complete_last_line_without_newline_is_kept(tmp_path):
    log = RunLog(tmp_path / "run.jsonl")
    log.path.write_bytes(b'{"round": 0}\n{"round": 1}')
    assert log.records() == [{"round": 0}, {"round": 1}]
    log.append({"round": 2})
    assert [r["round"] for r in log.records()] == [0, 1, 2]


def test_malformed_line_before_the_end_is_an_error(tmp_path):
    log = RunLog(tmp_path / "run.jsonl")
    log.path.write_bytes(b'{"round": 0}\nnot json\n{"round": 1}\n')
    with pytest.raises(RunLogError, match="line 2"):
        log.records()


def test_truncate_after_round(tmp_path):
    log = RunLog(tmp_path / "run.jsonl")
    log.append({"event": "config", "seed": 0})
    for r in range(4):
        for client in ("a", "b"):
            log.append({"event": "round", "round": r, "client": client, "loss": float("nan")})
    log.truncate_after_round(1)
    records = log.records()
    assert records[0] == {"event": "config", "seed": 0}
    assert [(r["round"], r["client"]) for r in records[1:]] == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]  # no temp file left
    log.append({"event": "round", "round": 2, "client": "a"})
    assert log.records()[-1]["round"] == 2


def test_truncate_drops_a_torn_tail_and_tolerates_a_missing_file(tmp_path):
    log = RunLog(tmp_path / "run.jsonl")
    log.truncate_after_round(3)
    assert not log.path.exists()
    log.path.write_bytes(b'{"round": 0}\n{"round": 5}\n{"rou')
    log.truncate_after_round(3)
    assert log.path.read_bytes() == b'{"round": 0}\n'
