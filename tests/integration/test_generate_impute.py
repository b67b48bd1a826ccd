"""`vae-anomaly generate` and `vae-anomaly impute` run as real commands against a registered model on a real
MLflow server: the Parquet files they write, and one line with a non-zero exit on bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.sample_data.datasets import THYROID_COLUMNS
from pipelines.settings.yaml_configs import CONFIG_DIR
from tests.integration.conftest import run_command


def _run(command: str, *overrides: str) -> subprocess.CompletedProcess:
    config = CONFIG_DIR / f"{command}.yaml"
    return subprocess.run([sys.executable, "-m", "pipelines", command, "--config", str(config), *overrides],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.timeout(300)
def test_generate_and_impute_write_parquet_in_the_training_columns(mlflow_server, scoring_model, thyroid_dir, tmp_path):
    tracking = f"tracking.tracking_uri={mlflow_server}"
    generated = tmp_path / "generated.parquet"
    done = _run("generate", f"model={scoring_model}", "n=300", "seed=1", f"output={generated}", tracking)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(generated)
    assert table.num_rows == 300 and table.column_names == list(THYROID_COLUMNS)
    assert all(str(t) == "double" for t in table.schema.types)
    assert table.schema.metadata[b"vae.model"].startswith(b"thyroid-scorer/")
    rows = table.to_pandas()
    training = pd.read_parquet(thyroid_dir / "train")
    assert np.isfinite(rows.to_numpy()).all()
    assert (rows.mean() - training[list(THYROID_COLUMNS)].mean()).abs().max() < 0.5 * training.std().max()
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was renamed into place"

    # impute: 20 % of the held-out normal rows' values masked (NaN), plus a row with nothing observed
    truth = pd.read_parquet(thyroid_dir / "test.parquet").query("label == 0").reset_index(drop=True)
    holed = truth.copy()
    rng = np.random.default_rng(0)
    for column in THYROID_COLUMNS:
        holed.loc[rng.random(len(holed)) < 0.2, column] = np.nan
    holed.loc[0, list(THYROID_COLUMNS)] = np.nan
    holed.to_parquet(tmp_path / "holed.parquet", index=False)
    truth.to_parquet(tmp_path / "truth.parquet", index=False)
    output = tmp_path / "imputed.parquet"
    done = _run("impute", f"model={scoring_model}", f"input={tmp_path / 'holed.parquet'}", f"output={output}",
                f"truth={tmp_path / 'truth.parquet'}", "samples=4", "iterations=30", tracking)  # fmt: skip
    assert done.returncode == 0, done.stderr
    imputed = pd.read_parquet(output)
    assert list(imputed.columns) == list(holed.columns) and (imputed.dtypes == holed.dtypes).all()
    observed = holed[list(THYROID_COLUMNS)].notna()
    assert imputed[list(THYROID_COLUMNS)].notna().all().all()
    for column in holed.columns:  # observed values exactly as given, ids and labels untouched
        keep = observed[column] if column in THYROID_COLUMNS else slice(None)
        assert imputed.loc[keep, column].tolist() == holed.loc[keep, column].tolist(), column
    rmse = re.search(r"model (\d+\.\d+), mean imputation (\d+\.\d+)", done.stdout)
    assert rmse, done.stdout
    print(done.stdout.strip().splitlines()[-1])
    assert float(rmse[1]) < float(rmse[2])


@pytest.mark.timeout(300)
def test_bad_requests_exit_non_zero_with_one_line_and_write_nothing(mlflow_server, scoring_model, tmp_path, capsys):
    output = tmp_path / "out.parquet"
    cases = [
        ("generate", ["n=0"], 2, "vae-anomaly generate: config error: GenerateConfig.n: must be >= 1, got 0"),
        ("generate", [f"model={scoring_model}", "condition.region=north"], 2,
         "GenerateConfig.condition: the model is not conditional"),
        ("impute", ["model=thyroid-scorer@nightly", f"input={tmp_path}"], 1, "model thyroid-scorer@nightly not found"),
    ]  # fmt: skip
    for command, overrides, code, message in cases:
        done = run_command(capsys, command, "--config", str(CONFIG_DIR / f"{command}.yaml"), *overrides,
                           f"output={output}", f"tracking.tracking_uri={mlflow_server}")  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == code and len(lines) == 1 and message in lines[0], (command, done.stderr)
        assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*")), command
