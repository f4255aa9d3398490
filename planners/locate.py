"""Finding a federation's plans from the dataset ids a user types (``-d 1 2 3``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from planners.errors import PlanError
from planners.plans import PLANS_FILE, SHARED_PLAN_FILE, load_plans, load_shared_plan

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


def federation_folder_name(numbers: Sequence[int]) -> str:
    """``Federation_001_002_003`` for datasets 1, 2 and 3 (any order)."""
    return "Federation_" + "_".join(f"{n:03d}" for n in sorted(set(numbers)))


def planned_federations(preprocessed_root: Path) -> dict[Path, set[int]]:
    """Every plans file under the root and the dataset numbers it holds."""
    return {path: {dataset_number(name) for name in load_plans(path).clients}
            for path in sorted(Path(preprocessed_root).glob(f"Federation_*/{PLANS_FILE}"))}


def find_plans(preprocessed_root: Path, references: Sequence[str],
               federation: Sequence[str] | None = None) -> Path:
    """The plans of exactly ``Federation_<ids>``: of ``federation`` when given, else of ``references``.

    Never a different federation that happens to hold the datasets: its shared topology was
    sized for other clients, so training there must be asked for (``--federation``). At a server of
    a federation planned site by site, its ``federation.json``.
    """
    root = Path(preprocessed_root)
    numbers = sorted({dataset_number(r) for r in references})
    wanted = sorted({dataset_number(r) for r in federation}) if federation else numbers
    folder = root / federation_folder_name(wanted)
    path = folder / PLANS_FILE
    if not path.is_file() and (folder / SHARED_PLAN_FILE).is_file():
        path = folder / SHARED_PLAN_FILE
    if not path.is_file():
        raise PlanError(_missing_plans_message(root, numbers, wanted, references))
    if not set(numbers) <= set(wanted):
        raise PlanError(f"{path}: datasets {', '.join(map(str, sorted(set(numbers) - set(wanted))))} are not in "
                        f"this federation ({', '.join(map(str, wanted))}). Fix: pick clients of it with -d, or "
                        "another --federation.")
    return path


def find_client_plans(preprocessed_root: Path, references: Sequence[str],
                      federation: Sequence[str] | None = None) -> Path:
    """The plans that trained these clients (predict, export, audit): ``federation`` when given,
    else the one federation holding them all.

    Unlike training, nothing is sized here: the clients' models already live in one plan. When
    several plans hold them the choice is the user's, so the error lists them.
    """
    if federation:
        return find_plans(preprocessed_root, references, federation)
    numbers = {dataset_number(r) for r in references}
    found = planned_federations(preprocessed_root)
    holding = [path for path, held in found.items() if numbers <= held]
    if len(holding) == 1:
        return holding[0]
    if not holding:
        raise PlanError(_missing_plans_message(Path(preprocessed_root), sorted(numbers), sorted(numbers), references))
    listed = ", ".join(path.parent.name for path in holding)
    example = " ".join(str(n) for n in sorted(found[holding[0]]))
    raise PlanError(f"{preprocessed_root}: datasets {', '.join(map(str, sorted(numbers)))} are in several "
                    f"federations ({listed}). Fix: choose one with --federation IDS, e.g. --federation {example}.")


def _missing_plans_message(root: Path, numbers: Sequence[int], wanted: Sequence[int],
                           references: Sequence[str]) -> str:
    found = planned_federations(root)
    listed = "; ".join(f"{path.parent.name} (datasets {', '.join(map(str, sorted(held)))})"
                       for path, held in found.items()) or "none"
    fixes = [f"pass --federation {' '.join(map(str, sorted(held)))} to use the plan that holds them"
             for held in found.values() if set(numbers) <= held][:1]
    fixes.append(f"run {plan_command(references, root)}")
    return f"{root}: no {federation_folder_name(wanted)} (federations found: {listed}). Fix: {', or '.join(fixes)}."


def client_names(plans_path: Path, references: Sequence[str]) -> list[str]:
    """The plan's dataset names for the user's references, in the order given."""
    planned = load_shared_plan(plans_path).clients
    by_number = {dataset_number(name): name for name in planned}
    names = []
    for reference in references:
        number = dataset_number(reference)
        if number not in by_number:
            raise PlanError(f"{plans_path}: dataset {reference} is not in this plan (it has "
                            f"{', '.join(planned)}). Fix: plan it together with the others.")
        names.append(by_number[number])
    return names
