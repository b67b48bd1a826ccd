"""`python -m pipelines prepare-data [--dataset thyroid|digits] [--output DIR]`: bundled data as Parquet files."""

from __future__ import annotations

import argparse

from pipelines.sample_data.datasets import write_digits_parquet, write_thyroid_parquet

DEFAULT_OUTPUT = {"thyroid": "data/thyroid", "digits": "data/digits"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vae-anomaly prepare-data", description=__doc__)
    parser.add_argument("--dataset", choices=sorted(DEFAULT_OUTPUT), default="thyroid",
                        help="thyroid (table with anomaly labels) or digits (8x8 images, 10 classes)")  # fmt: skip
    parser.add_argument("--output", help="directory for train.parquet and test.parquet (default data/<dataset>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split into train and test rows")
    parser.add_argument("--encoding", choices=["array", "png"], default="array",
                        help="digits only: pixels as a fixed-size list of 64 numbers, or PNG bytes")  # fmt: skip
    args = parser.parse_args(argv)
    output = args.output or DEFAULT_OUTPUT[args.dataset]
    if args.dataset == "digits":
        paths = write_digits_parquet(output, args.encoding, args.seed)
    else:
        paths = write_thyroid_parquet(output, args.seed)
    for path in paths:
        print(f"wrote {path}")
