"""Patch batches of one round, cut and augmented in a background thread while the network trains.

``RoundBatches(sampler, augment, n)`` produces exactly ``n`` batches, each
``augment(*sampler.sample_batch()[:2])`` with its case ids, a few batches ahead of the consumer
(a bounded queue), and stops at ``n``. The batches are the ones sequential production gives, in
the same order, and after the round the sampler's generator and the global ``np.random`` and
``random`` states (which batchgenerators draws from) are exactly what sequential production would
have left, so a checkpoint taken after the round resumes exactly. ``InterleavedRoundBatches``
does the same for several clients whose augmentations share those global generators, producing
step s of every client (in order) before step s + 1, as the trainer consumes them.

Contract for the consumer, while the ``with`` block is open:

* do not draw from ``np.random`` or ``random`` (torch's generators are fine), and do not call
  the sampler or the augmentation yourself: the producer thread owns all of them;
* leave the block to stop early (an exception or ``break``): the producer is stopped and joined,
  and the generators are set back to what producing only the batches handed out would have left.

An exception in the producer is raised again in the consumer, the same exception with its
message, when it reaches the batch that failed.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from mucald_unet.training.data import PatchSampler

Augment = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
DEFAULT_AHEAD = 2  # batches waiting in the queue; one more may be in production


class RoundBatch(NamedTuple):
    images: np.ndarray  # (B, C, *patch) float32, augmented
    labels: np.ndarray  # (B, 1, *patch) int16, augmented
    case_ids: tuple[str, ...]


class _States(NamedTuple):
    samplers: tuple[dict[str, Any], ...]
    numpy: dict[str, Any]
    python: tuple

    @classmethod
    def capture(cls, samplers: Sequence[PatchSampler]) -> _States:
        return cls(tuple(s.state() for s in samplers), np.random.get_state(legacy=False), random.getstate())

    def restore(self, samplers: Sequence[PatchSampler]) -> None:
        for sampler, state in zip(samplers, self.samplers):
            sampler.set_state(state)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


class _Item(NamedTuple):
    batches: tuple[RoundBatch, ...]
    states: _States  # every generator's state right after these batches were made


class _Failure(NamedTuple):
    error: BaseException


_DONE = object()


class _BackgroundRound:
    """The producer thread and its queue; subclasses say what one step yields."""

    def __init__(self, sources: Sequence[tuple[PatchSampler, Augment]], steps: int,
                 ahead: int = DEFAULT_AHEAD) -> None:
        if steps < 0:
            raise ValueError(f"the number of batches must be >= 0, got {steps}")
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1 batch, got {ahead}")
        if not sources:
            raise ValueError("need at least one (sampler, augmentation) pair")
        self.sources = [(sampler, augment) for sampler, augment in sources]
        self.samplers = [sampler for sampler, _ in self.sources]
        self.steps = steps
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handed_out: _States | None = None  # states after the last step the consumer received
        self._finished = False

    # ---- the producer -----------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            for _ in range(self.steps):
                if self._stop.is_set():
                    return
                batches = []
                for sampler, augment in self.sources:
                    batch = sampler.sample_batch()
                    images, labels = augment(batch.images, batch.labels)
                    batches.append(RoundBatch(images, labels, batch.case_ids))
                if not self._put(_Item(tuple(batches), _States.capture(self.samplers))):
                    return
            self._put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, who raises it
            self._put(_Failure(error))

    def _put(self, item: object) -> bool:
        """Queue ``item``, waiting for room; False when the consumer has stopped the round."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    # ---- the consumer -----------------------------------------------------------------------
    def __enter__(self):
        if self._thread is not None:
            raise RuntimeError("a round's batches can be produced only once")
        self._handed_out = _States.capture(self.samplers)
        self._thread = threading.Thread(target=self._produce, name="round-batches", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the producer, wait for it, and set every generator to what sequential production
        of the steps handed out so far would have left."""
        if self._thread is None or self._finished:
            return
        self._stop.set()
        self._thread.join()
        self._finished = True
        self._handed_out.restore(self.samplers)

    def _steps(self) -> Iterator[tuple[RoundBatch, ...]]:
        if self._thread is None or self._finished:
            raise RuntimeError("iterate a round's batches once, inside `with RoundBatches(...) as batches:`")
        for _ in range(self.steps):
            item = self._queue.get()
            if isinstance(item, _Failure):
                raise item.error
            self._handed_out = item.states
            yield item.batches
        self.close()


class RoundBatches(_BackgroundRound):
    """``n`` augmented batches of one sampler, made ahead in a thread; iterate inside ``with``:

        with RoundBatches(sampler, augment, n) as batches:
            for images, labels, case_ids in batches:
                ...
    """

    def __init__(self, sampler: PatchSampler, augment: Augment, n: int, ahead: int = DEFAULT_AHEAD) -> None:
        super().__init__([(sampler, augment)], n, ahead)

    def __iter__(self) -> Iterator[RoundBatch]:
        for (batch,) in self._steps():
            yield batch


class InterleavedRoundBatches(_BackgroundRound):
    """``steps`` steps of several clients, each step one batch per (sampler, augmentation) pair
    in the order given, made in one thread in the order the trainer would make them itself."""

    def __iter__(self) -> Iterator[tuple[RoundBatch, ...]]:
        yield from self._steps()
