"""The `vae-anomaly` command (also `python -m pipelines`): one subcommand per pipeline.

Bad input (config, data, tracking) ends with one line on stderr naming the problem and a non-zero exit.
`--verbose` anywhere on the line (or LOG_LEVEL=DEBUG in the environment) brings Ray's own logs back.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from vae import ConfigError

T = TypeVar("T")

COMMANDS = {
    "train": "pipelines.commands.train",
    "tune": "pipelines.commands.tune",
    "score": "pipelines.commands.score",
    "scores": "pipelines.commands.scores",
    "evaluate": "pipelines.commands.evaluate",
    "serve": "pipelines.commands.serve",
    "generate": "pipelines.commands.generate",
    "impute": "pipelines.commands.impute",
    "prepare-data": "pipelines.commands.prepare_data",
    "demo": "pipelines.commands.demo",
    "config-schema": "pipelines.commands.config_schema",
}


def config_parser(command: str, doc: str, default_config: str, example: str) -> argparse.ArgumentParser:
    """The arguments every pipeline command takes: `--config FILE` (default `pipelines/configs/<default_config>`)
    and `key.sub=value` overrides; `doc`'s first line describes the command."""
    from .settings.yaml_configs import CONFIG_DIR

    parser = argparse.ArgumentParser(prog=f"vae-anomaly {command}", description=doc.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG_DIR / default_config), help="YAML config file")
    parser.add_argument("overrides", nargs="*", help=f"key.sub=value overrides, e.g. {example}")
    return parser


def run_config_command(
    command: str,
    doc: str,
    default_config: str,
    example: str,
    cls: type,
    argv: list[str] | None,
    run: Callable[[Any], T],
    report: Callable[[T], None],
    resumes: bool = False,
) -> T:
    """A command's `main`: parse `--config` and overrides, load them as `cls`, `run` the config, `report` the result.
    A command that `resumes` named runs also takes `--resume-changed` (the override `run.resume_changed=true`)."""
    from .settings.yaml_configs import load_config

    parser = config_parser(command, doc, default_config, example)
    if resumes:
        help_text = "an existing run of this name goes on with a changed config (run.resume_changed)"
        parser.add_argument("--resume-changed", action="store_true", help=help_text)
    args = parser.parse_args(argv)
    overrides = [*args.overrides, *(["run.resume_changed=true"] if getattr(args, "resume_changed", False) else [])]
    outcome = run(load_config(args.config, overrides, cls=cls))
    report(outcome)
    return outcome


USAGE = f"usage: vae-anomaly [--verbose] {{{','.join(COMMANDS)}}} [options]   (each command has --help)"
VERBOSE = "--verbose"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if VERBOSE in argv:
        from .tracking.scoped_env import environment_values

        with environment_values(LOG_LEVEL="DEBUG"):
            return main([arg for arg in argv if arg != VERBOSE])
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] not in COMMANDS:
        print(f"vae-anomaly: error: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    from .runtime.parquet_checks import DataError
    from .storage.filesystems import StorageError
    from .storage.scores_table import CatalogError, ConcurrentRunError
    from .tracking.runs import TrackingError
    from .tracking.scoped_env import bounded_tracking_retries, quiet_artifact_transfers, quiet_mlflow_info

    # for the command's run only; MLflow's INFO lines (a new SQLite store's "Creating initial MLflow database
    # tables...") are not the command's own
    with quiet_artifact_transfers(), bounded_tracking_retries(), quiet_mlflow_info():
        command = importlib.import_module(COMMANDS[argv[0]])
        try:
            command.main(argv[1:])
        except ConfigError as err:
            print(f"vae-anomaly {argv[0]}: config error: {err}", file=sys.stderr)
            return 2
        except (DataError, StorageError, TrackingError, CatalogError, ConcurrentRunError, FileNotFoundError,
                FileExistsError, NotADirectoryError, PermissionError) as err:  # fmt: skip
            print(f"vae-anomaly {argv[0]}: error: {err}", file=sys.stderr)
            return 1
    return 0
