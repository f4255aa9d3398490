"""The run configuration: every training choice the plan does not make, in one frozen object.

The plan decides shapes (patches, widths, graphs, schedule); this decides how long and how hard
to train, which method and ablations run, and the loss weights. It is written beside every run
(``config.json``) and compared on ``--resume``, so a run can always be reproduced from its folder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from collections.abc import Mapping
from typing import Any, ClassVar

from mucald_unet.training.augmentation import AugmentationConfig
from mucald_unet.defences.quantisation import MAX_BITS
from mucald_unet.errors import TrainingError
from mucald_unet.federation.strategies import MethodSpec, method_names, method_spec
from mucald_unet.federation.strategies.registry import CRDM, DACA


class Method(str):
    """A registered method's name (``mucald_train --method``; the registry in
    ``mucald_unet/federation/strategies``). ``Method(name)`` refuses a name that is not registered and
    lists those that are; the constants name the four original methods, which share one code path
    with every baseline."""

    MUCALD: ClassVar[Method]  # split network + CRDM at both split points + DACA
    SPLITFED: ClassVar[Method]  # the same split network, plain
    LOCAL: ClassVar[Method]  # every client trains its own full network alone
    CENTRALIZED: ClassVar[Method]  # all data in one place, one shared middle (non-private reference)
    __slots__ = ()

    def __new__(cls, name: str) -> Method:
        return super().__new__(cls, method_spec(str(name)).name)

    @property
    def value(self) -> str:
        """The name, as the Enum this replaced offered it."""
        return str(self)

    @property
    def spec(self) -> MethodSpec:
        return method_spec(self)


Method.MUCALD, Method.SPLITFED, Method.LOCAL, Method.CENTRALIZED = (
    Method(name) for name in ("mucald", "splitfed", "local", "centralized"))


class Ablation(str, Enum):
    NO_DACA = "no-daca"  # no domain discriminators
    NO_CRDM = "no-crdm"  # no CRDM at either split point (DACA stays)
    NO_CAUSAL = "no-causal"  # the SCM is replaced by one plain MLP over all exogenous nodes
    NO_DIFFUSION = "no-diffusion"  # no noising and no denoiser; causal latent and proxy losses stay
    NO_FORWARD_NOISE = "no-forward-noise"  # the denoiser runs, but on clean features (eps = 0)


class DefenceKind(str, Enum):
    NONE = "none"
    GAUSSIAN = "gaussian"  # N(0, strength^2) added to what crosses split 1 (training and prediction)
    NOPEEK = "nopeek"  # + strength x distance correlation(image tiles, split-1 feature tiles) in the loss
    QUANTISE = "quantise"  # what crosses split 1 keeps 2**strength levels per sample and channel
    ADVERSARY = "adversary"  # a simulated inversion decoder at the client; FE trained against it x strength
    BOTTLENECK = "bottleneck"  # a learned 1x1 projection: only `strength` channels cross split 1


@dataclass(frozen=True)
class DefenceConfig:
    """The defences at split 1, on any method's code path: one (``--defence gaussian:0.5``) or several
    of different kinds combined (``--defence bottleneck:8+quantise:2``). They act in a fixed order
    whatever the order given: the bottleneck's projection, then the noise, then the quantiser; the
    penalties (nopeek, adversary) read what crosses."""

    kind: DefenceKind = DefenceKind.NONE
    strength: float = 0.0
    also: tuple[DefenceConfig, ...] = ()  # the defences combined with the first, each of another kind

    def __post_init__(self) -> None:
        kinds = [self.kind, *(d.kind for d in self.also)]
        if self.also and (not self.active or any(not d.active or d.also for d in self.also)):
            raise TrainingError("a combined defence lists single defences, none of them 'none'. Fix: e.g. "
                                "--defence bottleneck:8+quantise:2.")
        if len(set(kinds)) != len(kinds):
            raise TrainingError(f"--defence names {', '.join(k.value for k in kinds)}: each kind at most once. Fix: "
                                "give every kind one strength.")
        if self.strength < 0 or (self.kind is not DefenceKind.NONE and self.strength == 0):
            raise TrainingError(f"defence strength must be > 0 (got {self.strength}). Fix: e.g. --defence gaussian:0.5.")
        if self.kind is DefenceKind.QUANTISE and not (self.strength == int(self.strength) and
                                                      1 <= self.strength <= MAX_BITS):
            raise TrainingError(f"quantise takes a whole number of bits from 1 to {MAX_BITS} (got {self.strength:g}). "
                                "Fix: e.g. --defence quantise:4.")
        if self.kind is DefenceKind.BOTTLENECK and self.strength != int(self.strength):
            raise TrainingError(f"bottleneck takes a whole number of channels (got {self.strength:g}). "
                                "Fix: e.g. --defence bottleneck:8.")

    @property
    def active(self) -> bool:
        return self.kind is not DefenceKind.NONE

    @property
    def layers(self) -> tuple[DefenceConfig, ...]:
        """Each single defence, the first one first; none without a defence."""
        return ((DefenceConfig(self.kind, self.strength), *self.also)) if self.active else ()

    @property
    def label(self) -> str:
        return "+".join(f"{layer.kind.value}-{layer.strength:g}" for layer in self.layers)

    def _strength_of(self, kind: DefenceKind) -> float:
        return next((layer.strength for layer in self.layers if layer.kind is kind), 0.0)

    @property
    def gaussian_sigma(self) -> float:
        return self._strength_of(DefenceKind.GAUSSIAN)

    @property
    def nopeek_weight(self) -> float:
        return self._strength_of(DefenceKind.NOPEEK)

    @property
    def quantisation_bits(self) -> int:
        return int(self._strength_of(DefenceKind.QUANTISE))

    @property
    def adversary_weight(self) -> float:
        return self._strength_of(DefenceKind.ADVERSARY)

    @property
    def bottleneck_channels(self) -> int:
        return int(self._strength_of(DefenceKind.BOTTLENECK))

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "strength"}``, with ``"also"`` only for a combination (one defence's record is unchanged)."""
        first = {"kind": self.kind.value, "strength": self.strength}
        return {**first, "also": [layer.to_dict() for layer in self.also]} if self.also else first

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DefenceConfig:
        return cls(DefenceKind(data["kind"]), float(data["strength"]),
                   tuple(cls.from_dict(layer) for layer in data.get("also", ())))

    @classmethod
    def parse(cls, text: str | None) -> "DefenceConfig":
        """``"gaussian:0.5"`` / ``"nopeek:0.1"`` / ``"quantise:4"`` / ``"adversary:0.5"`` / ``"bottleneck:8"`` / None,
        or several joined by ``+`` (``"bottleneck:8+quantise:2"``)."""
        if not text or text == DefenceKind.NONE.value:
            return cls()
        try:
            first, *more = [cls._parse_one(part) for part in text.split("+")]
        except ValueError:
            raise TrainingError(f"--defence {text!r} is not KIND:STRENGTH. Fix: use gaussian:SIGMA, "
                                "nopeek:WEIGHT, quantise:BITS, adversary:WEIGHT or bottleneck:CHANNELS, e.g. --defence "
                                "gaussian:0.5, or several joined by '+'.") from None
        return cls(first.kind, first.strength, tuple(more))

    @classmethod
    def _parse_one(cls, text: str) -> DefenceConfig:
        kind, _, value = text.partition(":")
        return cls(DefenceKind(kind.strip()), float(value))


@dataclass(frozen=True)
class LossWeights:
    """Targets of the auxiliary weights, reached after the warm-up and ramp (MUCALD.md)."""

    proxy: float = 0.40
    diffusion: float = 0.40
    kl_u: float = 1e-4
    kl_z: float = 1e-4
    adversarial: float = 0.10
    ce_in_seg: float = 0.5  # seg = Dice + ce_in_seg * CE


@dataclass(frozen=True)
class AuxiliarySchedule:
    """Warm-up then linear ramp of the auxiliary weights over GLOBAL progress (0..1 of the run).

    The published code restarted its warm-up every round, so with few local epochs the CRDM
    losses never switched on; here progress counts across rounds.
    """

    warmup_fraction: float = 0.1
    ramp_fraction: float = 0.2

    def factor(self, progress: float) -> float:
        if progress < self.warmup_fraction:
            return 0.0
        if self.ramp_fraction <= 0:
            return 1.0
        return min(1.0, (progress - self.warmup_fraction) / self.ramp_fraction)


class OptimizerKind(str, Enum):
    SGD = "sgd"  # nnU-Net's: Nesterov momentum
    ADAMW = "adamw"  # the published code's

    @property
    def default_lr(self) -> float:
        """The rate each is usually run at: nnU-Net's 1e-2 for SGD, the paper's 1e-3 for AdamW."""
        return 1e-2 if self is OptimizerKind.SGD else 1e-3


class Precision(str, Enum):
    """What the networks compute in; losses, optimiser state and what crosses stay float32."""

    FP32 = "fp32"
    BF16 = "bf16"  # autocast: convolutions and matmuls in bfloat16 (CUDA, or CPUs with AVX512-BF16/AMX)


class LrSchedule(str, Enum):
    CONSTANT = "constant"
    POLY = "poly"  # nnU-Net's: lr x (1 - progress)^exponent over the whole run


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimiser kind for every part: networks and denoisers at ``lr``, encoders and SCMs at
    ``aux_lr``, the server's discriminators at ``discriminator_lr`` (always Adam, constant).

    ``aux_lr`` None means half of ``lr`` (the paper's ratio), so changing ``--lr`` moves both.
    """

    kind: OptimizerKind = OptimizerKind.ADAMW
    lr: float = 1e-3
    aux_lr: float | None = None
    momentum: float = 0.99  # SGD only
    # poly by measurement (docs/training_recipe.md): at 250 iterations +0.047 brain / +0.010 polyp mean
    # test Dice over 4 seeds with less spread, at 2500 it closes the gap to nnU-Net
    schedule: LrSchedule = LrSchedule.POLY
    poly_exponent: float = 0.9
    weight_decay: float = 3e-5
    discriminator_lr: float = 1e-4
    grad_clip: float = 12.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OptimizerKind(self.kind))
        object.__setattr__(self, "schedule", LrSchedule(self.schedule))
        if self.lr <= 0 or (self.aux_lr is not None and self.aux_lr <= 0):
            raise TrainingError(f"learning rates must be > 0 (got lr={self.lr}, aux_lr={self.aux_lr}).")
        if not 0.0 <= self.momentum < 1.0:
            raise TrainingError(f"momentum must lie in [0, 1) (got {self.momentum}).")

    @property
    def encoder_lr(self) -> float:
        """The rate of the exogenous encoders, SCMs and proxy priors."""
        return self.lr / 2 if self.aux_lr is None else self.aux_lr


@dataclass(frozen=True)
class CrdmConfig:
    """How CRDM is sized and how much noise the segmentation path may see.

    ``max_noise_gain`` bounds sqrt((1 - a_bar_t) / a_bar_t), the factor by which the denoiser's
    error reaches the segmentation path; training timesteps are drawn only where the gain is
    within it, and evaluation uses the plan's eval timestep, which must lie inside that range.
    None means "the gain at the plan's eval timestep", so training never sees more noise than
    evaluation and evaluation sits at the top of the trained range.
    """

    max_noise_gain: float | None = None
    eval_timestep: int | None = None  # None: the plan's (T/2, the paper's); lower trades privacy for Dice
    denoiser_width_factor: int = 2  # latent channels = factor x split width
    denoiser_downsample: int = 4  # latent resolution: 1/4 per axis the server's first two stages pool
    scm_hidden: int = 128
    weak_proxy_scale: float = 0.25  # proxy weight for clients whose graph has no edges
    # the paper averages the exogenous encoders; their node heads then mix clients whose node slot
    # i stands for different proxies (lesion size here, head perimeter there). False keeps them personal.
    share_exogenous: bool = True
    # uniform t up to the eval timestep trains the segmentation path at about half the noise that
    # validation and prediction (and the eval-time privacy) use; True trains at the eval level only
    train_at_eval_noise: bool = False


@dataclass(frozen=True)
class StrategyOptions:
    """Settings of single methods; each is read only by the methods whose ``MethodSpec.options``
    name it, and setting it for another method is refused (docs/federation_methods.md)."""

    ditto_lambda: float = 0.1  # weight of Ditto's personal regulariser lambda/2 ||v - w||^2
    fedper_stages: int = 1  # FedPer: the server segment's last decoder stages kept personal
    fedrep_head_fraction: float = 0.5  # FedRep: share of each round's steps that train the personal parts
    mocha_lambda: float = 1e-4  # MOCHA: weight of lambda/2 tr(W Omega^-1 W^T) over the clients' segments
    fedem_components: int = 3  # FedEM: mixture components of the server segment (the FedEM paper's M)

    def __post_init__(self) -> None:
        if not (self.ditto_lambda >= 0 and self.fedper_stages >= 1 and 0 < self.fedrep_head_fraction < 1
                and self.mocha_lambda >= 0 and self.fedem_components >= 2):
            raise TrainingError(f"method options out of range (ditto_lambda={self.ditto_lambda} must be >= 0, "
                                f"fedper_stages={self.fedper_stages} >= 1, fedrep_head_fraction="
                                f"{self.fedrep_head_fraction} in (0, 1), mocha_lambda={self.mocha_lambda} >= 0, "
                                f"fedem_components={self.fedem_components} >= 2).")


@dataclass(frozen=True)
class TrainingConfig:
    method: Method = Method.MUCALD
    ablations: frozenset[Ablation] = frozenset()
    rounds: int = 10
    local_epochs: int = 1
    iterations_per_epoch: int = 25
    fold: int = 0
    seed: int = 0
    max_train_cases: int | None = None  # scarce-data runs: a fixed random subset of each fold's training cases
    device: str = "cpu"
    precision: Precision = Precision.FP32
    aggregation: str = "equal"
    fedprox_mu: float = 1e-3
    local_norms: bool = False  # FedBN-style: the server segment's norm affine parameters stay per client
    # nnU-Net's deep supervision through the split: the body's N coarser decoder maps cross back too,
    # the client scores them against its downsampled labels (weights 1/2, 1/4, ... of the full loss)
    deep_supervision: int = 0
    losses: LossWeights = field(default_factory=LossWeights)
    schedule: AuxiliarySchedule = field(default_factory=AuxiliarySchedule)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    crdm: CrdmConfig = field(default_factory=CrdmConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    strategy: StrategyOptions = field(default_factory=StrategyOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", Method(self.method))
        if self.precision not in {p.value for p in Precision}:
            raise TrainingError(f"unknown precision {self.precision!r}. Fix: --precision "
                                f"{' or '.join(p.value for p in Precision)}.")
        object.__setattr__(self, "precision", Precision(self.precision))
        for name in ("rounds", "local_epochs", "iterations_per_epoch"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1 (got {getattr(self, name)}).")
        if self.max_train_cases is not None and self.max_train_cases < 1:
            raise TrainingError(f"max_train_cases must be at least 1 (got {self.max_train_cases}). Fix: give "
                                "--max-train-cases 1 or more, or leave it out to train on the whole fold.")
        if self.ablations and not self.method_spec.components:
            raise TrainingError(f"ablations ({', '.join(sorted(a.value for a in self.ablations))}) switch "
                            f"off parts of mucald; --method {self.method} has none. Fix: use "
                            "--method mucald with --ablate.")
        conflict = self.method_spec.local_norms_conflict
        if self.local_norms and conflict:
            raise TrainingError(f"--method {self.method} {conflict}: --local-norms has no meaning there. "
                                "Fix: drop --local-norms.")
        if self.deep_supervision < 0:
            raise TrainingError(f"deep_supervision must be >= 0 coarser scales (got {self.deep_supervision}). "
                                "Fix: --deep-supervision 0 (off), 1 or 2.")
        if self.deep_supervision and self.method_spec.mixture:
            raise TrainingError(f"--method {self.method} mixes several server bodies, whose coarser maps no single "
                                "client head can score. Fix: drop --deep-supervision for this method.")
        self._check_method_options()

    def _check_method_options(self) -> None:
        """A method option set for a method that does not read it would only rename the folder."""
        default = StrategyOptions()
        for option in fields(StrategyOptions):
            if getattr(self.strategy, option.name) == getattr(default, option.name):
                continue
            if option.name not in self.method_spec.options:
                owners = [n for n in method_names() if option.name in method_spec(n).options]
                flag = "--" + option.name.replace("_", "-")
                alternative = f", or use --method {owners[0]}" if owners else ""
                raise TrainingError(f"{flag} is an option of --method {' / '.join(owners) or '(none)'}; "
                                    f"--method {self.method} does not read it. Fix: drop {flag}{alternative}.")

    @property
    def method_spec(self) -> MethodSpec:
        return method_spec(self.method)

    @property
    def uses_crdm(self) -> bool:
        return CRDM in self.method_spec.components and Ablation.NO_CRDM not in self.ablations

    @property
    def uses_daca(self) -> bool:
        return DACA in self.method_spec.components and Ablation.NO_DACA not in self.ablations

    @property
    def mixture_size(self) -> int:
        """Components of the server segment: FedEM's M, 1 for every other method."""
        return self.strategy.fedem_components if self.method_spec.mixture else 1

    @property
    def federated(self) -> bool:
        """Whether server segments are averaged across clients at each round's end."""
        return self.method_spec.federated

    @property
    def run_name(self) -> str:
        """Folder name of the run: method, ablations, defence, then every other non-default setting."""
        return compose_run_name(self.identity_labels(), self.setting_labels())

    def identity_labels(self) -> list[str]:
        """What the run is: the method, its ablations in a fixed order, then the defence."""
        parts = [str(self.method)] + sorted(a.value for a in self.ablations)
        return parts + ([self.defence.label] if self.defence.active else [])

    def setting_labels(self) -> list[str]:
        """``key-value`` for every setting that differs from the defaults, in field order.

        Settings that do not change what is learned (the device) or that name a subfolder
        (the fold) are left out; method, ablations and defence are in ``identity_labels``.
        """
        now, default = _flatten(self.to_dict()), _flatten(TrainingConfig().to_dict())
        labels = []
        for key, value in now.items():
            if key in _NOT_IN_NAME or value == default.get(key):
                continue
            short = _SHORT_NAMES.get(key, key.replace(".", "-").replace("_", "-"))
            labels.append(_label(short, value))
        return labels

    @property
    def iterations_per_round(self) -> int:
        return self.local_epochs * self.iterations_per_epoch

    def progress(self, round_index: int, step: int) -> float:
        """Fraction of the whole run done at ``step`` (0-based) of round ``round_index`` (0-based)."""
        return (round_index + step / self.iterations_per_round) / self.rounds

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["method"] = str(self.method)
        data["precision"] = self.precision.value
        data["optimizer"].update(kind=self.optimizer.kind.value, schedule=self.optimizer.schedule.value)
        data["ablations"] = sorted(a.value for a in self.ablations)
        data["augmentation"] = self.augmentation.to_dict()
        data["defence"] = self.defence.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingConfig":
        data = dict(data)
        nested = {"losses": LossWeights, "schedule": AuxiliarySchedule, "optimizer": OptimizerConfig,
                  "crdm": CrdmConfig, "strategy": StrategyOptions}
        for key, kind in nested.items():
            if key in data:
                data[key] = kind(**data[key])
        if "augmentation" in data:
            data["augmentation"] = AugmentationConfig.from_dict(data["augmentation"])
        if "defence" in data:
            data["defence"] = DefenceConfig.from_dict(data["defence"])
        data["method"] = Method(data.get("method", Method.MUCALD))
        data["ablations"] = frozenset(Ablation(a) for a in data.get("ablations", ()))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainingError(f"unknown training settings: {', '.join(sorted(unknown))}.")
        return cls(**data)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainingConfig":
        """This config with dotted settings replaced (``{"local_norms": True, "optimizer.lr": 1e-4}``).

        The keys are those of ``to_dict``; a key that names no setting is refused with the list of
        valid ones, so a typo in a preset or a benchmark variant cannot silently train the default.
        """
        data = self.to_dict()
        valid = _flatten(data)
        for key, value in overrides.items():
            if key not in valid:
                raise TrainingError(f"unknown training setting {key!r}. Fix: use one of {', '.join(valid)}.")
            *parents, leaf = key.split(".")
            target = data
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        return TrainingConfig.from_dict(data)


# where and in what arithmetic a run computes: they may differ between the machines a run is started
# and resumed on (as for any CUDA-against-CPU rounding), so they neither name a run nor stop a resume
EXECUTION_SETTINGS = frozenset({"device", "precision"})
_NOT_IN_NAME = frozenset({"method", "ablations", "defence.kind", "defence.strength", "defence.also", "fold",
                          *EXECUTION_SETTINGS})


def without_execution_settings(training: Mapping[str, Any]) -> dict[str, Any]:
    """A run's ``to_dict`` settings less ``EXECUTION_SETTINGS``: what must match for a resume."""
    return {k: v for k, v in training.items() if k not in EXECUTION_SETTINGS}
_SHORT_NAMES = {"aggregation": "agg", "deep_supervision": "ds", "fedprox_mu": "mu", "local_norms": "local-norms",
                "crdm.eval_timestep": "eval-t",
                "crdm.share_exogenous": "shared-exogenous", "crdm.train_at_eval_noise": "train-at-eval-noise",
                "optimizer.lr": "lr", "optimizer.aux_lr": "aux-lr",
                "optimizer.kind": "opt", "optimizer.schedule": "lr-schedule", "local_epochs": "epochs",
                "iterations_per_epoch": "iters",
                "max_train_cases": "max-train-cases", "strategy.ditto_lambda": "ditto-lambda",
                "strategy.fedper_stages": "fedper-stages", "strategy.fedrep_head_fraction": "fedrep-head",
                "strategy.mocha_lambda": "mocha-lambda", "strategy.fedem_components": "fedem-components"}
MAX_RUN_NAME = 96  # longer names keep their leading labels and end in a digest of all of them


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _label(key: str, value: Any) -> str:
    """``seed-1``, ``lr-0.0003``, ``local-norms`` (True), ``no-local-norms`` (False)."""
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    text = f"{value:g}" if isinstance(value, float) else "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"{key}-{re.sub(r'[^A-Za-z0-9.+-]', '_', text)}"


def compose_run_name(identity: list[str], settings: list[str]) -> str:
    """``mucald__seed-1__agg-causal``; past ``MAX_RUN_NAME`` characters the settings that do not
    fit are replaced by ``more-<digest>`` of all settings, so two runs never share a name."""
    name = "__".join(identity + settings)
    if len(name) <= MAX_RUN_NAME:
        return name
    digest = "more-" + hashlib.sha256("__".join(settings).encode("utf-8")).hexdigest()[:8]
    kept = list(identity)
    for label in settings:
        if len("__".join(kept + [label, digest])) > MAX_RUN_NAME:
            break
        kept.append(label)
    return "__".join(kept + [digest])


def parse_ablations(text: str | None) -> frozenset[Ablation]:
    """``"no-daca,no-crdm"`` -> the set; an unknown name lists the valid ones."""
    if not text:
        return frozenset()
    valid = {a.value: a for a in Ablation}
    chosen = set()
    for name in (part.strip() for part in text.split(",") if part.strip()):
        if name not in valid:
            raise TrainingError(f"unknown ablation {name!r}. Fix: use any of {', '.join(valid)}, comma-separated.")
        chosen.add(valid[name])
    return frozenset(chosen)
