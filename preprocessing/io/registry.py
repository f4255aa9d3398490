"""Pick the reader/writer for a path by its ending; the single entry point for image IO."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from preprocessing.errors import ImageIOError
from preprocessing.geometry import Geometry
from preprocessing.io.natural_io import NaturalImageIO
from preprocessing.io.sitk_io import SimpleITKIO


class ImageIO(Protocol):
    """Reads and writes channel-first arrays with their geometry for a family of endings."""

    endings: tuple[str, ...]

    def read(self, path: Path) -> tuple[np.ndarray, Geometry]: ...

    def write(self, path: Path, array: np.ndarray, geometry: Geometry) -> None: ...


_IOS: tuple[ImageIO, ...] = (SimpleITKIO(), NaturalImageIO())
SUPPORTED_ENDINGS: tuple[str, ...] = tuple(e for io in _IOS for e in io.endings)


def ending_of(path: Path | str) -> str | None:
    """The supported ending of ``path`` (longest match, case-insensitive), or None."""
    name = Path(path).name.lower()
    matches = [e for e in SUPPORTED_ENDINGS if name.endswith(e)]
    return max(matches, key=len) if matches else None


def io_for(path: Path | str) -> ImageIO:
    ending = ending_of(path)
    if ending is None:
        raise ImageIOError(
            path, "unknown file ending",
            f"use one of {', '.join(SUPPORTED_ENDINGS)} (convert the file, e.g. with mucald_convert)",
        )
    return next(io for io in _IOS if ending in io.endings)


def read_image(path: Path | str) -> tuple[np.ndarray, Geometry]:
    """Read any supported image as (C, *spatial) plus its geometry; ImageIOError names the file."""
    path = Path(path)
    reader = io_for(path)
    if not path.is_file():
        raise ImageIOError(path, "file does not exist", "check the path and the case name")
    return reader.read(path)


def write_image(path: Path | str, array: np.ndarray, geometry: Geometry) -> None:
    """Write a (C, *spatial) array atomically with ``geometry``; the format follows the ending."""
    path = Path(path)
    array = np.asarray(array)
    if array.ndim != geometry.ndim + 1 or tuple(array.shape[1:]) != geometry.shape:
        raise ImageIOError(
            path, f"array of shape {array.shape} does not match geometry shape {geometry.shape}",
            "pass a channel-first array (C, *spatial) whose spatial shape equals geometry.shape",
        )
    io_for(path).write(path, array, geometry)
