"""Errors of the training stage that users see."""

from preprocessing.errors import MucaldError


class TrainingError(MucaldError):
    """A run cannot start or continue: bad settings, missing inputs, or an incompatible checkpoint."""


class DivergenceError(TrainingError):
    """A loss became NaN or infinite; names the client and the term so the cause can be traced."""

    def __init__(self, client: str, term: str, round_index: int) -> None:
        self.client = client
        self.term = term
        self.round_index = round_index
        super().__init__(f"round {round_index}: loss term '{term}' of {client} is not finite. The round "
                         "was stopped and the last good checkpoint kept. Fix: lower --lr, or switch the "
                         "term off with --ablate, then --resume.")

    def __reduce__(self) -> tuple:  # picklable, like every error a worker process may raise
        return type(self), (self.client, self.term, self.round_index)


class ServerRefusal(TrainingError):
    """The server answered a client's request with an error message (a typed reply, not a crash)."""
