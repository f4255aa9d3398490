"""mucald_provision: FLARE issues one kit per site, the server and the admin under one root CA;
every site certificate verifies against that CA and not against another provisioning's, the kits
point the sites at the server's host and port with mutual TLS, and bad requests are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding

from mucald_unet.commands.provision import main as provision_main
from mucald_unet.deployment.provisioning import ProvisionRequest
from mucald_unet.deployment.site_kits import Kit
from mucald_unet.errors import TrainingError

SITES = ["Dataset001_DemoPolyp", "Dataset002_DemoLungCT"]


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                               cert.signature_hash_algorithm)
    except Exception:  # cryptography raises InvalidSignature
        return False
    return True


def kits_of(out: Path) -> Path:
    return next((out / "workspace" / "mucald").glob("prod_*"))


def test_kits_share_one_root_ca_and_another_provisionings_do_not(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert provision_main(["-o", str(tmp_path / name), "--server", "server.example.org", "--sites", *SITES,
                               "--admin", "admin@hospital.org", "--fed-port", "9102", "--admin-port", "9103"]) == 0
    kits, other = kits_of(tmp_path / "a"), kits_of(tmp_path / "b")
    root = certificate(kits / "server.example.org" / "startup" / "rootCA.pem")
    server_cert = certificate(kits / "server.example.org" / "startup" / "server.crt")
    assert signed_by(server_cert, root)
    assert "server.example.org" in server_cert.subject.rfc4514_string()
    for site in SITES:
        startup = kits / site / "startup"
        cert = certificate(startup / "client.crt")
        assert signed_by(cert, root) and site in cert.subject.rfc4514_string()
        assert certificate(startup / "rootCA.pem") == root
        assert not signed_by(cert, certificate(other / "server.example.org" / "startup" / "rootCA.pem"))
        client = json.loads((startup / "fed_client.json").read_text())
        assert client["servers"][0]["service"]["target"] == "server.example.org:9102"
        assert client["client"]["connection_security"] == "mtls" and client["servers"][0]["identity"] == "server.example.org"
    guide = (tmp_path / "a" / "KITS.md").read_text()
    assert all(site in guide for site in SITES) and "admin@hospital.org" in guide and "9102" in guide
    assert "mucald_server plan -d " in guide and "mucald_client --kit KIT --raw DIR" in guide  # mucald's commands
    assert Kit(kits / "server.example.org").project_sites == tuple(SITES)  # for mucald_server plan -d IDS


def test_a_second_provisioning_into_the_same_folder_needs_overwrite(tmp_path: Path) -> None:
    args = ["-o", str(tmp_path), "--server", "srv", "--sites", SITES[0], "--admin", "a@b.org"]
    assert provision_main(args) == 0
    assert provision_main(args) == 1  # refused: the kits already there would stop working
    assert provision_main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("change, message", [
    ({"sites": ("A", "A")}, "named once"), ({"sites": ("bad name",)}, "cannot name"),
    ({"admin": "admin"}, "not an e-mail"), ({"admin_port": 8002}, "two ports")])
def test_bad_requests_are_refused_by_name(change: dict, message: str) -> None:
    fields = {"project": "p", "server_host": "srv", "sites": ("A",), "admin": "a@b.org", **change}
    with pytest.raises(TrainingError, match=message):
        ProvisionRequest(**fields)
