"""Image IO: every format round-trips its array and geometry; faults name the file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from preprocessing.errors import ImageIOError
from preprocessing.geometry import Geometry
from preprocessing.io import read_image, write_image

OBLIQUE_3D = tuple(np.array([[0.96592583, -0.25881905, 0.0],
                             [0.25881905, 0.96592583, 0.0],
                             [0.0, 0.0, 1.0]]).ravel())  # 15 degrees about z
GEOMETRY_3D = Geometry((5, 7, 9), spacing=(0.8, 0.6, 3.0), origin=(-120.5, 33.0, 12.25),
                       direction=OBLIQUE_3D)
GEOMETRY_2D = Geometry((7, 9), spacing=(0.2, 0.3), origin=(10.0, -4.0),
                       direction=(0.0, 1.0, 1.0, 0.0))


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_volume_round_trip_keeps_values_and_geometry(tmp_path: Path, ending: str, dtype) -> None:
    array = (np.random.default_rng(0).normal(0, 50, (1, 5, 7, 9))).astype(dtype)
    path = tmp_path / f"img{ending}"
    write_image(path, array, GEOMETRY_3D)
    back, geometry = read_image(path)
    assert back.shape == (1, 5, 7, 9) and back.dtype == dtype
    np.testing.assert_array_equal(back, array)
    assert geometry.mismatches(GEOMETRY_3D) == []
    np.testing.assert_allclose(geometry.array_spacing, (3.0, 0.6, 0.8), atol=1e-6)


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd"])
def test_2d_medical_round_trip_keeps_geometry(tmp_path: Path, ending: str) -> None:
    array = np.arange(63, dtype=np.float32).reshape(1, 7, 9)
    path = tmp_path / f"slice{ending}"
    write_image(path, array, GEOMETRY_2D)
    back, geometry = read_image(path)
    np.testing.assert_array_equal(back, array)
    assert geometry.ndim == 2 and geometry.mismatches(GEOMETRY_2D) == []


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd"])
def test_nan_survives_the_round_trip(tmp_path: Path, ending: str) -> None:
    """ITK's NIfTI reader turns NaN into 0; the integrity check depends on seeing them."""
    array = np.ones((1, 3, 3, 3), np.float32)
    array[0, 1, 1, 1] = np.nan
    write_image(tmp_path / f"nan{ending}", array, GEOMETRY_3D.with_shape((3, 3, 3)))
    back, _ = read_image(tmp_path / f"nan{ending}")
    assert np.isnan(back[0, 1, 1, 1]) and np.nansum(back) == 26


def test_nibabel_and_simpleitk_agree_on_written_nifti_geometry(tmp_path: Path) -> None:
    path = tmp_path / "img.nii.gz"
    array = np.random.default_rng(1).normal(size=(1, 5, 7, 9)).astype(np.float32)
    write_image(path, array, GEOMETRY_3D)
    nifti = nib.load(str(path))
    affine = nifti.affine  # RAS; ITK is LPS: flip the first two rows
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    np.testing.assert_allclose(spacing, GEOMETRY_3D.spacing, atol=1e-5)
    np.testing.assert_allclose(lps[:, 3], GEOMETRY_3D.origin, atol=1e-4)
    np.testing.assert_allclose(lps[:, :3] / spacing, GEOMETRY_3D.direction_matrix, atol=1e-5)
    # nibabel indexes (x, y, z); our arrays are (z, y, x)
    np.testing.assert_allclose(np.asarray(nifti.dataobj).transpose(2, 1, 0), array[0], atol=1e-6)


def test_rgb_png_reads_as_three_channels_and_round_trips(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (3, 6, 8), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    write_image(path, rgb, Geometry.default((6, 8)))
    back, geometry = read_image(path)
    np.testing.assert_array_equal(back, rgb)
    assert geometry.source_format == "png" and geometry.spacing == (1.0, 1.0)


@pytest.mark.parametrize("ending", [".png", ".bmp", ".tif"])
def test_gray_natural_images_read_as_one_channel(tmp_path: Path, ending: str) -> None:
    gray = np.random.default_rng(3).integers(0, 256, (1, 6, 8), dtype=np.uint8)
    path = tmp_path / f"gray{ending}"
    write_image(path, gray, Geometry.default((6, 8)))
    back, _ = read_image(path)
    np.testing.assert_array_equal(back, gray)


def test_rgba_drops_alpha_and_palette_keeps_indices(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    back, _ = read_image(tmp_path / "rgba.png")
    assert back.shape == (3, 4, 5) and back[0].max() == 200

    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(tmp_path / "indexed.png")
    back, _ = read_image(tmp_path / "indexed.png")
    np.testing.assert_array_equal(back[0], [[0, 1], [2, 1]])


def test_sixteen_bit_png_round_trips(tmp_path: Path) -> None:
    values = np.array([[[0, 1000, 65535]]], np.int32)
    write_image(tmp_path / "deep.png", values, Geometry.default((1, 3)))
    back, _ = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(back, values)


def test_jpeg_reads_rgb(tmp_path: Path) -> None:
    Image.new("RGB", (8, 6), (120, 30, 200)).save(tmp_path / "photo.jpg")
    back, geometry = read_image(tmp_path / "photo.jpg")
    assert back.shape == (3, 6, 8) and abs(int(back[2, 3, 3]) - 200) <= 3
    assert geometry.source_format == "jpeg"


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_volume_names_the_file(tmp_path: Path, ending: str, keep: float) -> None:
    """ITK silently zero-pads truncated NIfTI; we must refuse it like the other formats."""
    path = tmp_path / f"case_0000{ending}"
    noise = np.random.default_rng(5).normal(size=(1, 20, 20, 20)).astype(np.float32)
    write_image(path, noise, GEOMETRY_3D.with_shape((20, 20, 20)))
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(ImageIOError) as err:
        read_image(path)
    assert str(path) in str(err.value) and "corrupt" in str(err.value)


def test_corrupt_png_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageIOError, match="broken.png"):
        read_image(path)


def test_unknown_ending_names_the_file_and_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "scan.dcmx"
    path.write_bytes(b"x")
    with pytest.raises(ImageIOError) as err:
        read_image(path)
    assert "scan.dcmx" in str(err.value) and ".nii.gz" in str(err.value)


def test_writes_are_atomic_and_leave_no_partial_files(tmp_path: Path) -> None:
    with pytest.raises(ImageIOError, match="cannot store"):
        write_image(tmp_path / "float.png", np.full((1, 3, 3), 0.5, np.float32), Geometry.default((3, 3)))
    assert list(tmp_path.iterdir()) == []
    write_image(tmp_path / "a.mhd", np.ones((1, 2, 2, 2), np.int16), GEOMETRY_3D.with_shape((2, 2, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mhd", "a.zraw"]


def test_multi_channel_volume_write_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageIOError, match="one channel each"):
        write_image(tmp_path / "two.nii.gz", np.ones((2, 2, 2, 2), np.float32),
                    GEOMETRY_3D.with_shape((2, 2, 2)))


def test_vector_nifti_reads_as_channels(tmp_path: Path) -> None:
    vector = sitk.GetImageFromArray(np.random.default_rng(4).normal(size=(3, 4, 2)).astype(np.float32),
                                    isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vec.nii.gz"))
    back, geometry = read_image(tmp_path / "vec.nii.gz")
    assert back.shape == (2, 3, 4) and geometry.shape == (3, 4)


def test_geometry_serialises_and_reports_differences() -> None:
    assert Geometry.from_dict(GEOMETRY_3D.to_dict()) == GEOMETRY_3D
    shifted = Geometry(GEOMETRY_3D.shape, GEOMETRY_3D.spacing, (0.0, 0.0, 0.0), GEOMETRY_3D.direction)
    assert [m.split()[0] for m in GEOMETRY_3D.mismatches(shifted)] == ["origin"]
    with pytest.raises(ValueError):
        Geometry((2, 2), (1.0,), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))


def test_image_errors_survive_a_process_boundary() -> None:
    """Worker processes report bad files to the parent by pickling the error."""
    import pickle

    err = ImageIOError("/data/a_0000.nii.gz", "cannot be read", "re-export it")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ImageIOError) and str(back) == str(err) and back.path == err.path
