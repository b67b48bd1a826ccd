"""The pipeline config system: every YAML in the repo loads; overrides and validation name the field."""

import re
from pathlib import Path

import pytest

from pipelines.settings.dotted_yaml import apply_overrides
from pipelines.settings.model_jobs import EvaluateConfig, GenerateConfig, ImputeConfig, ScoreJobConfig, ServeConfig
from pipelines.settings.yaml_configs import (
    CONFIG_DIR,
    PROJECT_DIR,
    TrainPipelineConfig,
    TunePipelineConfig,
    load_config,
)
from vae import ConfigError, from_dict

YAML_FILES = sorted(CONFIG_DIR.glob("*.yaml"))  # infra/ manifests are validated by their own schema tests


CONFIG_CLASSES = {"score.yaml": ScoreJobConfig, "score-digits.yaml": ScoreJobConfig, "evaluate.yaml": EvaluateConfig,
                  "tune.yaml": TunePipelineConfig, "tune-cluster.yaml": TunePipelineConfig,
                  "generate.yaml": GenerateConfig, "impute.yaml": ImputeConfig, "serve.yaml": ServeConfig}  # fmt: skip


def test_the_repo_has_configs():
    assert {p.name for p in YAML_FILES} >= {"train.yaml", "train-cluster.yaml", "train-digits.yaml", "score.yaml",
                                            "score-digits.yaml", "evaluate.yaml", "tune.yaml", "tune-cluster.yaml",
                                            "generate.yaml", "impute.yaml", "serve.yaml"}  # fmt: skip


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_every_yaml_file_loads_and_validates(path: Path):
    cls = CONFIG_CLASSES.get(path.name, TrainPipelineConfig)
    config = load_config(path, cls=cls)
    assert isinstance(config, cls)
    assert path.read_text().startswith("#"), "each config starts with the command that runs it"


def test_score_job_config_reads_dates_and_model_specs():
    config = load_config(CONFIG_DIR / "score.yaml", ["run_date=2026-11-24", "model=fraud-vae/7", "input=x.parquet"],
                         cls=ScoreJobConfig)  # fmt: skip
    assert config.date == "2026-11-24" and config.model_uri == "models:/fraud-vae/7"
    for override, message in [
        ("run_date=2026-02-30", "ScoreJobConfig.run_date"),
        ("model=nope", "NAME@ALIAS"),
        ("actors=0", "ScoreJobConfig.actors: must be >= 1, got 0"),
        ("max_actors=1", r"ScoreJobConfig.max_actors: must be at least actors \(2\), got 1"),
        ("kind=entropy", "ScoreJobConfig.kind"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(CONFIG_DIR / "score.yaml", [override], cls=ScoreJobConfig)


def test_evaluate_config_reads_the_thyroid_files_and_validates_the_gate():
    config = load_config(CONFIG_DIR / "evaluate.yaml", ["margin=0.02", "baselines=false", "train="],
                         cls=EvaluateConfig)  # fmt: skip
    assert config.input == "data/thyroid/test.parquet" and config.label == "label" and config.margin == 0.02
    assert config.tracking.experiment == "vae-anomaly-evaluation" and not config.baselines
    for override, message in [
        ("metric=f1", "EvaluateConfig.metric: must be one of ['auroc', 'average_precision']"),
        ("margin=-0.1", "EvaluateConfig.margin: must be >= 0, got -0.1"),
        ("champion=challenger", "EvaluateConfig.champion: must differ from the challenger alias"),
        ("train=", "EvaluateConfig.train: set the training rows"),
        ("label=", "EvaluateConfig.label"),
        ("pca_variance=1.0", "EvaluateConfig.pca_variance: must be in (0, 1), got 1.0"),
        ("baselines=maybe", "EvaluateConfig.baselines"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(CONFIG_DIR / "evaluate.yaml", [override], cls=EvaluateConfig)


def test_generate_and_impute_configs_take_conditions_and_validate():
    config = load_config(CONFIG_DIR / "generate.yaml", ["n=5", "condition.region=north", "condition.tier=2"],
                         cls=GenerateConfig)  # fmt: skip
    assert config.n == 5 and config.condition == {"region": "north", "tier": 2} and config.mode == "sample"
    impute = load_config(CONFIG_DIR / "impute.yaml", ["samples=3", "return_samples=true"], cls=ImputeConfig)
    assert impute.samples == 3 and impute.return_samples and impute.method == "metropolis" and impute.truth is None
    for cls, override, message in [
        (GenerateConfig, "n=0", "GenerateConfig.n: must be >= 1, got 0"),
        (GenerateConfig, "n=-5", "GenerateConfig.n: must be >= 1, got -5"),
        (GenerateConfig, "mode=median", "GenerateConfig.mode: must be one of ['mean', 'sample']"),
        (GenerateConfig, "model=thyroid", "GenerateConfig.model: must be NAME@ALIAS or NAME/VERSION"),
        (GenerateConfig, "output=out.csv", "GenerateConfig.output: must be a path ending in .parquet"),
        (GenerateConfig, "condition=north", "GenerateConfig.condition: must be a mapping"),
        (ImputeConfig, "output=s3://b/x.parquet", "ImputeConfig.output: the file is published by a rename"),
        (ImputeConfig, "samples=0", "ImputeConfig.samples: must be >= 1, got 0"),
        (ImputeConfig, "method=em", "ImputeConfig.method: must be one of ['metropolis', 'pseudo_gibbs']"),
        (ImputeConfig, "input=", "ImputeConfig.input"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(CONFIG_DIR / f"{'generate' if cls is GenerateConfig else 'impute'}.yaml", [override], cls=cls)


def test_an_output_that_is_a_directory_is_refused_before_the_work(tmp_path):
    (tmp_path / "rows.parquet").mkdir()  # the file is written last: a directory there failed after all the work
    for name, cls in (("generate", GenerateConfig), ("impute", ImputeConfig)):
        with pytest.raises(ConfigError, match=rf"{cls.__name__}.output: {tmp_path}/rows.parquet is a directory"):
            load_config(CONFIG_DIR / f"{name}.yaml", [f"output={tmp_path / 'rows.parquet'}"], cls=cls)
        assert load_config(CONFIG_DIR / f"{name}.yaml", [f"output={tmp_path / 'new.parquet'}"], cls=cls).output


def test_overrides_reach_nested_fields_with_yaml_values(tmp_path):
    config = load_config(
        PROJECT_DIR / "pipelines/configs/train.yaml",
        ["model.latent_dim=3", "model.hidden_dims=[8, 4]", "train.lr=1e-4", "train.patience=null",
         "scaling.use_gpu=true", "data.path=s3://bucket/rows/"],
    )  # fmt: skip
    assert config.model.latent_dim == 3 and config.model.hidden_dims == (8, 4)
    assert config.train.lr == pytest.approx(1e-4) and config.train.patience is None
    assert config.scaling.resources_per_worker() == {"CPU": 1.0, "GPU": 1.0}
    assert config.data.path == "s3://bucket/rows/"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.latent_dim=0", "model.latent_dim: must be an integer >= 1 or 'auto', got 0"),
        ("train.lr=fast", "train.lr: must be a number > 0 or 'auto', got 'fast'"),
        ("model.latent_dim=big", "model.latent_dim: must be an integer >= 1 or 'auto', got 'big'"),
        ("model.hidden_dims=wide", "model.hidden_dims: must be a list of integer widths >= 1 or 'auto', got 'wide'"),
        ("model.activation=mish", "model.activation: must be one of ['relu', 'gelu', 'silu', 'tanh'] or 'auto', got"),
        ("train.epochs=many", "train.epochs: must be an integer >= 1 or 'auto', got 'many'"),
        ("train.batch_size=0", "train.batch_size: must be an integer >= 1 or 'auto', got 0"),
        ("score.kind=entropy", "score.kind: must be one of ['negative_elbo', 'nll', 'reconstruction'] or 'auto', got"),
        ("score.samples=-1", "score.samples: must be an integer >= 1 or 'auto', got -1"),
        ("data.exclude=[row_id]", "data.columns: each column may have one role only; repeated: ['row_id']"),
        ("objective.beta=-1", "objective.beta: must be >= 0, got -1"),
        ("scaling.num_workers=0", "scaling.num_workers: must be >= 1, got 0"),
        ("data.validation_fraction=1.5", "data.validation_fraction: must be in (0, 1), got 1.5"),
        ("data.key=[age]", "data.columns: each column may have one role only; repeated: ['age']"),
        ("run.name=a/b", "run.name: must be a folder name (no '/' or '\\', not '.' or '..'), got 'a/b'"),
        ("run.name=..", "run.name: must be a folder name (no '/' or '\\', not '.' or '..'), got '..'"),
        ("model.network=conv", "model.network: 'conv' needs image rows (data.image)"),
        ("modle.latent_dim=3", "TrainPipelineConfig: unknown key(s) ['modle']"),
        ("data=3", "TrainPipelineConfig.data: must be a mapping, got 3"),  # a key at the top: named with the class
        ("train", "override 'train': expected key.sub=value"),
        ("run.storage_path=", "run.storage_path: must be a non-empty string, got ''"),  # was the project directory
    ],
)
def test_impossible_values_fail_before_anything_runs(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(PROJECT_DIR / "pipelines/configs/train.yaml", [override])
    assert str(err.value).startswith(message)  # the dotted field once, then why: no `ModelConfig.latent_dim:` again


def test_the_cli_prints_one_line_naming_the_dotted_field_and_exits_2(capsys):
    import ray

    from pipelines.cli import main

    assert main(["train", "model.latent_dim=0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "vae-anomaly train: config error: model.latent_dim: must be an integer >= 1 or 'auto', got 0\n"
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.latent_dim=0", "train.lr=-1"],
            "model.latent_dim: must be an integer >= 1 or 'auto', got 0 (also invalid: train.lr)",
        ),
        (["model.latnt_dim=3"], "model: unknown key(s) ['latnt_dim']; known: ['activation', 'conv_channels', "),
        (["data.path="], "data.path: set the Parquet file, directory or URI"),
        (["train.weight_decay=-1"], "train.weight_decay: must be >= 0, got -1"),
        (["train.grad_clip=0"], "train.grad_clip: must be a number > 0 or null, got 0"),
        (["model.gaussian_min_scale=-1"], "model.gaussian_min_scale: must be > 0, got -1"),
        (["score.contamination=1.5"], "score.contamination: must be a number in (0, 1) or null, got 1.5"),
        (["score.quantile=0.9"], "score.contamination: set exactly one of contamination and quantile"),
        (["train.mixed_precision=3"], "train.mixed_precision: must be true or false, got 3"),
    ],
)
def test_a_message_in_a_section_names_the_dotted_field_once(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(PROJECT_DIR / "pipelines/configs/train.yaml", overrides)
    assert str(err.value).startswith(message) and "Config." not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.flow_steps=4"], "objective.analytic_kl: a flow posterior (model.flow_steps=4) has no closed"),
        (["objective.kind=aae"], "score.kind: an adversarial autoencoder (objective.kind=aae) has no KL-trained"),
        (["objective.kind=aae", "score.kind=nll"], "score.kind: an adversarial autoencoder"),
        (["objective.kind=aae", "score.kind=reconstruction", "model.flow_steps=2"], "model.flow_steps: an adv"),
        (["objective.kind=gan"], "objective.kind: must be one of ['elbo', 'iwae', 'aae']"),
    ],
)
def test_variant_combinations_that_make_no_sense_fail_before_anything_runs(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(PROJECT_DIR / "pipelines/configs/train.yaml", overrides)
    assert str(err.value).startswith(message)


def test_the_readme_variant_commands_load():
    train = PROJECT_DIR / "pipelines/configs/train.yaml"
    iaf = load_config(train, ["model.flow_steps=4", "objective.analytic_kl=false"])
    assert iaf.model.flow_steps == 4 and not iaf.objective.analytic_kl
    aae = load_config(train, ["objective.kind=aae", "score.kind=reconstruction", "objective.adversarial_weight=2"])
    assert aae.objective.adversarial_weight == 2.0 and aae.objective.discriminator_hidden_dims == (64, 64)
    iwae = load_config(train, ["objective.kind=iwae", "objective.iwae_samples=8", "model.flow_steps=2"])
    assert iwae.objective.iwae_samples == 8  # the IWAE bound needs no closed-form KL
    cvae = load_config(train, ["data.numeric=[TSH,T3,TT4,T4U,FTI]", "data.condition_numeric=[age]"])
    assert cvae.data.conditions == ("age",) and "age" not in cvae.data.features


def test_missing_or_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(broken)
    for text, kind in (("- data\n- model\n", "list"), ("3\n", "int")):  # was: a ValueError / TypeError traceback
        broken.write_text(text)
        with pytest.raises(ConfigError, match=rf"must hold a mapping of keys to values, got a {kind}$"):
            load_config(broken)


def test_relative_storage_resolves_under_the_project_and_uris_stay():
    config = load_config(PROJECT_DIR / "pipelines/configs/train.yaml")
    assert config.run.resolved_storage_path() == str(PROJECT_DIR / "runs")
    uri = load_config(PROJECT_DIR / "pipelines/configs/train.yaml", ["run.storage_path=s3://b/runs"])
    assert uri.run.resolved_storage_path() == "s3://b/runs"


def test_apply_overrides_does_not_mutate_the_input():
    data = {"model": {"latent_dim": 2}}
    assert apply_overrides(data, ["model.latent_dim=5"]) == {"model": {"latent_dim": 5}}
    assert data == {"model": {"latent_dim": 2}}


def test_resume_changed_is_a_flag_of_the_commands_that_resume_named_runs():
    from pipelines.cli import run_config_command
    from pipelines.settings.yaml_configs import TrainPipelineConfig

    def loaded(*argv: str, resumes: bool = True) -> TrainPipelineConfig:
        return run_config_command("train", "doc", "train.yaml", "", TrainPipelineConfig, list(argv),
                                  lambda config: config, lambda _: None, resumes=resumes)  # fmt: skip

    assert loaded("--resume-changed", "train.lr=0.01").run.resume_changed
    assert not loaded("train.lr=0.01").run.resume_changed
    with pytest.raises(SystemExit):
        loaded("--resume-changed", resumes=False)


def test_a_later_override_wins_and_a_key_twice_in_a_yaml_mapping_is_refused(tmp_path):
    assert load_config(CONFIG_DIR / "train.yaml", ["train.lr=0.1", "train.lr=0.0001"]).train.lr == 0.0001
    doubled = tmp_path / "train.yaml"  # PyYAML kept the second section alone: epochs 5 and lr 0.01 were lost
    doubled.write_text("train:\n  epochs: 5\n  lr: 0.01\ntrain:\n  batch_size: 64\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: key 'train' appears twice"):
        load_config(doubled)


@pytest.mark.parametrize(("text", "named"), [
    ("yes:\n  epochs: 5\n", "True"), ("null: 1\n", "None"), ("2026-11-24: 1\n", "datetime.date(2026, 11, 24)"),
    ("? [a, b]\n: 1\n", "['a', 'b']"), ("train:\n  ? {x: 1}\n  : 2\n", "{'x': 1}"),
])  # fmt: skip
def test_a_yaml_key_that_is_not_text_is_refused_by_name(tmp_path, text, named):
    """A date key failed with KeyError, a list key with TypeError (tracebacks); `yes:` blamed another field."""
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"is not valid YAML: key {re.escape(named)} is not a name \(quote it"):
        load_config(path)


def test_a_config_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_bytes(b"\xff\xfetrain: {}\n")
    with pytest.raises(ConfigError, match=r"train.yaml is not UTF-8 text: 'utf-8' codec can't decode byte 0xff"):
        load_config(path)


def test_numbers_in_a_models_jobs_are_never_true_or_false():
    """`floor: no` read as 0 opened the promotion gate to any model."""
    with pytest.raises(ConfigError, match=r"^EvaluateConfig.floor: must be a number in \[0, 1\], got False"):
        from_dict(EvaluateConfig, {"input": "rows", "floor": False, "baselines": False})
    with pytest.raises(ConfigError, match=r"^ServeConfig.port: must be an integer in \[1, 65535\], got True"):
        from_dict(ServeConfig, {"port": True})


def test_resources_a_local_ray_can_never_give_are_refused_before_it_starts(monkeypatch):
    """Ray Train skips its own check without an autoscaler and waits for the workers forever."""
    import ray
    import torch

    from pipelines.runtime.cluster import require_local_resources

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert not ray.is_initialized()
    cpus, gpus = load_config(CONFIG_DIR / "train.yaml", ["scaling.num_workers=8"]).scaling.group_resources()
    with pytest.raises(ConfigError, match=r"^the worker group needs 8 CPUs, more than the local Ray.s run.local_cpus="):
        require_local_resources(None, 4, cpus, gpus, "the worker group")
    with pytest.raises(ConfigError, match=r"^a scoring actor needs 1 GPU\(s\); this machine has 0$"):
        require_local_resources(None, 4, 1.0, 1.0, "a scoring actor")
    require_local_resources(None, 4, 4.0, 0.0, "the worker group")  # fits
    require_local_resources("ray://head:10001", 4, 64.0, 8.0, "the worker group")  # a cluster's to schedule


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tracking.alias=latest", "tracking.alias: must be letters, digits, '_' and '-'; not 'latest' or v<digits>"),
        ("tracking.alias=v2", "tracking.alias: must be letters, digits, '_' and '-'; not 'latest' or v<digits>"),
        ("tracking.alias=my.alias", "tracking.alias: must be letters, digits, '_' and '-'"),
        ("tracking.model_name=team/vae", "tracking.model_name: must be a registered model name (no '/', ':' or '@')"),
    ],
)
def test_registry_names_mlflow_or_a_model_spec_cannot_take_fail_before_training(override, message):
    """MLflow refused them only at registration, after the whole training (a bad alias left a version without it)."""
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "train.yaml", [override])
    assert str(err.value).startswith(message)
    with pytest.raises(ConfigError, match=r"^ScoreJobConfig.table: must be namespace.table, got 'vae.scores.daily'"):
        load_config(CONFIG_DIR / "score.yaml", ["input=rows", "table=vae.scores.daily"], cls=ScoreJobConfig)
