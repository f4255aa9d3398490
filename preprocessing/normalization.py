"""Per-channel intensity normalisation schemes, as nnU-Net applies them after cropping.

Each scheme is a frozen record that the planner picks per channel and writes into the plans
(``to_dict`` / ``normalization_from_dict``); ``apply`` is a pure function of one channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Union

import numpy as np

_MIN_STD = 1e-8  # a constant channel would otherwise divide by zero


@dataclass(frozen=True)
class CTNormalization:
    """Clip to the dataset's foreground percentiles, then z-score with dataset statistics.

    CT intensities are physical (Hounsfield units), so one dataset-wide mapping keeps tissue
    values comparable across cases; ``lower``/``upper`` are the foreground 0.5/99.5 percentiles.
    """

    mean: float
    std: float
    lower: float
    upper: float
    kind: ClassVar[str] = "ct"

    def __post_init__(self) -> None:
        if not all(np.isfinite([self.mean, self.std, self.lower, self.upper])):
            raise ValueError(f"CT normalisation needs finite statistics, got {self}")
        if self.lower > self.upper:
            raise ValueError(f"CT normalisation needs lower <= upper, got {self.lower} > {self.upper}")

    def apply(self, channel: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = np.clip(channel.astype(np.float32), self.lower, self.upper)
        out -= np.float32(self.mean)
        out /= np.float32(max(self.std, _MIN_STD))
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class ZScoreNormalization:
    """Per-image z-score, for modalities (MR, ...) whose intensities have no absolute meaning.

    With ``use_nonzero_mask`` the statistics come from inside the mask only and everything
    outside becomes 0, so large empty borders (skull-stripped brains) do not dominate them.
    """

    use_nonzero_mask: bool = False
    kind: ClassVar[str] = "zscore"

    def apply(self, channel: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        values = channel.astype(np.float64)
        if not self.use_nonzero_mask:
            return ((values - values.mean()) / max(values.std(), _MIN_STD)).astype(np.float32)
        if mask is None:
            raise ValueError("ZScoreNormalization(use_nonzero_mask=True) needs the nonzero mask; "
                             "pass the mask returned by cropping")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != channel.shape:
            raise ValueError(f"mask shape {mask.shape} does not match channel shape {channel.shape}")
        out = np.zeros(channel.shape, dtype=np.float32)
        if mask.any():
            inside = values[mask]
            out[mask] = (inside - inside.mean()) / max(inside.std(), _MIN_STD)
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class RGBTo01Normalization:
    """8-bit colour to [0, 1]: natural images already share one fixed intensity range."""

    kind: ClassVar[str] = "rgb_to_01"

    def apply(self, channel: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = channel.astype(np.float32) / np.float32(255.0)
        return np.clip(out, 0.0, 1.0, out=out)

    def to_dict(self) -> dict:
        return {"kind": self.kind}


@dataclass(frozen=True)
class NoNormalization:
    """Leave values as they are (already normalised data, or masks given as input channels)."""

    kind: ClassVar[str] = "none"

    def apply(self, channel: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return channel.astype(np.float32, copy=True)

    def to_dict(self) -> dict:
        return {"kind": self.kind}


NormalizationScheme = Union[CTNormalization, ZScoreNormalization, RGBTo01Normalization, NoNormalization]
_SCHEMES: tuple[type, ...] = (CTNormalization, ZScoreNormalization, RGBTo01Normalization, NoNormalization)


def normalization_from_dict(data: dict) -> NormalizationScheme:
    """Rebuild a scheme from ``to_dict`` output (as stored in the plans)."""
    kind = data.get("kind")
    for scheme in _SCHEMES:
        if scheme.kind == kind:
            names = {f.name for f in fields(scheme)}
            unknown = set(data) - names - {"kind"}
            if unknown:
                raise ValueError(f"normalisation '{kind}' has unknown fields {sorted(unknown)}")
            return scheme(**{k: v for k, v in data.items() if k in names})
    known = ", ".join(s.kind for s in _SCHEMES)
    raise ValueError(f"unknown normalisation kind {kind!r}; expected one of: {known}")


def normalize_channels(images: np.ndarray, schemes: Sequence[NormalizationScheme],
                       mask: np.ndarray | None = None) -> np.ndarray:
    """Apply ``schemes[c]`` to channel ``c`` of ``images`` (C, *spatial); returns float32."""
    if images.ndim < 2 or images.shape[0] != len(schemes):
        raise ValueError(f"{len(schemes)} normalisation schemes for images of shape {images.shape}; "
                         "need one scheme per channel")
    out = np.empty(images.shape, dtype=np.float32)
    for c, scheme in enumerate(schemes):
        out[c] = scheme.apply(images[c], mask)
    return out
