"""The boundary between a client and the server, as an interface.

Split learning is client-driven request/response: the client sends features and receives the
server's output, sends a gradient and receives one back, uploads weights and fetches the
average. ``Transport.request`` is that one operation; a network transport implements it over a
socket without touching the training code. The in-memory transport used for simulation hands
over detached copies (nothing shares memory or an autograd graph across the boundary), or with
``wire=True`` what the wire codec decodes (``narrow=True``: float32 as float16), and records every message in a manifest. A server
refusal crosses as an ERROR reply (``answer``) and is raised at the client as ``ServerRefusal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import torch

from mucald_unet.errors import ServerRefusal, TrainingError
from mucald_unet.federation.messages import VALIDATION_STEP, Direction, Kind, ManifestEntry, Message
from mucald_unet.federation.wire import round_trip
from mucald_unet.training.checkpoint import save_plain
from mucald_unet.training.run_log import RunLog


class ServerEndpoint(Protocol):
    def handle(self, message: Message) -> Message: ...


class Transport(Protocol):
    def request(self, message: Message) -> Message: ...


def answer(server: ServerEndpoint, message: Message) -> Message:
    """The server's reply, or an ERROR reply carrying the reason when it refuses the request: what a
    server process sends back instead of dying on one bad message."""
    try:
        return server.handle(message)
    except TrainingError as refusal:
        return Message(message.client, Kind.ERROR, message.name, message.round, message.step, detail=str(refusal))


def raise_refusal(request: Message, reply: Message) -> Message:
    """``reply`` unless it is an ERROR, which becomes a ``ServerRefusal`` naming the request."""
    if reply.kind is Kind.ERROR:
        step = "validation" if request.step == VALIDATION_STEP else f"step {request.step}"
        raise ServerRefusal(f"the server refused {request.kind.value}/{request.name} of {request.client} "
                            f"(round {request.round}, {step}): {reply.detail}")
    return reply


def _handover(message: Message, device) -> Message:
    """What the other side receives: fresh leaf tensors on its device, same values."""
    tensors = {k: t.detach().to(device, copy=True) for k, t in message.tensors.items()}
    return Message(message.client, message.kind, message.name, message.round, message.step,
                   tensors, dict(message.scalars), message.detail)


class InMemoryTransport:
    """Client and server in one process; every message is copied and recorded."""

    def __init__(self, server: ServerEndpoint, server_device="cpu", client_device="cpu",
                 record: bool = True, wire: bool = False, narrow: bool = False) -> None:
        self.server = server
        self.server_device = server_device
        self.client_device = client_device
        self.record = record
        # wire: through the bytes a network would carry; narrow: float32 crossing as float16
        self.handover = partial(round_trip, narrow=narrow) if wire else _handover
        self.manifest: list[ManifestEntry] = []

    def request(self, message: Message) -> Message:
        if self.record:
            self.manifest.append(ManifestEntry.of(message, Direction.TO_SERVER))
        reply = answer(self.server, self.handover(message, self.server_device))
        if self.record:
            self.manifest.append(ManifestEntry.of(reply, Direction.TO_CLIENT))
        return raise_refusal(message, self.handover(reply, self.client_device))

    def drain_manifest(self) -> list[ManifestEntry]:
        """Entries recorded since the last drain (the trainer writes them out each round)."""
        entries, self.manifest = self.manifest, []
        return entries


class LoopbackTransport(InMemoryTransport):
    """For local and centralized training: the 'server' part runs where the data is, so nothing
    crosses a boundary and nothing is recorded; the code path stays the same."""

    def __init__(self, server: ServerEndpoint, device="cpu") -> None:
        super().__init__(server, device, device, record=False)


@dataclass(frozen=True)
class CaptureRequest:
    """Which clients' traffic to keep in full, in which (0-based) round: the audit's adversary view."""

    clients: frozenset[str]
    round: int


class CapturingTransport:
    """An in-memory transport that also keeps, for the requested clients and round, every tensor
    that crosses in either direction, exactly as the other side received it, with its manifest entry."""

    def __init__(self, inner: InMemoryTransport, capture: CaptureRequest) -> None:
        self.inner, self.capture = inner, capture
        self.captured: list[tuple[ManifestEntry, dict[str, torch.Tensor]]] = []

    def request(self, message: Message) -> Message:
        reply = self.inner.request(message)
        if message.client in self.capture.clients and message.round == self.capture.round:
            for sent, direction in ((message, Direction.TO_SERVER), (reply, Direction.TO_CLIENT)):
                self.captured.append((ManifestEntry.of(sent, direction),
                                      {k: t.detach().cpu().clone() for k, t in sent.tensors.items()}))
        return reply

    def drain_manifest(self) -> list[ManifestEntry]:
        return self.inner.drain_manifest()

    def save(self, path: Path) -> None:
        """One plain torch file (read it with ``load_plain``): a list of {"entry": manifest dict,
        "tensors": {name: tensor}}."""
        save_plain(path, [{"entry": entry.to_dict(), "tensors": tensors} for entry, tensors in self.captured])


def append_manifest(path: Path, entries: list[ManifestEntry]) -> None:
    """Append entries as JSON lines to the end of the file (earlier rounds are never rewritten),
    durably, through ``RunLog``: a line torn by a crash is cut off before the next append, and a
    resumed run truncates the manifest to its checkpoint's rounds like the log."""
    RunLog(path).extend(e.to_dict() for e in entries)
