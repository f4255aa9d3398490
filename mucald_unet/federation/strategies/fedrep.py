"""FedRep (Collins et al., 2021): a shared representation, a personal head, trained in turn.

In a multi-task split federation the head is the client's BE (the classifier to its own classes)
and the client's FE is personal by construction; the whole server segment is the shared body,
so on the server side nothing is personal and the head is empty. Each round first trains only
the personal parts (FE, BE: the server segment does not step), then only the shared body (the
server segment steps, FE and BE do not); ``--fedrep-head-fraction`` of the round's steps go to
the first phase (default 0.5; the FedRep paper ran 10 head epochs per body epoch). Gradients flow
through both sides in both phases. The body is averaged by FedAvg; no proximal term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mucald_unet.federation.strategies.fedavg import FedAvg
from mucald_unet.federation.strategies.registry import MethodSpec, register
from mucald_unet.federation.strategies.schedule import PersonalThenShared, split_steps

if TYPE_CHECKING:
    from mucald_unet.config import TrainingConfig


class FedRep(FedAvg):
    """The server side of FedRep is FedAvg of the body; the alternation is ``head_then_body``."""


def head_then_body(config: "TrainingConfig") -> PersonalThenShared:
    return PersonalThenShared(split_steps(config.iterations_per_round, config.strategy.fedrep_head_fraction))


register(MethodSpec("fedrep", "shared SS body, personal ends; each round trains the ends, then the body "
                    "(--fedrep-head-fraction)", FedRep, schedule=head_then_body, options=("fedrep_head_fraction",)))
