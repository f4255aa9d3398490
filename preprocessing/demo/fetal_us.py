"""Dataset003_DemoFetalUS: 2D grayscale ultrasound-like fetal head images.

Stands in for a hospital with fine in-plane spacing (0.2 mm), speckle instead of Gaussian noise
and two nested classes: the head interior (1) and a smaller brain structure inside it (2).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from preprocessing.demo.causal import FETAL_US_GRAPH, scaled
from preprocessing.demo.recipe import DemoRecipe, fft_blur, place_centre, smooth_noise
from preprocessing.geometry import Geometry

SPACING_XY = (0.2, 0.2)
ORIGIN_XY = (-12.5, 4.0)
_SKULL = 0.12  # skull thickness relative to the head's normalised radius
_FAN_HALF_ANGLE = np.deg2rad(46.0)


def render_fetal_us(nodes: Mapping[str, float], shape: tuple[int, ...],
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One frame (1, H, W) uint8 and its label (H, W) uint8: 1 head interior, 2 inner structure."""
    h, w = shape
    side = min(h, w)
    yy, xx = np.indices(shape, dtype=float)

    radius = scaled(nodes["size"], 0.17 * side, 0.29 * side)
    ratio = scaled(nodes["elongation"], 1.05, 1.5)
    inner_radius = scaled(nodes["inner_size"], 0.035 * side, 0.10 * side)
    interior_echo = scaled(nodes["contrast"], 0.2, 0.85)  # relative to the surrounding tissue
    major, minor = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
    reach = major * (1.0 + _SKULL) + 2.0
    cy = place_centre(reach, 0.0, h - 1.0, rng)
    cx = place_centre(reach, 0.0, w - 1.0, rng)
    angle = rng.uniform(-np.pi / 5, np.pi / 5)
    u, v = _frame(yy, xx, cy, cx, angle)
    rho = np.hypot(u / major, v / minor)
    head = rho <= 1.0

    # The brain structure: a small ellipse along the head's major axis, off the head's centre.
    inner_major, inner_minor = inner_radius * 1.15, inner_radius / 1.15
    room = max(0.0, major - inner_major - 2.0)
    shift = rng.uniform(-0.35, 0.35) * room
    icy, icx = cy + shift * np.sin(angle), cx + shift * np.cos(angle)
    iu, iv = _frame(yy, xx, icy, icx, angle)
    inner = (np.hypot(iu / inner_major, iv / inner_minor) <= 1.0) & head

    label = head.astype(np.uint8)
    label[int(round(cy)), int(round(cx))] = 1
    label[inner] = 2
    label[int(round(icy)), int(round(icx))] = 2  # never empty, however small

    skull = (rho > 1.0) & (rho <= 1.0 + _SKULL)
    theta = np.arctan2(v / minor, u / major)
    skull_echo = 2.6 + 0.8 * np.cos(2 * theta + rng.uniform(0, 2 * np.pi))  # uneven, as in scans
    reflectivity = np.ones(shape)
    reflectivity[head] = interior_echo
    reflectivity[label == 2] = 1.6  # hyperechoic, like the choroid plexus
    reflectivity[skull] = skull_echo[skull]

    depth = 1.0 - 0.35 * yy / h  # attenuation with depth
    echo = (0.55 + 0.08 * smooth_noise(shape, side / 6.0, rng)) * depth
    speckle = rng.rayleigh(1.0 / np.sqrt(np.pi / 2.0), shape)  # mean 1
    speckle = fft_blur(speckle, 0.6)  # speckle grains span a few pixels
    intensity = 120.0 * echo * reflectivity * np.clip(speckle, 0.0, None)
    intensity[~_fan(yy, xx, h, w)] = 0.0
    return np.clip(np.round(intensity), 0, 255).astype(np.uint8)[None], label


def _frame(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float,
           angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along and across an axis at ``angle`` through (cy, cx)."""
    dy, dx = yy - cy, xx - cx
    return dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)


def _fan(yy: np.ndarray, xx: np.ndarray, h: int, w: int) -> np.ndarray:
    """The sector a curved probe images, with its apex above the top edge."""
    apex_y, apex_x = -0.3 * h, (w - 1) / 2
    return np.abs(np.arctan2(xx - apex_x, yy - apex_y)) <= _FAN_HALF_ANGLE


def fetal_us_geometry(shape: tuple[int, ...]) -> Geometry:
    return Geometry(shape=tuple(shape), spacing=SPACING_XY, origin=ORIGIN_XY,
                    direction=(1.0, 0.0, 0.0, 1.0), source_format="nifti")


FETAL_US = DemoRecipe(
    key="fetal_us", dataset_id=3, name="DemoFetalUS", case_prefix="fetus", file_ending=".nii.gz",
    channel_names={0: "US"}, labels={"background": 0, "head": 1, "brain_structure": 2},
    graph=FETAL_US_GRAPH,
    look=("Synthetic 2D fetal ultrasound-like frames at 0.2 mm with speckle: head interior and "
          "an inner brain structure (hospital C)."),
    geometry=fetal_us_geometry, render=render_fetal_us,
)
