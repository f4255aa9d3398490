"""Medical volumes through SimpleITK: NIfTI, NRRD and MetaImage, geometry kept exactly.

One file holds one channel (the nnU-Net convention); a vector-valued file is read as several
channels. Arrays come back in numpy order (C, z, y, x); spacing/origin/direction stay in ITK order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from preprocessing.atomic import atomic_output
from preprocessing.errors import ImageIOError
from preprocessing.geometry import Geometry

_FORMAT_BY_ENDING = {
    ".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage",
    ".mhd": "metaimage",
}
# SimpleITK pixel types that files commonly hold but some formats cannot store.
_WRITABLE_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32,
                                          np.int32, np.float32, np.float64)}


class SimpleITKIO:
    endings = tuple(_FORMAT_BY_ENDING)

    def read(self, path: Path) -> tuple[np.ndarray, Geometry]:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise ImageIOError(
                path, f"cannot be read ({_first_line(err)})",
                "the file is truncated or corrupt: re-export or re-download it",
            ) from None
        if image.GetDimension() not in (2, 3):
            raise ImageIOError(
                path, f"has {image.GetDimension()} dimensions; 2D or 3D images are supported",
                "store each channel or time point as its own file (CASE_0000, CASE_0001, ...)",
            )
        array = sitk.GetArrayFromImage(image)
        if image.GetNumberOfComponentsPerPixel() > 1:
            array = np.moveaxis(array, -1, 0)  # vector pixels become channels
        else:
            array = array[None]
        geometry = Geometry(
            shape=tuple(int(s) for s in array.shape[1:]),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
            source_format=_format_of(path),
        )
        return array, geometry

    def write(self, path: Path, array: np.ndarray, geometry: Geometry) -> None:
        if array.shape[0] != 1:
            raise ImageIOError(
                path, f"has {array.shape[0]} channels; {_format_of(path)} files hold one channel each",
                "write one file per channel (CASE_0000, CASE_0001, ...)",
            )
        image = sitk.GetImageFromArray(_writable(array[0]))
        image.SetSpacing(tuple(float(v) for v in geometry.spacing))
        image.SetOrigin(tuple(float(v) for v in geometry.origin))
        image.SetDirection(tuple(float(v) for v in geometry.direction))
        with atomic_output(path) as tmp:
            try:
                sitk.WriteImage(image, str(tmp), useCompression=True)
            except RuntimeError as err:
                raise ImageIOError(path, f"cannot be written ({_first_line(err)})",
                                   "check the folder is writable and the disk has space") from None


def _writable(array: np.ndarray) -> np.ndarray:
    """Map dtypes that not every format stores (bool, int64, float16) to close ones that all do."""
    if array.dtype in _WRITABLE_DTYPES:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            return array.astype(np.float64)
        return array.astype(np.int32)
    return array.astype(np.float32)


def _format_of(path: Path) -> str:
    name = path.name.lower()
    return next(fmt for ending, fmt in _FORMAT_BY_ENDING.items() if name.endswith(ending))


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # ITK messages start with a source location; the last line carries the actual reason.
    return lines[-1][:200] if lines else type(err).__name__
