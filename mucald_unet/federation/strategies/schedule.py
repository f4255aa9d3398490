"""Which party takes its optimiser step at each step of a round.

Most methods train both sides at every step. FedRep alternates: first the personal parts, then
the shared ones. The schedule is a pure function of the run's settings and the step, so the
client and the server each compute it and no message has to carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Phase:
    """Gradients still flow both ways in every phase (the server needs the split-2 gradient); a
    side that does not train skips its optimiser step."""

    client: bool = True  # FE, BE (and CRDMs) step
    server: bool = True  # the server segment steps


class Schedule(Protocol):
    def phase(self, step: int) -> Phase: ...


@dataclass(frozen=True)
class EveryStep:
    def phase(self, step: int) -> Phase:
        return Phase()


EVERY_STEP = EveryStep()


@dataclass(frozen=True)
class PersonalThenShared:
    """Steps ``0 .. personal_steps - 1`` of each round train only the client's parts, the rest only
    the server segment (FedRep's head-then-body schedule)."""

    personal_steps: int

    def phase(self, step: int) -> Phase:
        personal = step < self.personal_steps
        return Phase(client=personal, server=not personal)


def split_steps(steps: int, fraction: float) -> int:
    """How many of a round's ``steps`` the first phase gets: ``round(fraction x steps)``, kept to
    at least one step for each phase when the round has two or more."""
    if steps < 2:
        return steps
    return min(steps - 1, max(1, round(fraction * steps)))
