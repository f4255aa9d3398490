"""Dataset001_DemoPolyp: 2D RGB endoscopy-like frames with one polyp-like blob each.

Stands in for a hospital that sends colour video frames without physical spacing (PNG). The
blob's size, elongation, egg-shaped asymmetry and colour contrast come from the planted graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from preprocessing.demo.causal import POLYP_GRAPH, scaled
from preprocessing.demo.recipe import DemoRecipe, fft_blur, place_centre, smooth_noise
from preprocessing.geometry import Geometry

_MUCOSA_RGB = np.array([188.0, 96.0, 88.0])  # pinkish red
_WOBBLE = ((4, 0.035), (6, 0.02))  # (harmonic, amplitude): even, so centrally symmetric


def render_polyp(nodes: Mapping[str, float], shape: tuple[int, ...],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One frame (3, H, W) uint8 and its label (H, W) uint8 with the polyp as 1."""
    h, w = shape
    side = min(h, w)
    yy, xx = np.indices(shape, dtype=float)
    tissue = _mucosa(shape, side, yy, xx, rng)

    radius = scaled(nodes["size"], 0.07 * side, 0.17 * side)
    ratio = scaled(nodes["elongation"], 1.0, 2.2)
    skew = scaled(nodes["asymmetry"], 0.0, 0.65)  # one end wider than the other (egg)
    gain = scaled(nodes["contrast"], 0.08, 0.4)
    major, minor = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
    wobble = sum(amp for _, amp in _WOBBLE)
    extent = max(major, minor * (1.0 + skew)) * (1.0 + wobble) + 2.0
    cy = place_centre(extent, 0.0, h - 1.0, rng)
    cx = place_centre(extent, 0.0, w - 1.0, rng)
    angle = rng.uniform(0.0, np.pi)

    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    width = minor * (1.0 + skew * np.clip(u / major, -1.0, 1.0))
    rho = np.hypot(u / major, v / width)
    theta = np.arctan2(v / minor, u / major)
    edge = 1.0 + sum(amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k, amp in _WOBBLE)
    label = (rho <= edge).astype(np.uint8)
    label[int(round(cy)), int(round(cx))] = 1  # never empty, however small the blob

    # Soft edge for the image only (about one pixel wide), brighter towards the blob's centre.
    alpha = np.clip(0.5 + (edge - rho) * minor, 0.0, 1.0)[None]
    shading = 0.55 + 0.45 * np.clip(1.0 - (rho / edge) ** 2, 0.0, 1.0)
    # Polyps look paler than the mucosa; a mostly additive lift keeps the contrast readable
    # even where the mucosa happens to be dark.
    tint = np.array([110.0, 120.0, 125.0])[:, None, None]
    polyp = tissue * (1.0 + 0.3 * gain * shading[None]) + gain * tint * shading[None]
    image = (1.0 - alpha) * tissue + alpha * polyp
    image *= _vignette(yy, xx, h, w)[None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def _mucosa(shape: tuple[int, ...], side: int, yy: np.ndarray, xx: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Smooth colour field, mid-frequency texture and a few darker vessels, as (3, H, W) floats."""
    base = _MUCOSA_RGB * rng.uniform(0.92, 1.08, size=3)
    light = 1.0 + 0.12 * smooth_noise(shape, side / 8.0, rng)
    hue = 0.07 * smooth_noise(shape, side / 10.0, rng)
    texture = 1.0 + 0.06 * smooth_noise(shape, max(1.0, side / 80.0), rng)
    colour = base[:, None, None] * (light * texture)[None]
    colour[1:] *= 1.0 + hue[None]
    vessels = _vessels(shape, side, rng)
    colour *= 1.0 - np.array([0.18, 0.35, 0.3])[:, None, None] * vessels[None]
    return colour


def _vessels(shape: tuple[int, ...], side: int, rng: np.random.Generator) -> np.ndarray:
    """A few meandering dark curves in [0, 1]: a smoothly turning random walk, rasterised."""
    canvas = np.zeros(shape)
    steps = 2 * side
    for _ in range(int(rng.integers(2, 5))):
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.12, steps))
        start = rng.uniform(0, 1, 2) * np.array(shape)
        path = start + np.cumsum(0.7 * np.stack([np.sin(heading), np.cos(heading)], 1), axis=0)
        inside = np.all((path >= 0) & (path <= np.array(shape) - 1), axis=1)
        rows, cols = np.round(path[inside]).astype(int).T
        canvas[rows, cols] = rng.uniform(0.5, 1.0)
    blurred = fft_blur(canvas, 0.8)
    peak = float(blurred.max())
    return np.clip(blurred / peak, 0.0, 1.0) if peak > 0 else blurred


def _vignette(yy: np.ndarray, xx: np.ndarray, h: int, w: int) -> np.ndarray:
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    return 1.0 - 0.25 * np.clip(r2 / 2.0, 0.0, 1.0)


def polyp_geometry(shape: tuple[int, ...]) -> Geometry:
    return Geometry.default(tuple(shape), "png")


POLYP = DemoRecipe(
    key="polyp", dataset_id=1, name="DemoPolyp", case_prefix="polyp", file_ending=".png",
    channel_names={0: "R", 1: "G", 2: "B"}, labels={"background": 0, "polyp": 1},
    graph=POLYP_GRAPH,
    look="Synthetic 2D RGB endoscopy-like frames, one polyp-like blob each (hospital A).",
    geometry=polyp_geometry, render=render_polyp,
)
