"""Preprocessed cases on disk: ``CASE.npz`` (arrays) and ``CASE.json`` (properties).

The properties file is written last, so its presence with a matching config digest means the
case is complete; an interrupted run resumes by skipping exactly those cases. Readers that know
what the plan expects (``ExpectedCases``) refuse stale cases and half-written or orphaned files.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocessing.atomic import atomic_output, write_json_atomic
from preprocessing.case_preprocessing import CaseProperties, PreprocessedCase
from preprocessing.errors import DatasetError


ARRAYS_SUFFIX, PROPERTIES_SUFFIX = ".npz", ".json"
_LOAD_FIX = "mucald_plan_and_preprocess for this dataset"


@dataclass(frozen=True)
class ExpectedCases:
    """What a plan says one folder of preprocessed cases must hold, and how to remake it."""

    config_digest: str  # ``CasePreprocessingConfig.digest()`` of the plan's settings
    case_ids: frozenset[str] | None  # the planned cases; None when the plan cannot say
    fix: str  # the command that remakes the folder


def case_paths(folder: Path, case_id: str) -> tuple[Path, Path]:
    return Path(folder) / f"{case_id}{ARRAYS_SUFFIX}", Path(folder) / f"{case_id}{PROPERTIES_SUFFIX}"


def find_orphans(folder: Path, case_ids: Collection[str] | None) -> list[tuple[Path, str]]:
    """Case files that are not a finished planned case: (path, why), sorted by path.

    A ``.npz`` without its ``.json`` (or the reverse) is half a case; with ``case_ids`` given, a
    case whose id is not among them was left by an earlier version of the dataset.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix in (ARRAYS_SUFFIX, PROPERTIES_SUFFIX))
    stems = {(p.stem, p.suffix) for p in files}
    orphans = []
    for path in files:
        partner = PROPERTIES_SUFFIX if path.suffix == ARRAYS_SUFFIX else ARRAYS_SUFFIX
        if case_ids is not None and path.stem not in case_ids:
            orphans.append((path, "is not a training case of the dataset any more"))
        elif (path.stem, partner) not in stems:
            orphans.append((path, f"has no {path.stem}{partner} beside it (half a case)"))
    return orphans


def remove_orphans(folder: Path, case_ids: Collection[str]) -> list[Path]:
    """Delete what ``find_orphans`` reports; returns the deleted paths."""
    removed = []
    for path, _why in find_orphans(folder, case_ids):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def check_folder(folder: Path, expected: ExpectedCases) -> None:
    """Refuse a folder holding orphaned case files (see ``find_orphans``) or lacking planned cases."""
    orphans = find_orphans(folder, expected.case_ids)
    if orphans:
        path, why = orphans[0]
        more = f" ({len(orphans) - 1} more such files)" if len(orphans) > 1 else ""
        raise DatasetError(f"{path}: {why}{more}. Fix: rerun {expected.fix}")
    missing = sorted(i for i in expected.case_ids or () if not case_paths(folder, i)[1].is_file())
    if missing:  # preprocessing was interrupted: training on the rest would silently drop cases
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DatasetError(f"{folder}: {len(missing)} planned case(s) are not preprocessed ({shown}). "
                           f"Fix: rerun {expected.fix}")


def check_case(folder: Path, case_id: str, expected: ExpectedCases) -> None:
    """Refuse a case that is incomplete, not planned, or made with other settings than the plan's."""
    arrays_path, properties_path = case_paths(folder, case_id)
    for path in (arrays_path, properties_path):
        if not path.is_file():
            raise DatasetError(f"{path}: preprocessed case file is missing. Fix: rerun {expected.fix}")
    if expected.case_ids is not None and case_id not in expected.case_ids:
        raise DatasetError(f"{properties_path}: case {case_id} is not a training case of the plan. "
                           f"Fix: rerun {expected.fix}")
    stored = _read_properties(properties_path, expected.fix).get("config_digest")
    if stored is None:
        raise DatasetError(f"{properties_path}: case was preprocessed by an older version that recorded no "
                           f"settings digest, so it may not match the plan. Fix: rerun {expected.fix}")
    if stored != expected.config_digest:
        raise DatasetError(f"{properties_path}: case was preprocessed with other settings than the plan's "
                           f"(digest {stored}, plan {expected.config_digest}). Fix: rerun {expected.fix}")


def save_case(folder: Path, case: PreprocessedCase) -> None:
    arrays_path, properties_path = case_paths(folder, case.properties.case_id)
    arrays = {"images": case.images}
    if case.label is not None:
        arrays["label"] = case.label
    arrays.update({f"foreground_{value}": coords for value, coords in case.foreground.items()})
    with atomic_output(arrays_path) as tmp:
        with open(tmp, "wb") as stream:
            np.savez_compressed(stream, **arrays)
    write_json_atomic(properties_path, case.properties.to_dict())


def is_complete(folder: Path, case_id: str, config_digest: str, source_stamp: str = "") -> bool:
    """True when the case was finished with the same settings from the same raw files."""
    arrays_path, properties_path = case_paths(folder, case_id)
    if not (arrays_path.is_file() and properties_path.is_file()):
        return False
    try:
        stored = json.loads(properties_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return (isinstance(stored, dict) and stored.get("config_digest") == config_digest
            and stored.get("source_stamp", "") == source_stamp)


def load_case(folder: Path, case_id: str) -> PreprocessedCase:
    arrays_path, properties_path = case_paths(folder, case_id)
    if not (arrays_path.is_file() and properties_path.is_file()):
        raise DatasetError(f"{arrays_path}: preprocessed case is missing. Fix: run "
                           "mucald_plan_and_preprocess for this dataset.")
    try:
        properties = CaseProperties.from_dict(_read_properties(properties_path, _LOAD_FIX))
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{properties_path}: properties are incomplete ({error!r}). Fix: rerun "
                           f"{_LOAD_FIX}") from None
    with np.load(arrays_path) as data:
        foreground = {int(k.split("_", 1)[1]): data[k] for k in data.files if k.startswith("foreground_")}
        label = data["label"] if "label" in data.files else None
        return PreprocessedCase(data["images"], label, foreground, properties)


def _read_properties(path: Path, fix: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not readable JSON ({error.__class__.__name__}). Fix: rerun {fix}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a case properties record. Fix: rerun {fix}")
    return data
