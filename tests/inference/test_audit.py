"""Privacy audit: calibration checks that can fail, the capture, and the command end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.audit.audit_data import load_audit_data, load_test_non_members
from inference.audit.image_metrics import bootstrap, per_image_scores, reidentified, summarise
from inference.audit.inversion import InversionBudget, decode, train_decoder, whitebox_inversion
from inference.audit.label_inference import (by_gradient_direction, by_gradient_norm, complete_model, label_inference,
                                             labels_at, split2_exchange)
from inference.audit.membership import (balanced_halves, evaluate_scores, lira_offline_scores, statistics)
from inference.audit.runner import AuditStore
from inference.audit.transmissions import averaged_transmissions, transmitted, undefended
from inference.commands.audit import main as audit_main
from inference.model import load_client_model
from mucald_unet.federation.messages import Direction, Kind
from mucald_unet.federation.transport import CaptureRequest
from mucald_unet.training.checkpoint import FINAL, load_plain, save_plain
from mucald_unet.training.data import TrainingCase
from mucald_unet.training.losses import segmentation_loss
from mucald_unet.training.trainer import FederatedTrainer, capture_file, run_folder
from planners.plans import load_plans
from tests.conftest import CLIENTS
from tests.inference.conftest import TrainedRun
from tests.mucald_unet.conftest import quick_config

FETAL = "Dataset003_DemoFetalUS"


@pytest.fixture(scope="module")
def splitfed_run(trained_run: TrainedRun) -> Path:
    """An undefended splitfed run of the tiny federation (1 round x 2 iterations): its checkpoint."""
    config = quick_config(method="splitfed")
    folder = run_folder(trained_run.results, trained_run.plans_path, "splitfed", 0)  # --runs splitfed
    if not (folder / FINAL).is_file():
        FederatedTrainer(trained_run.plans_path, CLIENTS, config, folder).run()
    return folder / FINAL


def fetal_data(run: TrainedRun, private: int = 4, aux: int = 32):
    plan = load_plans(run.plans_path).client(FETAL)
    return load_audit_data(run.plans_path, plan, 0, private, aux, seed=0)


# ---- calibration: the attacks can succeed, and cannot invent what is not there ----------------
def test_whitebox_inversion_of_undefended_features_reconstructs_the_image(trained_run: TrainedRun,
                                                                          splitfed_run: Path) -> None:
    model = load_client_model(trained_run.plans_path, FETAL, splitfed_run)
    data = fetal_data(trained_run)
    private, aux = torch.from_numpy(data.private), torch.from_numpy(data.auxiliary)
    start = aux.mean(0, keepdim=True).expand_as(private).clone()
    found = whitebox_inversion(model, transmitted(model, private), start, InversionBudget(whitebox_steps=300), 0, aux)
    scores = summarise(data.window.to_unit(found.numpy()), data.window.to_unit(data.private))
    prior = summarise(data.window.to_unit(start.numpy()), data.window.to_unit(data.private))
    assert scores["ssim"].mean > 0.9 > prior["ssim"].mean
    assert scores["reid"].mean == 1.0


def test_a_decoder_on_pure_noise_features_does_no_better_than_the_prior(trained_run: TrainedRun) -> None:
    data = fetal_data(trained_run, private=8, aux=64)
    private, aux = torch.from_numpy(data.private), torch.from_numpy(data.auxiliary)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(len(aux), 8, *aux.shape[2:], generator=generator)
    decoder = train_decoder(noise, aux, InversionBudget(decoder_steps=150), seed=0)
    guessed = decode(decoder, torch.randn(len(private), 8, *aux.shape[2:], generator=generator))
    prior = aux.mean(0, keepdim=True).expand_as(private)
    originals = data.window.to_unit(data.private)
    noise_ssim = per_image_scores(data.window.to_unit(guessed.numpy()), originals)["ssim"].mean()
    prior_ssim = per_image_scores(data.window.to_unit(prior.numpy()), originals)["ssim"].mean()
    assert abs(noise_ssim - prior_ssim) < 0.05


def test_a_decoder_brings_what_a_deeper_cut_sends_back_to_the_image_grid(trained_run: TrainedRun) -> None:
    data = fetal_data(trained_run, private=8, aux=64)
    private, aux = torch.from_numpy(data.private), torch.from_numpy(data.auxiliary)

    def coarse(images: torch.Tensor) -> torch.Tensor:  # half resolution, four channels, as a cut of 1 sends
        return torch.nn.functional.avg_pool2d(images, 2).repeat(1, 4, 1, 1)
    decoder = train_decoder(coarse(aux), aux, InversionBudget(decoder_steps=150), seed=0)
    guessed = decode(decoder, coarse(private))
    assert guessed.shape == private.shape
    originals = data.window.to_unit(data.private)
    prior = aux.mean(0, keepdim=True).expand_as(private)
    ssim = per_image_scores(data.window.to_unit(guessed.numpy()), originals)["ssim"].mean()
    prior_ssim = per_image_scores(data.window.to_unit(prior.numpy()), originals)["ssim"].mean()
    assert ssim > prior_ssim + 0.1


def test_label_attacks_recover_labels_that_the_gradients_carry_and_only_those() -> None:
    generator = torch.Generator().manual_seed(0)
    truth = torch.zeros(4, 8, 8, dtype=torch.long)
    truth[:, 2:5, 3:6] = 1  # 9 of 64 voxels
    direction = torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1)
    foreground = (truth == 1)[:, None].float()
    # large gradients one way on the rare class, small ones the other way on the background
    gradients = 3.0 * foreground * direction - 0.3 * (1 - foreground) * direction
    gradients += 0.05 * torch.randn(4, 3, 8, 8, generator=generator)
    prior = np.array([55 / 64, 9 / 64])
    assert torch.equal(by_gradient_norm(gradients, [0, 1], prior), truth)
    assert torch.equal(by_gradient_direction(gradients, [0, 1], seed=0), truth)
    noise = torch.randn(4, 3, 8, 8, generator=generator)  # gradients that carry nothing
    assert (by_gradient_norm(noise, [0, 1], prior) == truth).float().mean() < 0.85  # prior alone: 0.86
    features = torch.cat([truth[:, None].float(), torch.randn(4, 2, 8, 8, generator=generator)], dim=1)
    assert torch.equal(complete_model(features, truth, 2, seed=0)(features).argmax(1), truth)


def test_labels_are_compared_at_the_resolution_of_what_crosses() -> None:
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    labels[0, 0, :2, :2] = 2
    labels[0, 0, 0, 2:] = 1  # half of the top-right block: background wins the tie by order
    labels[0, 0, 2:, 2:] = 1
    labels[0, 0, 3, 3] = 0
    assert labels_at(labels, (2, 2), 3).tolist() == [[[2, 0], [0, 1]]]


def test_label_inference_reads_the_gradient_the_client_would_send(trained_run: TrainedRun,
                                                                  splitfed_run: Path) -> None:
    model = load_client_model(trained_run.plans_path, FETAL, splitfed_run)
    data = fetal_data(trained_run, private=4, aux=16)
    images, labels = torch.from_numpy(data.private), torch.from_numpy(data.private_labels.astype(np.int64))
    loss = segmentation_loss(model.config.losses.ce_in_seg)
    features, gradient = split2_exchange(model, images, labels, loss)
    model.network.train()
    head = model.network.head(images)
    received = model.server_segment(head.features).detach().requires_grad_(True)
    loss(model.network.decode(received, head.skips), labels).backward()
    torch.testing.assert_close(gradient, received.grad)
    torch.testing.assert_close(features, received.detach())
    found = label_inference(model, (images, labels), (torch.from_numpy(data.auxiliary),
                            torch.from_numpy(data.auxiliary_labels.astype(np.int64))), loss, seed=0)
    assert set(found) == {"resolution", "prior", "gradient_norm", "gradient_direction", "model_completion"}
    assert found["prior"]["foreground_dice"]["mean"] == 0.0
    assert all(0.0 <= found[a]["accuracy"]["mean"] <= 1.0 for a in found if a != "resolution")


def test_an_overfitted_model_is_exposed_and_random_scores_are_not() -> None:
    rng = np.random.default_rng(0)

    def case(i: int) -> TrainingCase:
        return TrainingCase(f"c{i}", rng.normal(size=(1, 16, 16)).astype(np.float32),
                            (rng.random((16, 16)) > 0.5).astype(np.uint8), {})

    members, non_members = [case(i) for i in range(8)], [case(i) for i in range(8, 16)]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 2, 3, padding=1))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.from_numpy(np.stack([c.images for c in members]))
    y = torch.from_numpy(np.stack([c.label for c in members]).astype(np.int64))
    for _ in range(300):  # memorise random labels
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    predict = lambda images: net(torch.from_numpy(images)[None])[0]  # noqa: E731
    exposed = evaluate_scores(statistics(predict, members, None), statistics(predict, non_members, None))
    assert exposed.auc.mean > 0.8 and exposed.balanced_accuracy > 0.7
    chance = evaluate_scores(rng.normal(size=2000), rng.normal(size=2000))
    assert abs(chance.auc.mean - 0.5) < 0.05 and chance.auc.low < 0.5 < chance.auc.high


def test_lira_uses_only_shadows_that_did_not_see_a_case() -> None:
    inside = balanced_halves(10, 4, seed=0)
    assert inside.shape == (4, 10) and np.all(inside.sum(axis=0) == 2)
    shadow = np.where(inside, 5.0, np.arange(10.0)[None, :])  # IN values must be ignored
    shadow[0] += 0.5 * ~inside[0]  # some spread among OUT values
    target = np.arange(10.0) + 1.0
    scores = lira_offline_scores(target, shadow, inside)
    out_mean = np.nanmean(np.where(inside, np.nan, shadow), axis=0)
    assert np.all(np.sign(scores) == np.sign(target - out_mean))
    with pytest.raises(ValueError, match="even"):
        balanced_halves(10, 3, seed=0)


def test_metrics_reidentification_and_bootstrap() -> None:
    rng = np.random.default_rng(0)
    originals = rng.random((5, 1, 24, 24)).astype(np.float32)
    perfect = per_image_scores(originals, originals)
    assert np.allclose(perfect["ssim"], 1.0) and np.allclose(perfect["mse"], 0.0)
    assert reidentified(originals + 0.01, originals).all()
    assert not reidentified(np.roll(originals, 1, axis=0), originals).any()
    # a gallery of other patients: a reconstruction nearer to one of them is a miss
    blurred = originals * 0.5 + 0.25
    gallery = np.concatenate([rng.random((20, 1, 24, 24)).astype(np.float32), blurred[:2] + 0.001])
    assert reidentified(blurred, originals).all()
    assert reidentified(blurred, originals, gallery).tolist() == [False, False, True, True, True]
    scores = summarise(blurred, originals, gallery=gallery)
    assert scores["reid"].mean == 1.0 and scores["reid_gallery"].mean == pytest.approx(0.6)
    estimate = bootstrap(np.array([0.0, 1.0] * 50))
    assert estimate.mean == 0.5 and estimate.low < 0.5 < estimate.high


def test_transmissions_are_fresh_draws_for_mucald_and_exact_for_splitfed(trained_run: TrainedRun,
                                                                        splitfed_run: Path) -> None:
    images = torch.from_numpy(fetal_data(trained_run).private)
    plain = load_client_model(trained_run.plans_path, FETAL, splitfed_run)
    assert torch.equal(transmitted(plain, images), undefended(plain, images))
    source = run_folder(trained_run.results, trained_run.plans_path, "mucald", 0) / FINAL
    defended = load_client_model(trained_run.plans_path, FETAL, source)
    first, second = transmitted(defended, images), transmitted(defended, images)
    assert not torch.allclose(first, second)
    averaged = averaged_transmissions(defended, images, draws=8)
    clean = undefended(defended, images)
    assert (averaged - clean).pow(2).mean() < (first - clean).pow(2).mean()  # averaging removes noise


# ---- capture and the command --------------------------------------------------------------------
def test_capture_keeps_every_tensor_of_the_chosen_clients_and_round(trained_run: TrainedRun, tmp_path: Path) -> None:
    capture = CaptureRequest(frozenset({FETAL}), round=1)
    run = FederatedTrainer(trained_run.plans_path, CLIENTS, quick_config(rounds=2), tmp_path, capture=capture)
    run.run()
    records = load_plain(tmp_path / capture_file(1))
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    expected = [m for m in manifest if m["client"] == FETAL and m["round"] == 1]
    assert [r["entry"] for r in records] == expected
    sent = [r for r in records if r["entry"]["kind"] == Kind.FEATURES.value
            and r["entry"]["direction"] == Direction.TO_SERVER.value and r["entry"]["step"] >= 0]
    assert len(sent) == 2  # one per training iteration
    features = sent[0]["tensors"]["features"]
    assert list(features.shape) == sent[0]["entry"]["shapes"]["features"]
    assert not (tmp_path / capture_file(0)).exists()


def test_audit_command_writes_report_numbers_and_grid_and_resumes(trained_run: TrainedRun, splitfed_run: Path,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "audit"
    argv = ["-d", "3", "-o", str(out), *trained_run.cli_roots(), "--raw", str(trained_run.raw), "--runs", "splitfed,mucald",
            "--private-cases", "4", "--shadows", "2", "--decoder-steps", "3", "--whitebox-steps", "3"]
    assert audit_main(argv) == 0
    numbers = json.loads((out / "audit.json").read_text())
    for run in ("splitfed", "mucald"):
        entry = numbers[FETAL][run]
        assert set(entry) >= {"dice", "inverse", "whitebox", "mia", "dcor", "labels", "strongest"}
        assert entry["labels"]["resolution"] == list(load_plans(trained_run.plans_path).client(FETAL).patch_size)
        assert 0.0 <= entry["mia"]["lira_offline"]["auc"]["mean"] <= 1.0
        assert entry["dcor"]["samples"] == 4
        assert entry["mia"]["test_non_members"] == 2 and entry["mia"]["held_out_non_members"] >= 1  # imagesTs join
    assert "| splitfed |" in (out / "report.md").read_text()
    assert (out / f"reconstructions_{FETAL}.png").stat().st_size > 0
    stored = (out / "results" / "mucald" / FETAL / "inverse.json").read_bytes()
    saved = []
    monkeypatch.setattr(AuditStore, "save", lambda self, *args, **kwargs: saved.append(args[:3]))
    without_runs = [a for a in argv if a not in ("--runs", "splitfed,mucald")]  # default: every trained run
    assert audit_main(without_runs) == 0  # resumes: nothing is recomputed
    assert saved == [] and (out / "results" / "mucald" / FETAL / "inverse.json").read_bytes() == stored
    assert "runs: mucald, splitfed" in (out / "report.md").read_text()


def test_labelled_test_cases_become_non_members_preprocessed_like_training_cases(trained_run: TrainedRun,
                                                                                 tmp_path: Path) -> None:
    plan = load_plans(trained_run.plans_path).client(FETAL)
    tests = load_test_non_members(trained_run.raw, plan, tmp_path / "tests")
    training = fetal_data(trained_run).members[0]
    assert [c.case_id for c in tests] == ["fetus_008", "fetus_009"]
    assert all(c.images.shape[0] == training.images.shape[0] == plan.in_channels for c in tests)
    assert all(c.label.shape == c.images.shape[1:] and c.label.max() > 0 for c in tests)
    assert abs(float(np.mean([c.images.mean() for c in tests]))) < 0.5  # z-scored like training
    unlabelled = tmp_path / "raw"
    shutil.copytree(trained_run.raw / FETAL, unlabelled / FETAL)
    shutil.rmtree(unlabelled / FETAL / "labelsTs")
    assert load_test_non_members(unlabelled, plan, tmp_path / "none") == []


def test_audit_refuses_runs_that_were_not_trained(trained_run: TrainedRun, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    assert audit_main(["-d", "3", "-o", str(tmp_path), *trained_run.cli_roots(), "--runs", "splitfed__nopeek-0.1"]) == 1
    assert "splitfed__nopeek-0.1" in capsys.readouterr().err


def test_a_shadow_killed_before_its_last_round_is_finished_not_reused(trained_run: TrainedRun,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "audit"
    argv = ["-d", "3", "-o", str(out), *trained_run.cli_roots(), "--runs", "mucald", "--attacks", "mia",
            "--shadows", "2"]
    assert audit_main(argv) == 0
    shadow = AuditStore(out).shadow_folder("mucald", FETAL, 0) / FINAL
    state = load_plain(shadow)
    assert state["rounds_done"] == state["config"]["rounds"] == 1
    save_plain(shadow, {**state, "rounds_done": 0})  # as a shadow whose run was killed would have left it
    (out / "results" / "mucald" / FETAL / "mia.json").unlink()
    assert audit_main(argv) == 0
    assert load_plain(shadow)["rounds_done"] == 1  # trained to the end before it was scored
