"""Finding a federation's plans from the dataset ids a user types (``-d 1 2 3``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from planners.errors import PlanError
from planners.plans import PLANS_FILE, load_plans

_ID = re.compile(r"^(?:Dataset)?(\d{1,3})(?:_.*)?$")


def dataset_number(reference: str) -> int:
    """``3``, ``003`` or ``Dataset003_Name`` -> 3."""
    match = _ID.match(str(reference))
    if not match:
        raise PlanError(f"{reference!r} is not a dataset id. Fix: pass ids like 1 or 003, or names like "
                        "Dataset001_Name.")
    return int(match.group(1))


def plan_command(references: Sequence[str], preprocessed_root: Path) -> str:
    ids = " ".join(str(dataset_number(r)) for r in references)
    return f"mucald_plan_and_preprocess -d {ids} --preprocessed {preprocessed_root}"


def find_plans(preprocessed_root: Path, references: Sequence[str]) -> Path:
    """The plans of ``Federation_<ids>``, else of any federation that holds all the datasets."""
    numbers = sorted({dataset_number(r) for r in references})
    root = Path(preprocessed_root)
    exact = root / ("Federation_" + "_".join(f"{n:03d}" for n in numbers)) / PLANS_FILE
    if exact.is_file():
        return exact
    for candidate in sorted(root.glob(f"Federation_*/{PLANS_FILE}")):
        held = {dataset_number(name) for name in load_plans(candidate).clients}
        if set(numbers) <= held:
            return candidate
    raise PlanError(f"{root}: no plans for datasets {', '.join(map(str, numbers))}. Fix: run "
                    f"{plan_command(references, root)}")


def client_names(plans_path: Path, references: Sequence[str]) -> list[str]:
    """The plan's dataset names for the user's references, in the order given."""
    plans = load_plans(plans_path)
    by_number = {dataset_number(name): name for name in plans.clients}
    names = []
    for reference in references:
        number = dataset_number(reference)
        if number not in by_number:
            raise PlanError(f"{plans_path}: dataset {reference} is not in this plan (it has "
                            f"{', '.join(plans.clients)}). Fix: plan it together with the others.")
        names.append(by_number[number])
    return names
