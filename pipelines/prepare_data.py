"""`python -m pipelines prepare-data [--output data/thyroid]`: the bundled thyroid data as Parquet files."""

from __future__ import annotations

import argparse

from .datasets import write_thyroid_parquet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vae-anomaly prepare-data", description=__doc__)
    parser.add_argument("--output", default="data/thyroid", help="directory for train.parquet and test.parquet")
    parser.add_argument("--seed", type=int, default=0, help="seed of the protocol's split of the normal rows")
    args = parser.parse_args(argv)
    for path in write_thyroid_parquet(args.output, args.seed):
        print(f"wrote {path}")
