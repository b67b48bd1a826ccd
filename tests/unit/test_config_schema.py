"""The JSON Schemas written for editors: current, named by every YAML in the repo, agreeing with the configs."""

import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from pipelines.commands.config_schema import COMMAND_CONFIGS, SCHEMA_DIR, json_schema, schema_path
from pipelines.settings.dotted_yaml import apply_overrides
from pipelines.settings.yaml_configs import CONFIG_DIR, PROJECT_DIR, load_config
from vae import ConfigError
from vae.config_base import from_dict

YAML_FILES = sorted(CONFIG_DIR.glob("*.yaml"))
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<path>schema/(?P<command>[\w-]+)\.schema\.json)$")


def validator(command: str) -> Draft202012Validator:
    schema = json.loads(schema_path(command).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.mark.parametrize("command", COMMAND_CONFIGS)
def test_the_written_schemas_are_current(command: str):
    assert schema_path(command).read_text() == json_schema(command), "rerun `python -m pipelines config-schema`"


def test_there_is_one_schema_file_per_command():
    assert sorted(SCHEMA_DIR.iterdir()) == sorted(schema_path(c) for c in COMMAND_CONFIGS)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_every_yaml_names_its_schema_and_validates_against_it_and_its_config_class(path: Path):
    first, second, *_ = path.read_text().splitlines()
    named = MODELINE.match(first)
    assert named, f"the first line names the schema: {first!r}"
    assert second.startswith("# "), "the next line is the command that runs the config"
    assert (path.parent / named["path"]) == schema_path(named["command"])
    cls = COMMAND_CONFIGS[named["command"]]
    assert isinstance(load_config(path, cls=cls), cls)
    validator(named["command"]).validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    ("command", "override"),
    [
        ("train", "model.latent_size=4"),
        ("train", "model.latent_dim=0"),
        ("train", "train.lr=fast"),
        ("train", "model.activation=mish"),
        ("train", "data.image={column: pixels, shape: [8, 8]}"),
        ("train", "run.name=a/b"),
        ("tune", "tune.search=random"),
        ("tune", "tune.space.data={path: {grid: [a]}}"),
        ("score", "actors=0"),
        ("evaluate", "metric=f1"),
        ("generate", "mode=median"),
        ("impute", "output=imputed.csv"),
    ],
)
def test_the_schema_rejects_what_the_config_rejects(command: str, override: str):
    data = apply_overrides(yaml.safe_load((CONFIG_DIR / f"{command}.yaml").read_text()), [override])
    with pytest.raises(ConfigError):
        from_dict(COMMAND_CONFIGS[command], data)
    assert not validator(command).is_valid(data)
