"""Preprocessed cases on disk: uncompressed ``.npy`` arrays that training memory-maps, and a
``CASE.json`` written last that marks the case complete.

A case ``CASE`` is these files (``case_paths``):

* ``CASE.npy``: the images, float32 (C, *spatial);
* ``CASE_seg.npy``: the label map (*spatial), uint8 or int16 (labelled cases only);
* ``CASE_fg.npy``: the stored foreground voxels of every class, int32 (n, ndim), one block per
  label value in ascending order (labelled cases only);
* ``CASE.json``: the ``CaseProperties``, plus a ``case_store`` record (format, whether the case is
  labelled, and which rows of ``CASE_fg.npy`` hold which class).

Why this layout: ``np.load(path, mmap_mode="r")`` maps a plain ``.npy`` file, so a training
process reads only the pages its patches touch and those pages are the OS's reclaimable file
cache, not the process's own memory; memory no longer grows with the number of cases (nnU-Net
does the same). ``.npz`` members cannot be mapped (and compressed ones must be inflated whole).
Each array gets its own file because one ``.npy`` holds one array; the foreground coordinates
share one file (with the row ranges in the json) so that the set of files a case has does not
depend on its classes, and can be checked from the json alone.

Every file is written atomically (temp then rename) and the json last, after the previous json
of the case is deleted, so a case is either complete or visibly half a case. Cases written by an
older mucald (``CASE.npz``) count as orphans; replanning removes them and remakes the cases.
Readers that know what the plan expects (``ExpectedCases``) refuse stale cases and half-written
or orphaned files.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from preprocessing.atomic import atomic_output, write_json_atomic
from preprocessing.case_preprocessing import CaseProperties, PreprocessedCase
from preprocessing.errors import DatasetError

IMAGES_SUFFIX, LABEL_SUFFIX, FOREGROUND_SUFFIX, PROPERTIES_SUFFIX = ".npy", "_seg.npy", "_fg.npy", ".json"
LEGACY_ARRAYS_SUFFIX = ".npz"  # one compressed archive per case, written before STORE_FORMAT 2
STORE_FORMAT = 2
STORE_KEY = "case_store"  # the json's record of the case's files (the rest is CaseProperties)
_LOAD_FIX = "mucald_plan_and_preprocess for this dataset"


@dataclass(frozen=True)
class ExpectedCases:
    """What a plan says one folder of preprocessed cases must hold, and how to remake it."""

    config_digest: str  # ``CasePreprocessingConfig.digest()`` of the plan's settings
    case_ids: frozenset[str] | None  # the planned cases; None when the plan cannot say
    fix: str  # the command that remakes the folder


class CasePaths(NamedTuple):
    images: Path
    label: Path
    foreground: Path
    properties: Path

    def arrays(self, labelled: bool) -> tuple[Path, ...]:
        """The array files a case has: images, and label and foreground when it is labelled."""
        return (self.images, self.label, self.foreground) if labelled else (self.images,)


def case_paths(folder: Path, case_id: str) -> CasePaths:
    folder = Path(folder)
    return CasePaths(*(folder / f"{case_id}{suffix}"
                       for suffix in (IMAGES_SUFFIX, LABEL_SUFFIX, FOREGROUND_SUFFIX, PROPERTIES_SUFFIX)))


@dataclass(frozen=True)
class _Record:
    """What a case's json says about its files; ``problem`` is set when it is not a usable record."""

    labelled: bool = False
    foreground: dict[int, tuple[int, int]] | None = None  # label value -> rows [start, stop)
    problem: str = ""
    data: dict | None = None  # the whole json


def _read_record(path: Path) -> _Record:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return _Record(problem="is not a readable case record (half-written or edited)")
    if not isinstance(data, dict):
        return _Record(problem="is not a case record")
    store = data.get(STORE_KEY)
    if not isinstance(store, dict) or store.get("format") != STORE_FORMAT:
        if "case_id" in data and (store is None or isinstance(store, dict)):
            return _Record(problem=f"was made by an older mucald (arrays in {LEGACY_ARRAYS_SUFFIX}, not "
                                   f"memory-mappable {IMAGES_SUFFIX})")
        return _Record(problem="is not a case record")
    try:
        labelled = bool(store["labelled"])
        ranges = {int(k): (int(v[0]), int(v[1])) for k, v in dict(store.get("foreground", {})).items()}
    except (KeyError, TypeError, ValueError, IndexError):
        return _Record(problem="is not a readable case record (half-written or edited)")
    return _Record(labelled, ranges, data=data)


def _owner(name: str) -> str:
    """The case id a case file's name points to (``a_seg.npy`` -> ``a``)."""
    for suffix in (LABEL_SUFFIX, FOREGROUND_SUFFIX, IMAGES_SUFFIX, LEGACY_ARRAYS_SUFFIX, PROPERTIES_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_orphans(folder: Path, case_ids: Collection[str] | None) -> list[tuple[Path, str]]:
    """Case files that are not part of a finished planned case: (path, why), sorted by path.

    A json whose arrays are not all there, or arrays without their json, are half a case; a
    ``.npz`` or a json without a ``case_store`` record was made by an older mucald; with
    ``case_ids`` given, a case whose id is not among them was left by an earlier dataset version.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file()
                   and p.name.endswith((IMAGES_SUFFIX, LEGACY_ARRAYS_SUFFIX, PROPERTIES_SUFFIX)))
    present = {p.name for p in files}
    orphans: dict[Path, str] = {}
    claimed: set[str] = set()  # files of complete, current case records
    for path in (p for p in files if p.suffix == PROPERTIES_SUFFIX):
        case_id, record = path.stem, _read_record(path)
        if record.problem:
            orphans[path] = record.problem
            continue
        arrays = case_paths(folder, case_id).arrays(record.labelled)
        missing = [p.name for p in arrays if p.name not in present]
        if case_ids is not None and case_id not in case_ids:
            why = "is not a training case of the dataset any more"
        elif missing:
            why = f"belongs to case {case_id}, whose {missing[0]} is missing (half a case)"
        else:
            claimed.update(p.name for p in (path, *arrays))
            continue
        orphans.update({p: why for p in (path, *arrays) if p.name in present})
    for path in files:
        if path in orphans or path.name in claimed:
            continue
        owner = _owner(path.name)
        if path.suffix == LEGACY_ARRAYS_SUFFIX:
            orphans[path] = (f"was made by an older mucald (compressed arrays; cases are now "
                             f"memory-mappable {IMAGES_SUFFIX} files)")
        elif case_ids is not None and owner not in case_ids and path.stem not in case_ids:
            orphans[path] = "is not a training case of the dataset any more"
        elif f"{owner}{PROPERTIES_SUFFIX}" in present and (folder / f"{owner}{PROPERTIES_SUFFIX}") not in orphans:
            orphans[path] = f"is not one of the files that {owner}{PROPERTIES_SUFFIX} lists"
        elif path.suffix == IMAGES_SUFFIX:
            orphans[path] = f"has no complete {owner}{PROPERTIES_SUFFIX} beside it (half a case)"
    return sorted(orphans.items())


def remove_orphans(folder: Path, case_ids: Collection[str]) -> list[Path]:
    """Delete what ``find_orphans`` reports; returns the deleted paths."""
    removed = []
    for path, _why in find_orphans(folder, case_ids):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def stored_case_ids(folder: Path) -> list[str]:
    """Ids of the cases in ``folder`` whose json is a current record and whose arrays are all there."""
    folder = Path(folder)
    ids = []
    for path in sorted(folder.glob(f"*{PROPERTIES_SUFFIX}")):
        record = _read_record(path)
        if not record.problem and all(p.is_file() for p in case_paths(folder, path.stem).arrays(record.labelled)):
            ids.append(path.stem)
    return ids


def check_folder(folder: Path, expected: ExpectedCases) -> None:
    """Refuse a folder holding orphaned case files (see ``find_orphans``) or lacking planned cases."""
    orphans = find_orphans(folder, expected.case_ids)
    if orphans:
        path, why = orphans[0]
        more = f" ({len(orphans) - 1} more such files)" if len(orphans) > 1 else ""
        raise DatasetError(f"{path}: {why}{more}. Fix: rerun {expected.fix}")
    missing = sorted(i for i in expected.case_ids or () if not case_paths(folder, i).properties.is_file())
    if missing:  # preprocessing was interrupted: training on the rest would silently drop cases
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(f"{folder}: {len(missing)} planned case(s) are not preprocessed ({shown}). "
                           f"Fix: rerun {expected.fix}")


def check_case(folder: Path, case_id: str, expected: ExpectedCases) -> None:
    """Refuse a case that is incomplete, not planned, or made with other settings than the plan's."""
    paths = case_paths(folder, case_id)
    if not paths.properties.is_file():
        raise DatasetError(f"{paths.properties}: preprocessed case file is missing. Fix: rerun {expected.fix}")
    record = _read_record(paths.properties)
    if record.problem:
        raise DatasetError(f"{paths.properties}: {record.problem}. Fix: rerun {expected.fix}")
    for path in paths.arrays(record.labelled):
        if not path.is_file():
            raise DatasetError(f"{path}: preprocessed case file is missing. Fix: rerun {expected.fix}")
    if expected.case_ids is not None and case_id not in expected.case_ids:
        raise DatasetError(f"{paths.properties}: case {case_id} is not a training case of the plan. "
                           f"Fix: rerun {expected.fix}")
    stored = _read_properties(paths.properties, expected.fix).get("config_digest")
    if stored is None:
        raise DatasetError(f"{paths.properties}: case was preprocessed by an older version that recorded no "
                           f"settings digest, so it may not match the plan. Fix: rerun {expected.fix}")
    if stored != expected.config_digest:
        raise DatasetError(f"{paths.properties}: case was preprocessed with other settings than the plan's "
                           f"(digest {stored}, plan {expected.config_digest}). Fix: rerun {expected.fix}")


def save_case(folder: Path, case: PreprocessedCase) -> None:
    """Write the case's arrays, then its json; an existing json goes first, so that a crash
    part-way never leaves new arrays beside an old completion marker."""
    paths = case_paths(folder, case.properties.case_id)
    paths.properties.unlink(missing_ok=True)
    labelled = case.label is not None
    stale = [p for p in paths if p not in paths.arrays(labelled) and p != paths.properties]
    for path in (*stale, paths.images.with_suffix(LEGACY_ARRAYS_SUFFIX)):
        path.unlink(missing_ok=True)
    _save_array(paths.images, np.asarray(case.images))
    record: dict = {"format": STORE_FORMAT, "labelled": labelled}
    if labelled:
        blocks, ranges, start = [], {}, 0
        for value in sorted(case.foreground):
            coords = np.asarray(case.foreground[value], dtype=np.int32).reshape(-1, case.label.ndim)
            blocks.append(coords)
            ranges[str(value)] = [start, start + len(coords)]
            start += len(coords)
        coords = np.concatenate(blocks) if blocks else np.zeros((0, case.label.ndim), np.int32)
        _save_array(paths.label, np.asarray(case.label))
        _save_array(paths.foreground, coords)
        record["foreground"] = ranges
    write_json_atomic(paths.properties, {**case.properties.to_dict(), STORE_KEY: record})


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as stream:  # a file object: np.save names nothing
        np.save(stream, np.ascontiguousarray(array), allow_pickle=False)


def is_complete(folder: Path, case_id: str, config_digest: str, source_stamp: str = "") -> bool:
    """True when the case was finished, in the current format, with the same settings from the
    same raw files."""
    paths = case_paths(folder, case_id)
    if not paths.properties.is_file():
        return False
    record = _read_record(paths.properties)
    if record.problem or not all(p.is_file() for p in paths.arrays(record.labelled)):
        return False
    return (record.data.get("config_digest") == config_digest
            and record.data.get("source_stamp", "") == source_stamp)


def load_case(folder: Path, case_id: str, mmap: bool = False) -> PreprocessedCase:
    """The stored case; with ``mmap`` its arrays are read-only memory maps of the files (pages
    are read when touched), otherwise arrays in memory."""
    paths = case_paths(folder, case_id)
    if not paths.properties.is_file() or not paths.images.is_file():
        raise DatasetError(f"{paths.images}: preprocessed case is missing. Fix: run {_LOAD_FIX}.")
    record = _read_record(paths.properties)
    if record.problem:
        raise DatasetError(f"{paths.properties}: {record.problem}. Fix: rerun {_LOAD_FIX}")
    try:
        properties = CaseProperties.from_dict(_read_properties(paths.properties, _LOAD_FIX))
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{paths.properties}: properties are incomplete ({error!r}). Fix: rerun "
                           f"{_LOAD_FIX}") from None
    images = _load_array(paths.images, mmap)
    if not record.labelled:
        return PreprocessedCase(images, None, {}, properties)
    label, coords = _load_array(paths.label, mmap), _load_array(paths.foreground, mmap)
    if any(not 0 <= start <= stop <= len(coords) for start, stop in record.foreground.values()):
        raise DatasetError(f"{paths.properties}: foreground rows do not fit {paths.foreground.name} "
                           f"({len(coords)} rows). Fix: rerun {_LOAD_FIX}")
    foreground = {value: coords[start:stop] for value, (start, stop) in sorted(record.foreground.items())}
    return PreprocessedCase(images, label, foreground, properties)


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: preprocessed case file is missing. Fix: rerun {_LOAD_FIX}") from None
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable array file ({error}). Fix: rerun {_LOAD_FIX}") from None


def _read_properties(path: Path, fix: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not readable JSON ({error.__class__.__name__}). Fix: rerun {fix}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a case properties record. Fix: rerun {fix}")
    return data
