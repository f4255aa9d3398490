"""Mode (ii): image/label volume pairs (NRRD, NIfTI, MetaImage) matched by file-name patterns.

Image values and dtype are kept; labels become uint8 written with the IMAGE's geometry, so the
headers agree exactly. A label on another grid is an error unless resampling is asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from preprocessing.convert.common import (ConversionResult, Problems, check_image_content,
                                          describe_options, read_or_record, resolve_label_names,
                                          split_test_cases, unique_case_ids)
from preprocessing.convert.label_map import LabelMap, UnmappableValues, check_declared
from preprocessing.convert.output import DatasetWriter, OutputConfig, check_target
from preprocessing.convert.resample import resample_label
from preprocessing.dataset_json import DatasetSpec
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry

# Single-file formats only: .mhd/.nhdr write a companion data file the raw layout does not allow.
VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
CASE = "{case}"


@dataclass(frozen=True)
class VolumePairsConfig:
    """Where the volumes are, how image and label files are named, and how they are declared.

    ``channel_name`` has no default on purpose: the planner chooses the intensity normalisation
    from it ("CT" gets CT normalisation), so the user should state it.
    """

    input_dir: Path
    output: OutputConfig
    channel_name: str
    image_pattern: str = "{case}_image.nrrd"
    label_pattern: str = "{case}_label.nrrd"
    include: tuple[str, ...] = ()
    label_names: tuple[str, ...] | None = None
    label_map: LabelMap | None = None
    file_ending: str = ".nii.gz"
    resample_labels: bool = False


@dataclass(frozen=True)
class _Source:
    case: str
    image: Path
    label: Path


def convert_volume_pairs(config: VolumePairsConfig) -> ConversionResult:
    """Convert every matched pair, or raise one DatasetError listing every problem."""
    _check_config(config)
    check_target(config.output)
    labels = resolve_label_names(config.label_names,
                                 config.label_map.highest_label if config.label_map else 1)
    declared = frozenset(labels.values())
    problems = Problems()
    sources = _find_sources(config, problems)
    ids = unique_case_ids(source.case for source in sources)
    test = split_test_cases(ids, config.output.test_fraction, config.output.seed)
    with DatasetWriter(config.output, config.file_ending) as writer:
        for case, source in zip(ids, sources):
            loaded = _load_case(source, config, declared, problems)
            if loaded is not None and not problems:
                image, geometry, label = loaded
                writer.write_case(case, "Ts" if case in test else "Tr", image, geometry, label)
        problems.raise_if_any(str(config.input_dir))
        channels = {0: config.channel_name}
        spec = DatasetSpec(channels, labels, len(writer.cases["Tr"]), config.file_ending,
                           _description(config))
        folder = writer.publish(spec)
        return ConversionResult(folder, tuple(writer.cases["Tr"]), tuple(writer.cases["Ts"]),
                                channels, labels, config.file_ending)


def _check_config(config: VolumePairsConfig) -> None:
    if config.file_ending not in VOLUME_ENDINGS:
        raise DatasetError(f"--file-ending {config.file_ending!r} is not supported for volumes. "
                           f"Fix: use one of {', '.join(VOLUME_ENDINGS)}.")
    if not config.channel_name.strip():
        raise DatasetError("--channel-name is empty. Fix: name the modality, e.g. CT or T1.")
    for flag, pattern in (("--image-pattern", config.image_pattern),
                          ("--label-pattern", config.label_pattern)):
        name = pattern.rpartition("/")[2]
        if pattern.count(CASE) != 1 or CASE not in name:
            raise DatasetError(f"{flag} {pattern!r} must hold {CASE} once, in the file name. "
                               "Fix: e.g. \"{case}_image.nrrd\" or \"imagesTr/{case}.nii.gz\".")
    if not Path(config.input_dir).is_dir():
        raise DatasetError(f"{config.input_dir}: folder does not exist. Fix: check --input.")


def _find_sources(config: VolumePairsConfig, problems: Problems) -> list[_Source]:
    """Cases whose image file matches --image-pattern and whose id matches an --include glob."""
    folder_part, _, name_part = config.image_pattern.rpartition("/")
    folder = Path(config.input_dir) / folder_part
    regex = re.compile(re.escape(name_part).replace(re.escape(CASE), "(?P<case>.+)"))
    matched = [(m.group("case"), path) for path in sorted(folder.iterdir() if folder.is_dir() else ())
               if path.is_file() and (m := regex.fullmatch(path.name))]
    label_of = {case: Path(config.input_dir) / config.label_pattern.replace(CASE, case)
                for case, _ in matched}
    label_files = set(label_of.values())
    sources = []
    for case, image in matched:
        if image in label_files or (config.include and not any(fnmatch(case, g) for g in config.include)):
            continue
        if label_of[case].is_file():
            sources.append(_Source(case, image, label_of[case]))
        else:
            problems.add(image, f"has no label {label_of[case]}",
                         "add the label, or check --label-pattern (and --include)")
    if not sources and not problems:
        wanted = f" and --include {' '.join(config.include)}" if config.include else ""
        raise DatasetError(f"{folder}: no files match --image-pattern {config.image_pattern!r}{wanted}. "
                           "Fix: check --input, the patterns and --include.")
    return sources


def _load_case(source: _Source, config: VolumePairsConfig, declared: frozenset[int],
               problems: Problems) -> tuple[np.ndarray, Geometry, np.ndarray] | None:
    """Image (1, *spatial) with its geometry and the uint8 label on that grid; None on problems."""
    image = read_or_record(source.image, problems)
    if image is not None and image[0].shape[0] != 1:
        problems.add(source.image, f"has {image[0].shape[0]} channels; this converter takes one "
                     "per file", "split the channels into one file each, or convert them separately")
        image = None
    if image is not None and not check_image_content(image[0], source.image, problems):
        image = None
    label = read_or_record(source.label, problems)
    if label is not None and label[0].shape[0] != 1:
        problems.add(source.label, f"label has {label[0].shape[0]} channels",
                     "store the label as one map of integer class values")
        label = None
    if label is None:
        return None
    values = _map_values(label[0][0], source.label, config.label_map, declared, problems)
    if image is None or values is None:
        return None
    image_array, image_geometry = image
    on_grid = _onto_image_grid(values, label[1], image_geometry, source, config.resample_labels,
                               problems)
    return None if on_grid is None else (image_array, image_geometry, on_grid)


def _onto_image_grid(label: np.ndarray, label_geometry: Geometry, image_geometry: Geometry,
                     source: _Source, resample: bool, problems: Problems) -> np.ndarray | None:
    """The label unchanged when its grid matches the image's within tolerance, else resampled."""
    differences = label_geometry.mismatches(image_geometry)
    if not differences:
        return label
    if resample and label_geometry.ndim == image_geometry.ndim:
        return resample_label(label, label_geometry, image_geometry)
    problems.add(source.label, f"geometry differs from its image {source.image}: "
                 f"{'; '.join(differences)}", "fix the label's header, or pass --resample-labels to "
                 "resample it onto the image grid (nearest neighbour)")
    return None


def _map_values(label: np.ndarray, path: Path, label_map: LabelMap | None,
                declared: frozenset[int], problems: Problems) -> np.ndarray | None:
    try:
        return label_map.apply(label) if label_map is not None else check_declared(label, declared)
    except UnmappableValues as err:
        fix = ("list every raw value in --label-map" if label_map else
               "pass --labels with one name per value, or --label-map RAW:LABEL,... to renumber")
        problems.add(path, str(err), fix)
        return None


def _description(config: VolumePairsConfig) -> str:
    return describe_options("volumes", {
        "input": config.input_dir, "image_pattern": config.image_pattern,
        "label_pattern": config.label_pattern, "include": " ".join(config.include),
        "channel_name": config.channel_name, "labels": ",".join(config.label_names or ()),
        "label_map": config.label_map, "file_ending": config.file_ending,
        "resample_labels": config.resample_labels,
        "test_fraction": config.output.test_fraction or None,
        "seed": config.output.seed if config.output.test_fraction else None,
    })
