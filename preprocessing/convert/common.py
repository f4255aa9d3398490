"""What both converters share: collecting problems across all inputs, case ids, the Tr/Ts split,
label names, and the content checks that verify_dataset would otherwise fail on after writing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocessing.errors import DatasetError, ImageIOError
from preprocessing.geometry import Geometry
from preprocessing.integrity import Problem, channel_problems
from preprocessing.io import read_image

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Problems:
    """Every problem found in the inputs, so one run reports all of them instead of the first."""

    items: list[Problem] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, file: Path | str, problem: str, fix: str) -> None:
        self.items.append(Problem(Path(file), problem, fix))

    def add_io_error(self, err: ImageIOError) -> None:
        self.add(err.path, err.problem, err.fix)

    def raise_if_any(self, source: str) -> None:
        """One DatasetError with a line per problem (file: problem. Fix: fix)."""
        if self.items:
            lines = "\n".join(str(p) for p in self.items)
            raise DatasetError(f"cannot convert {source} ({len(self.items)} problem"
                               f"{'s' if len(self.items) != 1 else ''}; nothing was written):\n{lines}")


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion produced, for the command's summary and for tests."""

    dataset_folder: Path
    train_cases: tuple[str, ...]
    test_cases: tuple[str, ...]
    channel_names: dict[int, str]
    labels: dict[str, int]
    file_ending: str
    notes: tuple[str, ...] = ()


def sanitize_case_id(stem: str) -> str:
    """Keep letters, digits, '_' and '-' so the id is safe in file names and in CASE_0000 parsing."""
    return _UNSAFE.sub("_", stem) or "case"


def unique_case_ids(stems: Iterable[str]) -> list[str]:
    """Sanitised ids in input order; later duplicates get _2, _3, ... so no case overwrites another."""
    taken: set[str] = set()
    ids = []
    for stem in stems:
        base = sanitize_case_id(stem)
        case, n = base, 1
        while case in taken:
            n += 1
            case = f"{base}_{n}"
        taken.add(case)
        ids.append(case)
    return ids


def split_test_cases(case_ids: list[str], test_fraction: float, seed: int) -> set[str]:
    """The ids that go to the test split; depends only on the id set, the fraction and the seed."""
    return split_test_groups({case: case for case in case_ids}, test_fraction, seed)


def split_test_groups(groups: dict[str, str], test_fraction: float, seed: int) -> set[str]:
    """The ids that go to the test split when cases come in groups (several images of one
    lesion) that must not straddle Tr and Ts: whole groups are drawn, in a seeded permutation of
    the sorted group names, until the fraction of cases is reached; at least one case trains."""
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"test fraction {test_fraction} is out of range. Fix: use 0 <= F < 1.")
    members: dict[str, list[str]] = {}
    for case in sorted(groups):
        members.setdefault(groups[case], []).append(case)
    names = sorted(members)
    total = len(groups)
    target = min(int(round(test_fraction * total)), max(total - 1, 0))
    test: list[str] = []
    for index in np.random.default_rng(seed).permutation(len(names)):
        if len(test) >= target:
            break
        group = members[names[index]]
        if len(test) + len(group) <= max(total - 1, 0):  # keep at least one training case
            test.extend(group)
    return set(test)


def read_or_record(path: Path, problems: Problems) -> tuple[np.ndarray, Geometry] | None:
    """``read_image``, with an unreadable file recorded as a problem (None) instead of raised."""
    try:
        return read_image(path)
    except ImageIOError as err:
        problems.add_io_error(err)
        return None


def resolve_label_names(names: tuple[str, ...] | None, highest_label: int) -> dict[str, int]:
    """Label name -> index. Names come in index order; without names, background + foreground
    (one class) or background + class_1..class_K, K being the highest label a --label-map uses.
    """
    if names is None:
        if highest_label <= 1:
            return {"background": 0, "foreground": 1}
        return {"background": 0, **{f"class_{i}": i for i in range(1, highest_label + 1)}}
    cleaned = [n.strip() for n in names]
    if len(cleaned) < 2 or any(not n for n in cleaned):
        raise DatasetError(f"labels {list(names)} must name the background and at least one class, "
                           "none empty. Fix: e.g. --labels \"background,polyp\".")
    if len(cleaned) > 256:
        raise DatasetError(f"{len(cleaned)} labels do not fit uint8 label maps. Fix: use at most 256.")
    if len(set(cleaned)) != len(cleaned):
        raise DatasetError(f"labels {cleaned} repeat a name. Fix: give each class its own name.")
    if highest_label >= len(cleaned):
        raise DatasetError(f"--label-map uses label {highest_label} but --labels names only "
                           f"{len(cleaned)} (0..{len(cleaned) - 1}). Fix: name every label index.")
    return {name: index for index, name in enumerate(cleaned)}


def parse_name_list(text: str | None) -> tuple[str, ...] | None:
    """'background,polyp' -> ('background', 'polyp'); None stays None (use the default)."""
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(","))


def check_image_content(array: np.ndarray, path: Path, problems: Problems) -> bool:
    """Catch before writing what verify_dataset rejects after: empty, NaN/Inf or constant channels."""
    found = [pair for channel, values in enumerate(array) for pair in channel_problems(values, channel)]
    for problem, fix in found:
        problems.add(path, problem, fix)
    return not found


def describe_options(mode: str, options: dict[str, object]) -> str:
    """The dataset.json description: which command made it from what, with which options."""
    shown = ", ".join(f"{key}={value}" for key, value in options.items()
                      if value is not None and value is not False and value != "")
    return f"Converted by mucald_convert {mode} ({shown})."
