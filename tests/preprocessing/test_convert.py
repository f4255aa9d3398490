"""mucald_convert: public-dataset layouts become raw datasets that pass verify_dataset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from preprocessing.commands.convert import main
from preprocessing.convert import (LabelMap, OutputConfig, Pairs2DConfig, VolumePairsConfig,
                                   convert_pairs_2d, convert_volume_pairs)
from preprocessing.dataset import RawDataset
from preprocessing.errors import DatasetError
from preprocessing.integrity import verify_dataset
from preprocessing.io import read_image

PYRADIOMICS = Path(__file__).resolve().parents[3] / "shared" / "data" / "pyradiomics"


def disk(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def save(path: Path, array: np.ndarray, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def rgb(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def out(tmp_path: Path, **kwargs: object) -> OutputConfig:
    return OutputConfig(raw_root=tmp_path / "raw", dataset_id=7, name="Test", **kwargs)


def pairs(tmp_path: Path, **kwargs: object) -> Pairs2DConfig:
    kwargs.setdefault("output", out(tmp_path))
    return Pairs2DConfig(images_dir=tmp_path / "images", masks_dir=tmp_path / "masks", **kwargs)


def kvasir_like(tmp_path: Path, count: int = 3, shape: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """RGB JPEG images and 0/255 JPEG masks (with compression artefacts) of the same name."""
    intended = []
    for i in range(count):
        mask = disk(shape, (40 + 5 * i, 60), 25)
        save(tmp_path / "images" / f"cju{i}.jpg", rgb(shape, i), quality=90)
        save(tmp_path / "masks" / f"cju{i}.jpg", mask.astype(np.uint8) * 255, quality=75)
        intended.append(mask)
    return intended


# -- mode (i): 2D pairs ---------------------------------------------------------------------------

def test_kvasir_like_jpeg_masks_become_exact_binary_labels(tmp_path: Path) -> None:
    intended = kvasir_like(tmp_path)
    raw_mask = read_image(tmp_path / "masks" / "cju0.jpg")[0]
    assert len(np.unique(raw_mask)) > 2  # the test really has JPEG artefacts to handle
    result = convert_pairs_2d(pairs(tmp_path))
    assert verify_dataset(result.dataset_folder).ok
    dataset = RawDataset(result.dataset_folder)
    assert dataset.spec.channel_names == {0: "R", 1: "G", 2: "B"}
    assert dataset.spec.labels == {"background": 0, "foreground": 1}
    assert dataset.spec.file_ending == ".png" and dataset.spec.num_training == 3
    for i, mask in enumerate(intended):
        label, _ = dataset.read_label(f"cju{i}")
        np.testing.assert_array_equal(label, mask.astype(np.uint8))
        images = dataset.read_images(f"cju{i}")
        assert images.array.shape == (3, 96, 128)
        np.testing.assert_array_equal(images.array, read_image(tmp_path / "images" / f"cju{i}.jpg")[0])


def test_isic_like_masks_are_found_by_suffix(tmp_path: Path) -> None:
    save(tmp_path / "images" / "ISIC_0000000.jpg", rgb((64, 80), 1))
    mask = disk((64, 80), (30, 40), 20).astype(np.uint8) * 255
    save(tmp_path / "masks" / "ISIC_0000000_segmentation.png", mask)
    (tmp_path / "images" / "ATTRIBUTION.txt").write_text("not an image")
    config = pairs(tmp_path, mask_suffix="_segmentation", label_names=("background", "lesion"))
    result = convert_pairs_2d(config)
    assert result.train_cases == ("ISIC_0000000",)
    assert RawDataset(result.dataset_folder).spec.labels == {"background": 0, "lesion": 1}
    assert verify_dataset(result.dataset_folder).ok


def test_indexed_masks_are_kept_when_declared(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:20], mask[25:35, 30:45] = 1, 2
    save(tmp_path / "images" / "a.png", rgb((40, 50), 2)[..., 0])  # grayscale image
    save(tmp_path / "masks" / "a.png", mask)
    names = ("background", "liver", "tumour")
    result = convert_pairs_2d(pairs(tmp_path, label_names=names, channel_name="US"))
    dataset = RawDataset(result.dataset_folder)
    np.testing.assert_array_equal(dataset.read_label("a")[0], mask)
    assert dataset.spec.channel_names == {0: "US"} and verify_dataset(result.dataset_folder).ok


def test_label_map_snaps_values_to_the_nearest_listed_raw_value(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:20], mask[25:35, 30:45] = 128, 255
    noisy = mask.copy()
    noisy[0, 0], noisy[10, 10], noisy[30, 40] = 3, 125, 251  # artefacts inside each region
    save(tmp_path / "images" / "a.png", rgb((40, 50), 3))
    save(tmp_path / "masks" / "a.png", noisy)
    result = convert_pairs_2d(pairs(tmp_path, label_map=LabelMap.parse("0:0,128:1,255:2")))
    assert result.labels == {"background": 0, "class_1": 1, "class_2": 2}
    label = RawDataset(result.dataset_folder).read_label("a")[0]
    np.testing.assert_array_equal(label, (mask == 128) * 1 + (mask == 255) * 2)


def test_explicit_map_accepts_anti_aliased_edges(tmp_path: Path) -> None:
    hard = disk((64, 64), (32, 32), 20).astype(float) * 255
    soft = (hard + np.roll(hard, 1, axis=1)) / 2  # one-pixel ramp of in-between values on the edge
    save(tmp_path / "images" / "a.png", rgb((64, 64), 4))
    save(tmp_path / "masks" / "a.png", soft.astype(np.uint8))
    result = convert_pairs_2d(pairs(tmp_path, label_map=LabelMap.parse("0:0,255:1")))
    label = RawDataset(result.dataset_folder).read_label("a")[0]
    assert set(np.unique(label)) == {0, 1}


@pytest.mark.parametrize("label_map", [None, "0:0,255:1"])
def test_unmappable_mask_values_name_the_mask(tmp_path: Path, label_map: str | None) -> None:
    mask = np.zeros((40, 50), np.uint8)
    mask[5:30, 5:30], mask[10:20, 35:45] = 100, 255  # a whole region of an unlisted value
    save(tmp_path / "images" / "a.png", rgb((40, 50), 5))
    save(tmp_path / "masks" / "a.png", mask)
    config = pairs(tmp_path, label_map=LabelMap.parse(label_map) if label_map else None)
    with pytest.raises(DatasetError, match="--label-map") as err:
        convert_pairs_2d(config)
    assert str(tmp_path / "masks" / "a.png") in str(err.value)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_undeclared_index_values_are_not_silently_thresholded(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.png", rgb((20, 20), 6))
    save(tmp_path / "masks" / "a.png", np.arange(400, dtype=np.uint8).reshape(20, 20) % 3)
    with pytest.raises(DatasetError, match=r"a\.png.*\[0, 1\]"):
        convert_pairs_2d(pairs(tmp_path))


def test_every_input_problem_is_reported_at_once_and_nothing_is_written(tmp_path: Path) -> None:
    save(tmp_path / "images" / "ok.png", rgb((30, 30), 7))
    save(tmp_path / "masks" / "ok.png", disk((30, 30), (15, 15), 8).astype(np.uint8))
    save(tmp_path / "images" / "small.png", rgb((30, 30), 8))
    save(tmp_path / "masks" / "small.png", np.zeros((30, 29), np.uint8))
    save(tmp_path / "images" / "lonely.png", rgb((30, 30), 9))
    save(tmp_path / "images" / "paint.png", rgb((30, 30), 10))
    save(tmp_path / "masks" / "paint.png", rgb((30, 30), 11))
    with pytest.raises(DatasetError) as err:
        convert_pairs_2d(pairs(tmp_path))
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 3 and all("Fix:" in line for line in lines)
    assert any("lonely.png" in line and "--allow-unlabelled" in line for line in lines)
    assert any("small.png" in line and str(tmp_path / "images" / "small.png") in line for line in lines)
    assert any("paint.png" in line and "colour mask" in line for line in lines)
    assert not (tmp_path / "raw" / "Dataset007_Test").exists()
    assert not [p for p in (tmp_path / "raw").iterdir()]  # no staging folder left behind


def test_unlabelled_images_go_to_images_ts_when_allowed(tmp_path: Path) -> None:
    kvasir_like(tmp_path, count=2)
    save(tmp_path / "images" / "extra one.png", rgb((96, 128), 12))
    result = convert_pairs_2d(pairs(tmp_path, allow_unlabelled=True))
    assert result.test_cases == ("extra_one",) and len(result.train_cases) == 2
    assert (result.dataset_folder / "imagesTs" / "extra_one_0000.png").is_file()
    assert not (result.dataset_folder / "labelsTs").exists()
    assert verify_dataset(result.dataset_folder).ok


def test_test_split_is_deterministic_per_seed(tmp_path: Path) -> None:
    kvasir_like(tmp_path, count=8, shape=(32, 32))

    def split(seed: int, where: str) -> tuple[str, ...]:
        config = pairs(tmp_path, output=replace(out(tmp_path), raw_root=tmp_path / where,
                                                test_fraction=0.25, seed=seed))
        result = convert_pairs_2d(config)
        assert verify_dataset(result.dataset_folder).ok and len(result.train_cases) == 6
        assert {p.name for p in (result.dataset_folder / "labelsTs").iterdir()} == {
            f"{case}.png" for case in result.test_cases}
        return tuple(sorted(result.test_cases))

    assert split(1, "a") == split(1, "b")
    assert len({split(seed, f"s{seed}") for seed in range(2, 6)}) > 1


def test_case_ids_are_sanitised_and_unique(tmp_path: Path) -> None:
    for stem in ("a b", "a_b", "c+d"):
        save(tmp_path / "images" / f"{stem}.png", rgb((16, 16), 13))
        save(tmp_path / "masks" / f"{stem}.png", disk((16, 16), (8, 8), 4).astype(np.uint8) * 255)
    result = convert_pairs_2d(pairs(tmp_path))
    assert sorted(result.train_cases) == ["a_b", "a_b_2", "c_d"]


def test_existing_dataset_is_kept_unless_overwrite(tmp_path: Path) -> None:
    kvasir_like(tmp_path, count=1)
    folder = convert_pairs_2d(pairs(tmp_path)).dataset_folder
    with pytest.raises(DatasetError, match=f"{folder}.*--overwrite"):
        convert_pairs_2d(pairs(tmp_path))
    (folder / "imagesTr" / "stale_0000.png").write_bytes(b"")
    config = pairs(tmp_path, output=replace(out(tmp_path), overwrite=True))
    assert convert_pairs_2d(config).dataset_folder == folder
    assert not (folder / "imagesTr" / "stale_0000.png").exists()


# -- mode (ii): volume pairs ----------------------------------------------------------------------

ROTATED = (0.866, -0.5, 0.0, 0.5, 0.866, 0.0, 0.0, 0.0, 1.0)


def write_volume(path: Path, array: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...],
                 direction: tuple[float, ...] = ROTATED) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def volume_pair(folder: Path, case: str,
                label_origin: tuple[float, ...] = (10.0, -5.0, 3.0)) -> np.ndarray:
    """A rotated, anisotropic int16 image and an int16 label on the same (or a shifted) grid."""
    image = np.random.default_rng(0).integers(-1000, 1000, (6, 20, 24)).astype(np.int16)
    label = np.zeros((6, 20, 24), np.int16)
    label[2:5, 5:12, 6:15] = 1
    write_volume(folder / f"{case}_image.nrrd", image, (0.8, 0.6, 2.5), (10.0, -5.0, 3.0))
    write_volume(folder / f"{case}_label.nrrd", label, (0.8, 0.6, 2.5), label_origin)
    return label


def volumes(tmp_path: Path, **kwargs: object) -> VolumePairsConfig:
    return VolumePairsConfig(input_dir=tmp_path / "vol", output=out(tmp_path), channel_name="CT",
                             **kwargs)


def test_nrrd_pairs_become_nifti_with_identical_geometry(tmp_path: Path) -> None:
    label = volume_pair(tmp_path / "vol", "p1")
    result = convert_volume_pairs(volumes(tmp_path))
    assert verify_dataset(result.dataset_folder).ok
    image_out, image_geo = read_image(result.dataset_folder / "imagesTr" / "p1_0000.nii.gz")
    label_out, label_geo = read_image(result.dataset_folder / "labelsTr" / "p1.nii.gz")
    source, source_geo = read_image(tmp_path / "vol" / "p1_image.nrrd")
    assert image_out.dtype == np.int16 and label_out.dtype == np.uint8
    np.testing.assert_array_equal(image_out, source)
    np.testing.assert_array_equal(label_out[0], label)
    assert image_geo.mismatches(source_geo) == [] and label_geo == image_geo


def test_label_on_another_grid_is_an_error_naming_both_files(tmp_path: Path) -> None:
    volume_pair(tmp_path / "vol", "p1", label_origin=(10.0, -5.0, 5.5))  # one slice off
    with pytest.raises(DatasetError, match="origin") as err:
        convert_volume_pairs(volumes(tmp_path))
    assert "p1_label.nrrd" in str(err.value) and "p1_image.nrrd" in str(err.value)
    assert "--resample-labels" in str(err.value)


def test_resample_labels_puts_the_label_on_the_image_grid(tmp_path: Path) -> None:
    label = volume_pair(tmp_path / "vol", "p1", label_origin=(10.0, -5.0, 5.5))  # +1 slice in z
    result = convert_volume_pairs(volumes(tmp_path, resample_labels=True))
    assert verify_dataset(result.dataset_folder).ok
    out_label = read_image(result.dataset_folder / "labelsTr" / "p1.nii.gz")[0][0]
    expected = np.zeros_like(label)
    expected[1:] = label[:-1]
    np.testing.assert_array_equal(out_label, expected)


def test_undeclared_volume_label_values_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "vol"
    volume_pair(folder, "p1")
    three = np.full((6, 20, 24), 3, np.int16)
    write_volume(folder / "p1_label.nrrd", three, (0.8, 0.6, 2.5), (10.0, -5.0, 3.0))
    with pytest.raises(DatasetError, match=r"p1_label\.nrrd.*values 3"):
        convert_volume_pairs(volumes(tmp_path))
    result = convert_volume_pairs(volumes(tmp_path, label_map=LabelMap.parse("0:0,3:1")))
    assert set(np.unique(read_image(result.dataset_folder / "labelsTr" / "p1.nii.gz")[0])) == {1}


def test_volume_without_label_and_include_filter(tmp_path: Path) -> None:
    volume_pair(tmp_path / "vol", "lung1")
    volume_pair(tmp_path / "vol", "brain1")
    (tmp_path / "vol" / "brain1_label.nrrd").unlink()
    with pytest.raises(DatasetError, match=r"brain1_image\.nrrd: has no label"):
        convert_volume_pairs(volumes(tmp_path))
    result = convert_volume_pairs(volumes(tmp_path, include=("lung*",), file_ending=".mha"))
    assert result.train_cases == ("lung1",) and verify_dataset(result.dataset_folder).ok


@pytest.mark.skipif(not PYRADIOMICS.is_dir(), reason="shared pyradiomics sample data not present")
@pytest.mark.parametrize("pattern, cases", [("lung*", ("lung1", "lung2")),
                                            ("brain*", ("brain1", "brain2"))])
def test_real_pyradiomics_cases_keep_their_geometry(tmp_path: Path, pattern: str,
                                                    cases: tuple[str, ...]) -> None:
    config = VolumePairsConfig(input_dir=PYRADIOMICS, output=out(tmp_path), channel_name="CT",
                               include=(pattern,))
    result = convert_volume_pairs(config)
    assert result.train_cases == cases and verify_dataset(result.dataset_folder).ok
    for case in cases:
        source = header(PYRADIOMICS / f"{case}_image.nrrd")
        image = header(result.dataset_folder / "imagesTr" / f"{case}_0000.nii.gz")
        label, label_geo = read_image(result.dataset_folder / "labelsTr" / f"{case}.nii.gz")
        assert image.GetSize() == source.GetSize() and image.GetPixelID() == source.GetPixelID()
        np.testing.assert_allclose(image.GetSpacing(), source.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), source.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), source.GetDirection(), atol=1e-6)
        assert label_geo.spacing == image.GetSpacing() and label_geo.origin == image.GetOrigin()
        assert label_geo.direction == image.GetDirection()
        np.testing.assert_array_equal(label[0], read_image(PYRADIOMICS / f"{case}_label.nrrd")[0][0])


def header(path: Path) -> sitk.ImageFileReader:
    """Geometry and pixel type without decompressing the voxels (keeps the real-data test fast)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


# -- command line ---------------------------------------------------------------------------------

def test_cli_images_converts_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kvasir_like(tmp_path, count=2, shape=(32, 40))
    code = main(["images", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--out", str(tmp_path / "raw"), "--dataset-id", "3", "--name", "Kvasir",
                 "--labels", "background,polyp"])
    assert code == 0
    text = capsys.readouterr().out
    assert "Dataset003_Kvasir" in text and "2 training" in text and "polyp" in text
    assert verify_dataset(tmp_path / "raw" / "Dataset003_Kvasir").ok


def test_cli_reports_bad_input_by_file_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tmp_path / "images" / "cju_bad.png", rgb((20, 20), 14))
    (tmp_path / "masks").mkdir()
    code = main(["images", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--out", str(tmp_path / "raw"), "--dataset-id", "3", "--name", "Kvasir"])
    assert code != 0
    assert "cju_bad.png" in capsys.readouterr().err


def test_cli_rejects_a_malformed_label_map(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["volumes", "--input", str(tmp_path), "--channel-name", "CT", "--out", str(tmp_path),
                 "--dataset-id", "1", "--name", "X", "--label-map", "0-0"])
    assert code == 1 and "RAW:LABEL" in capsys.readouterr().err
