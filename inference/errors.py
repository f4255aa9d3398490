"""Errors of prediction that a user can fix; each message names the file and the fix."""

from __future__ import annotations

from preprocessing.errors import MucaldError


class PredictionError(MucaldError):
    """Bad input, a missing or foreign checkpoint, or an output that cannot be written."""
