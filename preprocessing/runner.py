"""Preprocess many cases of one dataset: in parallel, one case per worker at a time, resumable.

Workers are a plain ProcessPoolExecutor; each reads, processes and writes one case and returns
only its id, so memory stays bounded by the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from preprocessing.case_preprocessing import CasePreprocessingConfig, preprocess_case
from preprocessing.case_store import is_complete, save_case
from preprocessing.dataset import RawDataset


@dataclass(frozen=True)
class CaseJob:
    dataset_folder: Path
    case_id: str
    split: str
    labelled: bool
    seed: int
    source_stamp: str


def source_stamp(dataset: RawDataset, case_id: str, split: str) -> str:
    """Changes when any raw file of the case is replaced, so stale outputs are redone."""
    files = sorted(dataset.images_dir(split).glob(f"{case_id}_[0-9][0-9][0-9][0-9]{dataset.spec.file_ending}"))
    label = dataset.label_file(case_id, split)
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files + ([label] if label.is_file() else [])]
    return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


def run_case(job: CaseJob, config: CasePreprocessingConfig, out_folder: Path) -> str:
    """Read, preprocess and store one case; returns its id (runs inside a worker)."""
    dataset = RawDataset(job.dataset_folder)
    images = dataset.read_images(job.case_id, job.split)
    label = dataset.read_label(job.case_id, job.split)[0] if job.labelled else None
    case = preprocess_case(job.case_id, images.array, label, images.geometry, config, job.seed)
    save_case(out_folder, replace(case, properties=replace(case.properties, source_stamp=job.source_stamp)))
    return job.case_id


def preprocess_dataset(dataset: RawDataset, config: CasePreprocessingConfig, out_folder: Path,
                       split: str = "Tr", num_processes: int = 1, overwrite: bool = False,
                       on_case: Callable[[str, bool], None] | None = None) -> list[str]:
    """Preprocess every case of ``split`` into ``out_folder``; returns the ids actually processed.

    ``on_case(case_id, skipped)`` is called once per case, for progress display.
    """
    out_folder.mkdir(parents=True, exist_ok=True)
    labelled = split == "Tr" or dataset.labels_dir(split).is_dir()
    jobs, digest = [], config.digest()
    for index, case_id in enumerate(dataset.case_ids(split)):
        stamp = source_stamp(dataset, case_id, split)
        if not overwrite and is_complete(out_folder, case_id, digest, stamp):
            if on_case:
                on_case(case_id, True)
            continue
        has_label = labelled and dataset.label_file(case_id, split).is_file()
        jobs.append(CaseJob(dataset.folder, case_id, split, has_label, seed=index, source_stamp=stamp))
    done: list[str] = []
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            done.append(run_case(job, config, out_folder))
            if on_case:
                on_case(job.case_id, False)
        return done
    with ProcessPoolExecutor(max_workers=num_processes) as pool:
        futures = [pool.submit(run_case, job, config, out_folder) for job in jobs]
        for future in as_completed(futures):
            done.append(future.result())
            if on_case:
                on_case(done[-1], False)
    return sorted(done)
