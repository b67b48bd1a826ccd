"""Typed, validated configuration for the model, the objective and the training loop.

Every dataclass validates itself on construction: an impossible value raises `ConfigError`
naming the class and the field, before any data is read or any process is started.
A field that names a variant (a likelihood, network, activation, objective or score kind) is checked against
the registry beside its implementation, so adding a variant means editing that registry only; the registries
are imported inside `__post_init__` because their modules import this one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is impossible; the message starts with `Class.field`."""


def require(ok: bool, owner: object, name: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{type(owner).__name__}.{name}: {why}")


def check_number(owner: object, name: str, minimum: float = 0.0, strict: bool = False, integer: bool = False) -> None:
    """Require a finite number (an int when `integer`) above `minimum` (`> minimum` when `strict`)."""
    value = getattr(owner, name)
    kind = int if integer else (int, float)
    is_number = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    bound = f"> {minimum}" if strict else f">= {minimum}"
    ok = is_number and (value > minimum if strict else value >= minimum)
    require(ok, owner, name, f"must be {'an integer' if integer else 'a number'} {bound}, got {value!r}")


def check_positive(owner: object, name: str, integer: bool = False) -> None:
    check_number(owner, name, 0, strict=True, integer=integer)


def check_fraction(owner: object, name: str) -> None:
    check_positive(owner, name)
    value = getattr(owner, name)
    require(value < 1, owner, name, f"must be in (0, 1), got {value!r}")


def check_choice(owner: object, name: str, allowed: Iterable[str]) -> None:
    """Require one of the `allowed` names (a tuple of names, or a registry: a mapping name -> implementation)."""
    value = getattr(owner, name)
    require(isinstance(value, str) and value in allowed, owner, name, f"must be one of {list(allowed)}, got {value!r}")


def choose(registry: Mapping[str, T], name: str, what: str) -> T:
    """The implementation registered under `name`; an unknown name raises ValueError naming `what` and the
    registered names (never a fallback)."""
    if not (isinstance(name, str) and name in registry):
        raise ValueError(f"{what} must be one of {list(registry)}, got {name!r}")
    return registry[name]


AUTO = "auto"  # a hyperparameter left to `vae.auto.resolve`, which chooses it from the training data's shape
Auto = Literal["auto"]


def check_widths(owner: object, name: str) -> None:
    """Require a sequence of integer widths >= 1 (stored as a tuple; empty: no hidden layer)."""
    value = getattr(owner, name)
    ok = isinstance(value, (list, tuple))
    ok = ok and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value)
    require(ok, owner, name, f"must be a list of integer widths >= 1, got {value!r}")
    object.__setattr__(owner, name, tuple(value))


def unless_auto(check: Callable[..., None], owner: object, name: str, *args: Any, **kwargs: Any) -> None:
    """`check(owner, name, ...)` unless the field is AUTO; a failure says that AUTO is allowed too."""
    if getattr(owner, name) == AUTO:
        return
    try:
        check(owner, name, *args, **kwargs)
    except ConfigError as err:
        message, got, value = str(err).rpartition(", got ")
        raise ConfigError(f"{message} or {AUTO!r}{got}{value}") from None


def auto_fields(config: object) -> tuple[str, ...]:
    """The fields of a ModelConfig / TrainConfig / ScoreConfig that are AUTO (in field order)."""
    return tuple(name for name in getattr(config, "AUTO_FIELDS", ()) if getattr(config, name) == AUTO)


def check_resolved(config: object, user: str) -> None:
    """Raise ConfigError naming the AUTO fields of `config`: `user` (e.g. "a VAE") needs chosen values."""
    left = auto_fields(config)
    also = f" (and {', '.join(left[1:])})" if len(left) > 1 else ""
    require(not left, config, left[0] if left else "", f"still {AUTO!r}{also}; {user} needs chosen values: resolve "
            f"the configs first with vae.auto.resolve(model, train, score, rows, layout)")  # fmt: skip


@dataclass(frozen=True)
class FeatureBlock:
    """A run of columns in the model's input vector that share one likelihood.

    gaussian / bernoulli: one feature per column, `width == len(names)`.
    categorical: one feature (a one-hot group), `names == (feature_name,)`, `width` = number of categories.
    """

    kind: str  # a name in `vae.likelihoods.LIKELIHOODS`
    width: int
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from .likelihoods import LIKELIHOODS

        check_choice(self, "kind", LIKELIHOODS)
        check_positive(self, "width", integer=True)
        object.__setattr__(self, "names", tuple(self.names))
        expected = self.n_features
        require(
            not self.names or len(self.names) == expected,
            self,
            "names",
            f"a {self.kind} block of width {self.width} needs {expected} name(s), got {len(self.names)}",
        )

    @property
    def grouped(self) -> bool:
        """Whether the block's columns form one feature (a categorical one-hot group), as its likelihood says."""
        from .likelihoods import LIKELIHOODS

        return LIKELIHOODS[self.kind].grouped

    @property
    def n_features(self) -> int:
        return 1 if self.grouped else self.width

    @property
    def feature_names(self) -> tuple[str, ...]:
        if self.names:
            return self.names
        return tuple(f"{self.kind}_{i}" for i in range(self.n_features))


@dataclass(frozen=True)
class DataLayout:
    """What the model sees: the input vector's blocks, and the image shape when it is an image."""

    blocks: tuple[FeatureBlock, ...]
    image_shape: tuple[int, ...] | None = None  # (C, H, W)
    condition_dim: int = 0

    def __post_init__(self) -> None:
        blocks = tuple(b if isinstance(b, FeatureBlock) else FeatureBlock(**b) for b in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        require(len(blocks) > 0, self, "blocks", "needs at least one feature block")
        check_number(self, "condition_dim", integer=True)
        if self.image_shape is not None:
            shape = tuple(int(s) for s in self.image_shape)
            object.__setattr__(self, "image_shape", shape)
            require(len(shape) == 3, self, "image_shape", f"must be (C, H, W), got {shape}")
            require(
                math.prod(shape) == self.input_dim,
                self,
                "image_shape",
                f"{shape} has {math.prod(shape)} values but the blocks have {self.input_dim} columns",
            )

    @property
    def input_dim(self) -> int:
        return sum(b.width for b in self.blocks)

    @property
    def n_features(self) -> int:
        return sum(b.n_features for b in self.blocks)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for b in self.blocks for name in b.feature_names)


@dataclass(frozen=True)
class ModelConfig:
    """Network hyperparameters. `network="conv"` needs a layout with an image shape whose H and W divide by 4."""

    AUTO_FIELDS: ClassVar[tuple[str, ...]] = ("latent_dim", "hidden_dims", "activation")  # may be AUTO

    latent_dim: int | Auto = 8
    hidden_dims: tuple[int, ...] | Auto = (64, 64)
    network: str = "mlp"  # a name in `vae.networks.NETWORKS`
    conv_channels: tuple[int, int] = (32, 64)
    activation: str = "silu"  # a name in `vae.networks.ACTIVATIONS`, or AUTO
    gaussian_min_scale: float = 0.05  # floor on the decoder's std, in standardized units
    flow_steps: int = 0  # inverse autoregressive flow steps on the Gaussian posterior; 0: the plain posterior
    flow_hidden_dims: tuple[int, ...] = (32,)  # hidden widths of each step's MADE network

    def __post_init__(self) -> None:
        from .networks import ACTIVATIONS, NETWORKS

        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        unless_auto(check_positive, self, "latent_dim", integer=True)
        unless_auto(check_widths, self, "hidden_dims")
        check_choice(self, "network", NETWORKS)
        require(
            len(self.conv_channels) == 2 and all(isinstance(c, int) and c >= 1 for c in self.conv_channels),
            self,
            "conv_channels",
            f"must be two widths >= 1, got {self.conv_channels}",
        )
        unless_auto(check_choice, self, "activation", ACTIVATIONS)
        check_positive(self, "gaussian_min_scale")
        check_number(self, "flow_steps", integer=True)
        object.__setattr__(self, "flow_hidden_dims", tuple(self.flow_hidden_dims))
        require(
            len(self.flow_hidden_dims) > 0 and all(isinstance(h, int) and h >= 1 for h in self.flow_hidden_dims),
            self,
            "flow_hidden_dims",
            f"needs at least one width, each an integer >= 1, got {list(self.flow_hidden_dims)}",
        )


@dataclass(frozen=True)
class ObjectiveConfig:
    """The training objective: the beta-ELBO (with optional linear KL warm-up), the IWAE bound with k samples,
    or an adversarial autoencoder (reconstruction + a discriminator matching the aggregate posterior to N(0, I))."""

    kind: str = "elbo"  # a name in `vae.objectives.OBJECTIVES`
    beta: float = 1.0
    kl_warmup_steps: int = 0
    iwae_samples: int = 1
    analytic_kl: bool = True  # ELBO only: closed-form KL instead of the one-sample Monte Carlo estimate
    adversarial_weight: float = 1.0  # AAE only: weight of the generator's adversarial loss
    discriminator_lr: float = 1e-3  # AAE only: Adam learning rate of the discriminator
    discriminator_hidden_dims: tuple[int, ...] = (64, 64)  # AAE only

    def __post_init__(self) -> None:
        from .objectives import OBJECTIVES

        check_choice(self, "kind", OBJECTIVES)
        check_number(self, "beta")
        check_number(self, "kl_warmup_steps", integer=True)
        check_positive(self, "iwae_samples", integer=True)
        check_number(self, "adversarial_weight")
        check_positive(self, "discriminator_lr")
        object.__setattr__(self, "discriminator_hidden_dims", tuple(self.discriminator_hidden_dims))
        require(
            all(isinstance(h, int) and h >= 1 for h in self.discriminator_hidden_dims),
            self,
            "discriminator_hidden_dims",
            f"every width must be an integer >= 1, got {list(self.discriminator_hidden_dims)}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop, independent of where it runs."""

    AUTO_FIELDS: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr")  # may be AUTO

    epochs: int | Auto = 50
    batch_size: int | Auto = 256
    lr: float | Auto = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0
    patience: int | None = 10  # epochs without improvement of the validation loss; None disables
    min_delta: float = 0.0
    mixed_precision: bool = True  # bf16 autocast, used only on CUDA
    seed: int = 0

    def __post_init__(self) -> None:
        unless_auto(check_positive, self, "epochs", integer=True)
        unless_auto(check_positive, self, "batch_size", integer=True)
        unless_auto(check_positive, self, "lr")
        check_number(self, "weight_decay")
        if self.grad_clip is not None:
            check_positive(self, "grad_clip")
        if self.patience is not None:
            check_positive(self, "patience", integer=True)
        check_number(self, "min_delta")
        check_number(self, "seed", integer=True)


@dataclass(frozen=True)
class ScoreConfig:
    """How rows are scored: negative ELBO, importance-sampled NLL or reconstruction error."""

    AUTO_FIELDS: ClassVar[tuple[str, ...]] = ("kind", "samples")  # may be AUTO

    kind: str = "negative_elbo"  # a name in `vae.scoring.SCORES`, or AUTO
    samples: int | Auto = 16  # posterior samples per row: ELBO averaging, or k for the importance-sampled NLL
    contamination: float | None = 0.05  # expected anomaly share, sets the threshold quantile
    quantile: float | None = None  # alternatively the threshold as a quantile of validation scores

    def __post_init__(self) -> None:
        from .scoring import SCORES

        unless_auto(check_choice, self, "kind", SCORES)
        unless_auto(check_positive, self, "samples", integer=True)
        require(
            (self.contamination is None) != (self.quantile is None),
            self,
            "contamination",
            "set exactly one of contamination and quantile",
        )
        if self.contamination is not None:
            check_fraction(self, "contamination")
        if self.quantile is not None:
            check_fraction(self, "quantile")


def check_variant(model: ModelConfig, objective: ObjectiveConfig, score: ScoreConfig | None = None) -> None:
    """Reject combinations of model, objective and score that do not make sense together (ConfigError).

    A flow posterior has no closed-form KL: its ELBO needs `analytic_kl=False` (the Monte Carlo estimate).
    An adversarial autoencoder has no KL-trained posterior: no flows, and it scores by reconstruction only.
    """
    if model.flow_steps and objective.kind == "elbo" and objective.analytic_kl:
        raise ConfigError(
            f"ObjectiveConfig.analytic_kl: a flow posterior (model.flow_steps={model.flow_steps}) has no closed-form "
            f"KL; set objective.analytic_kl=false (the Monte Carlo estimate)"
        )
    if objective.kind != "aae":
        return
    if model.flow_steps:
        raise ConfigError(
            "ModelConfig.flow_steps: an adversarial autoencoder (objective.kind=aae) matches the aggregate posterior "
            "with its discriminator, not a KL-trained flow posterior; set model.flow_steps=0"
        )
    if score is not None:
        check_score_kind(objective, score.kind)


def check_score_kind(objective: ObjectiveConfig, kind: str) -> None:
    """An AAE's encoder is not a KL-trained posterior, so -ELBO and importance-sampled NLL mean nothing for it."""
    if objective.kind == "aae" and kind != "reconstruction":
        raise ConfigError(
            f"ScoreConfig.kind: an adversarial autoencoder (objective.kind=aae) has no KL-trained posterior, so "
            f"{kind!r} is not a likelihood bound; score it with 'reconstruction'"
        )


def _coerce(hint: Any, value: Any) -> Any:
    """Turn YAML/CLI scalars into the field's type where that is unambiguous ("1e-3" -> 0.001, 3 -> 3.0)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None or isinstance(value, bool):
        return value
    if float in options and isinstance(value, (int, str)):
        try:
            return float(value)
        except ValueError:
            return value
    if int in options and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Build the dataclass `cls` from a plain mapping (as read from YAML or JSON).

    Unknown keys raise `ConfigError` naming them; nested dataclass fields are built recursively;
    lists become tuples and numeric strings become numbers where the field is numeric.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping of keys to values, got {data!r}")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = _coerce(hint, value)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready mapping of a config dataclass (tuples become lists)."""
    return json_ready(dataclasses.asdict(config))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


__all__ = [
    "AUTO",
    "ConfigError",
    "DataLayout",
    "FeatureBlock",
    "ModelConfig",
    "ObjectiveConfig",
    "ScoreConfig",
    "TrainConfig",
    "auto_fields",
    "check_resolved",
    "check_score_kind",
    "check_variant",
    "from_dict",
    "to_dict",
]
