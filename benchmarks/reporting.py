"""What every benchmark shares: progress lines to stderr, child processes that answer with one JSON
line, goal lines computed from what was measured, and the report to stdout and a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit_report(text: str, out: Path | None) -> None:
    """Print the markdown report and, with ``--out``, write it there too."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {out}")


def run_json_child(cmd: list[str], threads: int) -> dict | None:
    """Run a benchmark child with ``threads`` BLAS/torch threads; its last stdout line is its JSON
    result. On failure, log the tail of its stderr and return None."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        log(f"    FAILED rc={result.returncode}:\n    " + "\n    ".join(result.stderr.splitlines()[-15:]))
        return None
    return json.loads(lines[-1])


def goal_line(goal: str, met: bool, measured: str) -> str:
    """``- goal mucald >= splitfed: met (0.710 vs 0.690)``: the verdict always comes with its numbers."""
    return f"- goal {goal}: {'met' if met else 'NOT met'} ({measured})"


def unmeasured_goal(goal: str, reason: str) -> str:
    """``- goal mucald >= splitfed: not measured (mucald did not run)``: no verdict without a measurement."""
    return f"- goal {goal}: not measured ({reason})"
