"""``mucald_provision``: one startup kit per hospital site, the server and the project admin
(FLARE's provisioning: mutual TLS under one root CA), and KITS.md saying which goes where."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mucald_unet.errors import TrainingError
from preprocessing.cli_support import entry_points

app = typer.Typer(add_completion=False, help="Issue the startup kits of a federation on separate machines.")


@app.command()
def provision(
    out: Annotated[Path, typer.Option("-o", "--out", help="Empty folder for project.yml, the kits and KITS.md.")],
    server: Annotated[str, typer.Option("--server", help="The server's host name as the hospitals reach it.")],
    sites: Annotated[list[str], typer.Option("--sites", help="One site per hospital, named by its dataset: "
                                                             "--sites Dataset001_A Dataset002_B.")],
    admin: Annotated[str, typer.Option("--admin", help="E-mail of the project admin, who submits jobs.")],
    project: Annotated[str, typer.Option("--project", help="Project name.")] = "mucald",
    org: Annotated[str, typer.Option("--org", help="Organisation written into every certificate.")] = "mucald",
    fed_port: Annotated[int, typer.Option("--fed-port", min=1, max=65535, help="Port the sites connect to.")] = 8002,
    admin_port: Annotated[int, typer.Option("--admin-port", min=1, max=65535, help="Admin port.")] = 8003,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the kits in --out (old kits stop "
                                                                "working: a new root CA is issued).")] = False,
) -> None:
    """Provision; prints where each kit is and writes the same as KITS.md."""
    try:
        from mucald_unet.deployment.provisioning import ProvisionRequest, provision as issue_kits
    except ImportError as missing:
        raise TrainingError(f"mucald_provision needs NVIDIA FLARE ({missing}). Fix: pip install "
                            "'mucald[deploy]'.") from None
    request = ProvisionRequest(project, server, tuple(sites), admin, org, fed_port, admin_port)
    kits = issue_kits(request, out, overwrite)
    Console(highlight=False, soft_wrap=True).print(kits.guide.read_text())


main, entry = entry_points(app, ("--sites",))

if __name__ == "__main__":
    entry()
