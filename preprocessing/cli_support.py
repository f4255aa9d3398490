"""What every mucald command shares: offline mode, ``-d 1 2 3`` style flags, and user errors
printed as one clear message with exit code 1 instead of a traceback.

Offline mode must be on before huggingface_hub is imported (it reads ``HF_HUB_OFFLINE`` once, at
import), so each commands package calls ``go_offline`` in its ``__init__``, before any command
module imports diffusers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence

import typer
from rich.console import Console
from rich.markup import escape

from preprocessing.errors import MucaldError

DATASET_FLAGS = ("-d", "--dataset")


def go_offline() -> None:
    """Nothing may download weights at run time; a user's own HF_HUB_OFFLINE value wins."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def expand_multi_value_flags(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """Rewrite ``-d 1 2 3`` as ``-d 1 -d 2 -d 3`` so nnU-Net-style calls parse with click.

    Values are the tokens after the flag up to the next token starting with '-'; a command that
    uses this therefore takes no positional arguments after such a flag.
    """
    out: list[str] = []
    active: str | None = None
    for token in argv:
        if token in flags:
            active = token
            out.append(token)
            continue
        if token.startswith("-"):
            active = None
        elif active is not None and out[-1] != active:
            out.append(active)
        out.append(token)
    return out


def rewrite_aliases(argv: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """Turn nnU-Net's multi-letter single-dash flags (``-ref``, ``-np``) into their long forms;
    click only knows one-letter short options."""
    return [aliases.get(token, token) for token in argv]


def run_app(app: typer.Typer, argv: Sequence[str] | None = None, multi_value_flags: Sequence[str] = (),
            aliases: Mapping[str, str] | None = None) -> int:
    """Run a typer app and return its exit code; MucaldError becomes a message and code 1."""
    args = rewrite_aliases(list(sys.argv[1:] if argv is None else argv), aliases or {})
    args = expand_multi_value_flags(args, multi_value_flags)
    try:
        app(args=args, standalone_mode=True)  # click prints usage errors and exits by itself
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except MucaldError as err:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/] {escape(str(err))}", markup=True)
        return 1
    return 0


def entry_points(app: typer.Typer, multi_value_flags: Sequence[str] = (), aliases: Mapping[str, str] | None = None
                 ) -> tuple[Callable[[Sequence[str] | None], int], Callable[[], None]]:
    """``main(argv) -> exit code`` for tests and notebooks, ``entry()`` for the console script."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_app(app, argv, multi_value_flags, aliases)

    def entry() -> None:
        raise SystemExit(main())

    return main, entry
