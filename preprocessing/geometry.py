"""The geometry record that travels with every image array, so any write can restore the grid.

Convention: ``spacing``, ``origin`` and ``direction`` are physical and in ITK order (x, y[, z]),
exactly as the file header states them; ``shape`` is the spatial array shape in numpy order
(z, y, x) / (y, x), matching the arrays that readers return. ``array_spacing`` is the spacing
reordered to match the array axes, which is what resampling and planning want.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GeometryTolerance:
    """How far two grids may differ and still count as the same (header round-off, float32)."""

    spacing_mm: float = 1e-3
    origin_mm: float = 1e-2
    direction: float = 1e-3


@dataclass(frozen=True)
class Geometry:
    """Physical grid of an image: shape (array order), spacing/origin/direction (ITK order)."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major ndim x ndim matrix, columns are the axis directions
    source_format: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        ndim = len(self.shape)
        if len(self.spacing) != ndim or len(self.origin) != ndim or len(self.direction) != ndim * ndim:
            raise ValueError(
                f"inconsistent geometry: shape {self.shape}, spacing {self.spacing}, "
                f"origin {self.origin}, direction of length {len(self.direction)}"
            )

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in the order of the array axes ((z, y, x) for 3D)."""
        return tuple(reversed(self.spacing))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(self.ndim, self.ndim)

    @classmethod
    def default(cls, shape: tuple[int, ...], source_format: str = "") -> "Geometry":
        """Unit spacing, zero origin, identity direction: what a file without geometry means."""
        ndim = len(shape)
        return cls(
            shape=tuple(int(s) for s in shape),
            spacing=(1.0,) * ndim,
            origin=(0.0,) * ndim,
            direction=tuple(float(v) for v in np.eye(ndim).ravel()),
            source_format=source_format,
        )

    def with_shape(self, shape: tuple[int, ...]) -> "Geometry":
        return Geometry(tuple(int(s) for s in shape), self.spacing, self.origin, self.direction,
                        self.source_format)

    def mismatches(self, other: "Geometry", tol: GeometryTolerance = GeometryTolerance()) -> list[str]:
        """Human-readable differences to ``other``; empty when both describe the same grid."""
        if self.shape != other.shape:
            return [f"shape {self.shape} vs {other.shape}"]
        problems = []
        for name, limit in (("spacing", tol.spacing_mm), ("origin", tol.origin_mm),
                            ("direction", tol.direction)):
            mine, theirs = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if not np.allclose(mine, theirs, rtol=0.0, atol=limit):
                problems.append(f"{name} {_fmt(mine)} vs {_fmt(theirs)}")
        return problems

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "source_format": self.source_format,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Geometry":
        return cls(
            shape=tuple(int(v) for v in data["shape"]),
            spacing=tuple(float(v) for v in data["spacing"]),
            origin=tuple(float(v) for v in data["origin"]),
            direction=tuple(float(v) for v in data["direction"]),
            source_format=str(data.get("source_format", "")),
        )


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values.ravel()) + ")"
