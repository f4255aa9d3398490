"""Per-case proxy descriptors: the measurable properties that CRDM's causal nodes stand for.

Owns the column scheme, the computation of one case's proxies from its label map and image (in
mm, via ``planners.shape_descriptors``), and ``ProxyTable``, the CSV that causal-graph discovery
and the proxy loss read. Missing or undefined values are NaN, never 0, so later stages can mask them.

Columns are ``<region>_<descriptor>``. Regions are the foreground classes of dataset.json (names
made column-safe) plus ``union`` (all foreground classes together) when there are two or more
classes; with one class the union would repeat its columns exactly, so it is left out.
Descriptors are the keys of UNITS_2D / UNITS_3D, then per image channel ``mean_intensity_<ch>``,
``std_intensity_<ch>`` and ``contrast_<ch>`` (mean inside minus mean in a ring just outside).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from planners.errors import PlanError
from planners.shape_descriptors import (compactness, connected_components, convex_hull_stats,
                                        crofton_perimeter, itk_moment_stats, mirror_asymmetry,
                                        orientation, point_asymmetry, roundness)
from preprocessing.atomic import write_text_atomic
from preprocessing.dataset import RawDataset
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry

UNION = "union"
CASE_ID = "case_id"
RING_VOXELS = 3  # ring width along the finest axis; the same distance in mm along the others

# Descriptor suffixes and their units; 3D adds `flatness`.
UNITS_2D = {
    "size": "mm^2 (area)",
    "perimeter": "mm (boundary length, Crofton estimate)",
    "roundness": "1 (area / area of the disc whose diameter is the Feret diameter)",
    "compactness": "1 (4 pi area / perimeter^2)",
    "elongation": "1 (sqrt of largest / second principal moment)",
    "feret_diameter": "mm (largest distance between two pixel centres)",
    "orientation": "rad in [-pi/2, pi/2) (major axis from +x towards +y, rows down)",
    "solidity": "1 (pixels / pixel centres inside the convex hull)",
    "asymmetry": "1 (1 - overlap with the point reflection about the centroid; orientation-free)",
    "asymmetry_lr": "1 (1 - overlap with the left-right mirror image about the centroid)",
    "asymmetry_ud": "1 (1 - overlap with the up-down mirror image about the centroid)",
    "components": "count (8-connected)",
}
UNITS_3D = {
    **UNITS_2D,
    "size": "mm^3 (volume)",
    "perimeter": "mm^2 (surface area, Crofton estimate; ITK calls it perimeter too)",
    "roundness": "1 (volume / volume of the ball whose diameter is the Feret diameter)",
    "compactness": "1 (sphericity pi^(1/3) (6 volume)^(2/3) / surface area)",
    "flatness": "1 (sqrt of second / smallest principal moment)",
    "feret_diameter": "mm (largest distance between two voxel centres)",
    "orientation": "rad in [0, pi/2] (angle between major axis and the z axis)",
    "solidity": "1 (voxels / voxel centres inside the convex hull)",
    "components": "count (26-connected)",
}
INTENSITY_UNITS = {
    "mean_intensity": "image units (mean inside the region)",
    "std_intensity": "image units (population std inside the region)",
    "contrast": "image units (mean inside - mean in a ring of about RING_VOXELS voxels around it)",
}


def column_safe(name: str) -> str:
    """Class and channel names as they appear in column names: letters, digits, '_' and '-'."""
    return re.sub(r"[^0-9A-Za-z_\-]+", "_", str(name).strip()) or "_"


def proxy_regions(labels: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(column prefix, label values) per region: each foreground class, then the union if 2+ classes."""
    classes = sorted(((column_safe(n), int(v)) for n, v in labels.items() if int(v) != 0),
                     key=lambda item: item[1])
    names = [name for name, _ in classes]
    if len(set(names)) != len(names) or (len(classes) > 1 and UNION in names):
        raise DatasetError(f"label names {names} collide as proxy column prefixes (or with "
                           f"{UNION!r}). Fix: rename the labels in dataset.json.")
    regions = [(name, (value,)) for name, value in classes]
    if len(classes) > 1:
        regions.append((UNION, tuple(value for _, value in classes)))
    return regions


def case_proxies(image: np.ndarray, label: np.ndarray, geometry: Geometry, labels: dict[str, int],
                 channel_names: dict[int, str]) -> dict[str, float]:
    """Every proxy of one case: shape descriptors per region and intensity per region and channel.

    ``image`` is (C, *spatial) and ``label`` (*spatial) on ``geometry``'s grid. Each region is
    cropped to its bounding box (plus the ring margin) before any filter runs, so the cost follows
    the region, not the image. Empty regions give NaN everywhere except ``components`` = 0.
    """
    label = _integer_label(label)
    image = np.asarray(image)
    if label.shape != tuple(geometry.shape) or image.shape[1:] != label.shape:
        raise ValueError(f"image {image.shape}, label {label.shape} and geometry {geometry.shape} "
                         "must share one spatial grid (image channel-first)")
    if image.shape[0] < len(channel_names):
        raise ValueError(f"image has {image.shape[0]} channels, channel_names names {len(channel_names)}")
    channels = {index: column_safe(name) for index, name in sorted(channel_names.items())}
    if len(set(channels.values())) != len(channels):
        raise DatasetError(f"channel names {list(channel_names.values())} collide as proxy column "
                           "suffixes. Fix: rename the channels in dataset.json.")
    boxes = ndimage.find_objects(label, max_label=max(labels.values(), default=0))
    result: dict[str, float] = {}
    for prefix, values in proxy_regions(labels):
        box = _merge_boxes([boxes[v - 1] for v in values if v <= len(boxes)])
        measured = (_region_proxies(image, label, values, box, geometry, channels) if box
                    else _empty_region(geometry.ndim, channels.values()))
        result.update({f"{prefix}_{key}": value for key, value in measured.items()})
    return result


def _integer_label(label: np.ndarray) -> np.ndarray:
    label = np.asarray(label)
    if np.issubdtype(label.dtype, np.integer):
        return label
    return np.rint(label).astype(np.int64)


def _merge_boxes(boxes: Iterable[tuple[slice, ...] | None]) -> tuple[slice, ...] | None:
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    return tuple(slice(min(b[d].start for b in present), max(b[d].stop for b in present))
                 for d in range(len(present[0])))


def _descriptor_names(ndim: int, channels: Iterable[str]) -> list[str]:
    names = list(UNITS_2D if ndim == 2 else UNITS_3D)
    for channel in channels:
        names += [f"{kind}_{channel}" for kind in INTENSITY_UNITS]
    return names


def _empty_region(ndim: int, channels: Iterable[str]) -> dict[str, float]:
    values = {name: math.nan for name in _descriptor_names(ndim, channels)}
    values["components"] = 0.0
    return values


def _ring_radius(spacing: tuple[float, ...]) -> tuple[int, ...]:
    """Ring half-width per array axis in voxels: RING_VOXELS along the finest axis, same mm elsewhere."""
    width_mm = RING_VOXELS * min(spacing)
    return tuple(max(1, int(round(width_mm / s))) for s in spacing)


def _region_proxies(image: np.ndarray, label: np.ndarray, values: tuple[int, ...],
                    box: tuple[slice, ...], geometry: Geometry,
                    channels: dict[int, str]) -> dict[str, float]:
    spacing = geometry.array_spacing
    radius = _ring_radius(spacing)
    outer = tuple(slice(max(0, b.start - r), min(n, b.stop + r))
                  for b, r, n in zip(box, radius, label.shape))
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))
    around = np.isin(label[outer], values)  # region within the crop that includes the ring margin
    mask = around[inner]
    ndim = mask.ndim

    rotation = geometry.direction_matrix
    start_xyz = np.array([b.start for b in reversed(box)], dtype=float) * np.asarray(geometry.spacing)
    moments = itk_moment_stats(mask, spacing, rotation,
                               tuple(np.asarray(geometry.origin) + rotation @ start_xyz))
    perimeter = crofton_perimeter(mask, spacing)
    hull = convex_hull_stats(mask, spacing)
    measured = {
        "size": moments.size,
        "perimeter": perimeter,
        "roundness": roundness(moments.size, hull.feret_diameter, ndim),
        "compactness": compactness(moments.size, perimeter, ndim),
        "elongation": moments.elongation,
        "flatness": moments.flatness,
        "feret_diameter": hull.feret_diameter,
        "orientation": orientation(moments.major_axis),
        "solidity": hull.solidity,
        "asymmetry": point_asymmetry(mask),
        "asymmetry_lr": mirror_asymmetry(mask, axis=ndim - 1),
        "asymmetry_ud": mirror_asymmetry(mask, axis=ndim - 2),
        "components": float(connected_components(mask)),
    }
    ring = ndimage.maximum_filter(around, size=tuple(2 * r + 1 for r in radius)) & ~around
    for index, channel in channels.items():
        crop = image[index][outer].astype(np.float64, copy=False)
        inside = crop[around]
        mean = float(inside.mean())
        measured[f"mean_intensity_{channel}"] = mean
        measured[f"std_intensity_{channel}"] = float(inside.std())
        measured[f"contrast_{channel}"] = mean - float(crop[ring].mean()) if ring.any() else math.nan
    wanted = _descriptor_names(ndim, channels.values())
    return {name: float(measured[name]) for name in wanted}


@dataclass
class ProxyTable:
    """One row per case, one column per proxy; NaN marks a value that is missing or undefined."""

    case_ids: list[str]
    columns: list[str]
    values: np.ndarray  # (n_cases, n_columns), float64

    def __post_init__(self) -> None:
        self.case_ids = [str(c) for c in self.case_ids]
        self.columns = [str(c) for c in self.columns]
        self.values = np.asarray(self.values, dtype=np.float64).reshape(len(self.case_ids),
                                                                         len(self.columns))
        if len(set(self.columns)) != len(self.columns) or CASE_ID in self.columns:
            raise ValueError(f"proxy columns must be unique and not {CASE_ID!r}: {self.columns}")

    @classmethod
    def from_rows(cls, case_ids: list[str], rows: list[dict[str, float]]) -> "ProxyTable":
        """Columns are the sorted union over rows, so every table of a dataset has the same
        columns in the same order; a column a case lacks is NaN for it."""
        columns = sorted(set().union(*rows)) if rows else []
        values = np.array([[row.get(c, math.nan) for c in columns] for row in rows], dtype=np.float64)
        return cls(list(case_ids), columns, values.reshape(len(rows), len(columns)))

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise KeyError(f"no proxy column {name!r}; the table has {', '.join(self.columns)}")
        return self.values[:, self.columns.index(name)]

    def save_csv(self, path: Path | str) -> None:
        """Write atomically: header ``case_id,<columns>``, floats at repr precision, NaN as ''."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([CASE_ID, *self.columns])
        for case, row in zip(self.case_ids, self.values):
            writer.writerow([case, *("" if math.isnan(v) else repr(float(v)) for v in row)])
        write_text_atomic(path, buffer.getvalue())

    @classmethod
    def load_csv(cls, path: Path | str) -> "ProxyTable":
        rows = list(csv.reader(io.StringIO(Path(path).read_text(encoding="utf-8"))))
        if not rows or not rows[0] or rows[0][0] != CASE_ID:
            raise PlanError(f"{path}: not a proxy table (the header must start with {CASE_ID!r}). "
                            "Fix: delete it and compute the proxies again.")
        header, body = rows[0], rows[1:]
        bad = [i + 2 for i, row in enumerate(body) if len(row) != len(header)]
        if bad:
            raise PlanError(f"{path}: lines {bad} do not have {len(header)} fields like the header. "
                            "Fix: delete it and compute the proxies again.")
        values = [[float(v) if v != "" else math.nan for v in row[1:]] for row in body]
        return cls([row[0] for row in body], header[1:], np.array(values, dtype=np.float64))


def dataset_proxy_table(dataset: RawDataset, case_ids: list[str] | None = None) -> ProxyTable:
    """Proxies of every (or the given) training case, read one case at a time to bound memory."""
    cases = dataset.case_ids() if case_ids is None else list(case_ids)
    spec = dataset.spec
    rows = []
    for case in cases:
        images = dataset.read_images(case)
        label, geometry = dataset.read_label(case)
        rows.append(case_proxies(images.array, label, geometry, spec.labels, spec.channel_names))
    return ProxyTable.from_rows(cases, rows)
