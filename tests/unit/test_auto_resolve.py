"""`vae.auto.resolve`: "auto" fields take the label-free default, explicit values stay; DDP batch and epochs;
unresolved configs are refused by the model, `fit` and scoring."""

import math

import numpy as np
import pytest

from vae import (
    VAE,
    ConfigError,
    DataLayout,
    Detector,
    FeatureBlock,
    ModelConfig,
    ObjectiveConfig,
    ScoreConfig,
    TrainConfig,
    fit,
)
from vae.auto import STEPS, auto_settings, epochs_for, resolve
from vae.config import auto_fields
from vae.config_base import AUTO

LAYOUT = DataLayout((FeatureBlock("gaussian", 6), FeatureBlock("categorical", 3, ("colour",))))  # F = 7
ALL_AUTO = (
    ModelConfig(latent_dim=AUTO, hidden_dims=AUTO, activation=AUTO),
    TrainConfig(epochs=AUTO, batch_size=AUTO, lr=AUTO, patience=None, seed=3),
    ScoreConfig(kind=AUTO, samples=AUTO),
)


@pytest.mark.parametrize("rows", [40, 1655, 100_000])
def test_every_auto_field_is_what_auto_settings_chooses(rows):
    model, train, score = resolve(*ALL_AUTO, rows=rows, layout=LAYOUT)
    default = auto_settings(rows, LAYOUT, seed=3)
    assert model == default.model
    assert train == default.train
    assert (score.kind, score.samples) == (default.score.kind, default.score.samples)
    assert not any(map(auto_fields, (model, train, score)))


def test_explicit_values_are_kept_and_only_auto_fields_are_chosen():
    model = ModelConfig(latent_dim=5, hidden_dims=AUTO, activation="tanh", flow_steps=2)
    train = TrainConfig(epochs=7, batch_size=AUTO, lr=0.01, patience=4, weight_decay=0.1)
    score = ScoreConfig(kind="nll", samples=AUTO, contamination=None, quantile=0.99)
    got_model, got_train, got_score = resolve(model, train, score, rows=1000, layout=LAYOUT)
    default = auto_settings(1000, LAYOUT)
    assert got_model == ModelConfig(latent_dim=5, hidden_dims=default.model.hidden_dims, activation="tanh",
                                    flow_steps=2)  # fmt: skip
    assert got_train == TrainConfig(epochs=7, batch_size=default.train.batch_size, lr=0.01, patience=4,
                                    weight_decay=0.1)  # fmt: skip
    assert got_score == ScoreConfig(kind="nll", samples=default.score.samples, contamination=None, quantile=0.99)
    explicit = (ModelConfig(), TrainConfig(), ScoreConfig())
    assert resolve(*explicit, rows=1000, layout=LAYOUT) == explicit


@pytest.mark.parametrize(("rows", "workers"), [(1655, 2), (1655, 3), (50_000, 4), (90, 2), (7, 4)])
def test_ddp_splits_the_global_batch_and_keeps_the_step_budget(rows, workers):
    _, train, _ = resolve(*ALL_AUTO, rows=rows, layout=LAYOUT, workers=workers)
    default = auto_settings(rows, LAYOUT).train
    assert train.batch_size == math.ceil(default.batch_size / workers)
    assert train.epochs == epochs_for(rows, train.batch_size * workers)
    if default.batch_size % workers == 0:  # the global batch is exactly the default's
        assert train.epochs == default.epochs
    per_epoch = math.ceil(rows / workers / train.batch_size)  # steps: each worker holds rows / workers rows
    assert STEPS <= train.epochs * per_epoch < STEPS + per_epoch


def test_auto_epochs_follow_an_explicit_per_worker_batch():
    train = TrainConfig(epochs=AUTO, batch_size=256)
    _, got, _ = resolve(ModelConfig(), train, ScoreConfig(), rows=200_000, layout=LAYOUT, workers=4)
    assert got.batch_size == 256 and got.epochs == epochs_for(200_000, 1024)
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        resolve(ModelConfig(), train, ScoreConfig(), rows=10, layout=LAYOUT, workers=0)


def test_unresolved_configs_are_refused_with_the_fields_named():
    with pytest.raises(ConfigError, match=r"^ModelConfig.latent_dim: still 'auto' \(and activation\); a VAE needs"):
        VAE(ModelConfig(latent_dim=AUTO, activation=AUTO), LAYOUT)
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), LAYOUT)
    x = np.zeros((4, LAYOUT.input_dim), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"^TrainConfig.epochs: still 'auto'; fit needs chosen values: resolve"):
        fit(model, x, x, ObjectiveConfig(), TrainConfig(epochs=AUTO), log=None)
    detector = Detector(model, preprocessor=None, score_config=ScoreConfig(samples=AUTO))
    with pytest.raises(ConfigError, match=r"^ScoreConfig.samples: still 'auto'; scoring needs chosen values"):
        detector.score_rows({})
