"""The client role: FE, both CRDMs, BE, the data, and every loss that needs images, labels or proxies.

A training step is the split-learning exchange, driven from here:
  image -> FE -> CRDM1 -> [features split1] -> server SS -> [features split2] -> CRDM2 -> BE -> loss
  loss.backward -> [gradient split2] -> server -> [gradient split1] -> backward through CRDM1 and FE.
At cut depth K > 0, FE's skips reach BE without crossing: BE's backward leaves their gradients,
and FE's one backward takes them with the gradient that came back at split 1.
Only the bracketed tensors cross, through the transport. CRDM2 runs here too, so its proxy loss
is computed where the proxies live.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mucald_unet.config import TrainingConfig
from mucald_unet.devices import compute_context
from mucald_unet.errors import DivergenceError
from mucald_unet.defences.nopeek import nopeek_loss
from mucald_unet.federation.client_network import ClientNetwork
from mucald_unet.federation.messages import VALIDATION_STEP, Kind, Message, coarse_name
from mucald_unet.federation.transport import Transport
from mucald_unet.networks.mixture import split_components
from mucald_unet.training.augmentation import build_augmentation
from mucald_unet.training.batch_stream import RoundBatch
from mucald_unet.training.data import PatchSampler, TrainingCase
from mucald_unet.training.optimization import apply_schedule, build_optimizer
from mucald_unet.training.losses import coarse_scales_loss, segmentation_loss, weighted_sum
from mucald_unet.training.proxy_targets import ProxyTargets
from mucald_unet.training.validation import dice_per_class, predict_case_logits
from planners.plans import ClientPlan, FederationPlan


@dataclass(frozen=True)
class ClientData:
    train: list[TrainingCase]
    validation: list[TrainingCase]
    proxies: ProxyTargets


@dataclass(frozen=True)
class ClientValidation:
    dice: dict[str, float]  # class name -> mean Dice over validation cases
    loss: float  # mean segmentation loss over validation cases

    @property
    def mean_dice(self) -> float:
        return float(np.nanmean(list(self.dice.values()))) if self.dice else float("nan")


class SplitClient:
    def __init__(self, name: str, federation: FederationPlan, plan: ClientPlan, config: TrainingConfig,
                 data: ClientData, transport: Transport) -> None:
        self.name, self.plan, self.config, self.data = name, plan, config, data
        self.transport = transport
        self.seg_weight = 1.0  # largest client's training cases / ours, from the roster (``fetch_roster``)
        self.device = torch.device(config.device)
        self.network = ClientNetwork(federation, plan, config).to(self.device)
        self.optimizer = self._build_optimizer()
        self.sampler = PatchSampler(data.train, plan.patch_size, plan.batch_size, plan.foreground_oversampling,
                                    plan.slice_axis, np.random.default_rng([config.seed, _stable_hash(name)]))
        self.augment = build_augmentation(config.augmentation, plan.patch_size)
        self.seg_loss = segmentation_loss(config.losses.ce_in_seg)
        has_edges = any(plan.causal_graph.parents.values())
        self.proxy_scale = 1.0 if has_edges else config.crdm.weak_proxy_scale
        self.schedule = config.method_spec.schedule(config)  # FedRep: some steps train only the server
        self._round_terms: list[tuple] = []  # per step: (term names, their values as one tensor)
        self._responsibility_sum = torch.zeros(config.mixture_size, device=self.device)  # FedEM's E-step

    @property
    def front_end(self) -> nn.Module:
        return self.network.front_end

    @property
    def back_end(self) -> nn.Module:
        return self.network.back_end

    @property
    def splits(self) -> nn.ModuleDict:
        return self.network.splits

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """Networks and denoisers at lr; exogenous encoders, SCMs and priors at aux_lr."""
        main = list(self.front_end.parameters()) + list(self.back_end.parameters())
        for optional in (self.network.inverter, self.network.bottleneck, self.network.coarse_heads):
            main += list(optional.parameters()) if optional is not None else []
        aux: list[nn.Parameter] = []
        for split in self.splits.values():
            main += list(split.denoiser.parameters()) if split.denoiser is not None else []
            aux += [*split.exogenous.parameters(), *split.scm.parameters(), *split.prior.parameters()]
        opt = self.config.optimizer
        return build_optimizer([{"params": main, "lr": opt.lr, "name": "networks"},
                                {"params": aux, "lr": opt.encoder_lr, "name": "causal"}], opt)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return self.network.parts()

    def join(self) -> None:
        """Tell the server how many training cases this client has (for size-weighted terms)."""
        self.transport.request(Message(self.name, Kind.REPORT, "join", 0, 0,
                                       scalars={"num_samples": float(len(self.data.train))}))

    def fetch_roster(self) -> None:
        """Once every client has joined: weigh the segmentation loss by the largest client's training
        cases over ours (MUCALD.md's size weighting), the largest as the server reports it."""
        reply = self.transport.request(Message(self.name, Kind.REPORT, "roster", 0, 0))
        self.seg_weight = reply.scalars["largest_num_samples"] / len(self.data.train)

    # ---- training ---------------------------------------------------------------------------
    def train_step(self, round_index: int, step: int, batch: RoundBatch | None = None) -> float:
        """One split step on one augmented batch (drawn here when not given); returns the
        segmentation loss. The trainer hands in batches made ahead by ``InterleavedRoundBatches``."""
        for module in self.trainable_modules().values():
            module.train()
        if batch is None:
            drawn = self.sampler.sample_batch()
            batch = RoundBatch(*self.augment(drawn.images, drawn.labels), drawn.case_ids)
        images, labels = batch.images, batch.labels
        images = torch.from_numpy(images).to(self.device)
        labels = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        proxies, mask = self.data.proxies.batch(batch.case_ids, self.device)
        progress = self.config.progress(round_index, step)
        factor = self.config.schedule.factor(progress)
        apply_schedule(self.optimizer, self.config.optimizer, progress)

        with self._compute():
            head = self.network.head(images, proxies, mask)
            crossing = head.features.float()  # what crosses is float32 at any compute precision
            head_terms = {f"{k}1": v for k, v in head.losses.items()}
            if self.config.defence.nopeek_weight > 0:
                head_terms["nopeek"] = nopeek_loss(images, crossing)
            if self.network.inverter is not None:  # the simulated attacker's error; FE's gradient is reversed
                head_terms["inversion"] = self.network.inverter.loss(crossing, images)
        reply = self.transport.request(Message(self.name, Kind.FEATURES, "split1", round_index, step,
                                               {"features": crossing}))
        received = reply.tensors["features"].requires_grad_(True)
        coarse = [reply.tensors[coarse_name(k)].requires_grad_(True) for k in range(len(self.network.coarse_heads))]
        skips = [skip.detach().requires_grad_(True) for skip in head.skips]  # BE's gradients wait for FE's
        with self._compute():
            tail = self.network.through_split("crdm2", received, proxies, mask)
            logits = self.network.decode(tail.features, skips).float()
            coarse_logits = [scorer(maps).float() for scorer, maps in zip(self.network.coarse_heads, coarse)]
        seg = self.seg_loss(logits, labels) if self.network.mixture is None else self._mixture_loss(logits, labels)
        tail_terms = {"seg": seg, **{f"{k}2": v for k, v in tail.losses.items()}}
        if coarse:
            tail_terms["deep_supervision"] = coarse_scales_loss(self.seg_loss, coarse_logits, labels)
        weights = self._term_weights(factor)
        values = self._checked_values({**head_terms, **tail_terms}, round_index)
        weighted_sum(tail_terms, weights).backward()
        gradients = {"gradient": received.grad, **{coarse_name(k): c.grad for k, c in enumerate(coarse)}}
        reply = self.transport.request(Message(self.name, Kind.GRADIENT, "split2", round_index, step, gradients))
        roots = [crossing, *head.skips]
        grads = [reply.tensors["gradient"], *(skip.grad for skip in skips)]
        if head_terms:
            roots.append(weighted_sum(head_terms, weights))
            grads.append(torch.ones((), device=self.device))
        torch.autograd.backward(roots, grads)
        if self.schedule.phase(step).client:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.optimizer.grad_clip, foreach=True)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._round_terms.append((tuple({**head_terms, **tail_terms}), values))  # names only: a view of the
        # dict would keep every step's loss tensors, and through them its graph, alive until the round ends
        return float(values[len(head_terms)])  # seg; already on the host side of the one sync

    def _mixture_loss(self, stacked_logits: Tensor, labels: Tensor) -> Tensor:
        """FedEM's local step: each sample's loss under each component, its responsibilities
        q(m) proportional to pi_m exp(-loss_m) (E-step, no gradient), and the q-weighted loss (M-step)."""
        mixture = self.network.mixture
        per_component = split_components(stacked_logits, mixture.count)
        losses = torch.stack([torch.stack([self.seg_loss(component[b:b + 1], labels[b:b + 1])
                                           for b in range(labels.shape[0])]) for component in per_component])
        responsibilities = mixture.responsibilities(losses.detach())
        self._responsibility_sum += responsibilities.sum(dim=1)
        return (responsibilities * losses).sum() / labels.shape[0]

    def _close_mixture_round(self) -> dict[str, float]:
        """pi <- the round's mean responsibility (FedEM's pi update); pi's new values, for the log."""
        mixture = self.network.mixture
        total = float(self._responsibility_sum.sum())
        if total > 0:
            mixture.set_weights(self._responsibility_sum / total)
        self._responsibility_sum.zero_()
        return {f"fedem_pi{m}": float(w) for m, w in enumerate(mixture.weights)}

    def _term_weights(self, factor: float) -> dict[str, float]:
        w = self.config.losses
        weights = {"seg": self.seg_weight, "deep_supervision": self.seg_weight,
                   "nopeek": self.config.defence.nopeek_weight, "inversion": 1.0}
        for s in ("1", "2"):
            weights.update({f"proxy{s}": factor * w.proxy * self.proxy_scale, f"diffusion{s}": factor * w.diffusion,
                            f"kl_u{s}": factor * w.kl_u, f"kl_z{s}": factor * w.kl_z})
        return weights

    def _checked_values(self, terms: dict[str, Tensor], round_index: int) -> Tensor:
        """All terms' values in one tensor, checked with one device sync per step (not one per term)."""
        values = torch.stack([v.detach().float() for v in terms.values()])
        if not bool(torch.isfinite(values).all()):
            bad = next(name for name, v in zip(terms, values.tolist()) if not np.isfinite(v))
            raise DivergenceError(self.name, bad, round_index)
        return values

    def pop_round_terms(self) -> dict[str, float]:
        """Mean of each loss term over the round's steps (for the log and the report); under FedEM
        this also closes the round's E-step, so validation sees the round's mixture weights."""
        sums: dict[str, list[Tensor]] = {}
        for names, values in self._round_terms:
            for name, value in zip(names, values):
                sums.setdefault(name, []).append(value)
        self._round_terms = []
        terms = {name: float(torch.stack(v).mean()) for name, v in sums.items()}
        return terms if self.network.mixture is None else {**terms, **self._close_mixture_round()}

    # ---- validation and inference -----------------------------------------------------------
    def predict_window(self, images: Tensor, round_index: int = 0,
                       noise_generator: torch.Generator | None = None) -> Tensor:
        """Class logits of one batch of windows, through the server like training (eval mode)."""
        def middle(features: Tensor) -> Tensor:
            reply = self.transport.request(Message(self.name, Kind.FEATURES, "split1", round_index,
                                                   VALIDATION_STEP, {"features": features.float()}))
            return reply.tensors["features"]
        with self._compute():
            return self.network.segment(images, middle, noise_generator).float()

    def _compute(self) -> torch.autocast:
        """The context of this client's forward passes at the run's precision (``--precision``)."""
        return compute_context(self.config.precision, self.device)

    def validate(self, round_index: int) -> ClientValidation:
        for module in self.trainable_modules().values():
            module.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 1000 + round_index)
        classes = [n for n, v in sorted(self.plan.labels.items(), key=lambda kv: kv[1]) if v > 0]
        dices, losses = [], []
        with torch.no_grad():
            for case in self.data.validation:
                logits = predict_case_logits(lambda w: self.predict_window(w, round_index, generator),
                                             case.images, self.plan.patch_size, self.plan.slice_axis, self.device)
                dices.append(dice_per_class(logits, case.label, self.plan.num_classes))
                label = torch.from_numpy(case.label.astype(np.int64)).to(self.device)[None, None]
                losses.append(float(self.seg_loss(logits[None], label)))
        mean = np.nanmean(np.stack(dices), axis=0) if dices else np.full(len(classes), np.nan)
        return ClientValidation(dict(zip(classes, (float(v) for v in mean))), float(np.mean(losses)))

    # ---- round end --------------------------------------------------------------------------
    def send_round_report(self, round_index: int, terms: dict[str, float], val_loss: float | None) -> None:
        """Shared weights and scalars for aggregation: the sample count, plus the label-derived
        ``proxy_mse`` and ``val_loss`` only when causal-invariant fusion weighs clients by them.
        ``val_loss`` is the last one measured (None in the first round: fusion then weighs equally)."""
        scalars = {"num_samples": float(len(self.data.train))}
        if self.config.aggregation == "causal":
            proxy = [terms[k] for k in ("proxy1", "proxy2") if k in terms]
            scalars["val_loss"] = float("nan") if val_loss is None else val_loss
            scalars["proxy_mse"] = float(np.mean(proxy)) if proxy else float("nan")
        if self.splits:
            shared = {f"{name}.{k}": v for name, split in self.splits.items() for k, v in split.shared_state().items()}
            self.transport.request(Message(self.name, Kind.WEIGHTS, "shared", round_index, VALIDATION_STEP, shared))
        self.transport.request(Message(self.name, Kind.REPORT, "round", round_index, VALIDATION_STEP,
                                       scalars=scalars))

    def fetch_shared_weights(self, round_index: int) -> None:
        if not self.splits:
            return
        reply = self.transport.request(Message(self.name, Kind.WEIGHTS, "fetch", round_index, VALIDATION_STEP))
        for name, split in self.splits.items():
            prefix = f"{name}."
            state = split.state_dict()
            state.update({k[len(prefix):]: v for k, v in reply.tensors.items() if k.startswith(prefix)})
            split.load_state_dict(state)

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"modules": {k: m.state_dict() for k, m in self.trainable_modules().items()},
                "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_parts(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.set_state(state["sampler"])


def _stable_hash(text: str) -> int:
    """A seed component from a name that does not change between processes (unlike hash())."""
    return zlib.crc32(text.encode("utf-8"))
