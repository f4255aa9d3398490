"""The self-configuration pipeline behind ``mucald_plan_and_preprocess``.

verify -> fingerprint + proxies (one pass over the raw cases) -> causal graph -> plans ->
preprocess. Each client's fingerprint, proxy table and preprocessed cases live in that client's
own folder; the federation's ``plans.json`` sits above them and holds no per-case values.
A rerun redoes cases made with other settings and deletes case files the dataset no longer has;
``expected_cases`` tells later stages what a client's cases folder must hold.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from planners.causal_graph import learn_causal_graph
from planners.errors import PlanError
from planners.fingerprint import CaseFingerprint, combine_fingerprints, fingerprint_case, load_fingerprint
from planners.locate import plan_command
from planners.node_selection import select_nodes
from planners.planner import ClientFacts, PlannerConfig, make_plans
from planners.plans import PLANS_FILE, CausalGraphPlan, ClientPlan, Plans, save_plans
from planners.proxies import ProxyTable, case_proxies
from preprocessing.case_store import ExpectedCases, remove_orphans
from preprocessing.dataset import RawDataset
from preprocessing.errors import DatasetError
from preprocessing.integrity import verify_dataset
from preprocessing.runner import preprocess_dataset

PROXIES_FILE = "proxies.csv"
CASES_FOLDER = "cases"


class Reporter(Protocol):
    """Progress display: the CLI passes a rich one, tests and notebooks a silent one."""

    def stage(self, description: str, total: int) -> None: ...

    def advance(self) -> None: ...


class SilentReporter:
    def stage(self, description: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass


@dataclass(frozen=True)
class PipelineConfig:
    raw_root: Path
    preprocessed_root: Path
    datasets: tuple[str, ...]
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    num_processes: int = 1
    verify: bool = True
    overwrite: bool = False
    seed: int = 0


def federation_folder(preprocessed_root: Path, datasets: list[RawDataset]) -> Path:
    """``Federation_001_002_003``: one folder per set of clients, named by their ids."""
    ids = sorted(d.dataset_id if d.dataset_id is not None else 0 for d in datasets)
    return Path(preprocessed_root) / ("Federation_" + "_".join(f"{i:03d}" for i in ids))


def client_cases_folder(plans_path: Path, client: ClientPlan) -> Path:
    """Preprocessed training cases of a client (test cases are read raw by the predictor)."""
    return Path(plans_path).parent / client.folder / CASES_FOLDER


def expected_cases(plans_path: Path, plans: Plans, dataset_name: str) -> ExpectedCases:
    """What a client's cases folder must hold under this plan: its settings digest and case ids.

    The ids are the client's fingerprinted cases (None when the fingerprint cannot be read);
    the fix names the command that plans this federation again.
    """
    client = plans.client(dataset_name)
    try:
        ids = frozenset(c["case_id"] for c in load_fingerprint(Path(plans_path).parent / client.folder)["cases"])
    except (OSError, ValueError, KeyError, TypeError, PlanError):
        ids = None
    fix = plan_command(list(plans.clients), Path(plans_path).parent.parent)
    return ExpectedCases(client.case_preprocessing().digest(), ids, fix)


def plan_and_preprocess(config: PipelineConfig, reporter: Reporter = SilentReporter()) -> Path:
    """Run the whole pipeline; returns the path of the written plans file."""
    datasets = [RawDataset.open(config.raw_root, d) for d in config.datasets]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise DatasetError(f"a dataset is named twice in -d {' '.join(config.datasets)}. Fix: list each once.")
    if config.verify:
        for dataset in datasets:
            reporter.stage(f"verify {dataset.name}", len(dataset.case_ids("Tr")) + len(dataset.case_ids("Ts")))
            verify_dataset(dataset.folder, on_case=lambda _c: reporter.advance()).raise_if_problems()
    root = federation_folder(config.preprocessed_root, datasets)
    facts = [analyse_client(dataset, root / dataset.name, config, reporter) for dataset in datasets]
    plans = make_plans(facts, config.planner)
    plans_path = root / PLANS_FILE
    save_plans(plans, plans_path)
    for dataset in datasets:
        preprocess_client(dataset, plans, plans_path, config, reporter)
    return plans_path


def analyse_client(dataset: RawDataset, folder: Path, config: PipelineConfig,
                    reporter: Reporter) -> ClientFacts:
    cases = dataset.case_ids("Tr")
    reporter.stage(f"fingerprint {dataset.name}", len(cases))
    results = []
    for result in _map(_analyse_case, [(dataset.folder, c, config.seed + i) for i, c in enumerate(cases)],
                       config.num_processes):
        results.append(result)
        reporter.advance()
    records = [r[0] for r in results]
    fingerprint = combine_fingerprints(dataset.name, records, [r[1] for r in results])
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint.save(folder)
    table = ProxyTable.from_rows([r[0].case_id for r in results], [r[2] for r in results])
    table.save_csv(folder / PROXIES_FILE)  # label-derived: stays in the client's folder
    nodes = select_nodes(table.columns, table.values, config.planner.num_nodes)
    graph = learn_causal_graph(table.columns, table.values, nodes, seed=config.seed)
    native_dims = 2 if len(records[0].shape) == 2 or all(1 in r.shape for r in records) else 3
    return ClientFacts(dataset.spec, native_dims, fingerprint, CausalGraphPlan(**graph.to_dict()),
                       folder=dataset.name)


def _analyse_case(job: tuple[Path, str, int]) -> tuple[CaseFingerprint, list[np.ndarray], dict[str, float]]:
    folder, case_id, seed = job
    dataset = RawDataset(folder)
    images = dataset.read_images(case_id)
    label, _ = dataset.read_label(case_id)
    record, samples = fingerprint_case(case_id, images.array, label, images.geometry.array_spacing, seed)
    proxies = case_proxies(images.array, label, images.geometry, dataset.spec.labels,
                           dataset.spec.channel_names)
    return record, samples, proxies


def _map(function, jobs: list, num_processes: int):
    """Results in job order; a process pool only when it can help."""
    if num_processes <= 1 or len(jobs) <= 1:
        yield from map(function, jobs)
        return
    with ProcessPoolExecutor(max_workers=num_processes) as pool:
        yield from pool.map(function, jobs, chunksize=max(1, len(jobs) // (4 * num_processes)))


def preprocess_client(dataset: RawDataset, plans: Plans, plans_path: Path, config: PipelineConfig,
                       reporter: Reporter) -> None:
    client = plans.client(dataset.name)
    case_config = client.case_preprocessing()
    folder = client_cases_folder(plans_path, client)
    reporter.stage(f"preprocess {dataset.name}", len(dataset.case_ids("Tr")))
    if folder.is_dir():  # cases of removed raw files, and halves of interrupted writes
        remove_orphans(folder, dataset.case_ids("Tr"))
    preprocess_dataset(dataset, case_config, folder, "Tr", config.num_processes, config.overwrite,
                       on_case=lambda _c, _s: reporter.advance())
