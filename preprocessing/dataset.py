"""The nnU-Net v2 raw layout: find a dataset by id or name, list its cases, read a case.

``<raw>/DatasetXXX_Name/{imagesTr,labelsTr,imagesTs,labelsTs}/`` holds images
``CASE_0000<ending>`` (one file per channel; one RGB file counts as three channels) and labels
``CASE<ending>``. Every later stage reads raw data through ``RawDataset``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocessing.dataset_json import DatasetSpec, load_dataset_spec
from preprocessing.errors import DatasetError, ImageIOError
from preprocessing.geometry import Geometry
from preprocessing.io import read_image

DATASET_FOLDER_PATTERN = re.compile(r"^Dataset(\d{3})_(.+)$")
_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
SPLITS = ("Tr", "Ts")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 0 <= dataset_id <= 999:
        raise DatasetError(f"dataset id {dataset_id} is out of range. Fix: use 0..999.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name):
        raise DatasetError(f"dataset name {name!r} must be letters, digits, '_' or '-'.")
    return f"Dataset{dataset_id:03d}_{name}"


def find_dataset_folder(raw_root: Path, identifier: str | int) -> Path:
    """Resolve ``3``, ``"003"`` or ``"Dataset003_Name"`` to the dataset folder under ``raw_root``."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise DatasetError(f"{raw_root}: raw folder does not exist. Fix: pass --raw DIR or set MUCALD_RAW.")
    text = str(identifier).strip()
    if DATASET_FOLDER_PATTERN.match(text):
        folder = raw_root / text
        if folder.is_dir():
            return folder
        raise DatasetError(f"{folder}: no such dataset. Fix: check the name or the --raw folder.")
    if not text.isdigit():
        raise DatasetError(f"dataset {text!r} is neither an id (e.g. 3) nor a folder name "
                           "(e.g. Dataset003_Name). Fix: pass -d with one of those.")
    wanted = int(text)
    matches = sorted(p for p in raw_root.iterdir()
                     if p.is_dir() and (m := DATASET_FOLDER_PATTERN.match(p.name)) and int(m.group(1)) == wanted)
    if not matches:
        raise DatasetError(f"{raw_root}: no Dataset{wanted:03d}_* folder. Fix: check -d or --raw "
                           "(mucald_make_demo or mucald_convert create datasets).")
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise DatasetError(f"{raw_root}: id {wanted} is ambiguous ({names}). Fix: pass the full name.")
    return matches[0]


@dataclass(frozen=True)
class CaseImages:
    """One case's images stacked channel-first, and the grid they share."""

    array: np.ndarray
    geometry: Geometry
    files: tuple[Path, ...]
    channel_files: tuple[Path, ...]  # the file each channel came from (an RGB file supplies three)


class RawDataset:
    """A dataset in the raw layout: its declaration and its files, read on demand."""

    def __init__(self, folder: Path, spec: DatasetSpec | None = None) -> None:
        self.folder = Path(folder)
        self.spec = spec if spec is not None else load_dataset_spec(self.folder)

    @classmethod
    def open(cls, raw_root: Path, identifier: str | int) -> "RawDataset":
        return cls(find_dataset_folder(raw_root, identifier))

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def dataset_id(self) -> int | None:
        match = DATASET_FOLDER_PATTERN.match(self.folder.name)
        return int(match.group(1)) if match else None

    def images_dir(self, split: str = "Tr") -> Path:
        return self.folder / f"images{split}"

    def labels_dir(self, split: str = "Tr") -> Path:
        return self.folder / f"labels{split}"

    def case_ids(self, split: str = "Tr") -> list[str]:
        """Cases that have at least one image file with the dataset's ending, sorted."""
        ending = self.spec.file_ending
        folder = self.images_dir(split)
        if not folder.is_dir():
            return []
        cases = {parsed[0] for f in folder.iterdir() if (parsed := parse_channel_file(f.name, ending))}
        return sorted(cases)

    def channel_file(self, case: str, channel: int, split: str = "Tr") -> Path:
        return self.images_dir(split) / f"{case}_{channel:04d}{self.spec.file_ending}"

    def label_file(self, case: str, split: str = "Tr") -> Path:
        return self.labels_dir(split) / f"{case}{self.spec.file_ending}"

    def read_images(self, case: str, split: str = "Tr") -> CaseImages:
        """Read every channel file of ``case`` in order until the declared channel count is met."""
        return read_case_channels(lambda channel: self.channel_file(case, channel, split), self.spec.num_channels)

    def read_label(self, case: str, split: str = "Tr") -> tuple[np.ndarray, Geometry]:
        """The label map (spatial array, no channel axis) and its geometry."""
        path = self.label_file(case, split)
        if not path.is_file():
            raise ImageIOError(path, "label file is missing", "add the segmentation for this case")
        array, geometry = read_image(path)
        if array.shape[0] != 1:
            raise ImageIOError(path, f"label has {array.shape[0]} channels",
                               "store labels as a single-channel map of integer class values")
        return array[0], geometry


def parse_channel_file(name: str, ending: str) -> tuple[str, int] | None:
    """``CASE_0003<ending>`` -> ("CASE", 3); None for a name that is not a channel file."""
    if not name.endswith(ending):
        return None
    match = _CHANNEL_STEM.match(name[: -len(ending)])
    return (match.group("case"), int(match.group("channel"))) if match else None


def read_case_channels(channel_path: Callable[[int], Path], num_channels: int) -> CaseImages:
    """Read channel files 0, 1, ... (``channel_path(i)``) until ``num_channels`` channels are in;
    an RGB file supplies three. Every file must share the first one's grid."""
    arrays: list[np.ndarray] = []
    files: list[Path] = []
    geometry: Geometry | None = None
    while sum(a.shape[0] for a in arrays) < num_channels:
        path = channel_path(len(files))
        if not path.is_file():
            raise ImageIOError(path, "channel file is missing",
                               f"add it: the task declares {num_channels} channels")
        array, geo = read_image(path)
        if geometry is not None and (diff := geo.mismatches(geometry)):
            raise ImageIOError(path, f"geometry differs from {files[0].name}: {'; '.join(diff)}",
                               "resample all channels of a case onto one grid")
        arrays.append(array)
        files.append(path)
        geometry = geometry or geo
    total = sum(a.shape[0] for a in arrays)
    if total != num_channels:
        raise ImageIOError(files[-1], f"gives {total} channels but the task declares {num_channels}",
                           _channel_fix(arrays[-1].shape[0]))
    channel_files = tuple(f for f, a in zip(files, arrays) for _ in range(a.shape[0]))
    return CaseImages(np.concatenate(arrays, axis=0), geometry, tuple(files), channel_files)


def _channel_fix(file_channels: int) -> str:
    if file_channels == 3:
        return "this is an RGB file: declare three channels (R, G, B) or save it as grayscale"
    return "make channel_names in dataset.json match the files"
