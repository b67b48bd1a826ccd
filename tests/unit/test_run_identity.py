"""When a re-run of a `run.name` is the same run: config changes against the run's MLflow params and tags."""

import json

import pytest

from pipelines.tracking.run_identity import (
    CHANGES_TAG,
    CHOSEN_PARAM,
    allowed_changes,
    config_changes,
    config_hash,
    describe,
)
from vae import ConfigError

FIRST = {"train.lr": "0.001", "train.epochs": "10", "model.latent_dim": "3", "model.hidden_dims": "(128, 128)",
         "run.local_cpus": "4", "tracking.experiment": "a", CHOSEN_PARAM: "model.latent_dim"}  # fmt: skip
NOW = {"train.lr": "0.001", "train.epochs": "10", "model.hidden_dims": "(128, 128)", "run.local_cpus": "4",
       "tracking.experiment": "a"}  # fmt: skip


def test_the_same_config_has_no_changes_whatever_the_epochs_and_runtime_fields():
    assert config_changes(FIRST, {}, NOW) == {}
    later = {**NOW, "train.epochs": "40", "run.local_cpus": "8", "tracking.experiment": "b", "run.max_failures": "5"}
    assert config_changes(FIRST, {}, later) == {}


def test_a_changed_field_is_named_with_both_values():
    changes = config_changes(FIRST, {}, {**NOW, "train.lr": "0.01"})
    assert changes == {"train.lr": ("0.001", "0.01")} and describe(changes) == "train.lr 0.001 -> 0.01"


def test_a_field_the_data_chose_compares_by_the_chosen_value_once_set():
    assert config_changes(FIRST, {}, {**NOW, "model.latent_dim": "3"}) == {}  # auto chose 3; 3 given now
    assert config_changes(FIRST, {}, {**NOW, "model.latent_dim": "8"}) == {"model.latent_dim": ("3", "8")}


def test_an_explicit_field_made_auto_or_dropped_is_a_change():
    now = {k: v for k, v in NOW.items() if k != "train.lr"}
    assert config_changes(FIRST, {}, now) == {"train.lr": ("0.001", "auto")}
    assert config_changes(FIRST, {}, {**NOW, "objective.beta": "2.0"}) == {"objective.beta": ("(unset)", "2.0")}


def test_values_a_changed_resume_brought_in_become_the_reference():
    tags = {CHANGES_TAG: json.dumps({"train.lr": "0.01"})}
    assert config_changes(FIRST, tags, {**NOW, "train.lr": "0.01"}) == {}
    assert config_changes(FIRST, tags, NOW) == {"train.lr": ("0.01", "0.001")}


def test_the_config_hash_counts_what_is_trained_not_where():
    assert config_hash(NOW) == config_hash({**NOW, "run.local_cpus": "2", "tracking.experiment": "z"})
    assert config_hash(NOW) != config_hash({**NOW, "train.epochs": "11"})
    assert config_hash(NOW) != config_hash({**NOW, "train.lr": "0.01"})


def test_a_changed_resume_is_allowed_only_when_asked_and_recorded_over_earlier_ones():
    assert allowed_changes(FIRST, {}, NOW, "run.name", "r", resume_changed=False) is None
    refused = r"run.name: run 'r' exists with another config \(train.lr 0.001 -> 0.01\); use a new run.name"
    with pytest.raises(ConfigError, match=refused):
        allowed_changes(FIRST, {}, {**NOW, "train.lr": "0.01"}, "run.name", "r", resume_changed=False)
    with pytest.raises(ConfigError, match="another architecture"):
        allowed_changes(FIRST, {}, {**NOW, "model.latent_dim": "8"}, "run.name", "r", resume_changed=True)
    tags = {CHANGES_TAG: json.dumps({"train.lr": "0.01"})}  # an earlier changed resume
    now = {**NOW, "train.lr": "0.01", "train.batch_size": "64"}
    changed = allowed_changes(FIRST, tags, now, "run.name", "r", resume_changed=True)
    assert changed.changes == {"train.batch_size": ("(unset)", "64")}
    assert json.loads(changed.tags[CHANGES_TAG]) == {"train.lr": "0.01", "train.batch_size": "64"}
    assert config_changes(FIRST, changed.tags, now) == {}  # the next run with this config resumes as it is
