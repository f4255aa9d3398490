"""How well per-task causal discovery recovers the demo federation's planted graphs.

Measures the demo's documented nodes from the labels with the planner's own proxies, learns a
DAG over them with the planner's learner, and prints the structural Hamming distance (SHD) to
the planted graph per dataset, size and seed. An empty graph scores SHD = number of true edges.

    python -m benchmarks.demo_causal_recovery --sizes small medium --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from planners.causal_graph import learn_causal_graph, structural_hamming_distance
from planners.proxies import dataset_proxy_table
from preprocessing.dataset import RawDataset
from preprocessing.demo import make_demo_federation

# Demo node -> the proxy columns that measure it (averaged when several, e.g. R, G, B contrast).
NODE_COLUMNS = {
    "Dataset001_DemoPolyp": {"size": ["polyp_size"], "elongation": ["polyp_elongation"],
                             "asymmetry": ["polyp_asymmetry"],
                             "contrast": ["polyp_contrast_R", "polyp_contrast_G", "polyp_contrast_B"]},
    "Dataset002_DemoLungCT": {"size": ["lesion_size"], "elongation": ["lesion_elongation"],
                              "asymmetry": ["lesion_asymmetry"], "contrast": ["lesion_contrast_CT"]},
    "Dataset003_DemoFetalUS": {"size": ["union_size"], "elongation": ["union_elongation"],
                               "inner_size": ["brain_structure_size"], "contrast": ["union_contrast_US"]},
}


def recovery(raw: Path, dataset_name: str, seed: int) -> tuple[int, int, list[tuple[str, str]], float]:
    """SHD, number of planted edges, learned edges and seconds for one demo dataset."""
    dataset = RawDataset(raw / dataset_name)
    truth = json.loads((dataset.folder / "causal_graph.json").read_text())
    table = dataset_proxy_table(dataset)
    nodes = list(NODE_COLUMNS[dataset_name])
    values = np.stack([np.mean([table.column(c) for c in NODE_COLUMNS[dataset_name][n]], axis=0)
                       for n in nodes], axis=1)
    started = time.perf_counter()
    graph = learn_causal_graph(nodes, values, nodes, seed=seed)
    seconds = time.perf_counter() - started
    true_edges = [tuple(e) for e in truth["edges"]]
    return structural_hamming_distance(true_edges, graph.edges, nodes), len(true_edges), graph.edges, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=["tiny", "small", "medium"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    print("| size | seed | dataset | cases | SHD | planted edges | learned edges | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as work:
                raw = Path(work)
                make_demo_federation(raw, seed=seed, size=size)
                for name in NODE_COLUMNS:
                    shd, planted, learned, seconds = recovery(raw, name, seed)
                    cases = len(RawDataset(raw / name).case_ids())
                    shown = ", ".join(f"{p}->{c}" for p, c in learned) or "-"
                    print(f"| {size} | {seed} | {name} | {cases} | {shd} | {planted} | {shown} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
