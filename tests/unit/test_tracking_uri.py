"""Pointing MLflow at a store for one block leaves the process's tracking URI as it found it: the scoring job
loads the model (a scoped URI) before it opens its own run, which must land in the configured store."""

import pytest

from pipelines.settings.yaml_configs import TrackingSettings
from pipelines.tracking.runs import LOCAL_STORE, resolve_tracking_uri
from pipelines.tracking.scoped_env import scoped_tracking_uri


@pytest.mark.parametrize("exported", [None, "http://127.0.0.1:5999"])
def test_a_scoped_uri_restores_the_environment_it_found(monkeypatch, tmp_path, exported):
    if exported is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", exported)
    before = resolve_tracking_uri(TrackingSettings())
    with scoped_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}"):
        pass
    assert resolve_tracking_uri(TrackingSettings()) == before
    assert before == (exported or f"sqlite:///{LOCAL_STORE / 'mlflow.db'}")
