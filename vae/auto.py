"""The label-free default: every hyperparameter chosen from the shape of the training data alone.

The rules (the README's "How the default is chosen" repeats them):
- width: two hidden layers of 128 units, GELU;
- latent size: half the number of features, at least 2 and at most 16;
- batch: 128 rows (all rows when fewer);
- budget: a fixed number of optimiser steps (3000), whatever the row count, so small tables get many epochs
  and large ones at least one; no early stopping (the validation loss only picks the best epoch's weights);
- learning rate: Adam at 1e-3;
- score: the negative ELBO averaged over 16 posterior samples.

`resolve` applies the same rules to configs whose fields are partly `"auto"` (as the pipeline's YAML writes them),
keeping every explicit value, for one process or for data-parallel workers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .config import DataLayout, ModelConfig, ObjectiveConfig, ScoreConfig, TrainConfig, auto_fields
from .config_base import AUTO

HIDDEN = (128, 128)
MAX_LATENT = 16
BATCH = 128
STEPS = 3000
LR = 1e-3
SCORE_SAMPLES = 16


@dataclass(frozen=True)
class Settings:
    """Everything `fit` needs besides the data."""

    model: ModelConfig
    objective: ObjectiveConfig
    train: TrainConfig
    score: ScoreConfig


def latent_size(n_features: int) -> int:
    """min(16, max(2, F // 2)) for F features (a categorical column is one feature)."""
    return min(MAX_LATENT, max(2, n_features // 2))


def epochs_for(rows: int, batch_size: int, steps: int = STEPS) -> int:
    """Epochs that give at least `steps` optimiser steps over `rows` training rows."""
    per_epoch = math.ceil(rows / batch_size)
    return max(1, math.ceil(steps / per_epoch))


def auto_settings(rows: int, layout: DataLayout, seed: int = 0, contamination: float = 0.05) -> Settings:
    """The default for `rows` training rows laid out as `layout`."""
    if rows < 1:
        raise ValueError(f"auto_settings: need at least one training row, got {rows}")
    batch = min(BATCH, rows)
    return Settings(
        model=ModelConfig(latent_dim=latent_size(layout.n_features), hidden_dims=HIDDEN, activation="gelu"),
        objective=ObjectiveConfig(),
        train=TrainConfig(epochs=epochs_for(rows, batch), batch_size=batch, lr=LR, patience=None, seed=seed),
        score=ScoreConfig(kind="negative_elbo", samples=SCORE_SAMPLES, contamination=contamination),
    )


def with_values(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """`settings` with each dotted field of `values` replaced ({"model.latent_dim": 2, "objective.beta": 0.1});
    an AUTO value keeps the settings' own; `score.quantile` given alone clears `score.contamination`, and the
    other way round. Raises ValueError for a section that `Settings` does not have."""
    sections = {f.name for f in dataclasses.fields(Settings)}
    values = dict(values)
    for rule, other in (("score.quantile", "score.contamination"), ("score.contamination", "score.quantile")):
        if values.get(rule) not in (None, AUTO) and other not in values:
            values[other] = None  # the threshold has one rule: setting one of the two clears the other
    changes: dict[str, dict[str, Any]] = {}  # section -> its fields, replaced together (checked as a whole)
    for key, value in values.items():
        section, _, name = key.partition(".")
        if section not in sections:
            raise ValueError(f"with_values: {key!r} is not in a section of {sorted(sections)}")
        if value != AUTO:
            changes.setdefault(section, {})[name] = value
    parts = {section: dataclasses.replace(getattr(settings, section), **fields) for section, fields in changes.items()}
    return dataclasses.replace(settings, **parts)


Config = TypeVar("Config", ModelConfig, TrainConfig, ScoreConfig)


def fill_auto(config: Config, chosen: Config) -> Config:
    """`config` with each of its AUTO fields taken from `chosen` (the same kind of config)."""
    return dataclasses.replace(config, **{name: getattr(chosen, name) for name in auto_fields(config)})


def resolve(
    model: ModelConfig, train: TrainConfig, score: ScoreConfig, rows: int, layout: DataLayout, workers: int = 1
) -> tuple[ModelConfig, TrainConfig, ScoreConfig]:
    """The three configs with every AUTO field chosen as `auto_settings(rows, layout)` chooses it; explicit
    values are kept. `rows`: training rows in all; `workers`: data-parallel workers, each taking `batch_size`
    rows per optimiser step (one step updates all replicas), so the global batch is `batch_size * workers`.

    An AUTO batch splits the default (global) batch over the workers, rounded up: ceil(default / workers).
    AUTO epochs give the default step budget at the global batch actually used (an explicit batch included):
    `epochs_for(rows, batch_size * workers)`. With one worker every AUTO field gets `auto_settings`' value; the
    fields that cannot be AUTO (patience, seed, contamination, ...) are always the configs' own.
    """
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"resolve: workers must be an integer >= 1, got {workers!r}")
    chosen = auto_settings(rows, layout)
    batch = math.ceil(chosen.train.batch_size / workers) if train.batch_size == AUTO else train.batch_size
    chosen_train = dataclasses.replace(chosen.train, batch_size=batch, epochs=epochs_for(rows, batch * workers))
    return fill_auto(model, chosen.model), fill_auto(train, chosen_train), fill_auto(score, chosen.score)
