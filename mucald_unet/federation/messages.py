"""What crosses the client/server boundary: typed messages and the manifest that records them.

A message carries tensors (features, gradients, weights) and a few named scalars (round-end
report); never an image, a label or a proxy. The manifest is the audit trail: one entry per
message with its direction, kind, shapes, dtypes and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from torch import Tensor

VALIDATION_STEP = -1  # the step number of messages sent while validating


def coarse_name(scale: int) -> str:
    """The tensor key of deep supervision's ``scale``-th coarser split-2 map (0: half the split-2
    resolution) in the server's reply, and of its gradient in the client's."""
    return f"coarse{scale}"


class Direction(str, Enum):
    TO_SERVER = "client->server"
    TO_CLIENT = "server->client"


class Kind(str, Enum):
    FEATURES = "features"  # activations at a split point
    GRADIENT = "gradient"  # d loss / d activations at a split point
    WEIGHTS = "weights"  # state of shared modules, once per round
    REPORT = "report"  # round-end scalars for aggregation (sample count, proxy error, val loss)
    ACK = "ack"  # empty reply
    ERROR = "error"  # the server refused the request; ``detail`` says what and why


@dataclass(frozen=True)
class Message:
    client: str
    kind: Kind
    name: str  # e.g. "split1", "split2", "shared", "round"
    round: int
    step: int  # iteration within the round, or VALIDATION_STEP
    tensors: dict[str, Tensor] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    detail: str = ""  # the reason of an ERROR reply; empty otherwise

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values()) + 8 * len(self.scalars)


@dataclass(frozen=True)
class ManifestEntry:
    round: int
    step: int
    client: str
    direction: Direction
    kind: Kind
    name: str
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    scalar_names: tuple[str, ...]
    num_bytes: int

    @classmethod
    def of(cls, message: Message, direction: Direction) -> "ManifestEntry":
        return cls(message.round, message.step, message.client, direction, message.kind, message.name,
                   {k: tuple(t.shape) for k, t in message.tensors.items()},
                   {k: str(t.dtype).removeprefix("torch.") for k, t in message.tensors.items()},
                   tuple(sorted(message.scalars)), message.num_bytes)

    def to_dict(self) -> dict:
        return {"round": self.round, "step": self.step, "client": self.client,
                "direction": self.direction.value, "kind": self.kind.value, "name": self.name,
                "shapes": {k: list(v) for k, v in self.shapes.items()}, "dtypes": self.dtypes,
                "scalars": list(self.scalar_names), "bytes": self.num_bytes}
