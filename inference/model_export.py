"""Client exports: one hospital's trained model as a file of its own, made from a run's checkpoint.

The export holds that client's FE, CRDMs and BE, its server segment, the run's settings, the
plan's digest and the format: what ``mucald_predict --checkpoint FILE`` needs and nothing more
(no optimiser, sampler or RNG state, discriminators, history or other clients' weights).
"""

from __future__ import annotations

from pathlib import Path

from inference.errors import PredictionError
from inference.model import ClientWeights, read_client_weights
from mucald_unet.training.checkpoint import save_plain
from planners.plans import load_plans


def export_client_model(plans_path: Path, client: str, checkpoint_path: Path, output: Path) -> ClientWeights:
    """Write ``client``'s model from ``checkpoint_path`` (checked against the plan) to ``output``,
    atomically: the file appears complete or not at all."""
    output = Path(output)
    if output.is_dir():
        raise PredictionError(f"{output}: is a folder. Fix: name the export file, e.g. -o {output / 'model.pt'}.")
    plans = load_plans(plans_path)
    weights = read_client_weights(checkpoint_path, plans.client(client).dataset_name, plans, plans_path)
    save_plain(output, weights.to_dict())
    return weights
