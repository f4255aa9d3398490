"""Defences at split 1: distance correlation against dcor, NoPeek tiles, Gaussian noise, and
quantisation (few levels cross, gradients pass straight through, in training and prediction)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.audit.transmissions import transmitted, undefended
from inference.model import load_client_model
from mucald_unet.config import DefenceConfig, DefenceKind, Method, TrainingConfig
from mucald_unet.defences.distance_correlation import distance_correlation, u_distance_correlation_sqr
from mucald_unet.defences.nopeek import nopeek_loss, tiles
from mucald_unet.defences.inversion_adversary import SimulatedInverter
from mucald_unet.defences.quantisation import BoundaryQuantiser
from mucald_unet.errors import TrainingError
from mucald_unet.training.checkpoint import FINAL, load_checkpoint
from mucald_unet.training.trainer import LOG_FILE, MANIFEST_FILE, FederatedTrainer, run_folder_for
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import quick_config


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_correlation_equals_dcor(seed: int) -> None:
    dcor = pytest.importorskip("dcor")  # a dev dependency; only the GPU check's wheel set lacks it
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(25, 7))
    y = np.concatenate([x[:, :2] ** 2, rng.normal(size=(25, 3))], axis=1)
    ours = distance_correlation(torch.from_numpy(x), torch.from_numpy(y))
    ours_u = u_distance_correlation_sqr(torch.from_numpy(x), torch.from_numpy(y))
    assert abs(float(ours) - dcor.distance_correlation(x, y)) < 1e-6
    assert abs(float(ours_u) - dcor.u_distance_correlation_sqr(x, y)) < 1e-6


def test_bias_corrected_dependence_is_near_zero_for_independent_and_one_for_identical() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(200, 50)))
    assert abs(float(u_distance_correlation_sqr(x, torch.from_numpy(rng.normal(size=(200, 50)))))) < 0.02
    assert float(u_distance_correlation_sqr(x, 3 * x + 1)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 4"):
        u_distance_correlation_sqr(x[:3], x[:3])


def test_tiles_cut_every_image_into_the_same_grid() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    cut = tiles(x, (2, 3))
    assert cut.shape == (2 * 2 * 2, 3 * 2 * 3)
    # second tile of the first image: rows 0-1, columns 3-5, all channels
    assert torch.equal(cut[1], x[0, :, 0:2, 3:6].reshape(-1))


def test_nopeek_loss_separates_dependent_from_independent_features() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 96, generator=generator)  # 48 tiles of 16 x 16
    independent = nopeek_loss(images, torch.randn(2, 8, 64, 96, generator=generator))
    dependent = nopeek_loss(images, torch.cat([images, images ** 2, -images[:, :2]], dim=1))
    assert float(independent) < 0.05 < 0.3 < float(dependent)


def test_nopeek_pairs_each_image_tile_with_the_features_of_the_same_place_behind_a_deeper_cut() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 96, generator=generator)
    pooled = torch.nn.functional.avg_pool2d(images, 2)  # what a cut of depth 1 sends, spatially
    dependent = nopeek_loss(images, torch.cat([pooled, pooled ** 2], dim=1))
    independent = nopeek_loss(images, torch.randn(2, 6, 32, 48, generator=generator))
    assert float(independent) < 0.05 < 0.3 < float(dependent)


def test_defence_parsing_names_and_round_trips() -> None:
    config = TrainingConfig(method=Method.SPLITFED, defence=DefenceConfig.parse("nopeek:0.1"))
    assert config.defence == DefenceConfig(DefenceKind.NOPEEK, 0.1)
    assert config.run_name == "splitfed__nopeek-0.1"
    assert TrainingConfig.from_dict(config.to_dict()) == config
    assert not DefenceConfig.parse(None).active and DefenceConfig.parse("gaussian:0.5").gaussian_sigma == 0.5
    for bad in ("gaussian", "laplace:1", "gaussian:-1", "nopeek:x"):
        with pytest.raises(TrainingError, match="--defence|strength"):
            DefenceConfig.parse(bad)
    assert DefenceConfig.parse("quantise:4").quantisation_bits == 4
    assert TrainingConfig(defence=DefenceConfig.parse("quantise:4")).run_name.endswith("__quantise-4")
    for bad in ("quantise:2.5", "quantise:17"):
        with pytest.raises(TrainingError, match="whole number of bits from 1 to 16"):
            DefenceConfig.parse(bad)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_quantisation_keeps_two_to_the_bits_levels_per_sample_and_channel_and_passes_gradients(bits: int) -> None:
    features = (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(bits)) * 5).requires_grad_(True)
    quantised = BoundaryQuantiser(bits)(features)
    assert quantised.shape == features.shape
    for sample in range(2):
        for channel in range(3):
            row, original = quantised[sample, channel].detach(), features[sample, channel].detach()
            step = float(original.max() - original.min()) / (2 ** bits - 1)
            assert 2 <= len(torch.unique(row)) <= 2 ** bits
            assert float((row - original).abs().max()) <= step + 1e-5  # each value moves less than a level
    weights = torch.randn(features.shape)
    (quantised * weights).sum().backward()
    assert torch.equal(features.grad, weights)  # straight through: the client's gradients are untouched
    assert torch.equal(BoundaryQuantiser(0)(features), features)
    constant = torch.full((1, 2, 4, 4), 5.0)
    assert torch.equal(BoundaryQuantiser(bits)(constant), constant)  # a flat channel keeps its value
    with pytest.raises(ValueError, match="1 to 16 bits"):
        BoundaryQuantiser(17)


def split1_in_both_modes(run: FederatedTrainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(what crosses split 1, the FE's features) for one batch, in training and in eval mode."""
    network = run.clients[0].network
    images = torch.randn(2, 3, *run.clients[0].plan.patch_size)
    pairs = []
    for mode in (network.train, network.eval):
        mode()
        with torch.no_grad():
            pairs.append((network.head(images).features, network.front_end(images)))
    return pairs


def test_gaussian_defence_adds_noise_of_sigma_to_what_crosses_in_training_and_prediction(
        tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="splitfed", defence=DefenceConfig.parse("gaussian:0.5"))
    for crossing, features in split1_in_both_modes(FederatedTrainer(tiny_federation, CLIENTS, config, tmp_path)):
        assert float((crossing - features).std()) == pytest.approx(0.5, rel=0.05)


def test_nopeek_training_logs_its_term_and_lands_in_its_own_run_folder(tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="splitfed", defence=DefenceConfig.parse("nopeek:0.5"))
    folder = run_folder_for(tmp_path, tiny_federation, config)
    FederatedTrainer(tiny_federation, CLIENTS, config, folder).run()
    assert folder.parent.name.startswith("splitfed__nopeek-0.5__")  # then the short test budget
    records = [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines()]
    assert all(np.isfinite(r["losses"]["nopeek"]) for r in records)


def test_quantisation_defence_shapes_what_crosses_in_training_and_prediction(tiny_federation: Path,
                                                                             tmp_path: Path) -> None:
    config = quick_config(method="splitfed", defence=DefenceConfig.parse("quantise:2"))
    folder = run_folder_for(tmp_path, tiny_federation, config)
    run = FederatedTrainer(tiny_federation, CLIENTS, config, folder)
    for crossing, _ in split1_in_both_modes(run):
        levels = [len(torch.unique(crossing[b, c])) for b in range(2) for c in range(crossing.shape[1])]
        assert max(levels) <= 4 and min(levels) >= 2
    run.run()
    assert folder.parent.name.startswith("splitfed__quantise-2__")
    records = [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines()]
    assert all(np.isfinite(r["losses"]["seg"]) for r in records)


def test_the_simulated_inverter_learns_to_reconstruct_while_what_crosses_is_pushed_the_other_way() -> None:
    torch.manual_seed(0)
    inverter = SimulatedInverter(2, 8, 1, (2, 2), weight=0.5)
    images = torch.randn(2, 1, 32, 32)
    transmitted = torch.randn(2, 8, 16, 16, requires_grad=True)
    inverter.loss(transmitted, images).backward()
    reversed_gradient = transmitted.grad.clone()
    transmitted.grad = None
    plain = torch.nn.functional.mse_loss(inverter.decoder(transmitted), images)
    plain.backward()
    torch.testing.assert_close(reversed_gradient, -0.5 * transmitted.grad)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in inverter.decoder.parameters()
               if p.requires_grad and p.ndim > 1)
    assert inverter.decoder(transmitted).shape == images.shape  # back on the image grid from a deeper cut


def test_attacker_aware_training_trains_the_inverter_at_the_client_and_keeps_it_there(
        tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="splitfed", iterations=3, defence=DefenceConfig.parse("adversary:0.5"))
    folder = run_folder_for(tmp_path, tiny_federation, config)
    run = FederatedTrainer(tiny_federation, CLIENTS, config, folder)
    before = {k: v.clone() for k, v in run.clients[0].network.inverter.state_dict().items()}
    run.run()
    assert folder.parent.name.startswith("splitfed__adversary-0.5__")
    records = [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines()]
    assert all(np.isfinite(r["losses"]["inversion"]) and r["losses"]["inversion"] > 0 for r in records)
    after = run.clients[0].network.inverter.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the decoder learned
    saved = load_checkpoint(folder / FINAL).clients[CLIENTS[0]]["modules"]
    assert "inverter" in saved  # a client part: checkpointed with FE and BE ...
    manifest = (folder / MANIFEST_FILE).read_text()
    assert "inverter" not in manifest and "decoder" not in manifest  # ... and never sent


def test_a_channel_bottleneck_sends_fewer_channels_trains_end_to_end_and_predicts(tiny_federation: Path,
                                                                                tmp_path: Path) -> None:
    config = quick_config(method="mucald", iterations=2, defence=DefenceConfig.parse("bottleneck:4"))
    folder = run_folder_for(tmp_path, tiny_federation, config)
    run = FederatedTrainer(tiny_federation, CLIENTS, config, folder)
    for crossing, features in split1_in_both_modes(run):
        assert crossing.shape[1] == 4 and features.shape[1] == 16  # the plan's split width stays inside
    before = run.clients[0].network.bottleneck.project.weight.detach().clone()
    run.run()
    assert not torch.equal(before, run.clients[0].network.bottleneck.project.weight)  # it learns
    assert run.server.discriminators["split1"].features[1].in_channels == 4
    model = load_client_model(tiny_federation, CLIENTS[0], folder / FINAL)
    plan = model.plan
    images = torch.randn(2, plan.in_channels, *plan.patch_size)
    with torch.no_grad():
        assert model(images).shape == (2, plan.num_classes, *plan.patch_size)
    assert undefended(model, images).shape == transmitted(model, images).shape  # the audit's plain attacker fits
    with pytest.raises(TrainingError, match="keeps all 16 channels"):
        FederatedTrainer(tiny_federation, CLIENTS, quick_config(defence=DefenceConfig.parse("bottleneck:16")),
                         tmp_path / "wide")
    with pytest.raises(TrainingError, match="whole number of channels"):
        DefenceConfig.parse("bottleneck:2.5")


def test_combined_defences_parse_name_and_round_trip_and_refuse_repeats() -> None:
    combined = DefenceConfig.parse("quantise:2+bottleneck:8")
    assert combined.quantisation_bits == 2 and combined.bottleneck_channels == 8 and combined.gaussian_sigma == 0
    assert [layer.kind for layer in combined.layers] == [DefenceKind.QUANTISE, DefenceKind.BOTTLENECK]
    config = TrainingConfig(method=Method.SPLITFED, defence=combined)
    assert config.run_name == "splitfed__quantise-2+bottleneck-8"
    assert config.to_dict()["defence"] == {"kind": "quantise", "strength": 2.0,
                                           "also": [{"kind": "bottleneck", "strength": 8.0}]}
    assert TrainingConfig.from_dict(config.to_dict()) == config
    single = TrainingConfig(defence=DefenceConfig.parse("quantise:2")).to_dict()["defence"]
    assert single == {"kind": "quantise", "strength": 2.0}  # one defence is recorded as before
    with pytest.raises(TrainingError, match="each kind at most once"):
        DefenceConfig.parse("quantise:2+quantise:4")
    with pytest.raises(TrainingError, match="whole number of bits"):
        DefenceConfig.parse("bottleneck:8+quantise:2.5")
    with pytest.raises(TrainingError, match="none of them 'none'"):
        DefenceConfig(also=(DefenceConfig(DefenceKind.QUANTISE, 2),))


def test_combined_defences_all_act_on_what_crosses_and_the_inverter_reads_the_narrowed_features(
        tiny_federation: Path, tmp_path: Path) -> None:
    config = quick_config(method="splitfed", iterations=2,
                          defence=DefenceConfig.parse("adversary:0.5+quantise:2+bottleneck:4"))
    folder = run_folder_for(tmp_path, tiny_federation, config)
    run = FederatedTrainer(tiny_federation, CLIENTS, config, folder)
    for crossing, _ in split1_in_both_modes(run):
        assert crossing.shape[1] == 4  # the bottleneck's channels ...
        assert max(len(torch.unique(crossing[b, c])) for b in range(2) for c in range(4)) <= 4  # ... quantised
    run.run()
    assert folder.parent.name.startswith("splitfed__adversary-0.5+quantise-2+bottleneck-4")
    records = [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines()]
    assert all(np.isfinite(r["losses"]["inversion"]) for r in records)
    model = load_client_model(tiny_federation, CLIENTS[0], folder / FINAL)
    images = torch.randn(2, model.plan.in_channels, *model.plan.patch_size)
    with torch.no_grad():
        assert model(images).shape == (2, model.plan.num_classes, *model.plan.patch_size)
