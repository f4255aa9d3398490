"""A client's ``Transport`` over FLARE's Collab API: each request is one call of the server's
published ``handle`` with the wire codec's bytes, and each side keeps its own manifest, appended
message by message (a request is on disk before it is sent), so a crash loses no record of what
crossed.

Only valid inside a Collab call (the client app's published methods), where ``collab.server`` is
the server's proxy.
"""

from __future__ import annotations

from pathlib import Path

from nvflare.collab import collab

from mucald_unet.errors import TrainingError
from mucald_unet.federation.messages import Direction, ManifestEntry, Message
from mucald_unet.federation.transport import append_manifest, raise_refusal
from mucald_unet.federation.wire import decode, encode


class CollabTransport:
    """``request`` = ``collab.server.handle(encode(message))``, decoded; a refusal raises ``ServerRefusal``."""

    def __init__(self, call_timeout: float, narrow: bool = False, manifest_path: Path | None = None) -> None:
        self.call_timeout = call_timeout
        self.narrow = narrow  # float32 tensors as float16 on the wire
        self.manifest_path = manifest_path  # where each entry is appended as it crosses (None: kept in memory only)
        self.manifest: list[ManifestEntry] = []
        self.wire_bytes = {"train": 0, "other": 0}  # both directions, as carried; training steps apart

    def request(self, message: Message) -> Message:
        self._record(ManifestEntry.of(message, Direction.TO_SERVER))
        try:
            request = encode(message, self.narrow)
            blob = collab.server(timeout=self.call_timeout).handle(request)
        except Exception as failure:  # FLARE raises its call errors and timeouts under several types
            raise TrainingError(f"{message.client}: the server did not answer {message.kind.value}/{message.name} "
                                f"(round {message.round}, step {message.step}) within {self.call_timeout:g} s: "
                                f"{failure}. Fix: check that the server site is running and reachable.") from failure
        self.wire_bytes["train" if message.step >= 0 else "other"] += len(request) + len(blob)
        reply = decode(blob)
        self._record(ManifestEntry.of(reply, Direction.TO_CLIENT))
        return raise_refusal(message, reply)

    def _record(self, entry: ManifestEntry) -> None:
        self.manifest.append(entry)
        if self.manifest_path is not None:
            append_manifest(self.manifest_path, [entry])

    def drain_manifest(self) -> tuple[list[ManifestEntry], dict[str, int]]:
        """The entries and wire bytes (training steps, everything else) since the last drain."""
        entries, self.manifest = self.manifest, []
        carried, self.wire_bytes = self.wire_bytes, {"train": 0, "other": 0}
        return entries, carried
