"""Champion/challenger evaluation and the promotion gate (floor, baselines, champion with a bootstrap interval)
against a real `mlflow server`.

Models are trained in-process in seconds (the Ray Train path has its own tests): a good one on the normal
training rows, and a clearly worse one trained on the anomalies, which it then finds normal.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from pipelines.commands import evaluate
from pipelines.runtime.parquet_checks import DataError
from pipelines.sample_data.datasets import THYROID_COLUMNS
from pipelines.settings.model_jobs import EvaluateConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, TrackingSettings, load_config
from pipelines.tracking.runs import Tracker, TrackingError, input_signature, tracked_run
from vae import VAE, DataLayout, Detector, ModelConfig, ObjectiveConfig, Preprocessor, TrainConfig, fit

MODEL = "thyroid-gate"
EXPERIMENT = "evaluate-tests"


def _detector(rows: pd.DataFrame, epochs: int) -> Detector:
    """The same initial weights and batch order every time: models differ only by their rows and epochs."""
    torch.manual_seed(0)
    pre = Preprocessor(numeric=THYROID_COLUMNS).fit(rows)
    model = VAE(ModelConfig(latent_dim=4, hidden_dims=(32,)), DataLayout(pre.layout_blocks()))
    x = pre.transform(rows)
    fit(model, x[20:], x[:20], ObjectiveConfig(), TrainConfig(epochs=epochs, batch_size=64, lr=5e-3), log=None)
    detector = Detector(model, pre)
    detector.calibrate(detector.score(rows)[0])
    return detector


@pytest.fixture(scope="module")
def detectors(thyroid_dir) -> dict[str, Detector]:
    test = pd.read_parquet(thyroid_dir / "test.parquet")
    return {
        "good": _detector(pd.read_parquet(thyroid_dir / "train"), epochs=10),
        "worse": _detector(test[test.label == 1], epochs=30),  # learns the anomalies as normal
    }


def _register(tracking_uri: str, detector: Detector, purpose: str, model: str = MODEL) -> str:
    settings = TrackingSettings(tracking_uri=tracking_uri, experiment=EXPERIMENT, model_name=model)
    tracker = Tracker(settings)  # the alias is `challenger`, as the training pipeline sets it
    with tracked_run(tracker, purpose, {}, resume=False):
        return tracker.log_and_register(detector, input_signature(THYROID_COLUMNS, ()), {"purpose": purpose}).version


def _config(tracking_uri: str, thyroid_dir, *overrides: str) -> EvaluateConfig:
    return load_config(
        CONFIG_DIR / "evaluate.yaml",
        [f"input={thyroid_dir / 'test.parquet'}", f"train={thyroid_dir / 'train'}", f"model_name={MODEL}",
         "margin=0.01", f"tracking.tracking_uri={tracking_uri}", f"tracking.experiment={EXPERIMENT}", *overrides],
        cls=EvaluateConfig,
    )  # fmt: skip


def _assert_recorded(client: MlflowClient, outcome: evaluate.EvaluationOutcome, kind: str, champion: str | None):
    """The decision is on the run (tags, params, metrics, figure) and on the challenger's version tags, with every
    number the gate compared."""
    run = client.get_run(outcome.run_id)
    tags, params, logged = run.data.tags, run.data.params, run.data.metrics
    challenger = outcome.results["challenger"]
    assert tags["vae.promotion.decision"] == kind and tags["vae.promotion.applied"] == "True"
    assert f"{challenger['auroc']:.4f}" in tags["vae.promotion.reason"]
    assert params["challenger_version"] == outcome.challenger_version
    assert params["champion_version"] == (champion or "none") and params["margin"] == "0.01"
    assert params["metric"] == "auroc"
    for row, values in outcome.results.items():
        for name, value in values.items():
            assert logged[f"{row}_{name}"] == pytest.approx(value)
    assert ("champion_auroc" in logged) == (champion is not None)
    numbers = outcome.decision.numbers
    assert numbers["challenger"] == challenger["auroc"] and numbers["floor"] == float(params["floor"])
    for name, value in numbers.items():
        assert logged[f"gate_{name}"] == pytest.approx(value)
    assert "plots/roc_precision_recall.png" in [a.path for a in client.list_artifacts(outcome.run_id, "plots")]
    version_tags = client.get_model_version(MODEL, outcome.challenger_version).tags
    assert version_tags["vae.promotion.decision"] == kind
    assert version_tags["vae.promotion.reason"] == tags["vae.promotion.reason"]
    assert version_tags["vae.evaluation.run_id"] == outcome.run_id
    assert float(version_tags["vae.evaluation.auroc"]) == pytest.approx(challenger["auroc"], abs=1e-5)
    for name, value in numbers.items():
        assert float(version_tags[f"vae.promotion.{name}"]) == pytest.approx(value, abs=1e-5)


def _champion(client: MlflowClient, model: str = MODEL) -> str | None:
    return client.get_registered_model(model).aliases.get("champion")


@pytest.mark.timeout(300)
def test_the_gate_refuses_a_weak_first_model_promotes_a_clear_gain_and_keeps_the_champion_otherwise(
    mlflow_server, thyroid_dir, detectors
):
    client = MlflowClient(mlflow_server)
    test = pd.read_parquet(thyroid_dir / "test.parquet")

    first = _register(mlflow_server, detectors["worse"], "worse")
    refused = evaluate.run(_config(mlflow_server, thyroid_dir), promote=True)  # floor 0.5, both baselines
    assert refused.results["challenger"]["auroc"] < 0.2  # clearly worse than chance
    assert refused.decision.kind == "refused" and "below the floor 0.5" in refused.decision.reason
    assert refused.champion_version is None and _champion(client) is None
    assert {"isolation_forest_auroc", "pca_auroc"} <= set(client.get_run(refused.run_id).data.metrics)
    _assert_recorded(client, refused, "refused", champion=None)

    no_floor = _config(mlflow_server, thyroid_dir, "floor=0")
    beaten = evaluate.run(no_floor, promote=True)
    forest = beaten.results["isolation_forest"]["auroc"]
    assert beaten.decision.kind == "refused" and f"baseline(s) isolation_forest {forest:.4f}" in beaten.decision.reason
    assert _champion(client) is None

    chain = _config(mlflow_server, thyroid_dir, "floor=0", "baselines=false")  # the champion rules alone
    outcome = evaluate.run(chain, promote=True)
    assert outcome.decision.kind == "first_champion" and outcome.champion_version == first == _champion(client)
    _assert_recorded(client, outcome, "first_champion", champion=None)

    second = _register(mlflow_server, detectors["good"], "good")
    outcome = evaluate.run(chain, promote=True)
    assert outcome.decision.kind == "promoted" and outcome.champion_version == second == _champion(client)
    expected = roc_auc_score(test["label"], detectors["good"].score(test, seed=0)[0])  # seeded: same scores
    assert outcome.results["challenger"]["auroc"] == pytest.approx(expected) and expected > 0.9
    numbers = outcome.decision.numbers
    assert numbers["gain_low"] > 0.5 and numbers["gain_low"] <= numbers["gain"] <= numbers["gain_high"]
    _assert_recorded(client, outcome, "promoted", champion=first)

    third = _register(mlflow_server, detectors["worse"], "worse again")
    outcome = evaluate.run(chain, promote=True)
    assert outcome.decision.kind == "kept" and outcome.champion_version == second == _champion(client)
    assert outcome.results["champion"]["auroc"] == pytest.approx(expected)
    _assert_recorded(client, outcome, "kept", champion=second)

    dry = evaluate.run(_config(mlflow_server, thyroid_dir, "challenger=champion", "champion=incumbent",
                               "baselines=false"), promote=False)  # fmt: skip
    assert dry.decision.kind == "first_champion" and not dry.applied and dry.champion_version is None
    assert client.get_run(dry.run_id).data.tags["vae.promotion.reason"].startswith("dry run (no --promote)")
    assert "vae.promotion.decision" in client.get_model_version(MODEL, third).tags  # untouched by the dry run
    assert "incumbent" not in client.get_registered_model(MODEL).aliases


@pytest.mark.timeout(300)
def test_a_gain_inside_the_bootstrap_noise_keeps_the_champion_and_the_same_gain_on_more_rows_promotes(
    mlflow_server, thyroid_dir, detectors, tmp_path
):
    """The champion (`good`) against the same model trained one epoch longer, with no margin. On 260 labelled rows
    (10 anomalies) its AUROC gain of about +0.008 has a 95 % interval reaching below zero: kept. On all 1,933 held-out
    rows (93 anomalies) its gain of about +0.005 has an interval above zero: promoted."""
    client, model = MlflowClient(mlflow_server), f"{MODEL}-twins"
    test = pd.read_parquet(thyroid_dir / "test.parquet")
    small = tmp_path / "small.parquet"
    pd.concat([test[test.label == 1].iloc[:10], test[test.label == 0].iloc[:250]]).to_parquet(small, index=False)
    gate = [f"model_name={model}", "floor=0", "baselines=false", "margin=0"]
    champion = _register(mlflow_server, detectors["good"], "good", model)
    assert evaluate.run(_config(mlflow_server, thyroid_dir, *gate), promote=True).decision.kind == "first_champion"
    longer = _register(mlflow_server, _detector(pd.read_parquet(thyroid_dir / "train"), epochs=11), "longer", model)

    outcome = evaluate.run(_config(mlflow_server, thyroid_dir, *gate, f"input={small}"), promote=True)
    numbers = outcome.decision.numbers
    assert numbers["gain"] > 0 and numbers["gain_low"] < 0 < numbers["gain_high"]
    assert outcome.decision.kind == "kept" and "includes zero" in outcome.decision.reason
    assert _champion(client, model) == champion

    outcome = evaluate.run(_config(mlflow_server, thyroid_dir, *gate), promote=True)
    assert 0 < outcome.decision.numbers["gain_low"] < outcome.decision.numbers["gain"]
    assert outcome.decision.kind == "promoted" and _champion(client, model) == longer


def test_bad_labels_or_aliases_fail_before_any_run(mlflow_server, thyroid_dir, tmp_path):
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs_before = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    rows = pd.read_parquet(thyroid_dir / "test.parquet")
    three_classes, one_class = tmp_path / "three.parquet", tmp_path / "one.parquet"
    rows.assign(label=rows.label * 2 + (rows.index % 2 == 0)).to_parquet(three_classes)
    rows[rows.label == 0].to_parquet(one_class)
    cases = [
        (["label=is_bad"], DataError, "label column 'is_bad' not found"),
        ([f"input={three_classes}"], DataError, "must hold 0 (normal) or 1 (anomaly); found ['2', '3']"),
        ([f"input={one_class}"], DataError, "holds only 0"),
        (["challenger=nightly"], TrackingError, f"model {MODEL}@nightly not found"),
    ]
    for overrides, error, message in cases:
        with pytest.raises(error) as err:
            evaluate.run(_config(mlflow_server, thyroid_dir, *overrides), promote=True)
        assert message in str(err.value), overrides
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert (len(client.search_runs([experiment.experiment_id])) if experiment else 0) == runs_before


def test_cli_names_a_missing_label_column_in_one_line(mlflow_server, thyroid_dir):
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "evaluate", "--config", str(CONFIG_DIR / "evaluate.yaml"), "--promote",
         f"input={thyroid_dir / 'test.parquet'}", "label=is_anomaly", f"tracking.tracking_uri={mlflow_server}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vae-anomaly evaluate: error:")
    assert "label column 'is_anomaly' not found" in lines[0]
