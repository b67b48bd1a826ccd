"""The pipeline's "auto" hyperparameters: named in the config, resolved for the training rows (per trial in a
sweep, where a swept value wins), logged to MLflow as the values used."""

import dataclasses

from pipelines.commands.train import chosen_from_data, chosen_params
from pipelines.commands.tune import trial_config
from pipelines.settings.yaml_configs import CONFIG_DIR, TunePipelineConfig, load_config
from vae import DataLayout, FeatureBlock
from vae.auto import auto_settings, epochs_for, resolve
from vae.config_base import AUTO

LAYOUT = DataLayout((FeatureBlock("gaussian", 6), FeatureBlock("categorical", 3, ("colour",))))  # F = 7


def test_the_pipeline_config_names_its_auto_fields_and_logs_them_once_resolved():
    config = load_config(CONFIG_DIR / "train.yaml")
    auto = ("model.latent_dim", "model.hidden_dims", "model.activation", "train.epochs", "train.batch_size",
            "train.lr", "score.kind", "score.samples")  # fmt: skip
    assert config.auto_fields == auto and chosen_from_data(config) == auto
    inferred = load_config(CONFIG_DIR / "train.yaml", ["data.numeric=[]", "model.latent_dim=3"])
    assert chosen_from_data(inferred) == (*auto[1:], "data.numeric", "data.binary", "data.categorical")
    model, train, score = resolve(config.model, config.train, config.score, 1655, LAYOUT, workers=2)
    resolved = dataclasses.replace(config, model=model, train=train, score=score)
    params = chosen_params(resolved, config.auto_fields)
    assert params["model.latent_dim"] == "3" and params["train.batch_size"] == "64"
    assert params["train.epochs"] == str(epochs_for(1655, 128)) and params["score.kind"] == "negative_elbo"
    assert params["chosen_from_data"] == ",".join(auto) and AUTO not in params.values()


@dataclasses.dataclass
class Prepared:
    """What `resolve_auto` reads of `pipelines.runtime.parquet_input.PreparedData`, without Ray."""

    train_rows: int
    layout: DataLayout


def test_a_swept_value_overrides_auto_and_auto_epochs_follow_the_trial_batch():
    config = load_config(CONFIG_DIR / "tune.yaml", ["train.epochs=auto"], cls=TunePipelineConfig)
    params = {"model.latent_dim": 8, "train.batch_size": 16, "objective.beta": 0.1}
    trial, chosen = trial_config(config, params, "sweep-t1", Prepared(1655, LAYOUT))
    assert trial.model.latent_dim == 8 and trial.train.batch_size == 16 and trial.objective.beta == 0.1
    assert trial.train.epochs == epochs_for(1655, 16 * config.scaling.num_workers)  # the trial's own global batch
    assert trial.model.hidden_dims == auto_settings(1655, LAYOUT).model.hidden_dims and trial.run.name == "sweep-t1"
    assert "model.latent_dim" not in chosen and "train.epochs" in chosen and "model.hidden_dims" in chosen
