"""Federation methods as small objects: a registry of ``MethodSpec`` (``mucald_train --method``)
and, per method, the strategy that decides what the server segment shares, adds and keeps.

Importing this package registers the built-in methods, in the order ``--help`` lists them.
"""

from mucald_unet.federation.strategies.base import (SegmentSlot, SegmentStrategy, StrategyContext, canonical_names,
                                                    is_norm_key)
from mucald_unet.federation.strategies.registry import (CRDM, DACA, MethodSpec, method_names, method_spec,
                                                        register)
from mucald_unet.federation.strategies.schedule import EVERY_STEP, Phase, Schedule
from mucald_unet.federation.strategies import (mucald, splitfed, local, centralized,  # noqa: F401, E402
                                               fedprox, fedbn, fedper, fedrep, scaffold, ditto, mocha, fedem)

__all__ = ["CRDM", "DACA", "EVERY_STEP", "MethodSpec", "Phase", "Schedule", "SegmentSlot", "SegmentStrategy",
           "StrategyContext", "canonical_names", "is_norm_key", "method_names", "method_spec", "register"]
