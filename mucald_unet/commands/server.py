"""``mucald_server``: the server of a federation on separate machines, started from its startup kit.

It is ``mucald_train --engine flare`` under the name a hospital's IT looks for: every training flag of
``mucald_train`` applies, and ``--kit`` (the server's kit) and ``--admin-kit`` (the admin's, which
submits the job) are required. It starts FLARE's server, waits until every hospital's site
(``mucald_client``) has connected, trains, and stops the server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mucald_unet.commands import train
from mucald_unet.deployment import KITS_ENGINE


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--engine" in args:
        print("error: mucald_server always trains with --engine flare. Fix: drop --engine, or use mucald_train.",
              file=sys.stderr)
        return 1
    return train.main(["--engine", KITS_ENGINE, *args])


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
