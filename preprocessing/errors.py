"""Typed errors that users see: each says which file is wrong and what to do about it.

Command-line entry points catch these and print the message without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MucaldError(Exception):
    """Base class for every error whose message is meant for a user, not a developer."""


class DatasetError(MucaldError):
    """The raw dataset (layout, dataset.json, or a case's files) is not usable as it is."""


class ImageIOError(DatasetError):
    """One image file cannot be read or written; the message names the file and the fix."""

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")

    def __reduce__(self) -> tuple:  # rebuilt from its parts when it crosses a process boundary
        return type(self), (self.path, self.problem, self.fix)
