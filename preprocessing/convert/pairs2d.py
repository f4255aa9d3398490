"""Mode (i): 2D image/mask pairs as Kvasir-SEG, ISIC/HAM10000 and similar collections ship them.

Images become lossless PNGs (RGB or one gray channel), masks become label-index PNGs. Nothing is
resized: an image and its mask must already have the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from preprocessing.convert.common import (ConversionResult, Problems, check_image_content,
                                          describe_options, read_or_record, resolve_label_names,
                                          split_test_cases, unique_case_ids)
from preprocessing.convert.label_map import (LOSSY_ENDINGS, LabelMap, UnmappableValues,
                                             check_declared, default_mask_map)
from preprocessing.convert.output import DatasetWriter, OutputConfig, check_target
from preprocessing.dataset_json import DatasetSpec
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry

IMAGE_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
OUTPUT_ENDING = ".png"  # lossless, whatever the input was
LOSSY_CHANNEL_SPREAD = 16  # JPEG chroma noise on a gray mask stays well below this


@dataclass(frozen=True)
class Pairs2DConfig:
    """Where the pairs are, how masks are named and mapped, and how images are declared."""

    images_dir: Path
    masks_dir: Path
    output: OutputConfig
    mask_suffix: str = ""
    image_glob: str = "*"
    label_names: tuple[str, ...] | None = None
    label_map: LabelMap | None = None
    channel_name: str = "gray"
    allow_unlabelled: bool = False


@dataclass(frozen=True)
class _Pair:
    case: str
    image: Path
    mask: Path | None
    split: str


def convert_pairs_2d(config: Pairs2DConfig) -> ConversionResult:
    """Convert every pair, or raise one DatasetError listing every problem (nothing written)."""
    check_target(config.output)
    labels = resolve_label_names(config.label_names,
                                 config.label_map.highest_label if config.label_map else 1)
    declared = frozenset(labels.values())
    problems = Problems()
    pairs, notes = _pair_files(config, problems)
    with DatasetWriter(config.output, OUTPUT_ENDING) as writer:
        first: tuple[int, Path] | None = None
        for pair in pairs:
            loaded = _load_pair(pair, config, declared, problems)
            if loaded is None:
                continue
            image, label = loaded
            first = first or (image.shape[0], pair.image)
            if image.shape[0] != first[0]:
                problems.add(pair.image, f"has {image.shape[0]} channel(s) but {first[1].name} has "
                             f"{first[0]}", "convert all images to RGB, or all to grayscale")
            elif not problems:  # after the first problem only check, so the report is complete
                writer.write_case(pair.case, pair.split, image, Geometry.default(image.shape[1:]), label)
        problems.raise_if_any(str(config.images_dir))
        channels = ({0: "R", 1: "G", 2: "B"} if first and first[0] == 3
                    else {0: config.channel_name})
        spec = DatasetSpec(channels, labels, len(writer.cases["Tr"]), OUTPUT_ENDING,
                           _description(config))
        folder = writer.publish(spec)
        return ConversionResult(folder, tuple(writer.cases["Tr"]), tuple(writer.cases["Ts"]),
                                channels, labels, OUTPUT_ENDING, tuple(notes))


def _pair_files(config: Pairs2DConfig, problems: Problems) -> tuple[list[_Pair], list[str]]:
    """Match each image to its mask by stem (+ mask suffix) and assign Tr/Ts."""
    for folder, flag in ((config.images_dir, "--images"), (config.masks_dir, "--masks")):
        if not Path(folder).is_dir():
            raise DatasetError(f"{folder}: folder does not exist. Fix: check {flag}.")
    same_folder = Path(config.images_dir).resolve() == Path(config.masks_dir).resolve()
    if same_folder and not config.mask_suffix:
        raise DatasetError(f"{config.images_dir}: images and masks share a folder but no "
                           "--mask-suffix tells them apart. Fix: pass --mask-suffix.")
    masks: dict[str, list[Path]] = {}
    for path in _image_files(config.masks_dir, "*"):
        stem = _stem(path)
        if stem.endswith(config.mask_suffix):
            masks.setdefault(stem[: len(stem) - len(config.mask_suffix)], []).append(path)
    images = [p for p in _image_files(config.images_dir, config.image_glob)
              if not (same_folder and _stem(p).endswith(config.mask_suffix))]
    if not images:
        raise DatasetError(f"{config.images_dir}: no images matching {config.image_glob!r} with "
                           f"endings {', '.join(IMAGE_ENDINGS)}. Fix: check --images and --image-glob.")
    found: list[tuple[Path, Path | None]] = []
    by_stem: dict[str, Path] = {}
    for image in images:
        stem = _stem(image)
        if stem in by_stem:
            problems.add(image, f"has the same name stem as {by_stem[stem].name}",
                         "keep one of them (each case needs one image)")
            continue
        by_stem[stem] = image
        candidates = masks.get(stem, [])
        if len(candidates) > 1:
            problems.add(image, f"has several masks: {', '.join(p.name for p in candidates)}",
                         "keep one mask per image")
        elif not candidates and not config.allow_unlabelled:
            problems.add(image, f"has no mask {stem}{config.mask_suffix}.* in {config.masks_dir}",
                         "add the mask, check --masks/--mask-suffix, or pass --allow-unlabelled "
                         "to put the image in imagesTs without a label")
        else:
            found.append((image, candidates[0] if candidates else None))
    orphans = sorted(set(masks) - set(by_stem))
    notes = [f"{len(orphans)} mask(s) without an image were skipped (e.g. "
             f"{masks[orphans[0]][0].name})"] if orphans else []
    return _assign_splits(found, config, problems), notes


def _assign_splits(found: list[tuple[Path, Path | None]], config: Pairs2DConfig,
                   problems: Problems) -> list[_Pair]:
    ids = unique_case_ids(_stem(image) for image, _ in found)
    labelled = [case for case, (_, mask) in zip(ids, found) if mask is not None]
    test = split_test_cases(labelled, config.output.test_fraction, config.output.seed)
    if test and len(labelled) < len(found):
        problems.add(config.images_dir, "unlabelled images and a --test-fraction split would share "
                     "imagesTs, where every image then needs a label", "drop --test-fraction or "
                     "convert the unlabelled images as a dataset of their own")
    if found and not labelled:
        problems.add(config.masks_dir, "no image has a mask, so there is nothing to train on",
                     "check --masks and --mask-suffix")
    return [_Pair(case, image, mask, "Ts" if mask is None or case in test else "Tr")
            for case, (image, mask) in zip(ids, found)]


def _load_pair(pair: _Pair, config: Pairs2DConfig, declared: frozenset[int],
               problems: Problems) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The image (C, H, W) and its label (H, W, uint8); None after recording the problems."""
    image = _read(pair.image, problems)
    if image is not None and not check_image_content(image, pair.image, problems):
        image = None
    if pair.mask is None:
        return None if image is None else (image, None)
    mask = _read(pair.mask, problems)
    if mask is not None:
        mask = mask_as_gray(mask, pair.mask, problems)
    if mask is None:
        return None
    if image is not None and image.shape[1:] != mask.shape:
        problems.add(pair.mask, f"is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
                     f"{pair.image} is {image.shape[1]}x{image.shape[2]}",
                     "re-export the mask at the image's size (the converter never resizes)")
        return None
    label = _map_mask(mask, pair.mask, config.label_map, declared, problems)
    return None if image is None or label is None else (image, label)


def _map_mask(mask: np.ndarray, path: Path, label_map: LabelMap | None, declared: frozenset[int],
              problems: Problems) -> np.ndarray | None:
    try:
        mapping = label_map or default_mask_map(mask, declared, path.suffix.lower() in LOSSY_ENDINGS)
        return mapping.apply(mask) if mapping is not None else check_declared(mask, declared)
    except UnmappableValues as err:
        fix = ("list every raw value in --label-map (values snap to the nearest listed one)"
               if label_map else "pass --label-map RAW:LABEL,... (e.g. \"0:0,255:1\") or --labels "
               "with one name per label index")
        problems.add(path, str(err), fix)
        return None


def mask_as_gray(mask: np.ndarray, path: Path, problems: Problems) -> np.ndarray | None:
    """A (1, H, W) mask, or an RGB mask whose channels agree, as (H, W). JPEG may leave the
    channels of a gray mask a few values apart (chroma noise), so lossy masks get a tolerance."""
    if mask.shape[0] == 1:
        return mask[0]
    channels = mask.astype(np.int16)
    spread = int((channels.max(axis=0) - channels.min(axis=0)).max())
    if spread > (LOSSY_CHANNEL_SPREAD if path.suffix.lower() in LOSSY_ENDINGS else 0):
        problems.add(path, f"is a colour mask (its R, G and B channels differ by up to {spread})",
                     "save the mask as grayscale or as indexed (palette) PNG")
        return None
    return mask[0] if spread == 0 else np.round(channels.mean(axis=0)).astype(mask.dtype)


def _read(path: Path, problems: Problems) -> np.ndarray | None:
    loaded = read_or_record(path, problems)
    return None if loaded is None else loaded[0]


def _image_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and fnmatch(p.name, pattern)
                  and p.suffix.lower() in IMAGE_ENDINGS)


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)]


def _description(config: Pairs2DConfig) -> str:
    return describe_options("images", {
        "images": config.images_dir, "masks": config.masks_dir, "mask_suffix": config.mask_suffix,
        "image_glob": config.image_glob if config.image_glob != "*" else None,
        "label_map": config.label_map, "labels": ",".join(config.label_names or ()),
        "channel_name": config.channel_name, "allow_unlabelled": config.allow_unlabelled,
        "test_fraction": config.output.test_fraction or None,
        "seed": config.output.seed if config.output.test_fraction else None,
    })
