"""Dataset002_DemoLungCT: 3D CT-like volumes (HU) with one lung lesion each.

Stands in for a hospital with anisotropic, obliquely oriented volumes: 0.8 x 0.8 x 3.0 mm,
non-zero origin, 8 degrees about z. The lesion is defined in millimetres, so it is round in
physical space and flat in voxels, as real nodules are.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.ndimage import gaussian_filter

from preprocessing.demo.causal import LUNG_CT_GRAPH, scaled
from preprocessing.demo.recipe import DemoRecipe, place_centre
from preprocessing.geometry import Geometry

SPACING_XYZ = (0.8, 0.8, 3.0)
ORIGIN_XYZ = (-160.0, -140.0, 35.0)
TILT_DEG = 8.0
_HU = {"air": -1000.0, "tissue": 40.0, "lung": -850.0, "bone": 450.0}


def render_lung_ct(nodes: Mapping[str, float], shape: tuple[int, ...],
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One volume (1, Z, Y, X) int16 in HU and its label (Z, Y, X) uint8 with the lesion as 1."""
    spacing = np.array(SPACING_XYZ[::-1])  # array order (z, y, x)
    extent = np.array(shape) * spacing
    # Physical coordinates (mm) of voxel centres, relative to the volume's centre.
    pz, py, px = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)],
                             indexing="ij", sparse=True)
    fov_y, fov_x = extent[1], extent[2]

    body = ((px / (0.47 * fov_x * rng.uniform(0.95, 1.0))) ** 2
            + (py / (0.40 * fov_y * rng.uniform(0.95, 1.0))) ** 2) <= 1.0
    spine = (px ** 2 + (py - 0.30 * fov_y) ** 2) <= (0.06 * min(fov_x, fov_y)) ** 2
    lung_axes = np.array([0.55 * extent[0], 0.27 * fov_y, 0.16 * fov_x])  # z, y, x semi-axes
    lung_centres = [np.array([0.0, -0.03 * fov_y, side * 0.21 * fov_x]) + rng.normal(0, 0.005, 3)
                    * np.array([0.0, fov_y, fov_x]) for side in (-1.0, 1.0)]
    lungs = np.zeros(shape, dtype=bool)
    for centre in lung_centres:
        lungs |= _ellipsoid(pz, py, px, centre, lung_axes, 0.0) <= 1.0

    hu = np.full(shape, _HU["air"])
    hu[np.broadcast_to(body, shape)] = _HU["tissue"]
    hu[np.broadcast_to(spine & body, shape)] = _HU["bone"]
    hu[lungs] = _HU["lung"]

    label = _lesion(nodes, shape, spacing, (pz, py, px), lung_centres[int(rng.integers(2))],
                    lung_axes, rng)
    hu[label.astype(bool)] = scaled(nodes["contrast"], -420.0, 60.0)

    hu += rng.normal(0.0, 55.0, shape)
    hu = gaussian_filter(hu, sigma=(0.3, 0.6, 0.6))  # ~25 HU noise left, softened edges
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)[None], label


def _lesion(nodes: Mapping[str, float], shape: tuple[int, ...], spacing: np.ndarray,
            coords: tuple[np.ndarray, ...], lung_centre: np.ndarray, lung_axes: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Ellipsoid (elongated in-plane) plus an off-centre lobe, placed in a lung, fully inside."""
    pz, py, px = coords
    fov = float(min(shape[1] * spacing[1], shape[2] * spacing[2]))
    radius = scaled(nodes["size"], 0.045 * fov, 0.085 * fov)
    ratio = scaled(nodes["elongation"], 1.0, 2.4)
    lobe = scaled(nodes["asymmetry"], 0.2, 0.65) * radius
    axes = np.array([radius, radius * np.sqrt(ratio), radius / np.sqrt(ratio)])  # z, major, minor
    angle = rng.uniform(-np.pi / 5, np.pi / 5)  # major axis roughly along the lung's long axis (y)
    reach = max(float(axes.max()), axes[2] + lobe) + 0.5 * float(spacing[1])
    half = np.array(shape) * spacing / 2
    room = lung_axes * np.array([0.6, 1.0, 1.0])  # keep away from the lung's tapering ends in z
    centre = np.array([place_centre(reach, c - r, c + r, rng) for c, r in zip(lung_centre, room)])
    # Never past the image border (a voxel's margin), and on a voxel centre so it is never empty.
    margin = reach + 1.5 * spacing
    centre = np.clip(centre, -half + margin, half - margin)
    index = np.round(centre / spacing + (np.array(shape) - 1) / 2).astype(int)
    index = np.clip(index, 0, np.array(shape) - 1)
    centre = (index - (np.array(shape) - 1) / 2) * spacing

    main = _ellipsoid(pz, py, px, centre, axes, angle) <= 1.0
    # The lobe sits on the flank (minor axis), half outside: it adds asymmetry, not elongation.
    flank = np.array([0.0, -np.sin(angle), np.cos(angle)])
    lobe_centre = centre + axes[2] * flank
    lobe_mask = ((pz - lobe_centre[0]) ** 2 + (py - lobe_centre[1]) ** 2
                 + (px - lobe_centre[2]) ** 2) <= lobe ** 2
    label = (main | lobe_mask).astype(np.uint8)
    label[tuple(index)] = 1
    return label


def _ellipsoid(pz: np.ndarray, py: np.ndarray, px: np.ndarray, centre: np.ndarray,
               axes: np.ndarray, angle: float) -> np.ndarray:
    """Normalised radius of an ellipsoid with axes (z, in-plane major, minor) rotated in-plane."""
    dy, dx = py - centre[1], px - centre[2]
    along = dy * np.cos(angle) + dx * np.sin(angle)
    across = -dy * np.sin(angle) + dx * np.cos(angle)
    return np.sqrt(((pz - centre[0]) / axes[0]) ** 2 + (along / axes[1]) ** 2
                   + (across / axes[2]) ** 2)


def lung_ct_geometry(shape: tuple[int, ...]) -> Geometry:
    tilt = np.deg2rad(TILT_DEG)
    rotation = np.array([[np.cos(tilt), -np.sin(tilt), 0.0],
                         [np.sin(tilt), np.cos(tilt), 0.0],
                         [0.0, 0.0, 1.0]])
    return Geometry(shape=tuple(shape), spacing=SPACING_XYZ, origin=ORIGIN_XYZ,
                    direction=tuple(float(v) for v in rotation.ravel()), source_format="nifti")


LUNG_CT = DemoRecipe(
    key="lung_ct", dataset_id=2, name="DemoLungCT", case_prefix="lung", file_ending=".nii.gz",
    channel_names={0: "CT"}, labels={"background": 0, "lesion": 1}, graph=LUNG_CT_GRAPH,
    look=("Synthetic 3D chest CT-like volumes in HU, anisotropic 0.8x0.8x3.0 mm, oblique "
          "orientation, one lung lesion each (hospital B)."),
    geometry=lung_ct_geometry, render=render_lung_ct,
)
