"""Append-only JSON-lines log of a training run: one record per line, durable line by line.

Each append is flushed and fsynced, so a crash loses at most the line being written; readers
skip such a torn last line. A run resumed from a round-k checkpoint first truncates the log to
round k, so the log never describes rounds the model state has forgotten.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np


class RunLogError(ValueError):
    """The log holds a malformed line before its end; the message names the file and line."""


def _plain(value: object) -> object:
    """JSON-ready copy: non-finite floats become null (strict JSON has no NaN), numpy scalars unwrap."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return value


def _encode(record: Mapping) -> bytes:
    text = json.dumps(_plain(record), allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def _parse(line: bytes) -> dict | None:
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _round_of(record: Mapping) -> float | None:
    value = record.get("round")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class RunLog:
    """One run's log file; holds only its path, so several instances may read the same file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: Mapping) -> None:
        """Write ``record`` as one line and force it to disk before returning."""
        self.extend([record])

    def extend(self, records: Iterable[Mapping]) -> None:
        """Append each record as one line, then force them to disk together (one fsync, not one per
        line); a crash part-way leaves whole lines and at most one torn line, cut off next time."""
        lines = b"".join(_encode(record) for record in records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            self._repair_tail(handle)
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> list[dict]:
        """All complete records in file order; a torn last line (crash mid-write) is skipped."""
        return [record for _, record in self._entries()]

    def truncate_after_round(self, round_index: int) -> None:
        """Drop records whose "round" is greater than ``round_index``; records without one stay.

        The file is rewritten through a temporary file and os.replace, so a crash leaves either
        the old log or the new one, never a mix.
        """
        if not self.path.exists():
            return
        kept = [raw for raw, record in self._entries()
                if (r := _round_of(record)) is None or r <= round_index]
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                        dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.writelines(kept)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _entries(self) -> list[tuple[bytes, dict]]:
        """(raw line with newline, record) pairs; raw lines are kept so rewrites are byte-exact."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().splitlines(keepends=True)
        entries: list[tuple[bytes, dict]] = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            record = _parse(raw)
            is_last = number == len(lines)
            if record is None:
                if is_last and not raw.endswith(b"\n"):
                    continue  # torn by a crash mid-write
                raise RunLogError(f"{self.path}: line {number} is not a JSON object; "
                                  "fix or delete that line by hand")
            entries.append((raw if raw.endswith(b"\n") else raw + b"\n", record))
        return entries

    @staticmethod
    def _repair_tail(handle: BinaryIO) -> None:
        """Before appending after a crash: end a complete last line, or cut off a torn one.

        Without this the new record would be glued onto the torn text and both would be lost.
        """
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return
        start = end
        chunk = 4096
        while start > 0:  # scan back for the start of the unterminated last line
            lo = max(0, start - chunk)
            handle.seek(lo)
            block = handle.read(start - lo)
            cut = block.rfind(b"\n")
            if cut >= 0:
                start = lo + cut + 1
                break
            start = lo
        handle.seek(start)
        tail = handle.read(end - start)
        if _parse(tail) is not None:
            handle.write(b"\n")  # complete record that only lacked its newline
        else:
            handle.truncate(start)
