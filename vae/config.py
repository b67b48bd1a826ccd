"""Typed, validated configuration for the model, the objective and the training loop, and the rules across them.

Every config is built with `vae.config_base.config_class`: it validates itself on construction and on
`dataclasses.replace`, and an impossible value raises `ConfigError`, one line naming the field and why.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from .config_base import (
    AUTO,
    Auto,
    Count,
    Flag,
    Fraction,
    NonNegative,
    OneOf,
    Positive,
    PositiveInt,
    Shape,
    SomeWidths,
    Width,
    Widths,
    config_class,
    field_error,
    require,
)


def auto_fields(config: object) -> tuple[str, ...]:
    """The fields of a ModelConfig / TrainConfig / ScoreConfig that are AUTO (in field order)."""
    return tuple(name for name in getattr(config, "AUTO_FIELDS", ()) if getattr(config, name) == AUTO)


def check_resolved(config: object, user: str) -> None:
    """Raise ConfigError naming the AUTO fields of `config`: `user` (e.g. "a VAE") needs chosen values."""
    left = auto_fields(config)
    also = f" (and {', '.join(left[1:])})" if len(left) > 1 else ""
    require(not left, config, left[0] if left else "", f"still {AUTO!r}{also}; {user} needs chosen values: resolve "
            f"the configs first with vae.auto.resolve(model, train, score, rows, layout)")  # fmt: skip


@config_class
class FeatureBlock:
    """A run of columns in the model's input vector that share one likelihood.

    gaussian / bernoulli: one feature per column, `width == len(names)`.
    categorical: one feature (a one-hot group), `names == (feature_name,)`, `width` = number of categories.
    """

    kind: Annotated[str, OneOf("vae.likelihoods.LIKELIHOODS")]
    width: PositiveInt
    names: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _names_fit_the_width(self) -> FeatureBlock:
        if self.names:  # (an after-validator also runs on a block given as an instance: read its kind only here)
            expected = self.n_features
            require(
                len(self.names) == expected,
                self,
                "names",
                f"a {self.kind} block of width {self.width} needs {expected} name(s), got {len(self.names)}",
            )
        return self

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


@config_class
class DataLayout:
    """What the model sees: the input vector's blocks, and the image shape when it is an image."""

    blocks: Annotated[tuple[FeatureBlock, ...], Field(min_length=1)]
    image_shape: Shape | None = None  # (C, H, W)
    condition_dim: Count = 0

    @model_validator(mode="after")
    def _image_shape_fits_the_blocks(self) -> DataLayout:
        shape = self.image_shape
        if shape is not None:
            require(
                math.prod(shape) == self.input_dim,
                self,
                "image_shape",
                f"{shape} has {math.prod(shape)} values but the blocks have {self.input_dim} columns",
            )
        return self

    @property
    def input_dim(self) -> int:
        return sum(b.width for b in self.blocks)

    @property
    def n_features(self) -> int:
        return sum(b.n_features for b in self.blocks)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for b in self.blocks for name in b.feature_names)


@config_class
class ModelConfig:
    """Network hyperparameters. `network="conv"` needs a layout with an image shape whose H and W divide by 4."""

    AUTO_FIELDS: ClassVar[tuple[str, ...]] = ("latent_dim", "hidden_dims", "activation")  # may be AUTO

    latent_dim: PositiveInt | Auto = 8
    hidden_dims: Widths | Auto = (64, 64)
    network: Annotated[str, OneOf("vae.networks.NETWORKS")] = "mlp"
    conv_channels: tuple[Width, Width] = (32, 64)
    activation: Annotated[str, OneOf("vae.networks.ACTIVATIONS")] | Auto = "silu"
    gaussian_min_scale: Positive = 0.05  # floor on the decoder's std, in standardized units
    flow_steps: Count = 0  # inverse autoregressive flow steps on the Gaussian posterior; 0: the plain posterior
    flow_hidden_dims: SomeWidths = (32,)  # hidden widths of each step's MADE network


@config_class
class ObjectiveConfig:
    """The training objective: the beta-ELBO (with optional linear KL warm-up), the IWAE bound with k samples,
    or an adversarial autoencoder (reconstruction + a discriminator matching the aggregate posterior to N(0, I))."""

    kind: Annotated[str, OneOf("vae.objectives.OBJECTIVES")] = "elbo"
    beta: NonNegative = 1.0
    kl_warmup_steps: Count = 0
    iwae_samples: PositiveInt = 1
    analytic_kl: Flag = True  # ELBO only: closed-form KL instead of the one-sample Monte Carlo estimate
    adversarial_weight: NonNegative = 1.0  # AAE only: weight of the generator's adversarial loss
    discriminator_lr: Positive = 1e-3  # AAE only: Adam learning rate of the discriminator
    discriminator_hidden_dims: Widths = (64, 64)  # AAE only


@config_class
class TrainConfig:
    """The optimisation loop, independent of where it runs."""

    AUTO_FIELDS: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr")  # may be AUTO

    epochs: PositiveInt | Auto = 50
    batch_size: PositiveInt | Auto = 256
    lr: Positive | Auto = 1e-3
    weight_decay: NonNegative = 0.0
    grad_clip: Positive | None = 5.0
    patience: PositiveInt | None = 10  # epochs without improvement of the validation loss; None disables
    min_delta: NonNegative = 0.0
    mixed_precision: Flag = True  # bf16 autocast, used only on CUDA
    seed: Count = 0


@config_class
class ScoreConfig:
    """How rows are scored: negative ELBO, importance-sampled NLL or reconstruction error."""

    AUTO_FIELDS: ClassVar[tuple[str, ...]] = ("kind", "samples")  # may be AUTO

    kind: Annotated[str, OneOf("vae.scoring.SCORES")] | Auto = "negative_elbo"
    samples: PositiveInt | Auto = 16  # posterior samples per row: ELBO averaging, or k for the importance-sampled NLL
    contamination: Fraction | None = 0.05  # expected anomaly share, sets the threshold quantile
    quantile: Fraction | None = None  # alternatively the threshold as a quantile of validation scores

    @model_validator(mode="after")
    def _one_threshold_rule(self) -> ScoreConfig:
        require(
            (self.contamination is None) != (self.quantile is None),
            self,
            "contamination",
            "set exactly one of contamination and quantile",
        )
        return self


def check_variant(model: ModelConfig, objective: ObjectiveConfig, score: ScoreConfig | None = None) -> None:
    """Reject combinations of model, objective and score that do not make sense together (ConfigError).

    A flow posterior has no closed-form KL: its ELBO needs `analytic_kl=False` (the Monte Carlo estimate).
    An adversarial autoencoder has no KL-trained posterior: no flows, and it scores by reconstruction only.
    """
    if model.flow_steps and objective.kind == "elbo" and objective.analytic_kl:
        raise field_error(
            ObjectiveConfig,
            "analytic_kl",
            f"a flow posterior (model.flow_steps={model.flow_steps}) has no closed-form KL; set "
            f"objective.analytic_kl=false (the Monte Carlo estimate)",
        )
    if objective.kind != "aae":
        return
    if model.flow_steps:
        raise field_error(
            ModelConfig,
            "flow_steps",
            "an adversarial autoencoder (objective.kind=aae) matches the aggregate posterior with its discriminator, "
            "not a KL-trained flow posterior; set model.flow_steps=0",
        )
    if score is not None:
        check_score_kind(objective, score.kind)


def check_score_kind(objective: ObjectiveConfig, kind: str) -> None:
    """An AAE's encoder is not a KL-trained posterior, so -ELBO and importance-sampled NLL mean nothing for it."""
    if objective.kind == "aae" and kind != "reconstruction":
        raise field_error(
            ScoreConfig,
            "kind",
            f"an adversarial autoencoder (objective.kind=aae) has no KL-trained posterior, so {kind!r} is not a "
            f"likelihood bound; score it with 'reconstruction'",
        )
