"""`python -m pipelines generate --config pipelines/configs/generate.yaml model=NAME@ALIAS n=1000
[condition.COLUMN=VALUE ...] [mode=mean|sample] [seed=0] [output=outputs/generated.parquet]`

Synthetic rows (or images) from a registered model: resolve the model -> check the condition against it -> draw
z ~ N(0, I), decode (`vae.generation`) -> map back to the training columns and their types (an image model's
column holds pixel lists on the training scale, or PNG bytes) -> write one Parquet file atomically. Single
process; nothing is logged to MLflow (the file's metadata names the model version).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipelines.cli import config_parser
from pipelines.settings.model_jobs import GenerateConfig
from pipelines.settings.yaml_configs import load_config, resolve_path
from pipelines.storage.arrow_types import column_types, to_arrow
from pipelines.storage.parquet_file import write_parquet_atomically
from pipelines.tracking.registry import load_model_spec
from pipelines.tracking.runs import resolve_tracking_uri
from vae import ConfigError
from vae.generation import generate_table


@dataclass
class GenerateOutcome:
    model: str  # NAME/VERSION
    rows: int
    output: str


def run(config: GenerateConfig) -> GenerateOutcome:
    """Generate `config.n` rows into `config.output`; raises ConfigError / TrackingError before writing."""
    detector, model = load_model_spec(config.model, resolve_tracking_uri(config.tracking))
    try:
        columns = generate_table(detector.model, detector.preprocessor, config.n, detector.condition,
                                 config.condition, config.mode, config.seed)  # fmt: skip
    except ValueError as err:
        raise ConfigError(f"GenerateConfig.condition: {err}") from err
    types = column_types(detector)
    # an image column has no recorded scalar type: its values are pixel lists or PNG bytes
    table = pa.table({name: to_arrow(values, types[name]) if name in types else pa.array(list(values))
                      for name, values in columns.items()})  # fmt: skip
    metadata = {"vae.model": model, "vae.mode": config.mode, "vae.seed": str(config.seed)}
    path = write_parquet_atomically([table], resolve_path(config.output), metadata)
    return GenerateOutcome(model, config.n, str(path))


def main(argv: list[str] | None = None) -> GenerateOutcome:
    args = config_parser("generate", __doc__, "generate.yaml", "model=NAME@ALIAS n=500").parse_args(argv)
    outcome = run(load_config(args.config, args.overrides, cls=GenerateConfig))
    print(f"generated {outcome.rows:,} rows with {outcome.model} -> {outcome.output}")
    return outcome
