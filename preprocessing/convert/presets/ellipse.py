"""Head masks from HC18's ellipse outlines: fill the drawn outline, or, where it is open (cut by
the image border or drawn with a gap), fill the least-squares ellipse through its pixels.

The fit is the direct conic fit constrained to ellipses (4ac - b^2 = 1), solved in the
numerically stable split form on centred, scaled coordinates.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_POINTS = 6           # a conic has five degrees of freedom
CLOSED_SHARE = 0.5       # a closed outline's filled inside covers (almost) all of the fitted one


class EllipseFitError(Exception):
    """The outline's pixels do not determine an ellipse."""


def head_mask(outline: np.ndarray) -> tuple[np.ndarray, bool]:
    """(mask, fitted): the filled outline when it is closed, else the filled fitted ellipse
    united with the outline; ``fitted`` says which was used."""
    filled = ndimage.binary_fill_holes(outline)
    inside = filled & ~outline
    fitted = fill_ellipse(fit_ellipse(outline), outline.shape)
    if inside.sum() >= CLOSED_SHARE * fitted.sum():
        return filled, False
    return fitted | outline, True


def fit_ellipse(points_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Conic coefficients (a, b, c, d, e, f) in normalised coordinates, with the centre and
    scale that normalise pixel coordinates (x = column, y = row)."""
    rows, cols = np.nonzero(points_mask)
    if len(rows) < MIN_POINTS:
        raise EllipseFitError(f"the outline has {len(rows)} pixels; an ellipse needs {MIN_POINTS}")
    centre = np.array([cols.mean(), rows.mean()])
    scale = float(max(cols.std(), rows.std(), 1.0))
    x, y = (cols - centre[0]) / scale, (rows - centre[1]) / scale
    quadratic = np.column_stack([x * x, x * y, y * y])
    linear = np.column_stack([x, y, np.ones_like(x)])
    s1, s2, s3 = quadratic.T @ quadratic, quadratic.T @ linear, linear.T @ linear
    try:
        reduce = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        raise EllipseFitError("the outline pixels lie on a line") from None
    m = s1 + s2 @ reduce
    m = np.vstack([m[2] / 2.0, -m[1], m[0] / 2.0])  # the inverse of the constraint matrix applied
    _, vectors = np.linalg.eig(m)
    vectors = np.real(vectors)
    condition = 4 * vectors[0] * vectors[2] - vectors[1] ** 2
    candidates = np.nonzero(condition > 0)[0]
    if len(candidates) == 0:
        raise EllipseFitError("the outline pixels fit no ellipse")
    top = vectors[:, candidates[0]]
    return np.concatenate([top, reduce @ top]), centre, scale


def fill_ellipse(fit: tuple[np.ndarray, np.ndarray, float], shape: tuple[int, ...]) -> np.ndarray:
    """Pixels whose centre lies inside the fitted ellipse (clipped to the image)."""
    (a, b, c, d, e, f), centre, scale = fit
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    x, y = (cols - centre[0]) / scale, (rows - centre[1]) / scale
    value = a * x * x + b * x * y + c * y * y + d * x + e * y + f
    # the ellipse's own centre solves the gradient = 0 system; the inside shares its sign
    cx, cy = np.linalg.solve([[2 * a, b], [b, 2 * c]], [-d, -e])
    at_centre = a * cx * cx + b * cx * cy + c * cy * cy + d * cx + e * cy + f
    return (value * at_centre) > 0
