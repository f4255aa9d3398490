"""``mucald_server``: the server of a federation on separate machines, started from its startup kit.

``mucald_server plan -d 1 2 3 --kit ... --admin-kit ...`` plans the federation site by site
(``server_plan``). ``mucald_server [train] -d 1 2 3 --kit ... --admin-kit ...`` is ``mucald_train
--engine flare`` under the name a hospital's IT looks for: every training flag of ``mucald_train``
applies. Either starts FLARE's server, waits until every hospital's site (``mucald_client``) has
connected, runs its job, and stops the server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mucald_unet.commands import server_plan, train
from mucald_unet.deployment import KITS_ENGINE


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["plan"]:
        return server_plan.main(args[1:])
    if args[:1] == ["train"]:
        args = args[1:]
    if "--engine" in args:
        print("error: mucald_server always trains with --engine flare. Fix: drop --engine, or use mucald_train.",
              file=sys.stderr)
        return 1
    return train.main(["--engine", KITS_ENGINE, *args])


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
