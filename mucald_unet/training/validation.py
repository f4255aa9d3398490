"""Whole-case validation: Gaussian-weighted sliding windows, per-class Dice (MONAI).

A 2D federation serving a 3D case predicts it slice by slice across the plan's slice axis and
reassembles the volume, so Dice is always computed per case, not per slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from torch import Tensor

Predictor = Callable[[Tensor], Tensor]


def predict_case_logits(predict: Predictor, images: np.ndarray, patch_size: Sequence[int],
                        slice_axis: int | None, device: torch.device, overlap: float = 0.5,
                        batch_size: int = 4) -> Tensor:
    """Class logits (num_classes, *spatial) of a whole preprocessed case (C, *spatial).

    A read-only case (a memory-mapped training case) is read into memory for the call: a tensor
    must not alias a read-only mapping (torch cannot honour the flag, and a write would crash).
    """
    contiguous = np.ascontiguousarray(images)
    array = torch.from_numpy(contiguous if contiguous.flags.writeable else np.array(contiguous)).to(device)
    if slice_axis is None:
        inputs = array.unsqueeze(0)
    else:  # (C, Z, Y, X) -> (slices, C, *plane)
        inputs = array.movedim(slice_axis + 1, 0)
    logits = sliding_window_inference(inputs, list(patch_size), batch_size, predict, overlap=overlap,
                                      mode="gaussian", padding_mode="constant", cval=0.0)
    if slice_axis is None:
        return logits[0]
    return logits.movedim(0, slice_axis + 1)  # (slices, K, *plane) -> (K, Z, Y, X)


def dice_per_class(logits: Tensor, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Foreground Dice per class for one case; both empty counts as 1, a false alarm as 0."""
    prediction = logits.argmax(0, keepdim=True).unsqueeze(0)
    reference = torch.from_numpy(label.astype(np.int64)).to(logits.device)[None, None]
    one_hot = torch.nn.functional.one_hot
    pred = one_hot(prediction[:, 0], num_classes).movedim(-1, 1)
    ref = one_hot(reference[:, 0], num_classes).movedim(-1, 1)
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    return metric(pred, ref)[0].cpu().numpy().astype(np.float64)
