"""Preprocessed cases on disk: ``CASE.npz`` (arrays) and ``CASE.json`` (properties).

The properties file is written last, so its presence with a matching config digest means the
case is complete; an interrupted run resumes by skipping exactly those cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from preprocessing.atomic import atomic_output, write_json_atomic
from preprocessing.case_preprocessing import CaseProperties, PreprocessedCase
from preprocessing.errors import DatasetError


def case_paths(folder: Path, case_id: str) -> tuple[Path, Path]:
    return Path(folder) / f"{case_id}.npz", Path(folder) / f"{case_id}.json"


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
    except (json.JSONDecodeError, OSError):
        return False
    return stored.get("config_digest") == config_digest and stored.get("source_stamp", "") == source_stamp


def load_case(folder: Path, case_id: str) -> PreprocessedCase:
    arrays_path, properties_path = case_paths(folder, case_id)
    if not (arrays_path.is_file() and properties_path.is_file()):
        raise DatasetError(f"{arrays_path}: preprocessed case is missing. Fix: run "
                           "mucald_plan_and_preprocess for this dataset.")
    properties = CaseProperties.from_dict(json.loads(properties_path.read_text(encoding="utf-8")))
    with np.load(arrays_path) as data:
        foreground = {int(k.split("_", 1)[1]): data[k] for k in data.files if k.startswith("foreground_")}
        label = data["label"] if "label" in data.files else None
        return PreprocessedCase(data["images"], label, foreground, properties)
