"""Ray Train + MLflow end to end: real local Ray, real `mlflow server`, real Parquet, the bundled real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipelines.commands import train
from pipelines.runtime.parquet_input import declare_features
from pipelines.settings.yaml_configs import CONFIG_DIR, DataConfig, load_config
from pipelines.tracking.scoped_env import scoped_tracking_uri
from tests.integration.conftest import epoch_steps, train_overrides
from vae import ConfigError

CONFIG = CONFIG_DIR / "train.yaml"


def _run(overrides: list[str]) -> train.TrainOutcome:
    return train.run(load_config(CONFIG, overrides))


@pytest.mark.timeout(600)
def test_two_workers_train_log_once_register_and_score_in_a_fresh_process(
    local_ray, mlflow_server, thyroid_dir, tmp_path
):
    """train.yaml's "auto" hyperparameters (but epochs) and feature columns typed from the schema."""
    overrides = train_overrides(thyroid_dir / "train", tmp_path, mlflow_server, "two-workers", epochs=4)
    outcome = _run([*overrides, "data.numeric=[]"])
    client = MlflowClient(mlflow_server)
    assert epoch_steps(client, outcome.run_id) == [1, 2, 3, 4]  # rank 0 only: one value per epoch
    for metric in ("train_loss", "train_recon", "train_kl", "val_loss", "rows_per_s"):
        assert len(client.get_metric_history(outcome.run_id, metric)) == 4, metric
    # the two DDP shards split the training rows: each epoch, the rows seen summed over ranks, with the validation
    # rows, are every row but the at most one per split that Ray's equal split drops to give both ranks as many
    train_rows, val_rows = ({m.step: m.value for m in client.get_metric_history(outcome.run_id, f"{split}_rows")}
                            for split in ("train", "val"))  # fmt: skip
    rows = len(pd.read_parquet(thyroid_dir / "train"))
    assert sorted(train_rows) == [1, 2, 3, 4] and len(set(train_rows.values())) == 1
    assert all(train_rows[e] % 2 == 0 and 0 <= rows - train_rows[e] - val_rows[e] <= 2 for e in train_rows), (
        rows, train_rows, val_rows)  # fmt: skip
    run = client.get_run(outcome.run_id)
    params = run.data.params
    assert params["scaling.num_workers"] == "2" and run.info.status == "FINISHED"
    numeric = list(load_config(CONFIG).data.numeric)
    assert params["data.numeric"] == str(numeric) and params["data.binary"] == "[]"  # inferred: the 6 floats
    assert params["model.latent_dim"] == "3" and params["model.hidden_dims"] == "[128, 128]"  # F // 2, the default
    assert params["train.batch_size"] == "64" and params["train.epochs"] == "4"  # 128 over 2 workers; explicit
    assert params["train.lr"] == "0.001" and params["score.kind"] == "negative_elbo"
    assert params["chosen_from_data"].split(",") == [
        "model.latent_dim", "model.hidden_dims", "model.activation", "train.batch_size", "train.lr", "score.kind",
        "score.samples", "data.numeric", "data.binary", "data.categorical"]  # fmt: skip
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id, "plots")}
    assert artifacts == {"plots/loss_curves.png", "plots/validation_scores.png", "plots/latent_means.png"}
    version = client.get_model_version_by_alias("two-workers", "challenger")
    assert version.version == outcome.registered.version and version.run_id == outcome.run_id
    # portable: releases on a package index (no local "+cpu" label, no unpublished vae-anomaly), `vae` as code
    with scoped_tracking_uri(mlflow_server):
        logged = Path(mlflow.artifacts.download_artifacts("models:/two-workers@challenger", dst_path=str(tmp_path)))
    requirements = (logged / "requirements.txt").read_text().split()
    assert [r.split("==")[0] for r in requirements] == ["torch", "numpy", "pandas", "pydantic", "pillow", "mlflow"]
    assert not any("+" in r for r in requirements) and (logged / "code" / "vae" / "preprocessing.py").is_file()

    code = f"""
import json, sys, mlflow, pandas as pd
from pipelines.tracking.registry import load_registered_detector
rows = pd.read_parquet({str(thyroid_dir / "test.parquet")!r})
detector = load_registered_detector("models:/two-workers@challenger", {mlflow_server!r})
scores, contributions = detector.score(rows)
mlflow.set_tracking_uri({mlflow_server!r})
pyfunc = mlflow.pyfunc.load_model("models:/two-workers@challenger")
out = pyfunc.predict(rows[{numeric!r}])
print(json.dumps({{"n": len(scores), "threshold": detector.threshold, "flagged": int(out.is_anomaly.sum()),
  "numeric": list(detector.preprocessor.numeric), "latent": detector.model.config.latent_dim,
  "same": bool((abs(out.anomaly_score.to_numpy() - scores) < 1e-5).all()),
  "anomaly_median": float(pd.Series(scores)[rows.label.to_numpy() == 1].median()),
  "normal_median": float(pd.Series(scores)[rows.label.to_numpy() == 0].median())}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n"] == 1933 and result["same"]
    assert result["numeric"] == numeric and result["latent"] == 3  # the registered model holds what was chosen
    assert result["threshold"] == pytest.approx(outcome.threshold)
    assert result["anomaly_median"] > result["normal_median"]


@pytest.mark.timeout(600)
def test_the_same_run_name_resumes_instead_of_starting_over(local_ray, mlflow_server, thyroid_dir, tmp_path, capfd):
    base = train_overrides(thyroid_dir / "train", tmp_path, mlflow_server, "resume", epochs=2)
    first = _run(base)
    second = _run([*base, "train.epochs=4"])
    assert second.run_id == first.run_id and second.last_epoch == 4
    assert "resuming from the checkpoint of epoch 2" in capfd.readouterr().out
    assert epoch_steps(MlflowClient(mlflow_server), first.run_id) == [1, 2, 3, 4]  # epochs 1-2 not trained again

    # the same config again: the run is done, nothing is trained or registered (before Ray starts)
    again = _run([*base, "train.epochs=4"])
    assert "already trained and registered resume/" in capfd.readouterr().out
    assert (again.registered.version, again.run_id, again.last_epoch) == (second.registered.version, first.run_id, 4)
    assert again.threshold == pytest.approx(second.threshold)
    assert len(MlflowClient(mlflow_server).search_model_versions("name = 'resume'")) == 2
    # another config under the same name is refused with the fields that differ, another architecture always
    with pytest.raises(ConfigError, match=r"run 'resume' exists with another config \(train.lr 0.001 -> 0.01\); "
                                          r"use a new run.name, or --resume-changed"):  # fmt: skip
        _run([*base, "train.epochs=5", "train.lr=0.01"])
    with pytest.raises(ConfigError, match=r"model.latent_dim 3 -> 7.*another architecture"):
        _run([*base, "train.epochs=5", "model.latent_dim=7", "run.resume_changed=true"])


def test_integer_columns_are_typed_by_their_values(local_ray, tmp_path, capfd):
    rows = {"row_id": [1, 2, 3], "x": [0.5, 1.0, 2.0], "flag": pa.array([0, 1, None], pa.int8()), "count": [0, 1, 2],
            "ok": [True, False, True], "city": ["a", "b", "a"], "label": [0, 0, 1]}  # fmt: skip
    pq.write_table(pa.table(rows), tmp_path / "rows.parquet")
    typed = declare_features(DataConfig(path=str(tmp_path / "rows.parquet"), key=("row_id",), label="label"))
    assert (typed.numeric, typed.binary, typed.categorical) == (("x", "count"), ("flag", "ok"), ("city",))
    assert "2 numeric (x, count), 2 binary (flag, ok), 1 categorical (city)" in capfd.readouterr().out


def test_a_sweep_name_resumes_only_with_the_config_it_started_with(mlflow_server, thyroid_dir, tmp_path):
    """The check runs before Ray starts: a sweep's parent run (as a first start leaves it) against a changed grid."""
    from pipelines.commands import tune
    from pipelines.settings.yaml_configs import TunePipelineConfig
    from pipelines.tracking.runs import Tracker, flatten, tracked_run
    from vae import to_dict

    overrides = [f"data.path={thyroid_dir / 'train'}", f"run.storage_path={tmp_path / 'runs'}", "tune.name=sweep-x",
                 f"tracking.tracking_uri={mlflow_server}", "tracking.experiment=sweep-x"]  # fmt: skip
    config = load_config(CONFIG_DIR / "tune.yaml", overrides, cls=TunePipelineConfig)
    parent = Tracker(config.tracking)
    with tracked_run(parent, "sweep-x", flatten(to_dict(config))):
        pass
    assert tune._check_resume(config, parent, flatten(to_dict(config))) == (None, None)  # the same config resumes
    changed = load_config(CONFIG_DIR / "tune.yaml", [*overrides, "tune.space.objective.beta.grid=[0.5]"],
                          cls=TunePipelineConfig)  # fmt: skip
    refused = r"tune.name: run 'sweep-x' exists with another config \(tune.space.objective.beta.grid .* -> .*0.5.*\)"
    with pytest.raises(ConfigError, match=refused + "; use a new tune.name"):
        tune.run(changed)
