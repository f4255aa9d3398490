"""Who may join a federation: the server started from a `mucald_provision` kit admits a site whose
kit the same provisioning issued, while a site holding a kit from another provisioning (same names,
same server address, another root CA) fails the TLS handshake and never joins, and a connection
with no client certificate gets no answer. Real FLARE processes on loopback, stopped by pid."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mucald_unet.commands.provision import main as provision_main
from mucald_unet.deployment.flare_job import free_ports, stop_processes_under

SITES = ["Dataset001_DemoPolyp", "Dataset002_DemoLungCT"]
MEMBER, STRANGER = SITES[1], SITES[0]  # the stranger's kit comes from the other provisioning
SERVER = "localhost"


def kit(out: Path, site: str) -> Path:
    return next((out / "workspace" / "mucald").glob("prod_*")) / site


def start(site_kit: Path, home: Path) -> subprocess.Popen:
    log = open(site_kit / "console.txt", "wb")  # noqa: SIM115 - the process owns it until it is stopped
    return subprocess.Popen(["bash", str(site_kit / "startup" / "start.sh")], env={**os.environ, "HOME": str(home)},
                            stdout=log, stderr=subprocess.STDOUT)


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def log_of(site_kit: Path) -> str:
    path = site_kit / "log.txt"
    return path.read_text(errors="replace") if path.is_file() else ""


def https_answer(port: int, root_ca: Path, identity: Path | None = None) -> bytes:
    """The first bytes the server sends back to an HTTPS request over TLS that trusts the server and
    shows the ``identity`` kit's certificate, or none; empty when the server refuses the connection."""
    context = ssl.create_default_context(cafile=str(root_ca))
    context.check_hostname = False
    if identity is not None:
        context.load_cert_chain(identity / "startup" / "client.crt", identity / "startup" / "client.key")
    try:
        with socket.create_connection((SERVER, port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=SERVER) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            return tls.recv(64)
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return b""


def test_only_sites_of_the_same_provisioning_join(tmp_path: Path) -> None:
    fed_port, admin_port = free_ports(2)
    issued = {}
    for name in ("ours", "theirs"):
        issued[name] = tmp_path / name
        assert provision_main(["-o", str(issued[name]), "--server", SERVER, "--sites", *SITES, "--admin",
                               "admin@hospital.org", "--fed-port", str(fed_port), "--admin-port",
                               str(admin_port)]) == 0
    server, member, stranger = (kit(issued["ours"], SERVER), kit(issued["ours"], MEMBER),
                                kit(issued["theirs"], STRANGER))
    try:
        for site_kit in (server, member, stranger):
            start(site_kit, tmp_path)
        assert wait_until(lambda: f"New client {MEMBER}" in log_of(server), 120), log_of(server)[-2000:]
        assert wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in log_of(stranger), 60), log_of(stranger)[-2000:]
        assert f"New client {STRANGER}" not in log_of(server)
        assert f"Successfully registered client:{MEMBER}" in log_of(member)
        root_ca = server / "startup" / "rootCA.pem"
        assert https_answer(fed_port, root_ca, identity=member).startswith(b"HTTP")  # the server answers members
        assert https_answer(fed_port, root_ca) == b""  # and nobody without a certificate
    finally:
        stopped = stop_processes_under(tmp_path.resolve(), grace=0)
    assert len(stopped) >= 3 and stop_processes_under(tmp_path.resolve(), grace=0) == []
