"""Write the JSON Schema of each command's config, for editors: `vae-anomaly config-schema`.

One file per command, `pipelines/configs/schema/<command>.schema.json`, generated from the config classes
(pydantic): the keys, types, defaults and allowed values that `load_config` checks (the rules across fields are
checked on load only). A unit test regenerates them and compares.
Each YAML in `pipelines/configs/` names its schema on its first line,
`# yaml-language-server: $schema=schema/<command>.schema.json`, which gives completion, hover and checking in
editors that run the YAML language server (VS Code's YAML extension; Neovim or Helix with yaml-language-server).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import TypeAdapter

from pipelines.settings.model_jobs import EvaluateConfig, GenerateConfig, ImputeConfig, ScoreJobConfig, ServeConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, TrainPipelineConfig, TunePipelineConfig

COMMAND_CONFIGS = {
    "train": TrainPipelineConfig,
    "tune": TunePipelineConfig,
    "score": ScoreJobConfig,
    "evaluate": EvaluateConfig,
    "generate": GenerateConfig,
    "impute": ImputeConfig,
    "serve": ServeConfig,
}
SCHEMA_DIR = CONFIG_DIR / "schema"


def json_schema(command: str) -> str:
    """The JSON Schema (draft 2020-12, as pydantic writes it) of `command`'s config as the text of its file: sorted
    keys, a trailing newline."""
    return json.dumps(TypeAdapter(COMMAND_CONFIGS[command]).json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path(command: str, directory: Path = SCHEMA_DIR) -> Path:
    """Where `command`'s schema file is (the YAML files name it as `schema/<command>.schema.json`)."""
    return directory / f"{command}.schema.json"


def main(argv: list[str] | None = None) -> None:
    """Write every command's schema file (into `--output-dir`, default `pipelines/configs/schema/`)."""
    parser = argparse.ArgumentParser(prog="vae-anomaly config-schema", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=SCHEMA_DIR, help="where the schema files go")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for command in COMMAND_CONFIGS:
        path = schema_path(command, args.output_dir)
        path.write_text(json_schema(command))
        print(path)
