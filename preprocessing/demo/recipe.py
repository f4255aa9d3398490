"""What defines one demo dataset (its declaration, graph, grid and renderer), plus the random
fields the renderers share. Renderers are pure functions of node values, shape and a generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from preprocessing.demo.causal import CausalGraphSpec
from preprocessing.geometry import Geometry

# (node values of one case, spatial shape, generator) -> (image (C, *spatial), label (*spatial) uint8)
Renderer = Callable[[Mapping[str, float], tuple[int, ...], np.random.Generator],
                    tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DemoRecipe:
    """Everything the federation writer needs to produce one dataset of the demo."""

    key: str  # field of SizePreset that sizes this dataset
    dataset_id: int
    name: str
    case_prefix: str
    file_ending: str
    channel_names: Mapping[int, str]
    labels: Mapping[str, int]
    graph: CausalGraphSpec
    look: str  # one sentence on what the images imitate, for dataset.json's description
    geometry: Callable[[tuple[int, ...]], Geometry]
    render: Renderer


def fft_blur(array: np.ndarray, sigma: float | tuple[float, ...]) -> np.ndarray:
    """Gaussian blur in Fourier space: the cost does not grow with sigma, borders wrap around.

    A spatial kernel for the low-frequency fields (sigma of dozens of pixels) would dominate
    the generation time; no renderer minds the wrap-around.
    """
    shape = array.shape
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=float), (len(shape),))
    freqs = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    grids = np.meshgrid(*freqs, indexing="ij", sparse=True)
    exponent = sum(-2.0 * (np.pi * s * f) ** 2 for s, f in zip(sigmas, grids))
    axes = tuple(range(len(shape)))
    return np.fft.irfftn(np.fft.rfftn(array, axes=axes) * np.exp(exponent), s=shape, axes=axes)


def smooth_noise(shape: tuple[int, ...], sigma: float | tuple[float, ...],
                 rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit std (texture and smooth fields)."""
    field = fft_blur(rng.standard_normal(shape), sigma)
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def place_centre(extent: float, low: float, high: float, rng: np.random.Generator) -> float:
    """A centre coordinate in [low + extent, high - extent], or the middle when nothing fits."""
    lo, hi = low + extent, high - extent
    return float(rng.uniform(lo, hi)) if hi > lo else 0.5 * (low + high)
