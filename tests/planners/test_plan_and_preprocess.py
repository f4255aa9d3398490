"""mucald_plan_and_preprocess end to end on the tiny demo federation, and its refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from planners.commands.plan_and_preprocess import main
from planners.pipeline import PROXIES_FILE, client_cases_folder
from planners.plans import load_plans
from planners.proxies import ProxyTable
from preprocessing.case_store import load_case
from preprocessing.demo import make_demo_federation


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("federation")
    make_demo_federation(root / "raw", seed=0, size="tiny")
    code = main(["-d", "1", "2", "3", "--raw", str(root / "raw"), "--preprocessed", str(root / "pre"),
                 "-np", "1", "--target", "cpu"])
    assert code == 0
    return root, root / "pre" / "Federation_001_002_003" / "plans.json"


def test_one_plans_file_covers_every_client(planned) -> None:
    _, plans_path = planned
    plans = load_plans(plans_path)
    assert set(plans.clients) == {"Dataset001_DemoPolyp", "Dataset002_DemoLungCT", "Dataset003_DemoFetalUS"}
    assert plans.federation.dimensionality == "2d" and plans.preset.startswith("cpu")
    ct = plans.clients["Dataset002_DemoLungCT"]
    assert ct.slice_axis == 0 and ct.target_spacing == pytest.approx((3.0, 0.8, 0.8), abs=1e-5)
    assert ct.normalization[0]["kind"] == "ct"
    assert plans.clients["Dataset001_DemoPolyp"].in_channels == 3
    assert plans.clients["Dataset003_DemoFetalUS"].num_classes == 3


def test_each_client_folder_holds_its_fingerprint_proxies_and_cases(planned) -> None:
    root, plans_path = planned
    plans = load_plans(plans_path)
    for name, client in plans.clients.items():
        folder = plans_path.parent / client.folder
        fingerprint = json.loads((folder / "fingerprint.json").read_text())
        assert fingerprint["version"] == 1 and len(fingerprint["cases"]) == len(list((root / "raw" / name / "labelsTr").iterdir()))
        table = ProxyTable.load_csv(folder / PROXIES_FILE)
        assert len(table.case_ids) == len(fingerprint["cases"])
        cases = client_cases_folder(plans_path, client)
        case = load_case(cases, table.case_ids[0])
        assert case.images.dtype == np.float32 and case.images.shape[0] == client.in_channels
        assert case.properties.target_spacing == pytest.approx(client.target_spacing)


def test_label_derived_values_never_reach_the_plans_file(planned) -> None:
    _, plans_path = planned
    text = plans_path.read_text()
    table = ProxyTable.load_csv(plans_path.parent / "Dataset001_DemoPolyp" / PROXIES_FILE)
    assert "case_id" not in text and table.case_ids[0] not in text
    assert repr(float(table.values[0, 0])) not in text


def test_rerun_resumes_and_keeps_the_cases(planned, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import preprocessing.runner

    root, plans_path = planned
    folder = client_cases_folder(plans_path, load_plans(plans_path).clients["Dataset003_DemoFetalUS"])
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.npy")}
    processed = []
    monkeypatch.setattr(preprocessing.runner, "run_case", lambda job, *args: processed.append(job))
    assert main(["-d", "3", "1", "2", "--raw", str(root / "raw"), "--preprocessed", str(root / "pre"),
                 "-np", "1", "--target", "cpu"]) == 0
    assert processed == []  # every case was complete: none processed again
    assert before and {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.npy")} == before
    assert "plans:" in capsys.readouterr().out


def test_integrity_failure_stops_planning_with_the_report(tmp_path: Path, capsys) -> None:
    make_demo_federation(tmp_path / "raw", seed=0, size="tiny")
    broken = tmp_path / "raw" / "Dataset003_DemoFetalUS" / "labelsTr"
    victim = sorted(broken.iterdir())[0]
    victim.unlink()
    code = main(["-d", "3", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre")])
    err = capsys.readouterr().err
    assert code == 1 and victim.name in err and "Traceback" not in err
    assert not (tmp_path / "pre" / "Federation_003" / "plans.json").exists()


def test_too_small_dataset_and_impossible_3d_fail_clearly(tmp_path: Path, capsys) -> None:
    make_demo_federation(tmp_path / "raw", seed=0, size="tiny")
    raw = tmp_path / "raw" / "Dataset001_DemoPolyp"
    for case in sorted(p.name[:-len("_0000.png")] for p in (raw / "imagesTr").iterdir())[1:]:
        (raw / "imagesTr" / f"{case}_0000.png").unlink()
        (raw / "labelsTr" / f"{case}.png").unlink()
    data = json.loads((raw / "dataset.json").read_text())
    data["numTraining"] = 1
    (raw / "dataset.json").write_text(json.dumps(data))
    assert main(["-d", "1", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre")]) == 1
    assert "at least 2" in capsys.readouterr().err
    assert main(["-d", "2", "3", "--config", "3d", "--raw", str(tmp_path / "raw"),
                 "--preprocessed", str(tmp_path / "pre")]) == 1
    assert "Dataset003_DemoFetalUS is 2D" in capsys.readouterr().err
