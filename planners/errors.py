"""Errors of the planning stage that users see."""

from preprocessing.errors import MucaldError


class PlanError(MucaldError):
    """A plan cannot be made, or a plans file is invalid; the message names the field or dataset."""
