"""Which torch device a command runs on: ``auto`` takes CUDA when torch sees one."""

from __future__ import annotations

from enum import Enum

import torch

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
