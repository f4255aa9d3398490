"""A real three-task federation from the pyradiomics sample scans, as 2D slice datasets.

Owns turning the five scans in ``shared/data/pyradiomics`` into three raw datasets (lung CT,
brain MR, breast MR lesions) whose cases are single axial slices, the way the published method
trains; everything downstream reads them as ordinary nnU-Net v2 raw datasets.

Choices (also written into each dataset.json's description):

* slice axis: the array axis with the largest spacing (z for all five scans; ties go to axis 0);
* training slices: every slice holding lesion, plus ``round(ratio * lesion training slices)``
  lesion-free slices per volume, drawn without replacement by a generator seeded with ``seed``
  and the volume's name; constant slices are never drawn (the integrity check rejects them);
* test slices (imagesTs + labelsTs): the lesion slice with the highest index of each volume that
  has at least two lesion slices. It lies next to a training slice, so it is a smoke test of the
  pipeline, not an estimate of generalisation;
* geometry: in-plane spacing as in the volume, origin = the physical position of the slice's
  first voxel (its in-plane components), identity direction. The 3D direction is dropped: for a
  flipped or oblique volume (brain1/2 have y flipped) the slice's physical frame is therefore not
  the scanner's; voxels and spacing, which are all that training uses, are unchanged;
* intensities are kept (HU for CT) as float32; labels as uint8.
"""

from __future__ import annotations

import argparse
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocessing.convert.output import DatasetWriter, OutputConfig
from preprocessing.dataset import DATASET_FOLDER_PATTERN, RawDataset, dataset_folder_name
from preprocessing.dataset_json import DatasetSpec
from preprocessing.errors import MucaldError
from preprocessing.geometry import Geometry
from preprocessing.integrity import channel_problems
from preprocessing.io import read_image

LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".nii.gz"
_AXIS_LETTERS = "zyx"


@dataclass(frozen=True)
class ClientRecipe:
    """One client: its dataset name, its channel name (the planner's normalisation key), its scans."""

    name: str
    channel_name: str
    volumes: tuple[str, ...]


CLIENTS = (
    ClientRecipe("RealLungCT", "CT", ("lung1", "lung2")),
    ClientRecipe("RealBrainMR", "T1", ("brain1", "brain2")),
    ClientRecipe("RealBreastMR", "MR", ("breast1",)),
)


@dataclass(frozen=True)
class SliceCase:
    """One 2D case cut from a volume: image (1, H, W) float32, label (H, W) uint8, and its grid."""

    case: str
    split: str
    image: np.ndarray
    label: np.ndarray
    geometry: Geometry

    @property
    def has_lesion(self) -> bool:
        return bool(self.label.any())


def make_pyradiomics_slice_federation(source: Path, raw_root: Path, first_id: int = 101,
                                      background_slices_per_lesion_slice: float = 1.0,
                                      seed: int = 0) -> list[str]:
    """Write the three slice datasets under ``raw_root``; return their folder names in id order.

    Every target is checked before anything is read; each dataset is staged beside its target,
    verified, and renamed into place, so it appears complete or not at all.
    """
    source, raw_root = Path(source), Path(raw_root)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: pyradiomics data folder not found. Fix: pass --source "
                                "with the folder holding lung1_image.nrrd etc. (shared/data/pyradiomics).")
    if not (background_slices_per_lesion_slice >= 0 and math.isfinite(background_slices_per_lesion_slice)):
        raise ValueError(f"background_slices_per_lesion_slice is {background_slices_per_lesion_slice}; "
                         "it must be a finite number >= 0.")
    folders = _target_folders(raw_root, first_id)
    for recipe in CLIENTS:
        for volume in recipe.volumes:
            for path in _volume_files(source, volume):
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: scan file not found in {source}.")
    names = []
    for recipe, folder in zip(CLIENTS, folders):
        cases = [case for volume in recipe.volumes
                 for case in volume_slices(source, volume, background_slices_per_lesion_slice, seed)]
        names.append(_write_dataset(recipe, folder, cases, background_slices_per_lesion_slice, seed))
    return names


def _target_folders(raw_root: Path, first_id: int) -> list[Path]:
    """The three dataset folders; ValueError if one exists or its id is taken by another name."""
    if not 0 <= first_id <= 999 - (len(CLIENTS) - 1):
        raise ValueError(f"first_id {first_id} is out of range: ids {first_id}.."
                         f"{first_id + len(CLIENTS) - 1} must lie in 0..999.")
    folders = [raw_root / dataset_folder_name(first_id + i, r.name) for i, r in enumerate(CLIENTS)]
    taken = {}
    if raw_root.is_dir():
        taken = {int(m.group(1)): p for p in raw_root.iterdir()
                 if (m := DATASET_FOLDER_PATTERN.match(p.name))}
    for i, folder in enumerate(folders):
        if folder.exists():
            raise ValueError(f"{folder}: dataset folder already exists. Fix: remove it or pass "
                             "another raw folder or first id.")
        if (other := taken.get(first_id + i)) is not None:
            raise ValueError(f"{other}: already uses dataset id {first_id + i}. Fix: choose another "
                             "first id or remove that folder.")
    return folders


def _volume_files(source: Path, volume: str) -> tuple[Path, Path]:
    return source / f"{volume}_image.nrrd", source / f"{volume}_label.nrrd"


def volume_slices(source: Path, volume: str, background_ratio: float, seed: int) -> list[SliceCase]:
    """The training and test slices of one scan, in slice order (see the module docstring)."""
    image_path, label_path = _volume_files(Path(source), volume)
    image, geometry = read_image(image_path)
    label, label_geometry = read_image(label_path)
    if image.shape[0] != 1 or label.shape[0] != 1 or geometry.ndim != 3:
        raise ValueError(f"{image_path}: expected a single-channel 3D scan and label, got image "
                         f"{image.shape} and label {label.shape}.")
    if diff := label_geometry.mismatches(geometry):
        raise ValueError(f"{label_path}: grid differs from its image ({'; '.join(diff)}).")
    if unknown := sorted(set(np.unique(label).tolist()) - set(LABELS.values())):
        raise ValueError(f"{label_path}: label values {unknown} are not in {LABELS}.")
    image, label = image[0], label[0]
    axis = slice_axis(geometry)
    lesion, usable_background = [], []
    for index in range(image.shape[axis]):
        if np.take(label, index, axis=axis).any():
            lesion.append(index)
        elif not channel_problems(np.take(image, index, axis=axis), 0):
            usable_background.append(index)
    if not lesion:
        raise ValueError(f"{label_path}: holds no lesion voxels, so it yields no training slices.")
    test = {lesion[-1]} if len(lesion) > 1 else set()
    count = _round_half_up(background_ratio * (len(lesion) - len(test)))
    background = choose_background(usable_background, count, seed, volume)
    cases = []
    for index in sorted([*lesion, *background]):
        cases.append(SliceCase(
            case=f"{volume}_{_AXIS_LETTERS[axis]}{index:03d}",
            split="Ts" if index in test else "Tr",
            image=np.take(image, index, axis=axis)[None].astype(np.float32),
            label=np.take(label, index, axis=axis).astype(np.uint8),
            geometry=slice_geometry(geometry, axis, index),
        ))
    return cases


def slice_axis(geometry: Geometry) -> int:
    """The array axis with the largest spacing (the first one on ties): z for axial scans."""
    return int(np.argmax(geometry.array_spacing))


def choose_background(candidates: list[int], count: int, seed: int, volume: str) -> list[int]:
    """``count`` of ``candidates`` (all when fewer), the same for the same seed and volume name."""
    if count >= len(candidates):
        return list(candidates)
    # crc32, not hash(): Python salts str hashes per process, which would break reproducibility.
    rng = np.random.default_rng([seed, zlib.crc32(volume.encode())])
    return sorted(int(i) for i in rng.choice(candidates, size=count, replace=False))


def slice_geometry(volume: Geometry, axis: int, index: int) -> Geometry:
    """2D grid of slice ``index`` across array ``axis``: in-plane spacing, corner origin, identity."""
    in_plane = [a for a in range(volume.ndim) if a != axis]  # array order
    itk_in_plane = [volume.ndim - 1 - a for a in reversed(in_plane)]  # ITK order
    voxel = np.zeros(volume.ndim)
    voxel[volume.ndim - 1 - axis] = index
    corner = np.asarray(volume.origin) + volume.direction_matrix @ (voxel * np.asarray(volume.spacing))
    return Geometry(
        shape=tuple(volume.shape[a] for a in in_plane),
        spacing=tuple(float(volume.spacing[i]) for i in itk_in_plane),
        origin=tuple(float(corner[i]) for i in itk_in_plane),
        direction=(1.0, 0.0, 0.0, 1.0),
    )


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))  # round() rounds 2.5 to 2, which surprises readers


def _write_dataset(recipe: ClientRecipe, folder: Path, cases: list[SliceCase], ratio: float,
                   seed: int) -> str:
    match = DATASET_FOLDER_PATTERN.match(folder.name)
    output = OutputConfig(raw_root=folder.parent, dataset_id=int(match.group(1)), name=recipe.name)
    with DatasetWriter(output, FILE_ENDING) as writer:
        for case in cases:
            writer.write_case(case.case, case.split, case.image, case.geometry, case.label)
        spec = DatasetSpec({0: recipe.channel_name}, dict(LABELS), len(writer.cases["Tr"]),
                           FILE_ENDING, _description(recipe, ratio, seed))
        return writer.publish(spec).name


def _description(recipe: ClientRecipe, ratio: float, seed: int) -> str:
    return (f"2D axial slices of the pyradiomics sample scans {', '.join(recipe.volumes)} "
            "(BSD-3, Harvard Medical School). Training: every lesion slice plus "
            f"{ratio:g} lesion-free slice(s) per lesion slice per scan, drawn with seed {seed}. "
            "Test: the highest-index lesion slice of each scan with two or more lesion slices. "
            "Geometry: in-plane spacing kept, origin at the slice corner, the 3D direction dropped "
            "(identity). Made by benchmarks/real_slices.py.")


@dataclass(frozen=True)
class DatasetSummary:
    """What one written dataset holds, read back from disk."""

    name: str
    train_lesion: int
    train_background: int
    test: int
    foreground_fraction: float  # lesion pixels / all pixels over the training slices

    @property
    def train(self) -> int:
        return self.train_lesion + self.train_background


def summarize_dataset(folder: Path) -> DatasetSummary:
    dataset = RawDataset(folder)
    lesion = foreground = pixels = 0
    cases = dataset.case_ids("Tr")
    for case in cases:
        label, _ = dataset.read_label(case, "Tr")
        count = int(np.count_nonzero(label))
        lesion += count > 0
        foreground += count
        pixels += label.size
    return DatasetSummary(dataset.name, lesion, len(cases) - lesion, len(dataset.case_ids("Ts")),
                          foreground / pixels if pixels else 0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.real_slices",
        description="Write the pyradiomics scans as three 2D slice datasets (lung CT, brain MR, "
                    "breast MR lesions) in the nnU-Net v2 raw layout.")
    parser.add_argument("--source", type=Path, required=True,
                        help="Folder with the pyradiomics NRRD scans (shared/data/pyradiomics).")
    parser.add_argument("--raw", type=Path, required=True, help="Raw datasets folder to write into.")
    parser.add_argument("--first-id", type=int, default=101, help="Id of the first dataset (default 101).")
    parser.add_argument("--background-ratio", type=float, default=1.0,
                        help="Lesion-free training slices per lesion training slice (default 1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed for drawing lesion-free slices.")
    args = parser.parse_args(argv)
    try:
        names = make_pyradiomics_slice_federation(args.source, args.raw, args.first_id,
                                                  args.background_ratio, args.seed)
    except (FileNotFoundError, ValueError, MucaldError) as err:
        raise SystemExit(f"error: {err}") from None
    for name in names:
        s = summarize_dataset(args.raw / name)
        print(f"{s.name}: train {s.train} slices ({s.train_lesion} lesion, {s.train_background} "
              f"background), test {s.test}; foreground {100 * s.foreground_fraction:.3f}% of "
              "training pixels")


if __name__ == "__main__":
    main()
