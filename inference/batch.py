"""Predict a folder of cases: preprocessing and export in worker processes, the network in this one.

With ``num_processes`` > 1 the next cases are read and preprocessed, and finished ones resampled
and written, while the network works on the current case (nnU-Net's pattern); at most
``num_processes`` cases wait in each direction, so memory stays bounded. A case that fails
(unreadable file, wrong channels, wrong dimensionality) is reported and the rest go on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inference.export import segmentation_path, write_prediction
from inference.inputs import InputCase
from inference.predictor import CaseRequirements, Predictor, finish_case, read_and_prepare
from preprocessing.case_preprocessing import CaseProperties, PreprocessedCase
from preprocessing.errors import MucaldError
from preprocessing.resampling import ResamplingConfig


@dataclass(frozen=True)
class BatchOptions:
    out_folder: Path
    save_probabilities: bool = False
    num_processes: int = 1  # worker processes for reading/preprocessing and export; 1 = all in this one
    skip_existing: bool = False  # continue an interrupted run: cases whose segmentation exists are skipped


@dataclass
class BatchResult:
    network_seconds: dict[str, float] = field(default_factory=dict)  # case -> time in the network
    failures: dict[str, str] = field(default_factory=dict)  # case -> message
    skipped: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def predicted(self) -> list[str]:
        return sorted(set(self.network_seconds) - set(self.failures))


class BatchReporter(Protocol):
    def start(self, total: int) -> None: ...

    def case_started(self, case_id: str) -> None: ...

    def case_done(self, case_id: str, problem: str | None) -> None: ...


class SilentBatchReporter:
    def start(self, total: int) -> None:
        pass

    def case_started(self, case_id: str) -> None:
        pass

    def case_done(self, case_id: str, problem: str | None) -> None:
        pass


def export_case(probabilities: np.ndarray, properties: CaseProperties, resampling: ResamplingConfig,
                options: BatchOptions, ending: str, class_names: list[str]) -> list[Path]:
    """Back onto the input grid and written (runs in a worker in batch mode)."""
    prediction = finish_case(probabilities, properties, resampling, options.save_probabilities)
    return write_prediction(prediction, options.out_folder, properties.case_id, ending, class_names)


def predict_cases(predictor: Predictor, cases: list[InputCase], options: BatchOptions,
                  reporter: BatchReporter | None = None) -> BatchResult:
    reporter = reporter or SilentBatchReporter()
    result = BatchResult()
    started = time.perf_counter()
    todo = []
    for case in cases:
        if options.skip_existing and segmentation_path(options.out_folder, case.case_id, case.output_ending).is_file():
            result.skipped.append(case.case_id)
        else:
            todo.append(case)
    reporter.start(len(todo))
    options.out_folder.mkdir(parents=True, exist_ok=True)
    classes = [n for n, _ in sorted(predictor.plan.labels.items(), key=lambda kv: kv[1])]
    with _executor(options.num_processes) as pool:
        exports: deque[tuple[str, Future]] = deque()
        for case, prepared in _prefetched(todo, predictor.requirements, pool, options.num_processes):
            reporter.case_started(case.case_id)
            try:
                images = prepared.result()
                tic = time.perf_counter()
                probabilities = predictor.predict_probabilities(images.images)
                result.network_seconds[case.case_id] = time.perf_counter() - tic
            except Exception as err:  # one bad case must not stop the others
                _fail(result, reporter, case.case_id, err)
                continue
            exports.append((case.case_id, pool.submit(export_case, probabilities, images.properties,
                                                      predictor.resampling, options, case.output_ending, classes)))
            while len(exports) > max(0, options.num_processes - 1):
                _collect(exports.popleft(), result, reporter)
        while exports:
            _collect(exports.popleft(), result, reporter)
    result.wall_seconds = time.perf_counter() - started
    return result


def _prefetched(cases: list[InputCase], requirements: CaseRequirements, pool: Executor,
                depth: int) -> Iterator[tuple[InputCase, Future[PreprocessedCase]]]:
    """Cases with their preprocessing submitted ``depth`` ahead of the one being predicted."""
    queue: deque[tuple[InputCase, Future]] = deque()
    upcoming = iter(cases)
    for case in upcoming:
        queue.append((case, pool.submit(read_and_prepare, case, requirements)))
        if len(queue) > depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _collect(item: tuple[str, Future], result: BatchResult, reporter: BatchReporter) -> None:
    case_id, future = item
    try:
        future.result()
    except Exception as err:
        _fail(result, reporter, case_id, err)
        return
    reporter.case_done(case_id, None)


def _fail(result: BatchResult, reporter: BatchReporter, case_id: str, err: Exception) -> None:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, MucaldError):
        message = f"{case_id}: unexpected {type(err).__name__}: {message}"
    result.failures[case_id] = message
    reporter.case_done(case_id, message)


class _InProcess(Executor):
    """The executor interface, run inline: one process, no pickling."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:
            future.set_exception(err)
        return future


def _executor(num_processes: int) -> Executor:
    return ProcessPoolExecutor(max_workers=num_processes) if num_processes > 1 else _InProcess()
