"""The VAE variants, selected by config alone, train one epoch with Ray Train, log their objectives' parts to
MLflow, register, and score through the batch job: real local Ray, real `mlflow server`, real thyroid rows.

Budget: a Ray Train run plus a scoring job costs about 50 s on an idle 2-core machine, so two runs cover the
four variants: the AAE with 2 DDP workers (its discriminator must stay in step across ranks), and one
conditional VAE (CVAE) with an IAF posterior trained on the IWAE bound, which takes the flow's log-determinant
and the condition columns through the worker loop, the registry and the scoring actors. The flow's ELBO (Monte
Carlo KL) differs from that only inside `vae.objectives`, checked in tests/unit/test_flows.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.commands import score, train
from pipelines.settings.model_jobs import ScoreJobConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from pipelines.tracking.registry import load_registered_detector
from tests.integration.conftest import published_rows, train_overrides

COMMON = {"train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "replica_divergence"}
SCORED_ROWS = 200

VARIANTS = {
    # name: (overrides, workers, the variants' own metrics)
    "aae": (
        ["objective.kind=aae", "score.kind=reconstruction"], 2,
        {"train_adv_generator", "train_adv_discriminator", "val_adv_generator", "val_adv_discriminator"},
    ),
    "cvae-iaf-iwae": (
        ["data.numeric=[TSH,T3,TT4,T4U,FTI]", "data.condition_numeric=[age]", "model.flow_steps=2",
         "objective.kind=iwae", "objective.iwae_samples=4"], 1, {"train_log_det", "val_log_det"},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def small_train(thyroid_dir, tmp_path_factory):
    """A third of the thyroid training rows in one file: fewer Ray Data tasks per run."""
    directory = tmp_path_factory.mktemp("variant-train")
    pd.read_parquet(thyroid_dir / "train" / "part-0.parquet").to_parquet(directory / "rows.parquet")
    return directory


@pytest.fixture(scope="module")
def small_input(thyroid_dir, tmp_path_factory):
    """The first held-out thyroid rows (normal and anomalous), one small Parquet file."""
    directory = tmp_path_factory.mktemp("variant-input")
    pd.read_parquet(thyroid_dir / "test.parquet").iloc[:SCORED_ROWS].to_parquet(directory / "rows.parquet")
    return directory


@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_trains_one_epoch_with_ray_logs_its_parts_and_scores_through_the_job(
    variant, local_ray, mlflow_server, small_train, small_input, tmp_path
):
    overrides, workers, own_metrics = VARIANTS[variant]
    name = f"variant-{variant}"
    base = train_overrides(small_train, tmp_path, mlflow_server, name, epochs=1)
    config = load_config(CONFIG_DIR / "train.yaml", [*base, *overrides, f"scaling.num_workers={workers}"])
    outcome = train.run(config)

    run = MlflowClient(mlflow_server).get_run(outcome.run_id)
    metrics = run.data.metrics
    assert set(metrics) >= COMMON | own_metrics, sorted(COMMON | own_metrics - set(metrics))
    assert all(np.isfinite(metrics[m]) for m in COMMON | own_metrics)
    assert metrics["replica_divergence"] == 0.0  # AAE, 2 workers: DDP kept both replicas of both networks equal
    flow = variant != "aae"
    if flow:
        assert metrics["train_log_det"] < 0  # each step's gate sigmoid(s) < 1 contracts
    else:
        assert metrics["train_kl"] == 0 and 0 < metrics["train_adv_discriminator"] < 2

    detector = load_registered_detector(outcome.registered.model_uri, mlflow_server)
    assert detector.model.config.flow_steps == (2 if flow else 0)
    assert detector.objective.kind == config.objective.kind
    assert (detector.condition is not None) == flow

    job = load_config(
        CONFIG_DIR / "score.yaml",
        [f"input={small_input}", f"output={tmp_path / 'scores'}", f"model={name}@challenger", "run_date=2026-11-25",
         f"tracking.tracking_uri={mlflow_server}", "actors=1"],
        cls=ScoreJobConfig,
    )  # fmt: skip
    summary = score.run(job)
    scored = published_rows(tmp_path / "scores", "2026-11-25").sort_values("row_id")
    assert summary.rows_scored == len(scored) == SCORED_ROWS
    source = pd.read_parquet(small_input).set_index("row_id").loc[scored.row_id].reset_index()
    expected, _ = detector.score(source)
    np.testing.assert_allclose(scored.anomaly_score.to_numpy(), expected, rtol=1e-4, atol=1e-4)
    assert (scored.model_version == outcome.registered.version).all()
