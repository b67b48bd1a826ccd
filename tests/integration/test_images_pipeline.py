"""Image Parquet end to end: the digits CVAE config trains one epoch through Ray Train (2 workers) and the
registered model scores the held-out digits through the Ray Data job; unusable images are rejected in
training and quarantined in scoring with their reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipelines.commands import generate, score, train
from pipelines.runtime.parquet_checks import DataError
from pipelines.sample_data.datasets import write_digits_parquet
from pipelines.settings.model_jobs import GenerateConfig, ScoreJobConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from tests.integration.conftest import published_rows, train_overrides

CONFIG = CONFIG_DIR / "train-digits.yaml"


def _with_bad_images(rows: pd.DataFrame) -> pa.Table:
    """The rows plus two unusable images (63 values; a NaN pixel), as a variable-length list column."""
    bad = rows.iloc[:2].copy()
    bad["image_id"] = [900_001, 900_002]
    pixels = [np.asarray(p, dtype=np.float64) for p in rows["pixels"]]
    bad["pixels"] = [pixels[0][:63], np.where(np.arange(64) == 5, np.nan, pixels[1])]
    frame = pd.concat([rows.assign(pixels=pixels), bad], ignore_index=True)
    return pa.Table.from_pandas(frame, preserve_index=False)


@pytest.mark.timeout(600)
def test_digits_cvae_trains_one_epoch_logs_image_grids_and_scores_every_image(local_ray, mlflow_server, tmp_path):
    train_path, test_path = write_digits_parquet(tmp_path / "digits")
    base = [*train_overrides(train_path, tmp_path, mlflow_server, "digits-images", epochs=1),
            "scaling.num_workers=2", "scaling.cpus_per_worker=0.5"]  # fmt: skip

    bad_train = tmp_path / "bad-train.parquet"
    pq.write_table(_with_bad_images(pd.read_parquet(train_path)), bad_train)
    with pytest.raises(DataError, match=r"2 image\(s\) cannot be used for training; first image_id=900001: "
                                        r"pixels has 63 values, expected 64 values \(1x8x8\)"):  # fmt: skip
        train.run(load_config(CONFIG, [*base, f"data.path={bad_train}", "run.name=digits-rejected"]))

    outcome = train.run(load_config(CONFIG, base))
    client = MlflowClient(mlflow_server)
    plots = {a.path for a in client.list_artifacts(outcome.run_id, "plots")}
    assert {"plots/reconstructions.png", "plots/samples.png", "plots/loss_curves.png"} <= plots
    assert outcome.last_epoch == 1 and client.get_run(outcome.run_id).info.status == "FINISHED"

    to_score = tmp_path / "to-score"
    to_score.mkdir()
    test_rows = pd.read_parquet(test_path)
    pq.write_table(_with_bad_images(test_rows), to_score / "part-0.parquet")
    config = load_config(CONFIG_DIR / "score-digits.yaml", [
        f"input={to_score}", f"output={tmp_path / 'scores'}", "model=digits-images@challenger",
        "run_date=2026-11-24", f"tracking.tracking_uri={mlflow_server}", "actors=1",
    ], cls=ScoreJobConfig)  # fmt: skip
    summary = score.run(config)
    rows = published_rows(tmp_path / "scores", "2026-11-24")
    scored, quarantined = rows[rows.status == "scored"], rows[rows.status == "quarantined"]
    assert len(scored) == summary.rows_scored == len(test_rows) == 359
    assert sorted(scored["image_id"]) == sorted(test_rows["image_id"])  # one row per usable input image
    assert dict(zip(quarantined["image_id"], quarantined["quarantine_reason"], strict=True)) == {
        900_001: "pixels has 63 values, expected 64 values (1x8x8)",
        900_002: "pixels has NaN or infinite pixels",
    }
    assert scored["top_feature_1"].str.fullmatch(r"pixels\[0,\d,\d\]").all()

    generated = generate.run(load_config(CONFIG_DIR / "generate.yaml", [
        "model=digits-images@challenger", "n=12", "condition.digit=3", f"output={tmp_path / 'threes.parquet'}",
        f"tracking.tracking_uri={mlflow_server}",
    ], cls=GenerateConfig))  # fmt: skip
    threes = pd.read_parquet(generated.output)
    assert len(threes) == 12 and (threes["digit"] == 3).all()
    pixels = np.stack(threes["pixels"].to_numpy())  # (12, 64) on the training scale, 0..16
    assert pixels.shape == (12, 64) and pixels.min() >= 0 and pixels.max() <= 16
