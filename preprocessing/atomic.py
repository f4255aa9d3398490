"""Atomic file output: a file either appears complete under its final name or not at all.

Writers produce into a private temporary folder beside the target (same file system, so the
final move is an atomic rename) under the target's own file name, because formats such as
MetaImage name their companion data file after the header.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path named like ``target``; on success move it (and companions) in place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging / target.name
        produced = sorted(staging.iterdir(), key=lambda p: p.name == target.name)
        for item in produced:  # companions first, the file users look for last
            os.replace(item, target.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(target: Path | str, text: str) -> None:
    with atomic_output(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: Path | str, data: object) -> None:
    write_text_atomic(target, json.dumps(data, indent=2, sort_keys=False) + "\n")
