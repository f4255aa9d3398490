"""Training on the tiny demo federation: methods, the boundary, aggregation, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mucald_unet.config import Ablation, CrdmConfig, TrainingConfig
from mucald_unet.errors import DivergenceError, TrainingError
from mucald_unet.federation.messages import VALIDATION_STEP
from mucald_unet.federation.transport import CaptureRequest
from mucald_unet.training.checkpoint import BEST, FINAL, load_checkpoint
from mucald_unet.training.trainer import CURVES_FILE, LOG_FILE, MANIFEST_FILE, FederatedTrainer
from planners.plans import load_plans
from tests.conftest import CLIENTS
from tests.mucald_unet.conftest import CrashAfterRound, quick_config


def trainer(plans: Path, folder: Path, **config) -> FederatedTrainer:
    return FederatedTrainer(plans, CLIENTS, quick_config(**config), folder)


def round_losses(folder: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines()]
    by_round: dict[int, list[float]] = {}
    for r in records:
        by_round.setdefault(r["round"], []).append(r["losses"]["seg"])
    return {k: float(np.mean(v)) for k, v in by_round.items()}


def all_tensors(run: FederatedTrainer) -> dict[str, torch.Tensor]:
    tensors = {}
    for client in run.clients:
        for name, module in client.trainable_modules().items():
            tensors.update({f"{client.name}.{name}.{k}": v for k, v in module.state_dict().items()})
    for c, segment in run.server.segments.items():
        tensors.update({f"server.{c}.{k}": v for k, v in segment.state_dict().items()})
    tensors.update({f"server.disc.{k}": v for k, v in run.server.discriminators.state_dict().items()})
    return tensors


def test_two_rounds_run_and_the_training_loss_falls(tiny_federation: Path, tmp_path: Path) -> None:
    run = trainer(tiny_federation, tmp_path, method="splitfed", rounds=2, iterations=12)
    summary = run.run()
    losses = round_losses(tmp_path)
    assert summary.rounds_done == 2 and losses[1] < losses[0]
    assert set(summary.final_dice) == set(CLIENTS)
    assert all(0.0 <= d <= 1.0 for d in summary.final_dice.values())
    for artefact in (FINAL, BEST, LOG_FILE, CURVES_FILE, "config.json", MANIFEST_FILE):
        assert (tmp_path / artefact).is_file(), artefact


class InputRecorder:
    """Every image and label array that enters a client's network: sampled training patches as
    sampled and as augmented, and the validation windows."""

    def __init__(self, clients) -> None:
        self.arrays: list[np.ndarray] = []
        for client in clients:
            self._wrap_sampler(client)
            self._wrap_augment(client)
            self._wrap_windows(client)

    def keep(self, *arrays) -> None:
        for array in arrays:
            array = np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array)
            self.arrays.append(np.ascontiguousarray(array))

    def _wrap_sampler(self, client) -> None:
        sample = client.sampler.sample_batch

        def recorded():
            batch = sample()
            self.keep(batch.images, batch.labels)
            return batch
        client.sampler.sample_batch = recorded

    def _wrap_augment(self, client) -> None:
        augment = client.augment

        def recorded(images, labels):
            images, labels = augment(images, labels)
            self.keep(images, labels, labels.astype(np.int64))  # the client trains on int64 labels
            return images, labels
        client.augment = recorded

    def _wrap_windows(self, client) -> None:
        predict = client.predict_window

        def recorded(images, *args, **kwargs):
            self.keep(images)
            return predict(images, *args, **kwargs)
        client.predict_window = recorded

    def signatures(self) -> set[tuple[tuple[int, ...], str]]:
        """(shape, dtype) of every input batch and of every single patch in it."""
        found = set()
        for a in self.arrays:
            found.add((a.shape, str(a.dtype)))
            found.add((a.shape[1:], str(a.dtype)))
        return found

    def contents(self) -> set[bytes]:
        """The bytes of every input batch, every patch in it, and every patch as float32; constant
        ones (an empty label patch) carry no more than their value and would match any zero tensor."""
        found = set()
        for a in self.arrays:
            for array in (a, a.astype(np.float32)):
                found.update(np.ascontiguousarray(x).tobytes() for x in (array, *array) if np.ptp(x) > 0)
        return found


def torch_dtype_name(dtype: np.dtype) -> str:
    return str(torch.from_numpy(np.zeros(1, dtype)).dtype).removeprefix("torch.")


def test_nothing_but_features_gradients_weights_and_scalars_cross(tiny_federation: Path, tmp_path: Path) -> None:
    """Over a whole round (training, validation, reports, weights), no tensor that crosses has an
    input patch's shape and dtype, and none is byte-identical to an input patch or batch."""
    run = FederatedTrainer(tiny_federation, CLIENTS, quick_config(), tmp_path,
                           capture=CaptureRequest(frozenset(CLIENTS), round=0))
    inputs = InputRecorder(run.clients)
    run.run()
    plans = load_plans(tiny_federation)
    split = plans.federation.split_channels
    entries = [json.loads(line) for line in (tmp_path / MANIFEST_FILE).read_text().splitlines()]
    captured = run.transport.captured
    assert [entry.to_dict() for entry, _ in captured] == [e for e in entries if e["round"] == 0]
    assert {e["kind"] for e in entries} == {"features", "gradient", "weights", "report", "ack"}
    assert any(e["step"] == VALIDATION_STEP and e["kind"] == "features" for e in entries)  # validation too
    assert {(a.ndim, str(a.dtype)) for a in inputs.arrays} >= {(4, "float32"), (4, "int64")}  # images, labels

    signatures = {(shape, torch_dtype_name(np.dtype(dtype))) for shape, dtype in inputs.signatures()}
    contents = inputs.contents()
    for entry in entries:
        for name, shape in entry["shapes"].items():
            assert (tuple(shape), entry["dtypes"][name]) not in signatures, (entry, name)
        if entry["kind"] in ("features", "gradient"):
            assert list(entry["shapes"]) == [entry["kind"]] and entry["shapes"][entry["kind"]][1] == split
        if entry["kind"] == "weights":
            assert all(k.split(".")[1] in ("exogenous", "denoiser") for k in entry["shapes"])
        if entry["kind"] == "report":  # up: counts (and causal fusion's errors); down: the roster's count
            allowed = ({"num_samples", "val_loss", "proxy_mse"} if entry["direction"] == "client->server"
                       else {"largest_num_samples"})
            assert set(entry["scalars"]) <= allowed, entry
    tensors = [t for _, crossing in captured for t in crossing.values()]
    assert len(tensors) > 3 * len(CLIENTS)
    for tensor in tensors:
        array = np.ascontiguousarray(tensor.numpy())
        assert array.tobytes() not in contents
        assert not any(np.ascontiguousarray(part).tobytes() in contents for part in array)


def test_nothing_of_a_step_outlives_it_so_memory_does_not_grow_with_the_round(tiny_federation: Path,
                                                                              tmp_path: Path) -> None:
    """Every loss term of a step, and so its graph and the crossed tensors it reaches, is freed when
    the step ends: a round of 250 steps once held 250 steps' graphs (~16 MB each on the demo polyp)."""
    import gc
    import weakref

    run = trainer(tiny_federation, tmp_path, method="mucald")
    client = run.clients[0]
    produced: list[weakref.ref] = []
    segmentation = client.seg_loss

    def recorded(*args, **kwargs) -> torch.Tensor:
        loss = segmentation(*args, **kwargs)
        produced.append(weakref.ref(loss))
        return loss
    client.seg_loss = recorded
    for step in range(3):
        client.train_step(0, step)
    gc.collect()
    assert len(produced) == 3 and all(ref() is None for ref in produced)
    names, values = client._round_terms[-1]
    assert "seg" in names and not values.requires_grad


@pytest.mark.parametrize("share_exogenous", [True, False])
def test_aggregation_averages_exactly_the_listed_modules(tiny_federation: Path, tmp_path: Path,
                                                         share_exogenous: bool) -> None:
    run = trainer(tiny_federation, tmp_path, crdm=CrdmConfig(share_exogenous=share_exogenous))
    run.run()
    averaged = ("exogenous", "denoiser") if share_exogenous else ("denoiser",)
    first, *others = run.clients
    for other in others:
        for split in ("crdm1", "crdm2"):
            a, b = first.splits[split].state_dict(), other.splits[split].state_dict()
            for key in a:
                same = torch.equal(a[key], b[key])
                assert same == (key.split(".")[0] in averaged), key
        assert not torch.equal(first.front_end.stem.conv1.conv.weight[:, :1], other.front_end.stem.conv1.conv.weight[:, :1])
    segments = list(run.server.segments.values())
    for segment in segments[1:]:
        for (k, v), w in zip(segments[0].state_dict().items(), segment.state_dict().values()):
            assert torch.equal(v, w), k
    assert run.server.last_weights == pytest.approx({c: 1 / 3 for c in CLIENTS})


def test_local_keeps_private_segments_and_centralized_shares_one(tiny_federation: Path, tmp_path: Path) -> None:
    local = trainer(tiny_federation, tmp_path / "local", method="local")
    local.run()
    a, b = (list(s.parameters())[0] for s in list(local.server.segments.values())[:2])
    assert not torch.equal(a, b) and local.transport.manifest == []
    central = trainer(tiny_federation, tmp_path / "central", method="centralized")
    assert len({id(s) for s in central.server.segments.values()}) == 1


def test_every_parameter_is_in_an_optimiser_and_no_batchnorm_anywhere(tiny_federation: Path, tmp_path: Path) -> None:
    run = trainer(tiny_federation, tmp_path)
    for client in run.clients:
        optimised = {id(p) for g in client.optimizer.param_groups for p in g["params"]}
        owned = {id(p) for m in client.trainable_modules().values() for p in m.parameters()}
        assert optimised == owned
        assert {g["name"] for g in client.optimizer.param_groups} == {"networks", "causal"}
        modules = [m for module in client.trainable_modules().values() for m in module.modules()]
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules)
    server_modules = [m for s in run.server.segments.values() for m in s.modules()]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in server_modules)
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in server_modules)


@pytest.mark.parametrize("method, ablations", [("splitfed", ""), ("local", ""), ("centralized", ""),
                                               *[("mucald", a.value) for a in Ablation]])
def test_every_method_and_ablation_runs_a_round(tiny_federation: Path, tmp_path: Path, method: str,
                                                ablations: str) -> None:
    run = trainer(tiny_federation, tmp_path, method=method, ablations=ablations, iterations=1)
    summary = run.run()
    assert summary.rounds_done == 1 and all(np.isfinite(list(summary.final_dice.values())))
    uses_crdm = method == "mucald" and ablations != "no-crdm"
    assert bool(run.clients[0].splits) == uses_crdm
    assert bool(run.server.discriminators) == (method == "mucald" and ablations != "no-daca")


def test_same_seed_same_weights(tiny_federation: Path, tmp_path: Path) -> None:
    """Resume after a crash equals an uninterrupted run: tests/mucald_unet/test_run_folders.py."""
    straight = trainer(tiny_federation, tmp_path / "straight", rounds=2, iterations=2)
    straight.run()
    twin = trainer(tiny_federation, tmp_path / "twin", rounds=2, iterations=2)
    twin.run()
    reference, tensors = all_tensors(straight), all_tensors(twin)
    assert tensors.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(value, tensors[key]), key
    assert round_losses(tmp_path / "straight") == round_losses(tmp_path / "twin")


def test_resume_refuses_other_settings_and_missing_checkpoints(tiny_federation: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no checkpoint"):
        trainer(tiny_federation, tmp_path / "none").run(resume=True)
    trainer(tiny_federation, tmp_path / "run").run()
    with pytest.raises(TrainingError, match="other settings.*fedprox_mu"):
        trainer(tiny_federation, tmp_path / "run", fedprox_mu=0.5).run(resume=True)
    with pytest.raises(TrainingError, match="other settings.*method"):
        trainer(tiny_federation, tmp_path / "run", method="splitfed").run(resume=True)


def test_a_nan_loss_stops_the_round_names_the_term_and_keeps_the_last_checkpoint(
        tiny_federation: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    killed = FederatedTrainer(tiny_federation, CLIENTS, quick_config(rounds=2), tmp_path,
                              reporter=CrashAfterRound(0))
    with pytest.raises(KeyboardInterrupt):
        killed.run()  # checkpointed round 1 of 2, then stopped
    run = trainer(tiny_federation, tmp_path, rounds=2)
    victim = run.clients[1]
    monkeypatch.setattr(victim, "seg_loss", lambda logits, labels: logits.sum() * float("nan"))
    with pytest.raises(DivergenceError, match=f"'seg' of {victim.name}"):
        run.run(resume=True)
    assert load_checkpoint(tmp_path / FINAL).rounds_done == 1


def test_validation_is_deterministic_and_in_eval_mode(tiny_federation: Path, tmp_path: Path) -> None:
    run = trainer(tiny_federation, tmp_path)
    client = run.clients[0]
    first = client.validate(0)
    assert not any(m.training for m in client.front_end.modules())
    assert client.validate(0) == first


def test_causal_fusion_weights_follow_the_reports_after_the_first_round(tiny_federation: Path,
                                                                       tmp_path: Path) -> None:
    run = trainer(tiny_federation, tmp_path, rounds=2, aggregation="causal")
    run.run()
    records = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    first = [r["aggregation_weight"] for r in records if r["round"] == 0]
    second = [r["aggregation_weight"] for r in records if r["round"] == 1]
    assert first == pytest.approx([1 / 3] * 3)  # no validation loss yet: equal weights
    assert sum(second) == pytest.approx(1.0) and len(set(round(w, 6) for w in second)) > 1
    assert min(second) >= 0.5 * 0.25 / 3 + 0.5 / 3 - 1e-9  # floor, then the 50/50 blend


def test_local_norms_keep_normalisation_per_client_and_share_the_rest(tiny_federation: Path,
                                                                      tmp_path: Path) -> None:
    run = trainer(tiny_federation, tmp_path, method="splitfed", local_norms=True)
    run.run()
    first, second = (s.state_dict() for s in list(run.server.segments.values())[:2])
    norms = [k for k in first if ".norm" in k]
    assert norms and not all(torch.equal(first[k], second[k]) for k in norms)
    assert all(torch.equal(first[k], second[k]) for k in first if ".norm" not in k)


def test_a_3d_federation_trains_and_validates(tmp_path: Path) -> None:
    from planners.budget import Preset
    from planners.pipeline import PipelineConfig, plan_and_preprocess
    from planners.planner import PlannerConfig
    from preprocessing.demo import make_demo_federation

    make_demo_federation(tmp_path / "raw", seed=0, size="tiny")
    plans_path = plan_and_preprocess(PipelineConfig(
        raw_root=tmp_path / "raw", preprocessed_root=tmp_path / "pp", datasets=("2",),
        planner=PlannerConfig(preset=Preset("cpu"), dimensionality="3d")))
    plans = load_plans(plans_path)
    assert plans.federation.dimensionality == "3d"
    run = FederatedTrainer(plans_path, ["Dataset002_DemoLungCT"], quick_config(), tmp_path / "run")
    summary = run.run()
    assert summary.rounds_done == 1 and 0.0 <= summary.final_dice["Dataset002_DemoLungCT"] <= 1.0
    assert isinstance(run.clients[0].front_end.stem.conv1.conv, torch.nn.Conv3d)
    assert len(run.clients[0].splits["crdm1"].denoiser.downsample) == 3


def test_max_train_cases_trains_on_a_fixed_subset_and_validates_on_the_whole_fold(tiny_federation: Path,
                                                                                 tmp_path: Path) -> None:
    whole = trainer(tiny_federation, tmp_path / "whole")
    scarce = trainer(tiny_federation, tmp_path / "scarce", max_train_cases=2, seed=1)
    for full, few in zip(whole.clients, scarce.clients):
        full_ids = {c.case_id for c in full.data.train}
        few_ids = {c.case_id for c in few.data.train}
        assert len(few_ids) == 2 and few_ids < full_ids
        assert [c.case_id for c in few.data.validation] == [c.case_id for c in full.data.validation]
    again = trainer(tiny_federation, tmp_path / "again", max_train_cases=2, seed=2)
    assert [{c.case_id for c in x.data.train} for x in again.clients] == \
        [{c.case_id for c in x.data.train} for x in scarce.clients]  # the seed trains, it does not pick cases
    assert TrainingConfig(max_train_cases=2).run_name == "mucald__max-train-cases-2"
    with pytest.raises(TrainingError, match="--max-train-cases 1 or more"):
        quick_config(max_train_cases=0)


def test_crdm_settings_reach_both_split_points(tiny_federation: Path, tmp_path: Path) -> None:
    run = trainer(tiny_federation, tmp_path, crdm=CrdmConfig(train_at_eval_noise=True, share_exogenous=False))
    for client in run.clients:
        for split in client.splits.values():
            assert split.schedule.train_at_eval and split.shared_parts == ("denoiser",)
    plain = trainer(tiny_federation, tmp_path / "plain").clients[0].splits["crdm2"]
    assert not plain.schedule.train_at_eval and plain.shared_parts == ("exogenous", "denoiser")
