"""`python -m pipelines scores --run-date YYYY-MM-DD [--top N] [--snapshot ID]`: what a scoring run published.

Reads the scores table the score job writes (the same `--config` and overrides: `output=`, `table=`, `catalog=`)
and prints, for one run date, the snapshot that committed it, the counts and the top anomalies; `--snapshot`
reads an older snapshot (time travel). `--expire-older-than DAYS` is the table's maintenance: it expires older
snapshots and deletes the data files no snapshot references any more (never referenced: only once a day old, see
`ScoresTable.expire`). No Ray, no MLflow.
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.settings.model_jobs import ScoreJobConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config, resolve_path
from pipelines.storage.scores_table import CatalogError, ScoresTable, snapshot_properties
from vae import ConfigError


@dataclass
class Published:
    """One run date as the table holds it."""

    run_date: str
    snapshot: int | None  # the snapshot that committed the date (or the one asked for)
    committed: dict[str, str]  # that snapshot's properties
    rows: int
    scored: int
    quarantined: int
    anomalies: int
    top: pa.Table  # the highest-scored rows, best first


def read(table: ScoresTable, run_date: str, top: int = 10, snapshot: int | None = None) -> Published:
    """The counts and `top` rows of `run_date` in the current snapshot (or `snapshot`), read one record batch at a
    time (a run date of a billion rows never sits in memory: only a batch and the best `top` so far); CatalogError
    when the table has no rows for that date."""
    loaded, reader = table.batches(run_date, snapshot)
    rows = scored = anomalies = 0
    best: pa.Table | None = None
    for batch in reader:
        hits = pa.Table.from_batches([batch.filter(pc.equal(batch["status"], "scored"))])
        rows, scored = rows + batch.num_rows, scored + hits.num_rows
        anomalies += int(pc.sum(hits["is_anomaly"]).as_py() or 0)
        candidates = hits if best is None else pa.concat_tables([best, hits])
        best = candidates.take(pc.sort_indices(candidates, sort_keys=[("anomaly_score", "descending")])[:top])
    if not rows:
        raise CatalogError(f"{table.identifier}: no rows for run_date {run_date}"
                           + (f" in snapshot {snapshot}" if snapshot is not None else ""))  # fmt: skip
    committed = table.date_snapshot(loaded, run_date) if snapshot is None else loaded.snapshot_by_id(snapshot)
    return Published(run_date, committed and committed.snapshot_id, snapshot_properties(committed) if committed else {},
                     rows, scored, rows - scored, anomalies, best)  # fmt: skip


def report(table: ScoresTable, published: Published) -> None:
    props = published.committed
    print(f"{table.identifier} run_date {published.run_date}: snapshot {published.snapshot} (model "
          f"{props.get('vae.model', '?')}, job {props.get('vae.job', '?')})")  # fmt: skip
    print(f"{published.rows:,} rows: {published.scored:,} scored, {published.quarantined:,} quarantined, "
          f"{published.anomalies:,} anomalies ({published.anomalies / max(published.scored, 1):.2%})")  # fmt: skip
    if not published.top.num_rows:
        return
    keys = published.top.column_names[: published.top.column_names.index("anomaly_score")]
    print(f"top {published.top.num_rows} anomalies:")
    print("  ".join([*keys, "anomaly_score", "top features"]))
    for row in published.top.to_pylist():
        why = ", ".join(f"{row[f'top_feature_{i}']} {row[f'top_feature_{i}_share']:.0%}" for i in (1, 2, 3)
                        if row.get(f"top_feature_{i}") is not None)  # fmt: skip
        print("  ".join([*(str(row[key]) for key in keys), f"{row['anomaly_score']:.3f}", why]))


MAX_AGE_DAYS = 36_500  # a century: beyond, the cutoff date overflows


def main(argv: list[str] | None = None) -> Published | tuple[int, int]:
    parser = argparse.ArgumentParser(prog="vae-anomaly scores", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG_DIR / "score.yaml"), help="the score job's config")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--run-date", help="the run date to show (YYYY-MM-DD)")
    when.add_argument("--expire-older-than", type=float, metavar="DAYS", help="expire snapshots older than this")
    parser.add_argument("--top", type=int, default=10, help="how many of the highest-scored rows to print")
    parser.add_argument("--snapshot", type=int, help="read this snapshot instead of the current one")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the score config (output=, table=)")
    args = parser.parse_args(argv)
    if args.top < 0:
        raise ConfigError(f"--top: expected a count of rows >= 0, got {args.top}")
    config = load_config(args.config, args.overrides, cls=ScoreJobConfig)
    table = ScoresTable.at(resolve_path(config.output), config.table, config.catalog)
    if args.expire_older_than is not None:
        if not 0 <= args.expire_older_than <= MAX_AGE_DAYS:
            raise ConfigError(f"--expire-older-than: expected a number of days from 0 to {MAX_AGE_DAYS}, got "
                              f"{args.expire_older_than}")  # fmt: skip
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=args.expire_older_than)
        expired, deleted = table.expire(cutoff)
        print(f"{table.identifier}: {expired} snapshot(s) older than {cutoff:%Y-%m-%d %H:%M} UTC expired, "
              f"{deleted} unreferenced data file(s) deleted")  # fmt: skip
        return expired, deleted
    try:
        datetime.date.fromisoformat(args.run_date)
    except ValueError:
        raise ConfigError(f"--run-date: expected YYYY-MM-DD, got {args.run_date!r}") from None
    published = read(table, args.run_date, args.top, args.snapshot)
    report(table, published)
    return published
