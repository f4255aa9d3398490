"""Messages as bytes: what a transport between two processes or machines sends.

One safetensors blob per message (safetensors: tensors without pickle, so a blob from the other
side can never run code here): its tensors are the message's tensors, its string metadata the
envelope (wire version, client, kind, name, round, step, scalars as JSON, detail). Decoding
checks the version before anything else, so a client and a server of different releases stop
with a message that says so instead of misreading each other's fields.

``encode(..., narrow=True)`` sends float32 tensors as float16 (half the bytes) and names them in
the envelope, so the receiver widens them back to float32: the training code never sees float16.
Each narrowed tensor is first scaled by a power of two that brings its largest value near float16's
top (the exponent travels in the envelope; power-of-two scaling is exact): split gradients are
mostly below float16's smallest normal number (measured: 99 % of split-2 gradient values, median
4e-6), where plain float16 keeps only a few bits of them.
"""

from __future__ import annotations

import json
import math
import struct

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from mucald_unet.errors import TrainingError
from mucald_unet.federation.messages import Kind, Message

WIRE_VERSION = 2  # 2: float32 tensors may travel as float16 ("narrowed"), scaled by 2^exponent
FLOAT16_TOP_EXPONENT = 14  # a narrowed tensor's largest magnitude is scaled into [2^14, 2^15): below float16's max
_FORMAT = "mucald-message"


class WireError(TrainingError):
    """Bytes that are not a mucald message of this wire version."""


def encode(message: Message, narrow: bool = False) -> bytes:
    """The message as one blob; with ``narrow``, its float32 tensors as float16."""
    tensors = {k: t.detach().cpu().contiguous() for k, t in message.tensors.items()}
    narrowed = {k: _scale_exponent(t) for k, t in sorted(tensors.items()) if narrow and t.dtype == torch.float32}
    tensors.update({k: torch.ldexp(tensors[k], torch.tensor(e)).half() for k, e in narrowed.items()})
    envelope = {"format": _FORMAT, "version": str(WIRE_VERSION), "client": message.client,
                "kind": message.kind.value, "name": message.name, "round": str(message.round),
                "step": str(message.step), "scalars": json.dumps(message.scalars), "detail": message.detail,
                "narrowed": json.dumps(narrowed)}
    return save_tensors(tensors, metadata=envelope)


def decode(blob: bytes) -> Message:
    """The message in ``blob`` (tensors on the CPU); refused by name when it is not one."""
    envelope = _envelope(blob)
    if envelope.get("format") != _FORMAT:
        raise WireError("received bytes that are not a mucald message. Fix: point the client at a mucald "
                        "server (and the server's port at nothing else).")
    if envelope.get("version") != str(WIRE_VERSION):
        raise WireError(f"received wire version {envelope.get('version')!r}, this mucald speaks {WIRE_VERSION}. "
                        "Fix: install the same mucald version at the server and every client.")
    try:
        tensors = load_tensors(blob)
        narrowed = json.loads(envelope["narrowed"])
        tensors.update({k: torch.ldexp(tensors[k].float(), torch.tensor(-int(e))) for k, e in narrowed.items()})
        return Message(envelope["client"], Kind(envelope["kind"]), envelope["name"], int(envelope["round"]),
                       int(envelope["step"]), tensors, {k: float(v) for k, v in json.loads(envelope["scalars"]).items()},
                       envelope["detail"])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as err:
        raise WireError(f"a mucald message of wire version {WIRE_VERSION} is malformed ({type(err).__name__}: "
                        f"{err}). Fix: check that nothing between client and server alters the bytes.") from None


def _scale_exponent(tensor: torch.Tensor) -> int:
    """The power of two that scales ``tensor``'s largest finite magnitude into [2^14, 2^15); 0 for a
    tensor of zeros (or without finite values)."""
    finite = tensor[torch.isfinite(tensor)]
    peak = float(finite.abs().max()) if finite.numel() else 0.0
    if peak == 0.0:
        return 0
    return FLOAT16_TOP_EXPONENT - math.frexp(peak)[1] + 1


def _envelope(blob: bytes) -> dict[str, str]:
    """The metadata of a safetensors blob: 8 bytes of header length, then the JSON header."""
    if len(blob) < 8:
        return {}
    (length,) = struct.unpack("<Q", blob[:8])
    if length > len(blob) - 8:
        return {}
    try:
        header = json.loads(blob[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def round_trip(message: Message, device: torch.device | str, narrow: bool = False) -> Message:
    """``message`` as the other side decodes it, on ``device``: what a network transport hands over."""
    decoded = decode(encode(message, narrow))
    return Message(decoded.client, decoded.kind, decoded.name, decoded.round, decoded.step,
                   {k: t.to(device) for k, t in decoded.tensors.items()}, decoded.scalars, decoded.detail)
