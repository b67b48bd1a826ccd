"""Bad input to `vae-anomaly train`: one line on stderr naming the problem, a non-zero exit, nothing registered."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipelines.settings.yaml_configs import CONFIG_DIR
from tests.integration.conftest import CommandResult, run_command, train_overrides


@pytest.fixture
def frame(thyroid_dir) -> pd.DataFrame:
    return pd.read_parquet(thyroid_dir / "train")


def _train(capsys, tmp_path, mlflow_server, path, *extra) -> CommandResult:
    args = train_overrides(path, tmp_path, mlflow_server, "bad-input", epochs=1)
    return run_command(capsys, "train", "--config", str(CONFIG_DIR / "train.yaml"), *args, *extra)


def _write(tmp_path, frame: pd.DataFrame) -> str:
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


def _variants(frame: pd.DataFrame, tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not a parquet file")
    yield "missing path", str(tmp_path / "nowhere"), (), "does not exist"
    yield "missing column", _write(tmp_path, frame.drop(columns=["TSH"])), (), "missing column(s) ['TSH']"
    yield ("non-numeric feature", _write(tmp_path, frame.assign(TSH=frame.TSH.astype(str))), (),
           "numeric feature column(s) hold non-numeric values: {'TSH'")  # fmt: skip
    yield "empty dataset", _write(tmp_path, frame.iloc[:0]), (), ": no rows"
    yield "corrupt file", str(corrupt), (), "cannot read Parquet at"
    yield ("impossible config", str(tmp_path), ("model.latent_dim=0",),
           "config error: model.latent_dim: must be an integer >= 1 or 'auto', got 0")  # fmt: skip
    yield "unknown key", str(tmp_path), ("model.latent_size=4",), "config error: model: unknown key(s) ['latent_size']"
    yield "all-null column", _write(tmp_path, frame.assign(TSH=None)), (), "column(s) ['TSH'] hold only nulls"
    nan_values = pa.Table.from_pandas(frame, preserve_index=False).set_column(
        frame.columns.get_loc("TSH"), "TSH", pa.array(np.full(len(frame), np.nan), from_pandas=False)
    )  # real NaN values (pandas would write NaN as nulls)
    pq.write_table(nan_values, tmp_path / "nan.parquet")
    yield "all-NaN column", str(tmp_path / "nan.parquet"), (), "['TSH'] have no finite value"


@pytest.mark.timeout(300)
def test_each_bad_input_exits_non_zero_with_one_line_naming_the_problem(frame, tmp_path, mlflow_server, capsys):
    for case, path, extra, message in _variants(frame, tmp_path):
        done = _train(capsys, tmp_path, mlflow_server, path, *extra)
        last = done.last_error_line
        assert done.returncode != 0, case
        assert last.startswith("vae-anomaly train:") and message in last, (case, last)
    assert MlflowClient(mlflow_server).search_registered_models("name = 'bad-input'") == []


def test_the_real_command_names_a_missing_path_in_one_line_and_exits_1(tmp_path, mlflow_server):
    """The same check through a real `python -m pipelines train` process (its exit code, its stderr)."""
    args = train_overrides(tmp_path / "nowhere", tmp_path, mlflow_server, "bad-input", epochs=1)
    done = subprocess.run([sys.executable, "-m", "pipelines", "train", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    expected = f"vae-anomaly train: error: data path {tmp_path / 'nowhere'} does not exist"
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [expected], done.stderr
