"""The privacy frontier's verdicts: which points are on the frontier, when the goal is met, and which
configurations a run measures."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import privacy_frontier
from benchmarks.privacy_frontier import Point, goal_lines, on_frontier


def point(method: str, defence: str, cut: int, client: str, dice: float, ssim: float, reid: float = 0.1,
          label_gain: float = 0.0, reid_gallery: float | None = None) -> Point:
    return Point(cut, method, defence, client, [dice], {"attack": "whitebox", "mean": ssim, "ci95": [ssim, ssim]},
                 reid, {"attack": "gradient_norm", "fg_dice": 0.1, "accuracy": 0.9 + label_gain, "prior_accuracy": 0.9},
                 reid_gallery)


def test_a_point_is_on_the_frontier_unless_another_has_its_dice_at_a_lower_ssim() -> None:
    base = point("splitfed", "none", 0, "A", 0.80, 0.90)
    private = point("splitfed", "quantise:2", 0, "A", 0.78, 0.40)
    dominated = point("mucald", "none", 0, "A", 0.70, 0.60)  # less Dice than base, more SSIM than private
    better = point("splitfed", "none", 1, "A", 0.80, 0.50)  # base's Dice at a lower SSIM
    points = [base, private, dominated, better]
    assert [on_frontier(p, points) for p in points] == [False, True, False, True]


def test_the_goal_needs_every_client_within_every_bound() -> None:
    points = [point("splitfed", "none", 0, c, 0.80, 0.9, reid=1.0) for c in "AB"]
    points += [point("splitfed", "adversary:0.3", 1, "A", 0.79, 0.25), point("splitfed", "adversary:0.3", 1, "B", 0.79, 0.29)]
    points += [point("splitfed", "quantise:1", 1, "A", 0.79, 0.25), point("splitfed", "quantise:1", 1, "B", 0.70, 0.2)]
    points += [point("mucald", "none", 1, c, 0.80, 0.2, label_gain=0.15) for c in "AB"]
    verdicts = {line.split(": Dice")[0]: line for line in goal_lines(points, ["A", "B"])}
    assert ": met (" in verdicts["- goal splitfed, adversary:0.3, cut 1"]
    assert "NOT met" in verdicts["- goal splitfed, quantise:1, cut 1"]  # B loses 10 Dice points
    assert "NOT met" in verdicts["- goal mucald, none, cut 1"]  # labels leak 15 points over the prior
    assert "NOT met" in verdicts["- goal splitfed, none, cut 0"]


def test_the_goal_reads_the_gallery_re_identification_where_the_audit_scored_it() -> None:
    points = [point("splitfed", "none", 0, c, 0.80, 0.9, reid=1.0) for c in "AB"]
    # every attacked case re-identified among the 8 attacked, but rarely among the whole gallery
    points += [point("splitfed", "quantise:2", 1, c, 0.80, 0.2, reid=1.0, reid_gallery=0.12) for c in "AB"]
    points += [point("mucald", "quantise:2", 1, c, 0.80, 0.2, reid=0.1, reid_gallery=0.5) for c in "AB"]
    verdicts = {line.split(": Dice")[0]: line for line in goal_lines(points, ["A", "B"])}
    assert ": met (" in verdicts["- goal splitfed, quantise:2, cut 1"] and "worst re-id 0.12" in \
        verdicts["- goal splitfed, quantise:2, cut 1"]
    assert "NOT met" in verdicts["- goal mucald, quantise:2, cut 1"]
    text = privacy_frontier.report(points, argparse.Namespace(size="tiny", rounds=1, iters=1, seeds=[0],
                                                              private_cases=8, decoder_steps=1, whitebox_steps=1))
    assert "| splitfed, quantise:2, cut 1 | 0.800 +- 0.000 (1) | 0.200 [0.200, 0.200] (whitebox) | 1.00 / 0.12 |" in text
    assert "| splitfed, none, cut 0 | 0.800 +- 0.000 (1) | 0.900 [0.900, 0.900] (whitebox) | 1.00 / - |" in text


def test_points_choose_exactly_the_configurations_and_the_grid_is_the_default() -> None:
    parse = lambda *argv: privacy_frontier.configurations(argparse.Namespace(  # noqa: E731
        cut_depths=[0, 1], methods=["splitfed"], defences=["none", "quantise:2"], points=list(argv)))
    assert parse() == [("splitfed", "none", 0), ("splitfed", "quantise:2", 0), ("splitfed", "none", 1),
                       ("splitfed", "quantise:2", 1)]
    assert parse("mucald/bottleneck:8+quantise:2/1", "splitfed/none/0") == [
        ("mucald", "bottleneck:8+quantise:2", 1), ("splitfed", "none", 0)]
    with pytest.raises(SystemExit, match="is not METHOD/DEFENCE/CUT"):
        parse("mucald/none")
