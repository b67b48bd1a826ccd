"""The sweep config: search-space parsing, every swept value validated up front, Tune domains, no Ray started."""

import subprocess
import sys

import pytest
from ray import tune

from pipelines.settings.search_space import Axis, grid_size, parse_space
from pipelines.settings.yaml_configs import CONFIG_DIR, TunePipelineConfig, load_config
from vae import ConfigError


def test_space_parses_each_kind():
    axes = parse_space({
        "objective": {"beta": {"grid": [0.1, 1.0, 10.0]}},
        "model": {"latent_dim": {"choice": [2, 4]}, "hidden_dims": {"choice": [[32, 32], [64]]}},
        "train": {"lr": {"loguniform": [1e-4, 1e-2]}, "batch_size": {"randint": [32, 65]}},
        "score": {"samples": {"grid": [8, 16]}},
    })  # fmt: skip
    by_name = {a.name: a for a in axes}
    assert by_name["objective.beta"] == Axis("objective.beta", "grid", (0.1, 1.0, 10.0))
    assert by_name["model.hidden_dims"].values == ((32, 32), (64,))
    assert by_name["train.batch_size"].candidates() == (32, 64)  # randint's high is exclusive
    assert grid_size(axes) == 6


@pytest.mark.parametrize(
    "space, message",
    [
        ({}, "tune.space: declare at least one axis"),
        ({"data": {"path": {"choice": ["a"]}}}, "tune.space.data: only the sections"),
        ({"objective": {"beta": [1, 2]}}, "tune.space.objective.beta: expected one of"),
        ({"objective": {"beta": {"normal": [0, 1]}}}, "tune.space.objective.beta: expected one of"),
        ({"objective": {"beta": {"grid": []}}}, "tune.space.objective.beta: grid needs a non-empty list"),
        ({"train": {"lr": {"uniform": [0.1]}}}, "tune.space.train.lr: uniform needs [low, high]"),
        ({"train": {"lr": {"uniform": [0.1, 0.01]}}}, "tune.space.train.lr: uniform needs low < high"),
        ({"train": {"lr": {"loguniform": [0, 0.1]}}}, "tune.space.train.lr: loguniform needs low > 0"),
        ({"train": {"epochs": {"randint": [1.5, 3]}}}, "tune.space.train.epochs: randint needs [low, high] as two"),
    ],
)  # fmt: skip
def test_space_errors_name_the_key(space, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_space(space)


def _config(*overrides: str) -> TunePipelineConfig:
    return load_config(CONFIG_DIR / "tune.yaml", list(overrides), cls=TunePipelineConfig)


def test_every_swept_value_must_make_a_valid_training_config():
    with pytest.raises(ConfigError) as err:
        _config("tune.space.model.latent_dim.grid=[2,0]")
    assert str(err.value) == "tune.space.model.latent_dim: value 0 is invalid: must be an integer >= 1 or 'auto'"
    with pytest.raises(ConfigError, match=r"tune.space.objective.kind: value 'vae' is invalid"):
        _config("tune.space.objective.kind.grid=[elbo,vae]")
    with pytest.raises(ConfigError, match=r"tune.space.objective.beta: grid axes need tune.search=grid"):
        _config("tune.search=optuna")
    with pytest.raises(ConfigError, match=r"^tune\.metric: must be one of"):
        _config("tune.metric=accuracy")


def test_trial_config_sweeps_values_into_the_training_config():
    config = _config()
    trial = config.trial_config({"objective.beta": 0.5, "model.hidden_dims": (32, 16)}, run_name="sweep-t1")
    assert trial.objective.beta == 0.5 and trial.model.hidden_dims == (32, 16) and trial.run.name == "sweep-t1"
    assert trial.data == config.data and not hasattr(trial, "tune")


def test_axes_become_tune_domains():
    from pipelines.commands.tune import search_space

    space = search_space(parse_space({"objective": {"beta": {"grid": [1.0, 2.0]}},
                                      "train": {"lr": {"loguniform": [1e-4, 1e-2]}},
                                      "model": {"latent_dim": {"randint": [2, 9]}}}))  # fmt: skip
    assert space["objective.beta"] == tune.grid_search([1.0, 2.0])
    assert isinstance(space["train.lr"], tune.search.sample.Float) and space["train.lr"].lower == 1e-4
    assert isinstance(space["model.latent_dim"], tune.search.sample.Integer) and space["model.latent_dim"].upper == 9


def test_invalid_space_fails_before_ray_starts():
    code = (
        "import ray, sys; from pipelines.cli import main; "
        "rc = main(['tune', 'tune.space.train.lr.loguniform=[0,0.1]']); "
        "assert not ray.is_initialized(); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("vae-anomaly tune: config error: tune.space.train.lr:")


def test_a_range_of_numbers_yaml_reads_as_text_is_read_as_the_config_reads_them():
    """YAML 1.1 reads 1e-4 as a string: the README's own `loguniform: [1e-4, 1e-2]` was refused."""
    space = load_config(CONFIG_DIR / "tune.yaml", ["tune.space={train: {lr: {loguniform: [1e-4, 1e-2]}}}"],
                        cls=TunePipelineConfig).tune.space  # fmt: skip
    assert parse_space(space) == (Axis("train.lr", "loguniform", (1e-4, 1e-2)),)
    with pytest.raises(ConfigError, match=r"loguniform needs \[low, high\] as two numbers, got \['low', 0.01\]"):
        parse_space({"train": {"lr": {"loguniform": ["low", 1e-2]}}})


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{train: {epochs: {uniform: [5, 10]}}}", "tune.space.train.epochs: value 7.5 is invalid: must be an integer"),
        ("{model: {latent_dim: {loguniform: [2, 18]}}}", "tune.space.model.latent_dim: value 6.0 is invalid"),
        ("{objective: {kind: {grid: [iwae, elbo]}}, model: {flow_steps: {grid: [0, 2]}}}",
         "tune.space: the trial objective.kind='elbo', model.flow_steps=2 is invalid: objective.analytic_kl: a flow"),
    ],
)  # fmt: skip
def test_draws_of_a_range_and_values_crossed_with_other_axes_are_validated_before_ray(space, message):
    """Each axis alone against the config was checked (an IWAE base takes a flow, an ELBO without one is fine),
    and a range only at its ends: these trials failed inside Tune, after the data was prepared."""
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "tune.yaml", ["objective.kind=iwae", f"tune.space={space}"], cls=TunePipelineConfig)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("space", ["{train: {epochs: {grid: [10, 40]}}}", "{train: {batch_size: {grid: [32, 64]}}}"])
def test_asha_is_refused_for_a_sweep_that_sets_a_trials_epochs(space):
    """ASHA's max_t is the base config's epochs: a 40-epoch trial was stopped at 10 and tagged completed (a swept
    batch with auto epochs gives each trial other epochs too)."""
    with pytest.raises(ConfigError, match=r"^tune.asha: ASHA stops every trial at the base config's epochs"):
        load_config(CONFIG_DIR / "tune.yaml", ["tune.asha.enabled=true", f"tune.space={space}"], cls=TunePipelineConfig)
    assert load_config(CONFIG_DIR / "tune-cluster.yaml", cls=TunePipelineConfig).tune.asha.enabled  # beta x latent
