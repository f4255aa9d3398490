"""``dataset.json`` of the nnU-Net v2 raw layout, validated into a dataclass.

Validation collects every problem with the file rather than stopping at the first, so the
integrity check can report them all together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from preprocessing.atomic import write_json_atomic
from preprocessing.errors import DatasetError
from preprocessing.io import SUPPORTED_ENDINGS

DATASET_JSON = "dataset.json"
REQUIRED_FIELDS = ("channel_names", "labels", "numTraining", "file_ending")


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset declares: channels (index -> name), labels (name -> value), file ending."""

    channel_names: dict[int, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str
    description: str = ""

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_values(self) -> frozenset[int]:
        return frozenset(self.labels.values())

    @property
    def foreground_labels(self) -> dict[str, int]:
        return {name: value for name, value in self.labels.items() if value != 0}

    def to_dict(self) -> dict:
        data = {
            "channel_names": {str(i): name for i, name in sorted(self.channel_names.items())},
            "labels": dict(self.labels),
            "numTraining": self.num_training,
            "file_ending": self.file_ending,
        }
        if self.description:
            data["description"] = self.description
        return data

    def save(self, dataset_folder: Path) -> None:
        write_json_atomic(Path(dataset_folder) / DATASET_JSON, self.to_dict())


def load_dataset_spec(dataset_folder: Path) -> DatasetSpec:
    """Read and validate ``dataset.json``; DatasetError lists every problem with the file."""
    path = Path(dataset_folder) / DATASET_JSON
    data = _read_json(path)
    problems = validate_dataset_json(data)
    if problems:
        raise DatasetError("\n".join(f"{path}: {p}" for p in problems))
    return DatasetSpec(
        channel_names={int(k): str(v) for k, v in data["channel_names"].items()},
        labels={str(k): int(v) for k, v in data["labels"].items()},
        num_training=int(data["numTraining"]),
        file_ending=str(data["file_ending"]),
        description=str(data.get("description", "")),
    )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: missing. Fix: create dataset.json with "
                           f"{', '.join(REQUIRED_FIELDS)} (see the README's dataset layout).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err}). Fix: correct the syntax.") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: must hold a JSON object. Fix: see the README's dataset layout.")
    return data


def validate_dataset_json(data: dict) -> list[str]:
    """Problems with a parsed dataset.json, each phrased as 'what is wrong. Fix: what to do'."""
    problems = [f"required field '{name}' is missing. Fix: add it (see the README's dataset layout)."
                for name in REQUIRED_FIELDS if name not in data]
    if "channel_names" in data:
        problems += _check_channels(data["channel_names"])
    if "labels" in data:
        problems += _check_labels(data["labels"])
    num = data.get("numTraining")
    if "numTraining" in data and (not isinstance(num, int) or isinstance(num, bool) or num < 0):
        problems.append(f"'numTraining' is {num!r}. Fix: set it to the number of training cases.")
    ending = data.get("file_ending")
    if "file_ending" in data and ending not in SUPPORTED_ENDINGS:
        problems.append(f"'file_ending' {ending!r} is not supported. Fix: use one of "
                        f"{', '.join(SUPPORTED_ENDINGS)}.")
    return problems


def _check_channels(channels: object) -> list[str]:
    if not isinstance(channels, dict) or not channels:
        return ["'channel_names' must map channel index to name, e.g. {\"0\": \"CT\"}. Fix: add them."]
    keys = sorted(channels)
    if not all(str(k).isdigit() for k in keys) or sorted(int(k) for k in keys) != list(range(len(keys))):
        return [f"'channel_names' keys {keys} must be 0, 1, 2, ... Fix: number the channels from 0."]
    return []


def _check_labels(labels: object) -> list[str]:
    if not isinstance(labels, dict) or not labels:
        return ["'labels' must map label name to integer value, e.g. {\"background\": 0, "
                "\"lesion\": 1}. Fix: add them."]
    bad = {k: v for k, v in labels.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0}
    if bad:
        return [f"'labels' values {bad} must be non-negative integers (region-based labels are not "
                "supported). Fix: give each class one integer value."]
    values = sorted(labels.values())
    problems = []
    if 0 not in values:
        problems.append("'labels' has no background with value 0. Fix: add \"background\": 0.")
    if len(set(values)) != len(values):
        problems.append(f"'labels' values {values} repeat. Fix: give each class its own value.")
    elif values != list(range(len(values))):
        problems.append(f"'labels' values {values} must be consecutive from 0. Fix: renumber them.")
    return problems
