"""Batches made in a background thread are the sequential ones, in order, and leave every generator
(the sampler's, numpy's and Python's global ones) where sequential production would; errors reach
the consumer and leaving early neither hangs nor leaves the generators ahead."""

from __future__ import annotations

import random
import threading
import time
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from mucald_unet.training.augmentation import (
    AugmentationConfig,
    augmentation_rng_state,
    build_augmentation,
    seed_augmentation,
)
from mucald_unet.training.batch_stream import InterleavedRoundBatches, RoundBatches
from mucald_unet.training.data import PatchSampler, TrainingCase
from preprocessing.case_preprocessing import foreground_locations

PATCH = (16, 16)
# every augmentation on, often, so that the global generators are drawn from in every batch
STRONG = AugmentationConfig(p_rotation=0.5, p_scale=0.5, p_noise=0.5, p_brightness=0.5, p_contrast=0.5,
                            p_gamma=0.5, p_mirror=0.5)


def cases(seed: int, count: int = 3) -> list[TrainingCase]:
    rng = np.random.default_rng(seed)
    made = []
    for i in range(count):
        label = np.zeros((20, 24), np.uint8)
        label[5:11, 6 + i:14 + i] = 1 + i % 2
        made.append(TrainingCase(f"c{i}", rng.normal(size=(2, 20, 24)).astype(np.float32), label,
                                 foreground_locations(label, i)))
    return made


def sampler(seed: int = 1) -> PatchSampler:
    return PatchSampler(cases(0), PATCH, 3, 0.33, None, np.random.default_rng(seed))


def sequential(pairs: list[tuple[PatchSampler, object]], steps: int) -> list[list[tuple]]:
    out = []
    for _ in range(steps):
        row = []
        for s, augment in pairs:
            batch = s.sample_batch()
            row.append((*augment(batch.images, batch.labels), batch.case_ids))
        out.append(row)
    return out


def states(samplers: list[PatchSampler]) -> tuple:
    return [s.state() for s in samplers], augmentation_rng_state()


def assert_same_batches(got, expected) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert tuple(a[2]) == tuple(b[2])


def producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "round-batches"]


def test_background_batches_and_final_states_equal_sequential_production() -> None:
    augment = build_augmentation(STRONG, PATCH)
    seed_augmentation(5)
    reference = sampler()
    expected = [row[0] for row in sequential([(reference, augment)], 9)]
    expected_states = states([reference])

    seed_augmentation(5)
    threaded = sampler()
    got = []
    with RoundBatches(threaded, augment, 9) as batches:
        for images, labels, case_ids in batches:
            torch.ones(64, 64) @ torch.ones(64, 64)  # the consumer's step: torch only
            got.append((images, labels, case_ids))
    assert_same_batches(got, expected)
    assert states([threaded]) == expected_states  # a checkpoint here resumes exactly
    assert not producer_threads()


def test_interleaved_clients_draw_the_shared_global_generators_in_the_trainers_order() -> None:
    augment_a, augment_b = build_augmentation(STRONG, PATCH), build_augmentation(AugmentationConfig(), PATCH)
    seed_augmentation(2)
    refs = [sampler(1), sampler(2)]
    expected = sequential([(refs[0], augment_a), (refs[1], augment_b)], 6)
    expected_states = states(refs)

    seed_augmentation(2)
    threaded = [sampler(1), sampler(2)]
    with InterleavedRoundBatches([(threaded[0], augment_a), (threaded[1], augment_b)], 6) as steps:
        got = [list(step) for step in steps]
    for got_row, expected_row in zip(got, expected, strict=True):
        assert_same_batches(got_row, expected_row)
    assert states(threaded) == expected_states


def test_an_error_in_the_producer_reaches_the_consumer_with_its_message() -> None:
    augment = build_augmentation(STRONG, PATCH)
    calls = []

    def failing(images, labels):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("augmentation broke on batch 3")
        return augment(images, labels)

    seed_augmentation(7)
    reference = sampler()
    sequential([(reference, augment)], 2)
    after_two = states([reference])

    seed_augmentation(7)
    threaded = sampler()
    got = []
    with pytest.raises(ValueError, match="augmentation broke on batch 3"), \
            RoundBatches(threaded, failing, 10) as batches:
        for batch in batches:
            got.append(batch)  # noqa: PERF402 - the batches before the failure must arrive
    assert len(got) == 2 and not producer_threads()
    assert states([threaded]) == after_two  # the failed batch's draws are undone


@pytest.mark.parametrize("how", ["break", "exception"])
def test_leaving_early_does_not_hang_and_sets_the_generators_back(how: str) -> None:
    augment = build_augmentation(STRONG, PATCH)
    seed_augmentation(3)
    reference = sampler()
    sequential([(reference, augment)], 2)
    after_two = states([reference])

    seed_augmentation(3)
    threaded = sampler()
    started = time.perf_counter()
    with pytest.raises(KeyError) if how == "exception" else nullcontext(), \
            RoundBatches(threaded, augment, 1000, ahead=2) as batches:
        for i, _batch in enumerate(batches):
            if i == 1:
                time.sleep(0.2)  # the producer fills its queue: it is ahead of the consumer now
                if how == "exception":
                    raise KeyError("the training step failed")
                break
    assert time.perf_counter() - started < 10 and not producer_threads()
    assert states([threaded]) == after_two  # as if only the two batches handed out were made


def test_zero_batches_and_misuse() -> None:
    augment = build_augmentation(AugmentationConfig(enabled=False), PATCH)
    seed_augmentation(0)
    s = sampler()
    before = states([s])
    with RoundBatches(s, augment, 0) as batches:
        assert list(batches) == []
    assert states([s]) == before
    with pytest.raises(RuntimeError, match="inside `with"):
        next(iter(RoundBatches(s, augment, 2)))
    with pytest.raises(RuntimeError, match="once"):
        list(batches)
    with pytest.raises(ValueError, match="ahead"):
        RoundBatches(s, augment, 2, ahead=0)
    np.random.seed(0)
    random.seed(0)

