"""Integrity check: clean datasets pass; every listed fault is reported naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from preprocessing.commands.verify import main as verify_main
from preprocessing.dataset import RawDataset
from preprocessing.errors import DatasetError
from preprocessing.geometry import Geometry
from preprocessing.integrity import verify_dataset
from preprocessing.io import read_image, write_image


def problems_for(folder: Path, path: Path) -> list[str]:
    report = verify_dataset(folder)
    return [str(p) for p in report.problems if p.file == path]


def test_clean_datasets_pass(make_volume_dataset, make_png_dataset) -> None:
    for folder in (make_volume_dataset(channels=2), make_png_dataset()):
        report = verify_dataset(folder)
        assert report.ok, report.format()
    assert report.cases_checked == 3


def test_missing_dataset_json_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    (folder / "dataset.json").unlink()
    report = verify_dataset(folder)
    assert [p.file.name for p in report.problems] == ["dataset.json"]
    assert "missing" in report.problems[0].problem


@pytest.mark.parametrize("field", ["channel_names", "labels", "numTraining", "file_ending"])
def test_missing_required_field_is_reported(make_volume_dataset, field: str) -> None:
    folder = make_volume_dataset()
    path = folder / "dataset.json"
    data = json.loads(path.read_text())
    del data[field]
    path.write_text(json.dumps(data))
    lines = problems_for(folder, path)
    assert len(lines) == 1 and f"'{field}'" in lines[0] and "Fix:" in lines[0]


def test_missing_label_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    label = folder / "labelsTr" / "vol_001.nii.gz"
    label.unlink()
    assert any("label file is missing" in line for line in problems_for(folder, label))


def test_missing_channel_file_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset(channels=2)
    channel = folder / "imagesTr" / "vol_002_0001.nii.gz"
    channel.unlink()
    assert any("channel file is missing" in line for line in problems_for(folder, channel))


def test_geometry_mismatch_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    label_path = folder / "labelsTr" / "vol_000.nii.gz"
    label, geometry = read_image(label_path)
    moved = Geometry(geometry.shape, geometry.spacing, (0.0, 0.0, 0.0), geometry.direction)
    write_image(label_path, label, moved)
    lines = problems_for(folder, label_path)
    assert len(lines) == 1 and "origin" in lines[0] and "vol_000_0000.nii.gz" in lines[0]


def test_label_value_not_declared_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    label_path = folder / "labelsTr" / "vol_002.nii.gz"
    label, geometry = read_image(label_path)
    label[0, 0, 0, 0] = 7
    write_image(label_path, label, geometry)
    lines = problems_for(folder, label_path)
    assert len(lines) == 1 and "[7]" in lines[0] and "label-map" in lines[0]


def test_nan_in_image_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    image_path = folder / "imagesTr" / "vol_000_0000.nii.gz"
    image, geometry = read_image(image_path)
    image[0, 1, 1, 1:4] = np.nan
    write_image(image_path, image, geometry)
    lines = problems_for(folder, image_path)
    assert len(lines) == 1 and "3 NaN/Inf" in lines[0]


def test_constant_image_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    image_path = folder / "imagesTs" / "vol_test_0000.nii.gz"
    image, geometry = read_image(image_path)
    write_image(image_path, np.zeros_like(image), geometry)
    assert any("constant" in line for line in problems_for(folder, image_path))


def test_truncated_file_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    image_path = folder / "imagesTr" / "vol_001_0000.nii.gz"
    image_path.write_bytes(image_path.read_bytes()[:300])
    lines = problems_for(folder, image_path)
    assert len(lines) == 1 and ("truncated" in lines[0] or "corrupt" in lines[0])


def test_unknown_and_foreign_endings_are_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    unknown = folder / "imagesTr" / "vol_000_0000.dcm"
    unknown.write_bytes(b"x")
    foreign = folder / "imagesTr" / "vol_009_0000.nrrd"
    foreign.write_bytes(b"x")
    assert any("unknown file ending" in line for line in problems_for(folder, unknown))
    assert any("differs from dataset.json" in line for line in problems_for(folder, foreign))


def test_rgb_image_where_one_channel_is_declared_is_reported(make_png_dataset) -> None:
    folder = make_png_dataset()
    path = folder / "dataset.json"
    data = json.loads(path.read_text())
    data["channel_names"] = {"0": "gray"}
    path.write_text(json.dumps(data))
    image = folder / "imagesTr" / "rgb_000_0000.png"
    lines = problems_for(folder, image)
    assert len(lines) == 1 and "gives 3 channels" in lines[0] and "RGB" in lines[0]


def test_all_problems_are_collected_not_just_the_first(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    (folder / "labelsTr" / "vol_000.nii.gz").unlink()
    (folder / "imagesTr" / "vol_001_0000.nii.gz").write_bytes(b"broken")
    report = verify_dataset(folder)
    named = {p.file.name for p in report.problems}
    assert {"vol_000.nii.gz", "vol_001_0000.nii.gz"} <= named
    with pytest.raises(DatasetError, match="vol_000.nii.gz"):
        report.raise_if_problems()


def test_num_training_mismatch_is_reported(make_volume_dataset) -> None:
    folder = make_volume_dataset()
    path = folder / "dataset.json"
    data = json.loads(path.read_text())
    data["numTraining"] = 5
    path.write_text(json.dumps(data))
    assert any("numTraining is 5" in line for line in problems_for(folder, path))


def test_raw_dataset_resolves_ids_and_reads_cases(make_volume_dataset) -> None:
    folder = make_volume_dataset(channels=2)
    for identifier in (1, "1", "001", "Dataset001_Vol"):
        assert RawDataset.open(folder.parent, identifier).folder == folder
    dataset = RawDataset(folder)
    assert dataset.dataset_id == 1 and dataset.case_ids() == ["vol_000", "vol_001", "vol_002"]
    assert dataset.case_ids("Ts") == ["vol_test"]
    images = dataset.read_images("vol_000")
    assert images.array.shape == (2, 6, 10, 12) and images.geometry.spacing == pytest.approx((0.8, 0.7, 3.0))
    with pytest.raises(DatasetError, match="Dataset007"):
        RawDataset.open(folder.parent, 7)


def test_verify_command_exit_codes_and_messages(make_volume_dataset, capsys) -> None:
    folder = make_volume_dataset()
    raw = str(folder.parent)
    assert verify_main(["--raw", raw, "-d", "1"]) == 0
    assert "OK" in capsys.readouterr().out
    (folder / "labelsTr" / "vol_002.nii.gz").unlink()
    assert verify_main(["--raw", raw, "-d", "1", "Dataset001_Vol"]) == 1
    out = capsys.readouterr().out
    assert "vol_002.nii.gz" in out and "Traceback" not in out
    assert verify_main(["--raw", raw, "-d", "9"]) == 1
    assert "Dataset009" in capsys.readouterr().out


def test_verify_command_without_raw_folder_explains_the_fix(monkeypatch, capsys) -> None:
    monkeypatch.delenv("MUCALD_RAW", raising=False)
    assert verify_main(["-d", "1"]) == 1
    assert "MUCALD_RAW" in capsys.readouterr().err
