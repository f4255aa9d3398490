"""What every benchmark does at its end: progress lines to stderr, the report to stdout and a file."""

from __future__ import annotations

import sys
from pathlib import Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit_report(text: str, out: Path | None) -> None:
    """Print the markdown report and, with ``--out``, write it there too."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {out}")
