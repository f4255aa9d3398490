"""What every preset shares: the case record a preset hands to the writer, the preset interface,
and the small readers that turn a published mask file into a binary label.

A preset knows one public dataset's folder layout and mask encoding; everything after "here are
the cases" (ids, split, checks, staging, verify, publish) is the writer's, the same for all.
"""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocessing.convert.common import Problems, read_or_record
from preprocessing.convert.label_map import UnmappableValues, check_declared, default_mask_map
from preprocessing.convert.output import OutputConfig
from preprocessing.convert.pairs2d import IMAGE_ENDINGS, mask_as_gray
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry

BINARY = frozenset({0, 1})


@dataclass(frozen=True)
class PresetCase:
    """One case as found on disk: its source name, image file, label file(s) (none: unlabelled),
    pixel spacing when a side file states it (2D), and the group that must stay in one split."""

    stem: str
    image: Path
    labels: tuple[Path, ...] = ()
    spacing: tuple[float, ...] | None = None
    group: str | None = None


@dataclass
class Discovery:
    """The cases a preset found and what the user should know about how it read them."""

    cases: list[PresetCase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadedCase:
    """A case ready to write: image (C, *spatial), its geometry, and the uint8 label or None."""

    image: np.ndarray
    geometry: Geometry
    label: np.ndarray | None


@dataclass(frozen=True)
class PresetConfig:
    """Where the published dataset lies and where the raw dataset goes."""

    source: Path
    output: OutputConfig
    unlabelled_to_test: bool = False


class Preset(ABC):
    """A public dataset as published: how to find its cases and how to decode its masks."""

    key: str                 # the CLI name, e.g. "kvasir-seg"
    default_name: str        # DatasetXXX_<default_name> when --name is not given
    labels: dict[str, int]
    channel_name: str = "gray"  # for one-channel images; RGB images get R, G, B
    file_ending: str = ".png"

    def __init__(self, unlabelled_to_test: bool = False) -> None:
        self.unlabelled_to_test = unlabelled_to_test

    @abstractmethod
    def discover(self, source: Path, problems: Problems) -> Discovery:
        """Every case under ``source``; layout problems go to ``problems`` (all at once)."""

    @abstractmethod
    def load(self, case: PresetCase, problems: Problems) -> LoadedCase | None:
        """Read one case; None after recording what is wrong with its files."""

    def load_notes(self) -> list[str]:
        """What loading changed that the user should know (e.g. outlines that had to be fitted)."""
        return []


def child(folder: Path, *names: str) -> Path | None:
    """The first entry of ``folder`` named like one of ``names``, ignoring case (archives
    unpacked on different systems, and mirrors, differ in capitalisation)."""
    if not folder.is_dir():
        return None
    entries = {entry.name.lower(): entry for entry in sorted(folder.iterdir())}
    return next((entries[n.lower()] for n in names if n.lower() in entries), None)


def require_folder(source: Path, names: tuple[str, ...], preset: str) -> Path:
    """A folder the layout cannot do without; DatasetError names where it was looked for."""
    found = child(source, *names)
    if found is None or not found.is_dir():
        raise DatasetError(f"{source}: no folder {' or '.join(names)} here. Fix: point --source at "
                           f"the folder that holds the unpacked {preset} download (see "
                           "docs/reproduce_paper.md for the expected layout).")
    return found


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files (any case of ending), hidden files left out, sorted for a stable order."""
    walk: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walk if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_ENDINGS)


def stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def read_csv_rows(path: Path, required: tuple[str, ...], problems: Problems) -> list[dict[str, str]]:
    """Rows of a published side table (.csv, or Dataverse's tab-separated .tab), column names
    stripped; a missing column is a problem naming the file."""
    delimiter = "\t" if path.suffix.lower() == ".tab" else ","
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            problems.add(path, f"has no column {', '.join(missing)} (columns: {', '.join(columns)})",
                         "use the file as published, unedited")
            return []
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def read_image_2d(path: Path, problems: Problems) -> np.ndarray | None:
    """A 2D image as (C, H, W): RGB as three channels, gray as one (as ``images`` does)."""
    loaded = read_or_record(path, problems)
    return None if loaded is None else loaded[0]


def read_gray_2d(path: Path, problems: Problems) -> np.ndarray | None:
    """A 2D image that must be one channel, as (1, H, W); gray stored as RGB is accepted."""
    image = read_image_2d(path, problems)
    gray = None if image is None else mask_as_gray(image, path, problems)
    return None if gray is None else gray[None]


def read_binary_mask(path: Path, problems: Problems) -> np.ndarray | None:
    """A published binary mask (0/255, 0/1, or 0/255 with JPEG artefacts) as a 0/1 uint8 array
    (H, W) or volume; values snap to 0 or 255 only where artefacts explain them."""
    loaded = read_or_record(path, problems)
    if loaded is None:
        return None
    values = loaded[0]
    if values.shape[0] != 1:
        values = mask_as_gray(values, path, problems)
        if values is None:
            return None
    else:
        values = values[0]
    return snap_binary(values, path, problems)


def snap_binary(values: np.ndarray, path: Path, problems: Problems) -> np.ndarray | None:
    try:
        mapping = default_mask_map(values, BINARY, lossy=True)
        return mapping.apply(values) if mapping is not None else check_declared(values, BINARY)
    except UnmappableValues as err:
        problems.add(path, f"{err}, so it is not a binary 0/255 (or 0/1) mask as published",
                     "re-extract the file from the original download")
        return None


def check_same_shape(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path,
                     problems: Problems) -> bool:
    """The converter never resizes, so a mask must have its image's size."""
    if tuple(image.shape[1:]) == tuple(label.shape):
        return True
    problems.add(label_path, f"is {'x'.join(map(str, label.shape))} but its image {image_path} is "
                 f"{'x'.join(map(str, image.shape[1:]))}", "re-extract both from the original "
                 "download (the converter never resizes)")
    return False


def geometry_2d(shape: tuple[int, ...], spacing: tuple[float, ...] | None) -> Geometry:
    """Unit spacing unless the dataset states a pixel size (ITK order: x, y)."""
    default = Geometry.default(tuple(shape))
    if spacing is None:
        return default
    return Geometry(default.shape, tuple(float(s) for s in spacing), default.origin,
                    default.direction)


def load_image_with_binary_mask(case: PresetCase, problems: Problems) -> LoadedCase | None:
    """The common 2D encoding (Kvasir-SEG, HAM10000): an image and one 0/255 mask file."""
    image = read_image_2d(case.image, problems)
    label = read_binary_mask(case.labels[0], problems)
    if image is None or label is None:
        return None
    if not check_same_shape(image, label, case.image, case.labels[0], problems):
        return None
    return LoadedCase(image, geometry_2d(image.shape[1:], case.spacing), label)


def pair_by_stem(images: list[Path], masks: dict[str, Path], problems: Problems,
                 missing_fix: str) -> list[tuple[Path, Path]]:
    """Each image with its mask (``masks``: image stem -> mask file); an image without a mask and
    a mask without an image are both problems, since the published sets are complete."""
    by_stem: dict[str, Path] = {}
    pairs = []
    for image in images:
        key = stem(image)
        if key in by_stem:
            problems.add(image, f"has the same name stem as {by_stem[key]}", "keep one of them")
            continue
        by_stem[key] = image
        if key in masks:
            pairs.append((image, masks[key]))
        else:
            problems.add(image, "has no mask", missing_fix)
    for key in sorted(set(masks) - set(by_stem)):
        problems.add(masks[key], "is a mask without an image", "unpack the images that belong to "
                     "it too (part of the download is missing), or delete the mask")
    return pairs
