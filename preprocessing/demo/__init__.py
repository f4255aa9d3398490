"""The built-in demo federation: three small synthetic hospitals (endoscopy RGB, lung CT, fetal
ultrasound) in the raw layout, each with a planted causal graph over its label properties.
"""

from preprocessing.demo.causal import CausalGraphSpec, sample_nodes
from preprocessing.demo.federation import (
    CAUSAL_GRAPH_JSON,
    RECIPES,
    WrittenDataset,
    demo_folders,
    make_demo_federation,
    write_demo_federation,
)
from preprocessing.demo.presets import PRESETS, SIZE_NAMES, DatasetSize, SizePreset

__all__ = [
    "CAUSAL_GRAPH_JSON", "PRESETS", "RECIPES", "SIZE_NAMES", "CausalGraphSpec", "DatasetSize",
    "SizePreset", "WrittenDataset", "demo_folders", "make_demo_federation", "sample_nodes",
    "write_demo_federation",
]
