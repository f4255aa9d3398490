"""The wire codec: every message round-trips exactly through bytes without pickle, a foreign or
newer blob is refused by name, a training round through the codec equals one without it, and a
server refusal reaches the client as a typed ServerRefusal with the server's reason."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mucald_unet.errors import ServerRefusal
from mucald_unet.federation.messages import VALIDATION_STEP, Kind, Message
from mucald_unet.federation.transport import InMemoryTransport
from mucald_unet.federation.wire import WIRE_VERSION, WireError, decode, encode, round_trip
from mucald_unet.training.checkpoint import FINAL, load_checkpoint
from mucald_unet.training.trainer import FederatedTrainer
from safetensors.torch import save as save_tensors
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


def test_a_message_round_trips_exactly_through_bytes() -> None:
    features = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    sent = Message("Dataset001_X", Kind.FEATURES, "split1", 3, VALIDATION_STEP,
                   {"features": features[:, :, :, 1:], "half": features.half()},
                   {"num_samples": 12.0, "val_loss": math.nan})
    received = decode(encode(sent))
    assert (received.client, received.kind, received.name, received.round, received.step) == (
        "Dataset001_X", Kind.FEATURES, "split1", 3, VALIDATION_STEP)
    assert torch.equal(received.tensors["features"], features[:, :, :, 1:])  # a strided view is packed
    assert received.tensors["half"].dtype == torch.float16 and torch.equal(received.tensors["half"], features.half())
    assert received.scalars["num_samples"] == 12.0 and math.isnan(received.scalars["val_loss"])
    refusal = decode(encode(Message("c", Kind.ERROR, "split2", 0, 1, detail="no forward pass")))
    assert refusal.kind is Kind.ERROR and refusal.detail == "no forward pass" and refusal.tensors == {}


def test_narrowed_float32_tensors_cross_as_half_the_bytes_and_arrive_as_float32() -> None:
    features = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(1))
    sent = Message("c", Kind.FEATURES, "split1", 0, 2, {"features": features, "index": torch.arange(5)})
    full, narrow = encode(sent), encode(sent, narrow=True)
    # 4 -> 2 bytes per float32 value, the int64 tensor as it was; the JSON headers differ by a few bytes
    assert abs(len(full) - len(narrow) - 2 * features.numel()) < 32
    received = decode(narrow)
    assert received.tensors["features"].dtype == torch.float32
    relative = (received.tensors["features"] - features).abs() / features.abs()
    assert float(relative.max()) <= 2 ** -11  # float16's rounding (a 10-bit mantissa), nothing more
    assert torch.equal(received.tensors["index"], torch.arange(5))
    assert torch.equal(decode(full).tensors["features"], features)


def test_gradients_below_float16s_normal_range_keep_their_precision_when_narrowed() -> None:
    """Split gradients are mostly ~1e-6, below float16's smallest normal 6e-5, where plain float16
    keeps a few bits; the power-of-two scaling keeps float16's full 11 bits relative to each value."""
    gradient = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(2)) * 4e-6
    sent = Message("c", Kind.GRADIENT, "split2", 0, 1, {"gradient": gradient, "zeros": torch.zeros(3)})
    received = decode(encode(sent, narrow=True)).tensors
    big = gradient.abs() > gradient.abs().max() * 2 ** -10  # values within float16's range of the peak
    relative = ((received["gradient"] - gradient).abs() / gradient.abs())[big]
    plain = ((gradient.half().float() - gradient).abs() / gradient.abs())[big]
    assert float(relative.max()) <= 2 ** -11 < float(plain.median())
    assert torch.equal(received["zeros"], torch.zeros(3))


def test_bytes_of_another_kind_or_version_are_refused_by_name() -> None:
    with pytest.raises(WireError, match="not a mucald message"):
        decode(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(WireError, match="not a mucald message"):
        decode(save_tensors({"x": torch.zeros(1)}))  # a safetensors file, but not ours
    blob = encode(Message("c", Kind.ACK, "join", 0, 0)).replace(
        f'"version":"{WIRE_VERSION}"'.encode(), f'"version":"{WIRE_VERSION + 1}"'.encode())
    with pytest.raises(WireError, match=f"wire version '{WIRE_VERSION + 1}'.*same mucald version"):
        decode(blob)


class RefusingServer:
    def handle(self, message: Message) -> Message:
        from mucald_unet.errors import TrainingError
        raise TrainingError(f"{message.client} sent a gradient without a forward pass")


def test_a_refusal_crosses_as_an_error_reply_and_is_raised_as_a_typed_error() -> None:
    transport = InMemoryTransport(RefusingServer(), wire=True)
    request = Message("Dataset002_Y", Kind.GRADIENT, "split2", 4, 7, {"gradient": torch.zeros(1, 2)})
    with pytest.raises(ServerRefusal, match=r"refused gradient/split2 of Dataset002_Y \(round 4, step 7\): "
                                            "Dataset002_Y sent a gradient without a forward pass"):
        transport.request(request)
    assert [e.kind for e in transport.manifest] == [Kind.GRADIENT, Kind.ERROR]


def test_training_through_the_wire_codec_equals_training_without_it(tiny_federation: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = quick_config("mucald", iterations=2)
    FederatedTrainer(tiny_federation, CLIENTS, config, tmp_path / "memory").run()
    original = InMemoryTransport.__init__
    monkeypatch.setattr(InMemoryTransport, "__init__",
                        lambda self, *a, **k: original(self, *a, **{**k, "wire": True}))
    wired = FederatedTrainer(tiny_federation, CLIENTS, config, tmp_path / "wire")
    wired.run()
    assert wired.transport.handover.func is round_trip  # every message of the round went through the bytes
    memory, wire = (load_checkpoint(tmp_path / run / FINAL) for run in ("memory", "wire"))
    for client in CLIENTS:
        for part, state in memory.clients[client]["modules"].items():
            for key, value in state.items():
                assert torch.equal(value, wire.clients[client]["modules"][part][key]), (client, part, key)
    for key, value in memory.server["segments"][CLIENTS[0]].items():
        assert torch.equal(value, wire.server["segments"][CLIENTS[0]][key]), key
