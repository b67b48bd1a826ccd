"""Process-wide settings the pipelines need (Ray Data's progress output, logger levels, MLflow's environment
switches) hold for one block and are given back after it: a command leaves the process as it found it."""

import logging
import os
import subprocess
import sys

import pandas as pd
import pytest
import ray.data
from ray.data.context import ShuffleStrategy

from pipelines.cli import main
from pipelines.runtime.cluster import logger_levels, ray_data_context
from pipelines.settings.yaml_configs import CONFIG_DIR
from pipelines.tracking.scoped_env import environment_defaults, quiet_artifact_transfers, whole_file_downloads


def test_ray_data_is_quiet_reads_parquet_with_v1_and_aggregates_without_actors_inside_the_block_only(monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    before = (context.enable_progress_bars, context.print_on_execution_start, context.use_datasource_v2,
              context.shuffle_strategy, logger.level)  # fmt: skip
    assert context.use_datasource_v2 and context.shuffle_strategy == ShuffleStrategy.SHUFFLE_V2  # Ray's defaults
    with ray_data_context():
        assert not context.enable_progress_bars and not context.print_on_execution_start
        assert not context.use_datasource_v2 and logger.level == logging.WARNING
        assert context.shuffle_strategy == ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    assert (context.enable_progress_bars, context.print_on_execution_start, context.use_datasource_v2,
            context.shuffle_strategy, logger.level) == before  # fmt: skip


def test_verbose_leaves_ray_datas_output_as_ray_has_it(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "debug")
    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    before = context.enable_progress_bars, context.print_on_execution_start, logger.level
    with ray_data_context():
        assert (context.enable_progress_bars, context.print_on_execution_start, logger.level) == before
        assert not context.use_datasource_v2


def test_verbose_on_the_command_line_sets_log_level_for_that_command_only(monkeypatch, tmp_path):
    import pipelines.cli

    seen = []
    command = type("FakeCommand", (), {"main": staticmethod(lambda argv: seen.append((argv, os.environ["LOG_LEVEL"])))})
    monkeypatch.setitem(sys.modules, "fake_command", command)
    monkeypatch.setitem(pipelines.cli.COMMANDS, "fake", "fake_command")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    assert main(["fake", "--verbose", "a.b=1"]) == 0 and main(["--verbose", "fake"]) == 0
    assert seen == [(["a.b=1"], "DEBUG"), ([], "DEBUG")] and os.environ["LOG_LEVEL"] == "WARNING"
    monkeypatch.delenv("LOG_LEVEL")
    assert main(["fake", "--verbose"]) == 0 and "LOG_LEVEL" not in os.environ


def test_logger_levels_come_back_even_when_the_block_raises():
    root, train = logging.getLogger(), logging.getLogger("ray.train")
    before = root.level, train.level
    with pytest.raises(RuntimeError), logger_levels(logging.ERROR, None, "ray.train"):
        assert root.level == train.level == logging.ERROR
        raise RuntimeError
    assert (root.level, train.level) == before


@pytest.mark.parametrize("scope", [quiet_artifact_transfers, whole_file_downloads])
def test_mlflow_switches_are_set_for_the_block_and_removed_after(monkeypatch, scope):
    for name in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    with scope():
        assert set(os.environ) - set(before) and all(os.environ[k] == "false" for k in set(os.environ) - set(before))
    assert dict(os.environ) == before


def test_a_users_own_setting_wins_and_stays(monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    monkeypatch.delenv("VAE_TEST_UNSET", raising=False)
    with environment_defaults(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", VAE_TEST_UNSET="1"):
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true" and os.environ["VAE_TEST_UNSET"] == "1"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true" and "VAE_TEST_UNSET" not in os.environ


def test_a_command_leaves_the_environment_as_it_found_it(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    before = dict(os.environ)
    assert main(["prepare-data", "--output", str(tmp_path)]) == 0
    assert (tmp_path / "train.parquet").is_file() and dict(os.environ) == before


def test_a_bad_input_on_a_new_sqlite_store_prints_its_one_line_and_none_of_mlflows(tmp_path):
    """A new SQLite store makes MLflow log "Creating initial MLflow database tables..." at INFO: not the
    command's line, so a first run that fails shows only its own (a fresh process: MLflow sets its loggers up
    when first imported)."""
    rows = tmp_path / "rows.parquet"
    pd.DataFrame({"age": [0.5, 0.6]}).to_parquet(rows)
    args = ["score", "--config", str(CONFIG_DIR / "score.yaml"), f"input={rows}", f"output={tmp_path / 'out'}",
            "model=nosuch@champion", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"vae-anomaly score: error: model nosuch@champion not found in sqlite:///{tmp_path / 'mlflow.db'}: "
        "Registered Model with name=nosuch not found"
    ]
