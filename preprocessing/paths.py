"""Where the raw, preprocessed and results roots are: a CLI flag first, then a documented
environment variable read at call time (never at import time), else a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

from preprocessing.errors import DatasetError

RAW_ENV = "MUCALD_RAW"
PREPROCESSED_ENV = "MUCALD_PREPROCESSED"
RESULTS_ENV = "MUCALD_RESULTS"


def resolve_root(flag_value: Path | None, env_var: str, flag_name: str) -> Path:
    """Return the root folder from the flag, else from ``env_var``; fail with both options named."""
    if flag_value is not None:
        return Path(flag_value).expanduser()
    from_env = os.environ.get(env_var)
    if from_env:
        return Path(from_env).expanduser()
    raise DatasetError(
        f"No {flag_name.lstrip('-')} folder given. Fix: pass {flag_name} DIR or set {env_var}=DIR."
    )


def raw_root(flag_value: Path | None) -> Path:
    return resolve_root(flag_value, RAW_ENV, "--raw")


def preprocessed_root(flag_value: Path | None) -> Path:
    return resolve_root(flag_value, PREPROCESSED_ENV, "--preprocessed")


def results_root(flag_value: Path | None) -> Path:
    return resolve_root(flag_value, RESULTS_ENV, "--results")
