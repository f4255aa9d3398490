"""A startup kit as its holder: which participant it is, the site's own settings in its ``local/``
folder, and the clear refusals of ``mucald_client``, ``mucald_server`` and ``mucald_train`` when a
kit or a flag does not fit. No FLARE process is started here (test_separate_sites.py starts them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucald_unet.commands.client import main as client_main
from mucald_unet.commands.server_plan import site_names
from mucald_unet.commands.server import main as server_main
from mucald_unet.commands.train import main as train_main
from mucald_unet.deployment.site_kits import SITE_SETTINGS_FILE, Kit, SiteSettings
from mucald_unet.errors import TrainingError
from tests.conftest import CLIENTS


def fake_kit(folder: Path, role: str, name: str) -> Path:
    """The files of a kit that say who holds it (no certificates: nothing connects here)."""
    startup = folder / name / "startup"
    startup.mkdir(parents=True)
    document = {"server": {"servers": [{"name": "mucald"}]},
                "client": {"client": {"fqsn": name}},
                "admin": {"admin": {"username": name}}}[role]
    (startup / f"fed_{role}.json").write_text(json.dumps(document))
    return folder / name


def test_a_kit_says_whose_it_is(tmp_path: Path) -> None:
    site = Kit(fake_kit(tmp_path, "client", CLIENTS[1]))
    assert site.role == "client" and site.site_name == CLIENTS[1] and site.expect("client") is site
    admin = Kit(fake_kit(tmp_path, "admin", "it@hospital.org"))
    assert admin.role == "admin" and admin.admin_name == "it@hospital.org"
    assert Kit(fake_kit(tmp_path, "server", "localhost")).role == "server"
    with pytest.raises(TrainingError, match=rf"{CLIENTS[1]} is the client's kit, not the server's"):
        site.expect("server")
    with pytest.raises(TrainingError, match="is not a FLARE startup kit .*Fix: give the kit folder"):
        Kit(tmp_path / "elsewhere")
    (tmp_path / "empty" / "startup").mkdir(parents=True)
    with pytest.raises(TrainingError, match="holds no fed_server.json, fed_client.json or fed_admin.json"):
        Kit(tmp_path / "empty").role


def test_site_settings_live_in_the_kit_and_their_absence_is_explained(tmp_path: Path) -> None:
    kit = fake_kit(tmp_path, "client", CLIENTS[0])
    for settings in (SiteSettings(tmp_path / "preprocessed", tmp_path / "results", threads=3),
                     SiteSettings(tmp_path / "preprocessed", tmp_path / "results", 1, raw=tmp_path / "raw")):
        assert settings.write(kit) == kit / "local" / SITE_SETTINGS_FILE
        assert SiteSettings.read(kit / "local") == settings
    with pytest.raises(TrainingError, match="started without mucald's settings. Fix: start it with mucald_client"):
        SiteSettings.read(tmp_path / "nowhere")


def test_mucald_client_checks_its_kit_and_dataset_before_starting_anything(
        tiny_federation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preprocessed = str(tiny_federation.parent.parent)
    server_kit = fake_kit(tmp_path, "server", "localhost")
    assert client_main(["--kit", str(server_kit), "--preprocessed", preprocessed]) == 1
    assert "is the server's kit, not the client's" in capsys.readouterr().err
    site_kit = fake_kit(tmp_path, "client", CLIENTS[0])
    assert client_main(["--kit", str(site_kit), "-d", "2", "--preprocessed", preprocessed]) == 1
    assert f"-d 2 is not this kit's site {CLIENTS[0]}" in capsys.readouterr().err
    stranger = fake_kit(tmp_path, "client", "Dataset009_Elsewhere")
    results = ["--results", str(tmp_path / "results")]
    assert client_main(["--kit", str(stranger), "--preprocessed", preprocessed, *results]) == 1
    refusal = capsys.readouterr().err
    assert "no plan holds Dataset009_Elsewhere" in refusal and "Fix: give --raw" in refusal
    assert "mucald_plan_and_preprocess -d 9" in refusal
    assert client_main(["--kit", str(stranger), "--preprocessed", preprocessed, *results, "--raw", str(tmp_path)]) == 1
    assert "Dataset009" in capsys.readouterr().err  # raw data given, but not the site's
    assert not (site_kit / "local").exists() and not (stranger / "local").exists()  # nothing written when refused


def test_the_server_needs_both_kits_and_the_flags_fit_their_engine(tiny_federation: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    common = ["-d", "1", "2", "3", "--preprocessed", str(tiny_federation.parent.parent), "--results",
              str(tmp_path / "results"), "--rounds", "1", "--iters", "1"]
    assert server_main(common) == 1
    assert "--engine flare starts the server from its kit and submits with the admin's" in capsys.readouterr().err
    assert server_main([*common, "--engine", "in-process"]) == 1
    assert "mucald_server always trains with --engine flare" in capsys.readouterr().err
    admin = fake_kit(tmp_path, "admin", "it@hospital.org")
    assert server_main([*common, "--kit", str(admin), "--admin-kit", str(admin)]) == 1
    assert "is the admin's kit, not the server's" in capsys.readouterr().err
    assert train_main([*common, "--kit", str(admin)]) == 1
    assert "deployment settings. Fix: add --engine flare-loopback" in capsys.readouterr().err
    assert train_main([*common, "--engine", "flare-loopback", "--admin-kit", str(admin)]) == 1
    assert "provisions its own kits" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # refused before any run folder was made


def test_the_server_plans_the_sites_its_kit_was_issued_for(tmp_path: Path) -> None:
    server = Kit(fake_kit(tmp_path, "server", "localhost"))
    with pytest.raises(TrainingError, match="issued without mucald's list of sites. Fix: issue the kits"):
        site_names(["1", "2"], server)
    assert site_names(CLIENTS[:2], server) == CLIENTS[:2]  # full names need no list
    server.write_sites(tuple(CLIENTS))
    assert site_names(["3", "001"], server) == [CLIENTS[2], CLIENTS[0]]
    with pytest.raises(TrainingError, match="-d 7: no such site .* Fix: name the sites the kits were issued for"):
        site_names(["1", "7"], server)
    with pytest.raises(TrainingError, match="named twice"):
        site_names(["1", "Dataset001_DemoPolyp"], server)
    with pytest.raises(TrainingError, match="the client's kit, not the server's"):
        Kit(fake_kit(tmp_path, "client", CLIENTS[0])).project_sites
