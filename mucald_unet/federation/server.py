"""The server role: the U-Net body (SS), the domain discriminators, and aggregation.

Everything here sees only what crosses the boundary: split-point features and gradients,
shared-module weights and round-end scalars. It answers ``Message``s (``handle``), so the same
object serves an in-memory simulation or a network front end.

Server segments by method (``mucald_unet/federation/strategies``): one copy per client, or one
for all (``centralized``); the method's strategy decides which keys are averaged when every client
has reported, what it adds to each step's loss or gradient, and what it keeps between rounds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mucald_unet.config import TrainingConfig
from mucald_unet.devices import compute_context
from mucald_unet.daca.discriminator import DomainDiscriminator
from mucald_unet.daca.gradient_reversal import reverse_gradient
from mucald_unet.errors import DivergenceError, TrainingError
from mucald_unet.federation.aggregation import ClientReport, strategy_from_name, weighted_average
from mucald_unet.federation.messages import VALIDATION_STEP, Kind, Message, coarse_name
from mucald_unet.federation.strategies import SegmentSlot, StrategyContext
from mucald_unet.networks.segments import build_middle, forward_with_coarse, split1_channels
from mucald_unet.training.optimization import apply_schedule, module_optimizer
from planners.plans import FederationPlan


@dataclass
class _Pending:
    """Forward state of one client's step, kept until its gradient arrives."""

    inputs: Tensor
    outputs: Tensor
    coarse: list[Tensor]  # deep supervision's coarser maps, sent with the outputs; their gradients come back
    adversarial: list[Tensor]
    slot: SegmentSlot  # the copy that ran the forward pass (Ditto trains two per client)


@dataclass
class _RoundMetrics:
    """Per-step values kept as tensors and averaged at round end: no device sync per step."""

    values: dict[str, list[Tensor]] = field(default_factory=dict)

    def add(self, name: str, value: Tensor) -> None:
        self.values.setdefault(name, []).append(value.detach().float())

    def means(self) -> dict[str, float]:
        return {k: float(torch.stack(v).mean()) for k, v in self.values.items()}


class SplitServer:
    def __init__(self, federation: FederationPlan, client_names: list[str], config: TrainingConfig) -> None:
        self.config = config
        self.clients = list(client_names)
        self.device = torch.device(config.device)
        self.method = config.method_spec
        self.weighting = strategy_from_name(config.aggregation)  # how much each client counts
        self.schedule = self.method.schedule(config)
        self.global_segment = build_middle(federation, config).to(self.device)
        if self.method.single_segment:
            self.segments = {c: self.global_segment for c in self.clients}
            shared_optimizer = self._segment_optimizer(self.global_segment)
            self.optimizers = {c: shared_optimizer for c in self.clients}
        else:
            self.segments = {c: copy.deepcopy(self.global_segment) for c in self.clients}
            self.optimizers = {c: self._segment_optimizer(m) for c, m in self.segments.items()}
        self.reference = self._snapshot(self.global_segment)
        self.strategy = self.method.strategy(StrategyContext(config, tuple(self.clients), self.global_segment,
                                                             self._segment_optimizer))
        self.discriminators = nn.ModuleDict()
        if config.uses_daca:
            dims = federation.server_segment.spatial_dims
            channels = {"split1": split1_channels(federation, config.defence), "split2": federation.crossing_channels}
            for split in ("split1", "split2"):
                self.discriminators[split] = DomainDiscriminator(dims, channels[split], len(self.clients))
            self.discriminators.to(self.device)
        self.discriminator_optimizer = (torch.optim.Adam(self.discriminators.parameters(),
                                                         lr=config.optimizer.discriminator_lr, fused=True)
                                        if config.uses_daca else None)
        self.num_samples: dict[str, int] = {}
        self.last_weights: dict[str, float] = {}  # of the last aggregation; empty when nothing is averaged
        self.shared_global: dict[str, Tensor] = {}
        self.rounds_aggregated = 0  # rounds whose averages are ready to fetch
        self.dropped: set[str] = set()  # clients lost in this run; a new join takes one back
        self._uploads: dict[str, dict[str, Tensor]] = {}
        self._reports: dict[str, ClientReport] = {}
        self._pending: dict[str, _Pending] = {}
        self._backward_done: dict[int, set[str]] = {}
        self._metrics = {c: _RoundMetrics() for c in self.clients}

    def _segment_optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        return module_optimizer([module], self.config.optimizer)

    @staticmethod
    def _snapshot(module: nn.Module) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    # ---- message dispatch -------------------------------------------------------------------
    # what each understood message must carry; a malformed one is refused by name, not a KeyError
    _REQUIRED = {(Kind.REPORT, "join"): ((), ("num_samples",)), (Kind.FEATURES, "split1"): (("features",), ()),
                 (Kind.GRADIENT, "split2"): (("gradient",), ()), (Kind.REPORT, "round"): ((), ("num_samples",))}

    def handle(self, message: Message) -> Message:
        if message.client not in self.clients:
            raise TrainingError(f"message from unknown client {message.client!r}")
        key = (message.kind, message.name)
        tensors, scalars = self._REQUIRED.get(key, ((), ()))
        for what, names, present in (("tensor", tensors, message.tensors), ("scalar", scalars, message.scalars)):
            missing = [n for n in names if n not in present]
            if missing:
                raise TrainingError(f"{message.kind.value}/{message.name} from {message.client} carries no "
                                    f"{what} {missing[0]!r}; the client and server versions do not match.")
        if key == (Kind.REPORT, "join"):
            self.num_samples[message.client] = int(message.scalars["num_samples"])
            self.dropped.discard(message.client)
            return self._ack(message)
        if key == (Kind.REPORT, "roster"):
            return self._roster(message)
        if key == (Kind.FEATURES, "split1"):
            return self._forward(message)
        if key == (Kind.GRADIENT, "split2"):
            return self._backward(message)
        if key == (Kind.WEIGHTS, "shared"):
            self._uploads[message.client] = dict(message.tensors)
            return self._ack(message)
        if key == (Kind.REPORT, "round"):
            return self._report(message)
        if key == (Kind.WEIGHTS, "fetch"):
            return self._fetch(message)
        raise TrainingError(f"the server does not understand {message.kind.value}/{message.name}")

    @staticmethod
    def _reply(message: Message, kind: Kind, name: str, tensors: dict[str, Tensor] | None = None) -> Message:
        return Message(message.client, kind, name, message.round, message.step, tensors or {})

    def _ack(self, message: Message) -> Message:
        return self._reply(message, Kind.ACK, message.name)

    def _roster(self, message: Message) -> Message:
        """What a client needs to know of the others, once all have joined: the largest training
        set, against which each client scales its segmentation weight (no client sees another's size)."""
        waiting = [c for c in self.clients if c not in self.num_samples]
        if waiting:
            raise TrainingError(f"the federation is not complete: waiting for {', '.join(waiting)} to join")
        return Message(message.client, Kind.REPORT, "roster", message.round, message.step,
                       scalars={"largest_num_samples": float(max(self.num_samples.values()))})

    def _fetch(self, message: Message) -> Message:
        """The round's averaged shared weights, refused until every client has reported that round."""
        if message.round >= self.rounds_aggregated:
            waiting = [c for c in self.clients if c not in self._reports]
            raise TrainingError(f"round {message.round} is not aggregated yet: waiting for the round report of "
                                f"{', '.join(waiting)}")
        return self._reply(message, Kind.WEIGHTS, "shared", dict(self.shared_global))

    # ---- split training ---------------------------------------------------------------------
    def _forward(self, message: Message) -> Message:
        client = message.client
        segment = self.segments[client]
        features = message.tensors["features"]
        if message.step == VALIDATION_STEP:
            segment.eval()
            with torch.no_grad(), self._compute():
                return self._reply(message, Kind.FEATURES, "split2", {"features": segment(features).float()})
        slot = self.strategy.segment_to_train(client, message.step, SegmentSlot(segment, self.optimizers[client]))
        slot.module.train()
        inputs = features.requires_grad_(True)
        with self._compute():  # what crosses back is float32 at any compute precision
            outputs, coarse = forward_with_coarse(slot.module, inputs)
        outputs, coarse = outputs.float(), [c.float() for c in coarse]
        adversarial = []
        if self.discriminators:
            weight = self._adversarial_weight(client, message.round, message.step)
            domain = torch.full((inputs.shape[0],), self.clients.index(client), device=self.device)
            for split, seen in (("split1", inputs), ("split2", outputs)):
                with self._compute():
                    logits = self.discriminators[split](reverse_gradient(seen, weight)).float()
                loss = nn.functional.cross_entropy(logits, domain)
                adversarial.append(loss)
                self._metrics[client].add(f"disc_{split}", loss)
                self._metrics[client].add(f"disc_acc_{split}", (logits.argmax(1) == domain).float().mean())
        self._pending[client] = _Pending(inputs, outputs, coarse, adversarial, slot)
        return self._reply(message, Kind.FEATURES, "split2",
                           {"features": outputs.detach(), **{coarse_name(k): c.detach() for k, c in enumerate(coarse)}})

    def _compute(self) -> torch.autocast:
        """The context of the server's forward passes at the run's precision (``--precision``)."""
        return compute_context(self.config.precision, self.device)

    def _adversarial_weight(self, client: str, round_index: int, step: int) -> float:
        """lambda_adv x global ramp x client_size / max_size (MUCALD.md)."""
        sizes = self.num_samples
        size_weight = sizes.get(client, 1) / max(sizes.values()) if sizes else 1.0
        factor = self.config.schedule.factor(self.config.progress(round_index, step))
        return self.config.losses.adversarial * factor * size_weight

    def _backward(self, message: Message) -> Message:
        client = message.client
        pending = self._pending.pop(client, None)
        if pending is None:
            raise TrainingError(f"{client} sent a gradient without a forward pass in step {message.step}")
        segment, optimizer = pending.slot.module, pending.slot.optimizer
        missing = [coarse_name(k) for k in range(len(pending.coarse)) if coarse_name(k) not in message.tensors]
        if missing:
            raise TrainingError(f"gradient/split2 from {client} carries no {missing[0]!r}: the server was built "
                                "with deep supervision and the client without. Fix: train both with the same "
                                "--deep-supervision.")
        loss = (pending.outputs * message.tensors["gradient"]).sum() + sum(pending.adversarial)
        for k, coarse in enumerate(pending.coarse):
            loss = loss + (coarse * message.tensors[coarse_name(k)]).sum()
        for name, term in self.strategy.extra_terms(client, segment, self.reference).items():
            self._metrics[client].add(name, term)
            loss = loss + term
        if not torch.isfinite(loss):
            raise DivergenceError(client, "server segment", message.round)
        loss.backward()
        if self.schedule.phase(message.step).server:
            torch.nn.utils.clip_grad_norm_(segment.parameters(), self.config.optimizer.grad_clip, foreach=True)
            self.strategy.correct_gradients(client, segment)
            apply_schedule(optimizer, self.config.optimizer, self.config.progress(message.round, message.step))
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self._step_discriminators_when_all_seen(client, message.step)
        return self._reply(message, Kind.GRADIENT, "split1", {"gradient": pending.inputs.grad})

    @property
    def expected(self) -> list[str]:
        """The clients a step or a round waits for: every client not dropped, in roster order."""
        return [c for c in self.clients if c not in self.dropped]

    def _step_discriminators_when_all_seen(self, client: str, step: int) -> None:
        """One discriminator update per step, on the gradients of every expected client's batch, so
        each update sees all domains still in the federation."""
        if self.discriminator_optimizer is None:
            return
        self._backward_done.setdefault(step, set()).add(client)
        self._step_discriminators_of_complete_steps()

    def _step_discriminators_of_complete_steps(self) -> None:
        complete = [s for s, seen in self._backward_done.items() if seen >= set(self.expected)]
        if complete:  # after a drop, several steps may complete at once: their gradients are summed
            self.discriminator_optimizer.step()
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            for step in complete:
                del self._backward_done[step]

    # ---- dropout ----------------------------------------------------------------------------
    def drop(self, client: str) -> bool:
        """Stop waiting for ``client`` (lost mid-round): its unfinished step is discarded, the steps
        and the round wait only for the others, and the round is aggregated over the clients that
        reported if they are all in. True when this closed the round."""
        if client not in self.clients:
            raise TrainingError(f"cannot drop unknown client {client!r}")
        self.dropped.add(client)
        self._pending.pop(client, None)
        if client not in self._reports:  # a report already in counts; a lone upload does not
            self._uploads.pop(client, None)
        if not self.expected:
            raise TrainingError(f"every client dropped out ({', '.join(sorted(self.dropped))}); nothing to train")
        if self.discriminator_optimizer is not None:
            self._step_discriminators_of_complete_steps()
        return self._aggregate_when_all_reported(self.rounds_aggregated)

    # ---- round end --------------------------------------------------------------------------
    def _report(self, message: Message) -> Message:
        s = message.scalars
        self._reports[message.client] = ClientReport(message.client, int(s["num_samples"]),
                                                     float(s.get("proxy_mse", float("nan"))),
                                                     float(s.get("val_loss", float("nan"))))
        self._aggregate_when_all_reported(message.round)
        return self._ack(message)

    def _aggregate_when_all_reported(self, round_index: int) -> bool:
        if not self._reports or not set(self._reports) >= set(self.expected):
            return False
        self._aggregate()
        self.rounds_aggregated = round_index + 1
        return True

    @property
    def reporters(self) -> list[str]:
        """The clients whose report of the open round arrived, in roster order."""
        return [c for c in self.clients if c in self._reports]

    def aggregation_weights(self) -> dict[str, float]:
        """Each reporter's weight; a client that dropped out before reporting has none."""
        reporters = self.reporters
        weights = self.weighting.weights([self._reports[c] for c in reporters])
        return dict(zip(reporters, (float(w) for w in weights)))

    def _aggregate(self) -> None:
        weights = self.aggregation_weights()
        self.last_weights = weights if (self.method.federated or self._uploads) else {}
        reporters = list(weights)
        if self.method.federated:
            self.strategy.aggregate(self.segments, self.global_segment, weights)
            self.reference = self._snapshot(self.global_segment)
        if self._uploads:
            missing = set(reporters) - set(self._uploads)
            if missing:
                raise TrainingError(f"no shared weights from {', '.join(sorted(missing))} this round")
            self.shared_global = weighted_average([self._uploads[c] for c in reporters],
                                                  [weights[c] for c in reporters])
        self._uploads.clear()
        self._reports.clear()

    def pop_round_metrics(self) -> dict[str, dict[str, float]]:
        metrics = {c: m.means() for c, m in self._metrics.items()}
        self._metrics = {c: _RoundMetrics() for c in self.clients}
        return metrics

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        unique_optimizers = {id(o): o for o in self.optimizers.values()}
        return {
            "global_segment": self.global_segment.state_dict(),
            "segments": {c: m.state_dict() for c, m in self.segments.items()},
            "optimizers": {c: o.state_dict() for c, o in self.optimizers.items()}
            if len(unique_optimizers) > 1 else {"shared": next(iter(unique_optimizers.values())).state_dict()},
            "reference": self.reference,
            "discriminators": self.discriminators.state_dict(),
            "discriminator_optimizer": (self.discriminator_optimizer.state_dict()
                                        if self.discriminator_optimizer else None),
            "num_samples": dict(self.num_samples),
            "shared_global": self.shared_global,
            "strategy": self.strategy.state_dict(),
            "rounds_aggregated": self.rounds_aggregated,
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_segment.load_state_dict(state["global_segment"])
        for c, module in self.segments.items():
            module.load_state_dict(state["segments"][c])
        if "shared" in state["optimizers"]:
            next(iter(self.optimizers.values())).load_state_dict(state["optimizers"]["shared"])
        else:
            for c, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][c])
        self.reference = {k: v.to(self.device) for k, v in state["reference"].items()}
        self.discriminators.load_state_dict(state["discriminators"])
        if self.discriminator_optimizer is not None:
            self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self.num_samples = dict(state["num_samples"])
        self.shared_global = {k: v.to(self.device) for k, v in state["shared_global"].items()}
        self.strategy.load_state_dict(state.get("strategy", {}))
        self.rounds_aggregated = int(state.get("rounds_aggregated", 0))  # before it was saved: the next
        # aggregation sets it, and no fetch comes before that
