"""2D natural images (PNG, JPEG, BMP, TIFF) through Pillow.

RGB(A) becomes 3 channels (alpha is dropped), grayscale 1; palette images return their palette
indices, which is how indexed masks are stored. These formats carry no geometry, so reads report
unit spacing, zero origin and identity direction. Masks stored as 0/255 are returned as they are:
mapping them to label indices is the converter's job, never the reader's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from preprocessing.atomic import atomic_output
from preprocessing.errors import ImageIOError
from preprocessing.geometry import Geometry

_FORMAT_BY_ENDING = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp",
                     ".tif": "tiff", ".tiff": "tiff"}
_SIXTEEN_BIT_OK = {"png", "tiff"}


class NaturalImageIO:
    endings = tuple(_FORMAT_BY_ENDING)

    def read(self, path: Path) -> tuple[np.ndarray, Geometry]:
        fmt = _format_of(path)
        try:
            with Image.open(path) as image:
                image.load()
                if getattr(image, "n_frames", 1) > 1:
                    raise ImageIOError(path, f"has {image.n_frames} pages; 2D images have one",
                                       "store volumes as NIfTI (.nii.gz) instead of multi-page TIFF")
                array = _to_channels(image)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageIOError(path, f"cannot be read as {fmt} ({err})",
                               "the file is truncated or corrupt: re-export or re-download it") from None
        return array, Geometry.default(tuple(array.shape[1:]), source_format=fmt)

    def write(self, path: Path, array: np.ndarray, geometry: Geometry) -> None:
        fmt = _format_of(path)
        channels = array.shape[0]
        if geometry.ndim != 2 or channels not in (1, 3):
            raise ImageIOError(path, f"cannot store a {geometry.ndim}D image with {channels} channels "
                               f"as {fmt}", "use 2D arrays with 1 (gray) or 3 (RGB) channels, or .nii.gz")
        pixels = _storable(path, array, fmt)
        image = Image.fromarray(pixels[0] if channels == 1 else np.moveaxis(pixels, 0, -1))
        with atomic_output(path) as tmp:
            image.save(tmp, format=fmt.upper(), **({"quality": 95} if fmt == "jpeg" else {}))


def _to_channels(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image, mode = image.convert("RGB"), "RGB"
    elif mode == "LA":
        image, mode = image.convert("L"), "L"
    elif mode == "1":
        image, mode = image.convert("L"), "L"
    array = np.asarray(image)
    if mode == "RGB":
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))
    return array[None].copy()


def _storable(path: Path, array: np.ndarray, fmt: str) -> np.ndarray:
    """Cast to uint8 (or uint16 for 1-channel PNG/TIFF) when that loses nothing; refuse otherwise."""
    if array.dtype == np.uint8:
        return array
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        raise ImageIOError(path, f"holds non-integer {array.dtype} values that {fmt} cannot store",
                           "write it as .nii.gz, or scale and round it to 0..255 first")
    low, high = float(array.min()), float(array.max())
    if low >= 0 and high <= 255:
        return array.astype(np.uint8)
    if low >= 0 and high <= 65535 and array.shape[0] == 1 and fmt in _SIXTEEN_BIT_OK:
        return array.astype(np.uint16)
    raise ImageIOError(path, f"values {low:g}..{high:g} do not fit {fmt}",
                       "write it as .nii.gz, or rescale to 0..255 first")


def _format_of(path: Path) -> str:
    name = path.name.lower()
    return next(fmt for ending, fmt in _FORMAT_BY_ENDING.items() if name.endswith(ending))
