"""mucald_convert preset: each of the paper's public datasets, laid out and encoded as published,
becomes a raw dataset that passes verify_dataset, with the labels the paper's task means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from preprocessing.commands.convert import main
from preprocessing.convert.common import split_test_cases, split_test_groups
from preprocessing.convert.output import OutputConfig
from preprocessing.convert.presets import PresetConfig, convert_preset
from preprocessing.dataset import RawDataset
from preprocessing.errors import DatasetError
from preprocessing.integrity import verify_dataset
from preprocessing.io import read_image
from tests.preprocessing.test_convert import disk, rgb, save


def gray(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def config(tmp_path: Path, source: Path, raw: str = "raw", unlabelled: bool = False,
           **output: object) -> PresetConfig:
    out = OutputConfig(raw_root=tmp_path / raw, dataset_id=9, name="Test", **output)
    return PresetConfig(source=source, output=out, unlabelled_to_test=unlabelled)


# -- Kvasir-SEG ----------------------------------------------------------------------------------

def kvasir(root: Path, count: int = 3, shape: tuple[int, int] = (64, 80)) -> list[np.ndarray]:
    """Kvasir-SEG/images/<id>.jpg and Kvasir-SEG/masks/<id>.jpg (JPEG 0/255 masks)."""
    intended = []
    for i in range(count):
        mask = disk(shape, (30, 35 + 3 * i), 18)
        save(root / "Kvasir-SEG" / "images" / f"cju{i}x.jpg", rgb(shape, i), quality=90)
        save(root / "Kvasir-SEG" / "masks" / f"cju{i}x.jpg", mask.astype(np.uint8) * 255, quality=70)
        intended.append(mask)
    (root / "Kvasir-SEG" / "kavsir_bboxes.json").write_text("{}")
    return intended


def test_kvasir_jpeg_masks_snap_to_polyp_labels(tmp_path: Path) -> None:
    intended = kvasir(tmp_path / "dl")
    assert len(np.unique(read_image(tmp_path / "dl/Kvasir-SEG/masks/cju0x.jpg")[0])) > 2
    result = convert_preset("kvasir-seg", config(tmp_path, tmp_path / "dl"))  # the parent folder
    assert verify_dataset(result.dataset_folder).ok
    dataset = RawDataset(result.dataset_folder)
    assert dataset.spec.labels == {"background": 0, "polyp": 1}
    assert dataset.spec.channel_names == {0: "R", 1: "G", 2: "B"} and dataset.spec.file_ending == ".png"
    for i, mask in enumerate(intended):
        label = dataset.read_label(f"cju{i}x")[0]
        np.testing.assert_array_equal(label, mask.astype(np.uint8))
        assert int(label.sum()) == int(mask.sum())
    description = json.loads((result.dataset_folder / "dataset.json").read_text())["description"]
    assert "preset kvasir-seg" in description


def test_kvasir_missing_folder_and_orphan_mask_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no folder images.*--source"):
        convert_preset("kvasir-seg", config(tmp_path, tmp_path / "empty"))
    kvasir(tmp_path / "dl", count=2)
    orphan = save(tmp_path / "dl/Kvasir-SEG/masks/lonely.jpg", np.zeros((64, 80), np.uint8))
    with pytest.raises(DatasetError, match="mask without an image") as err:
        convert_preset("kvasir-seg", config(tmp_path, tmp_path / "dl/Kvasir-SEG"))
    assert str(orphan) in str(err.value) and "Fix:" in str(err.value)
    assert not (tmp_path / "raw" / "Dataset009_Test").exists()


# -- HAM10000 ------------------------------------------------------------------------------------

LESIONS = {"HAM_0000001": 3, "HAM_0000002": 2, "HAM_0000003": 1, "HAM_0000004": 2, "HAM_0000005": 1}


def ham(root: Path) -> dict[str, str]:
    """Images over part_1/part_2, 0/255 PNG masks, and the metadata CSV; image -> lesion."""
    lesion_of, rows = {}, ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    index = 24306
    for lesion, images in LESIONS.items():
        for _ in range(images):
            image_id = f"ISIC_{index:07d}"
            part = "HAM10000_images_part_1" if index % 2 else "HAM10000_images_part_2"
            save(root / part / f"{image_id}.jpg", rgb((45, 60), index), quality=90)
            mask = disk((45, 60), (22, 30), 12 + index % 3).astype(np.uint8) * 255
            save(root / "HAM10000_segmentations_lesion_tschandl" / f"{image_id}_segmentation.png", mask)
            rows.append(f"{lesion},{image_id},nv,follow_up,45.0,male,back")
            lesion_of[image_id] = lesion
            index += 1
    (root / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    return lesion_of


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ham10000_split_keeps_each_lesion_on_one_side(tmp_path: Path, seed: int) -> None:
    lesion_of = ham(tmp_path / "dl")
    result = convert_preset("ham10000", config(tmp_path, tmp_path / "dl", test_fraction=0.3,
                                               seed=seed))
    assert verify_dataset(result.dataset_folder).ok
    train = {lesion_of[c] for c in result.train_cases}
    test = {lesion_of[c] for c in result.test_cases}
    assert test and not train & test  # no lesion straddles imagesTr and imagesTs
    assert len(result.train_cases) + len(result.test_cases) == 9
    assert 2 <= len(result.test_cases) <= 4  # whole lesions, close to 30 % of 9 images
    dataset = RawDataset(result.dataset_folder)
    assert dataset.spec.labels == {"background": 0, "lesion": 1}
    case = result.train_cases[0]
    assert set(np.unique(dataset.read_label(case)[0])) == {0, 1}


def test_ham10000_without_metadata_splits_per_image_and_says_so(tmp_path: Path) -> None:
    ham(tmp_path / "dl")
    (tmp_path / "dl" / "HAM10000_metadata.csv").unlink()
    result = convert_preset("ham10000", config(tmp_path, tmp_path / "dl", test_fraction=0.3))
    assert sorted(result.test_cases) == sorted(split_test_cases(
        list(result.train_cases + result.test_cases), 0.3, 0))
    assert any("lesion may land in both" in note for note in result.notes)


def test_grouped_split_keeps_the_per_case_split_datasets_were_converted_with() -> None:
    """One case per group draws the first round(F x n) of a seeded permutation of the sorted ids,
    as the converter always has, so re-converting a dataset reproduces its old Tr/Ts split."""
    ids = [f"c{i}" for i in range(17)]
    for seed in range(4):
        order = np.random.default_rng(seed).permutation(len(ids))
        expected = {sorted(ids)[i] for i in order[:4]}  # round(0.25 x 17) = 4
        assert split_test_groups({c: c for c in ids}, 0.25, seed) == expected == split_test_cases(ids, 0.25, seed)


# -- HC18 ----------------------------------------------------------------------------------------

SHAPE = (90, 120)


def ellipse_inside(centre: tuple[float, float], axes: tuple[float, float],
                   grow: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (((xx - centre[1]) / (axes[1] + grow)) ** 2 + ((yy - centre[0]) / (axes[0] + grow)) ** 2
            <= 1.0)


def outline(centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    """A 2 px ellipse outline as HC18's annotations draw it."""
    return ellipse_inside(centre, axes, 1.0) & ~ellipse_inside(centre, axes, -1.0)


def hc18(root: Path) -> None:
    closed = outline((45, 60), (25, 40))
    open_ = outline((45, 60), (22, 35))
    open_[:, 85:] = False  # a gap on the right: the outline is not closed
    cut = outline((45, 100), (25, 30))  # runs out of the image on the right, as some heads do
    for name, ann in (("000_HC", closed), ("010_2HC", open_), ("020_HC", cut)):
        save(root / "training_set" / f"{name}.png", gray(SHAPE, len(name)))
        save(root / "training_set" / f"{name}_Annotation.png", ann.astype(np.uint8) * 255)
    (root / "training_set_pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.0691358041432,44.3\n"
        "010_2HC.png,0.1546875,60.2\n020_HC.png,0.12,70.0\n")
    save(root / "test_set" / "000_HC.png", gray(SHAPE, 9))
    (root / "test_set_pixel_size.csv").write_text("filename,pixel size(mm)\n000_HC.png,0.1\n")


def test_hc18_outlines_become_filled_heads_with_the_csv_spacing(tmp_path: Path) -> None:
    hc18(tmp_path / "dl")
    result = convert_preset("hc18", config(tmp_path, tmp_path / "dl"))
    assert verify_dataset(result.dataset_folder).ok
    assert sorted(result.train_cases) == ["000_HC", "010_2HC", "020_HC"] and result.test_cases == ()
    assert any("test_set/" in n and "--unlabelled-to-test" in n for n in result.notes)
    assert any("2 annotation outline(s) were open" in n and "010_2HC" in n for n in result.notes)
    cut = read_image(result.dataset_folder / "labelsTr" / "020_HC.nii.gz")[0][0].astype(bool)
    in_frame = ellipse_inside((45, 100), (25, 30), 1.0)
    assert (cut & in_frame).sum() / (cut | in_frame).sum() > 0.97
    closed, closed_geo = read_image(result.dataset_folder / "labelsTr" / "000_HC.nii.gz")
    expected = ellipse_inside((45, 60), (25, 40), 1.0)  # outline and inside
    np.testing.assert_array_equal(closed[0], expected.astype(np.uint8))
    assert closed_geo.spacing == pytest.approx((0.0691358041432,) * 2)
    image_geo = read_image(result.dataset_folder / "imagesTr" / "000_HC_0000.nii.gz")[1]
    assert image_geo.mismatches(closed_geo) == []
    fitted, fitted_geo = read_image(result.dataset_folder / "labelsTr" / "010_2HC.nii.gz")
    drawn = ellipse_inside((45, 60), (22, 35), 1.0)  # what a closed outline would have filled
    head = fitted[0].astype(bool)
    assert abs(int(head.sum()) - int(drawn.sum())) < 0.03 * drawn.sum()
    assert (head & drawn).sum() / (head | drawn).sum() > 0.97
    assert head[45, 93] and not head[45, 97]  # filled across the gap, up to the ellipse
    assert fitted_geo.spacing == pytest.approx((0.1546875, 0.1546875))
    dataset = RawDataset(result.dataset_folder)
    assert dataset.spec.labels == {"background": 0, "head": 1}
    assert dataset.spec.channel_names == {0: "US"} and dataset.spec.file_ending == ".nii.gz"


def test_hc18_test_set_goes_to_images_ts_when_asked(tmp_path: Path) -> None:
    hc18(tmp_path / "dl")
    result = convert_preset("hc18", config(tmp_path, tmp_path / "dl", unlabelled=True))
    assert result.test_cases == ("test_000_HC",) and verify_dataset(result.dataset_folder).ok
    geometry = read_image(result.dataset_folder / "imagesTs" / "test_000_HC_0000.nii.gz")[1]
    assert geometry.spacing == pytest.approx((0.1, 0.1))
    assert not (result.dataset_folder / "labelsTs").exists()
    with pytest.raises(DatasetError, match="drop --test-fraction"):
        convert_preset("hc18", config(tmp_path, tmp_path / "dl", raw="raw2", unlabelled=True,
                                      test_fraction=0.5))


def test_hc18_without_the_spacing_csv_names_it(tmp_path: Path) -> None:
    hc18(tmp_path / "dl")
    (tmp_path / "dl" / "training_set_pixel_size_and_HC.csv").unlink()
    with pytest.raises(DatasetError, match=r"training_set_pixel_size_and_HC\.csv: is missing"):
        convert_preset("hc18", config(tmp_path, tmp_path / "dl"))


# -- MosMed --------------------------------------------------------------------------------------

def volume(path: Path, array: np.ndarray, origin: tuple[float, float, float] = (-170.0, -160.0, -300.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.7, 8.0))
    image.SetOrigin(origin)
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def mosmed(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    lesions = {}
    for folder, study in (("CT-0", "study_0001"), ("CT-1", "study_0255"), ("CT-1", "study_0256")):
        volume(root / "studies" / folder / f"{study}.nii.gz",
               rng.integers(-1024, 600, (5, 24, 24)).astype(np.int16))
    for study, high in (("study_0255", 1), ("study_0256", 255)):  # 0/1 and 0/255 masks
        lesion = np.zeros((5, 24, 24), np.uint8)
        lesion[1:4, 5:12, 8:16] = 1
        volume(root / "masks" / f"{study}_mask.nii.gz", lesion * high)
        lesions[study] = lesion
    return lesions


def test_mosmed_labels_studies_with_masks_and_keeps_geometry(tmp_path: Path) -> None:
    lesions = mosmed(tmp_path / "COVID19_1110")
    result = convert_preset("mosmed", config(tmp_path, tmp_path))  # parent of COVID19_1110/
    assert verify_dataset(result.dataset_folder).ok
    assert sorted(result.train_cases) == ["study_0255", "study_0256"] and result.test_cases == ()
    assert any("study_0001" in note and "skipped" in note for note in result.notes)
    for study, lesion in lesions.items():
        label, label_geo = read_image(result.dataset_folder / "labelsTr" / f"{study}.nii.gz")
        np.testing.assert_array_equal(label[0], lesion)
        image, image_geo = read_image(result.dataset_folder / "imagesTr" / f"{study}_0000.nii.gz")
        source, source_geo = read_image(tmp_path / "COVID19_1110/studies/CT-1" / f"{study}.nii.gz")
        assert image.dtype == np.int16 and np.array_equal(image, source)
        assert image_geo.mismatches(source_geo) == [] and label_geo.mismatches(image_geo) == []
        assert image_geo.spacing == pytest.approx((0.7, 0.7, 8.0))
    assert RawDataset(result.dataset_folder).spec.channel_names == {0: "CT"}


def test_mosmed_unlabelled_to_test_and_mask_problems(tmp_path: Path) -> None:
    mosmed(tmp_path / "mm")
    result = convert_preset("mosmed", config(tmp_path, tmp_path / "mm", unlabelled=True))
    assert result.test_cases == ("study_0001",) and verify_dataset(result.dataset_folder).ok
    lesion = np.zeros((5, 24, 24), np.uint8)
    volume(tmp_path / "mm/masks/study_0999_mask.nii.gz", lesion)
    volume(tmp_path / "mm/masks/study_0255_mask.nii.gz", lesion, origin=(0.0, 0.0, 0.0))
    with pytest.raises(DatasetError) as err:
        convert_preset("mosmed", config(tmp_path, tmp_path / "mm", raw="raw2"))
    text = str(err.value)
    assert "study_0999_mask.nii.gz: is a mask without its study" in text
    assert "study_0255_mask.nii.gz: geometry differs" in text and "origin" in text


# -- blastocyst ----------------------------------------------------------------------------------

BLAST = (80, 80)


def ring(outer: float, inner: float, centre: tuple[float, float] = (40, 40)) -> np.ndarray:
    return disk(BLAST, centre, outer) & ~disk(BLAST, centre, inner)


def blastocyst(root: Path, name: str = "Blast_PCRM_R14-0001 D5") -> dict[str, np.ndarray]:
    """Images/<name>.BMP and GT_*/<name> *_Mask.bmp, binary 0/255 BMPs."""
    parts = {"ZP": ring(38, 33), "TE": ring(33, 28), "ICM": disk(BLAST, (40, 22), 8)}
    save(root / "Images" / f"{name}.BMP", gray(BLAST, 3))
    for part, mask in parts.items():
        save(root / f"GT_{part}" / f"{name} {part}_Mask.bmp", mask.astype(np.uint8) * 255)
    return parts


def test_blastocyst_components_and_derived_blastocoel(tmp_path: Path) -> None:
    parts = blastocyst(tmp_path / "dl")
    result = convert_preset("blastocyst", config(tmp_path, tmp_path / "dl"))
    assert verify_dataset(result.dataset_folder).ok
    dataset = RawDataset(result.dataset_folder)
    assert dataset.spec.labels == {"background": 0, "zona_pellucida": 1, "trophectoderm": 2,
                                   "inner_cell_mass": 3, "blastocoel": 4}
    assert dataset.spec.channel_names == {0: "gray"}
    label = dataset.read_label(result.train_cases[0])[0]
    icm, te, zp = parts["ICM"], parts["TE"] & ~parts["ICM"], parts["ZP"] & ~parts["TE"]
    cavity = disk(BLAST, (40, 40), 28) & ~parts["ICM"]
    counts = {value: int((label == value).sum()) for value in range(5)}
    assert counts == {0: int((~disk(BLAST, (40, 40), 38)).sum()), 1: int(zp.sum()),
                      2: int(te.sum()), 3: int(icm.sum()), 4: int(cavity.sum())}
    assert label[40, 40] == 4 and label[40, 22] == 3  # cavity centre; ICM wins where it overlaps TE


def test_blastocyst_image_without_a_component_mask_names_both(tmp_path: Path) -> None:
    blastocyst(tmp_path / "dl")
    blastocyst(tmp_path / "dl", name="Blast_PCRM_R14-0002 D5")
    (tmp_path / "dl/GT_TE/Blast_PCRM_R14-0002 D5 TE_Mask.bmp").unlink()
    with pytest.raises(DatasetError, match=r"R14-0002 D5\.BMP: has no GT_TE/Blast_PCRM_R14-0002 D5 "
                                           r"TE_Mask\.bmp"):
        convert_preset("blastocyst", config(tmp_path, tmp_path / "dl"))


# -- command line --------------------------------------------------------------------------------

def test_cli_preset_converts_with_the_default_name(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    kvasir(tmp_path / "dl", count=4, shape=(32, 40))
    code = main(["preset", "kvasir-seg", "--source", str(tmp_path / "dl"), "--dataset-id", "5",
                 "--out", str(tmp_path / "raw"), "--test-fraction", "0.25", "--seed", "0"])
    assert code == 0
    text = capsys.readouterr().out
    assert "Dataset005_KvasirSEG" in text and "3 training" in text and "1 test" in text
    assert verify_dataset(tmp_path / "raw" / "Dataset005_KvasirSEG").ok
    assert main(["preset", "kvasir-seg", "--source", str(tmp_path / "nowhere"), "--dataset-id", "6",
                 "--out", str(tmp_path / "raw")]) == 1
    assert "nowhere" in capsys.readouterr().err
