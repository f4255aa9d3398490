"""benchmarks.proxy_fit: a tiny run gives one row per client and target with finite MSE blocks and
the mu-spread / noise ratio, and the patch-fraction targets are the z-scored foreground fractions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from benchmarks import proxy_fit


def test_patch_fraction_targets_are_z_scored_foreground_fractions() -> None:
    labels = np.zeros((2, 1, 4, 4), np.uint8)
    labels[0, 0, :2] = 1  # half foreground
    labels[1, 0, 0, 0] = 2  # one pixel of another class
    targets, mask = proxy_fit.patch_fraction_targets(labels, 3, mean=0.25, std=0.125)
    torch.testing.assert_close(targets, torch.tensor([[2.0] * 3, [-1.5] * 3]))
    assert mask.all() and mask.shape == (2, 3)


def test_a_tiny_run_reports_every_client_and_target(tmp_path: Path) -> None:
    out = tmp_path / "fit.md"
    assert proxy_fit.main(["--size", "tiny", "--steps", "4", "--block", "2", "--work", str(tmp_path), "--out", str(out)]) == 0
    rows = re.findall(r"^\| Demo\w+ \| (case proxies|patch foreground fraction) \| \S+ / \S+ \| "
                      r"(\d+\.\d{3}) (\d+\.\d{3}) \|$", out.read_text(), re.M)
    assert len(rows) == 6 and {r[0] for r in rows} == {"case proxies", "patch foreground fraction"}
