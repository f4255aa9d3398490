"""Which torch device a command runs on (``auto`` takes CUDA when torch sees one), and the
precision its networks compute in there (``auto`` takes bf16 where the hardware has it)."""

from __future__ import annotations

from enum import Enum

import torch

from mucald_unet.config import Precision
from preprocessing.errors import MucaldError


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def resolve_device(choice: Device) -> str:
    if choice is Device.cuda and not torch.cuda.is_available():
        raise MucaldError("--device cuda was asked for, but torch sees no CUDA device. Fix: use --device cpu "
                          "or install a CUDA build of torch.")
    if choice is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice.value


class PrecisionChoice(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def resolve_precision(choice: PrecisionChoice, device: str) -> Precision:
    """``auto``: bf16 where the device computes it natively (same Dice, fewer seconds per
    iteration, docs/training_recipe.md), else fp32; an explicit choice is kept."""
    if choice is PrecisionChoice.auto:
        return Precision.BF16 if bf16_is_native(device) else Precision.FP32
    return Precision(choice.value)


def compute_context(precision: Precision, device: torch.device | str) -> torch.autocast:
    """A fresh autocast context for one forward pass: under bf16, convolutions and matmuls run in
    bfloat16 (parameters, gradients and optimiser state stay float32, so no loss scaling is
    needed); under fp32 it changes nothing. Fresh per use: one autocast object must not be
    entered twice at once."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                          enabled=precision is Precision.BF16)


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether bfloat16 arithmetic runs in hardware there; elsewhere torch emulates it, slower than float32."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
