"""The registry of training methods: one ``MethodSpec`` per ``mucald_train --method`` name.

A spec says what a method is made of (its server-segment strategy, whether it adds CRDM and DACA,
whether its network is split and averaged) so that the server, the trainer and the CLI ask the
spec instead of branching on names. Adding a method is one new module that calls ``register``
plus its import in ``strategies/__init__.py``. The dict below is the only mutable module state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies.schedule import EVERY_STEP, Schedule

if TYPE_CHECKING:
    from mucald_unet.config import TrainingConfig
    from mucald_unet.federation.strategies.base import SegmentStrategy, StrategyContext

CRDM = "crdm"  # causal representation + diffusion at both split points (client side)
DACA = "daca"  # domain discriminators at the server


def _every_step(config: "TrainingConfig") -> Schedule:
    return EVERY_STEP


@dataclass(frozen=True)
class MethodSpec:
    """What one method is; the fields are the questions the training loop used to ask of an enum.

    ``options`` names the ``StrategyOptions`` fields the method reads: setting another method's
    option is refused, so two run folders never hold the same training under different names.
    """

    name: str
    summary: str  # one line: --help and docs/federation_methods.md
    strategy: Callable[["StrategyContext"], "SegmentStrategy"]
    components: frozenset[str] = frozenset()  # CRDM, DACA
    federated: bool = True  # server segments are aggregated at each round's end
    split: bool = True  # client and server exchange messages (False: local / centralized, no boundary)
    single_segment: bool = False  # one server segment and optimiser serve every client (centralized)
    schedule: Callable[["TrainingConfig"], Schedule] = field(default=_every_step)
    options: tuple[str, ...] = ()
    local_norms_conflict: str | None = None  # why --local-norms means nothing here (then refused)
    mixture: bool = False  # the server segment is a mixture of --fedem-components segments (FedEM)


_METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method; a second method of the same name is a bug and refused."""
    if spec.name in _METHODS:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    _METHODS[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    """The spec of ``name``; an unknown name lists the valid ones."""
    try:
        return _METHODS[str(name)]
    except KeyError:
        raise TrainingError(f"unknown method {str(name)!r}. Fix: use --method with one of "
                            f"{', '.join(method_names())}.") from None


def method_names() -> list[str]:
    """Every registered name, in registration order (mucald and the original baselines first)."""
    return list(_METHODS)
