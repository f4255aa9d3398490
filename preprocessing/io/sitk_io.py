"""Medical volumes: NIfTI, NRRD and MetaImage, geometry kept exactly.

SimpleITK reads every header and writes every file; NIfTI voxels are read with nibabel, which
keeps NaNs and refuses truncated files (ITK zero-fills both silently).

One file holds one channel (the nnU-Net convention); a vector-valued file is read as several
channels. Arrays come back in numpy order (C, z, y, x); spacing/origin/direction stay in ITK order.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from preprocessing.atomic import atomic_output
from preprocessing.errors import ImageIOError
from preprocessing.geometry import Geometry

_FORMAT_BY_ENDING = {
    ".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage",
    ".mhd": "metaimage",
}
_CORRUPT_FIX = "the file is truncated or corrupt: re-export or re-download it"
# SimpleITK pixel types that files commonly hold but some formats cannot store.
_WRITABLE_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32,
                                          np.int32, np.float32, np.float64)}


class SimpleITKIO:
    endings = tuple(_FORMAT_BY_ENDING)

    def read(self, path: Path) -> tuple[np.ndarray, Geometry]:
        header = _read_header(path)
        if header.GetDimension() not in (2, 3):
            raise ImageIOError(
                path, f"has {header.GetDimension()} dimensions; 2D or 3D images are supported",
                "store each channel or time point as its own file (CASE_0000, CASE_0001, ...)",
            )
        if _format_of(path) == "nifti":
            array = _nifti_voxels(path, header)
        else:
            array = _itk_voxels(path)
        geometry = Geometry(
            shape=tuple(int(s) for s in array.shape[1:]),
            spacing=tuple(float(v) for v in header.GetSpacing()),
            origin=tuple(float(v) for v in header.GetOrigin()),
            direction=tuple(float(v) for v in header.GetDirection()),
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


def _read_header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ImageIOError(path, f"cannot be read ({_first_line(err)})", _CORRUPT_FIX) from None
    return reader


def _itk_voxels(path: Path) -> np.ndarray:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ImageIOError(path, f"cannot be read ({_first_line(err)})", _CORRUPT_FIX) from None
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        return np.moveaxis(array, -1, 0)  # vector pixels become channels
    return array[None]


def _nifti_voxels(path: Path, header: sitk.ImageFileReader) -> np.ndarray:
    """NIfTI voxels through nibabel: ITK zero-fills NaNs and truncated files without a word.

    Geometry still comes from ITK's header reading, so every format shares one convention.
    """
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:  # nibabel raises EOFError, OSError, ValueError, zlib.error ...
        raise ImageIOError(path, f"cannot be read ({type(err).__name__}: {err})", _CORRUPT_FIX) from None
    size = tuple(header.GetSize())  # (x, y[, z]), the order nibabel indexes in
    data = data.reshape(size + (header.GetNumberOfComponents(),))
    spatial_reversed = tuple(range(len(size) - 1, -1, -1))
    return np.ascontiguousarray(data.transpose((len(size),) + spatial_reversed))


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
