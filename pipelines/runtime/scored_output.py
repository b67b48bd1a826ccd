"""The scoring job's output: one Iceberg table of scored and quarantined rows, written by Ray Data write tasks
that also tally what they wrote, and committed by the driver in one catalog commit per run date.

Each write task writes its rows as data files of the table (Ray Data's Iceberg sink) and returns a `Tally`: row
counts, anomalies, the scores' counts per reference decile (for the PSI) and a bounded uniform sample of the
scores (for quantiles and the plot). The driver merges the tasks' tallies (scalars and the sample, never the
scores themselves), checks them, and only then commits: the files of a run that fails before `ScoresSink.commit`
are never part of the table.
"""

from __future__ import annotations

import dataclasses
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data import SaveMode
from ray.data._internal.datasource.iceberg_datasink import IcebergDatasink, IcebergWriteResult
from ray.data.block import Block, BlockAccessor
from ray.data.expressions import col

from pipelines.storage.fault_points import FaultPlan
from pipelines.storage.scores_table import (
    RUN_DATE,
    SNAPSHOT_RUN_DATE,
    ConcurrentRunError,
    ScoresTable,
    snapshot_properties,
)
from pipelines.tracking.monitoring import decile_counts

REASON = "quarantine_reason"
STATUS = "status"  # "scored" or "quarantined"
INPUT = "quarantined_input"  # a quarantined row's model columns, as JSON
SAMPLE_ROWS = 50_000  # expected size of the score sample that reaches the driver
COMMIT_ATTEMPTS = 5  # commits lost to runs for other dates before the job gives up


@dataclass
class Tally:
    """What some write tasks wrote: counts, the scores' (10,) decile counts, and a uniform sample of scores."""

    scored: int = 0
    quarantined: int = 0
    anomalies: int = 0
    deciles: np.ndarray | None = None  # (10,) scores per reference decile; None without a reference
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,) scores

    @property
    def rows(self) -> int:
        return self.scored + self.quarantined

    @classmethod
    def merge(cls, tallies: Iterable[Tally]) -> Tally:
        tallies = list(tallies)
        deciles = [t.deciles for t in tallies if t.deciles is not None]
        return cls(
            sum(t.scored for t in tallies), sum(t.quarantined for t in tallies), sum(t.anomalies for t in tallies),
            np.sum(deciles, axis=0) if deciles else None, np.concatenate([np.zeros(0), *(t.sample for t in tallies)]),
        )  # fmt: skip


@dataclass
class TalliedFiles:
    """What one write task returns: the Iceberg data files it wrote and the tally of their rows."""

    files: IcebergWriteResult
    tally: Tally


# Ray retries a catalog call whose error text holds one of `DataContext.iceberg_config.catalog_retried_errors`, among
# them "500", "502", "503" and "429": a lost commit's message ("... has changed: expected id 4500..., found ...")
# holds two snapshot ids and so matches now and then. Ray then commits the failed transaction again, which pyiceberg
# refuses with this RuntimeError: the commit was lost all the same.
FAILED_TRANSACTION = "This transaction failed to commit and cannot be reused"


class ScoresSink(IcebergDatasink):
    """Writes a run's rows into the scores table and keeps the merged `Tally` in `tally`; `commit` then replaces
    the run date's rows in one catalog commit.

    The input rows are the scoring actors' tables (`status`, and `quarantine_reason` for quarantined rows).
    `sample_fraction` of the scored rows are kept in the sample; `reference_quantiles` (101, the model's) define
    the deciles, or None. The table is created, partitioned by run date, by the first run that writes to it."""

    def __init__(self, table: ScoresTable, run_date: str, reference_quantiles: list[float] | None,
                 sample_fraction: float, rows_per_file: int, faults: FaultPlan) -> None:  # fmt: skip
        super().__init__(table.identifier, {"name": "scores", **table.catalog_properties()},
                         mode=SaveMode.OVERWRITE, overwrite_filter=col(RUN_DATE) == run_date)  # fmt: skip
        self.table, self.run_date = table, run_date
        self.reference_quantiles = reference_quantiles
        self.sample_fraction = sample_fraction
        self.rows_per_file = rows_per_file
        self.faults = faults
        self.seed = int(uuid.uuid4().hex[:8], 16)  # one per job: a retried task samples the same rows
        self.base_snapshot: int | None = None  # the table's snapshot when the write started
        self.tally = Tally()
        self._written = None

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        if self.table.load() is None:
            self.table.create(schema)
        super().on_write_start(schema)
        current = self._table.current_snapshot()
        self.base_snapshot = None if current is None else current.snapshot_id

    def write(self, blocks: Iterable[Block], ctx) -> TalliedFiles:
        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        files = super().write(tables, ctx)
        self.faults.reached("write", ctx.task_idx + 1)
        return TalliedFiles(files, self._tally(tables, ctx.task_idx))

    def _tally(self, tables: list[pa.Table], task: int) -> Tally:
        rows = pa.concat_tables(tables) if tables else None
        if rows is None or not rows.num_rows:
            return Tally()
        scored = rows.filter(pc.equal(rows[STATUS], "scored"))
        scores = scored["anomaly_score"].to_numpy()
        kept = np.random.default_rng([self.seed, task]).random(len(scores)) < self.sample_fraction
        deciles = None if self.reference_quantiles is None else decile_counts(scores, self.reference_quantiles)
        anomalies = int(pc.sum(scored["is_anomaly"]).as_py() or 0)
        return Tally(len(scores), rows.num_rows - len(scores), anomalies, deciles, scores[kept])

    def on_write_complete(self, write_result) -> None:
        """Keep the written files for `commit` and merge the tallies; nothing is published here."""
        self.tally = Tally.merge(r.tally for r in write_result.write_returns)
        self._written = dataclasses.replace(write_result, write_returns=[r.files for r in write_result.write_returns])

    def commit(self, properties: dict[str, str]) -> int:
        """Replace the run date's rows with this run's in one catalog commit carrying `properties` (and the run
        date) as snapshot properties; returns the new snapshot's id.

        A commit lost to a run for another date is retried on the new snapshot. One lost to another attempt for
        the same date raises ConcurrentRunError (that attempt's rows stand) after deleting this run's files."""
        from pyiceberg.exceptions import CommitFailedException

        self.faults.reached("commit")
        self._snapshot_properties = {**properties, SNAPSHOT_RUN_DATE: self.run_date}
        for _ in range(COMMIT_ATTEMPTS):
            try:
                with warnings.catch_warnings():  # the first run of a date deletes nothing, which is no news
                    warnings.filterwarnings("ignore", "Delete operation did not match any records")
                    super().on_write_complete(self._written)
                break
            except (CommitFailedException, RuntimeError) as err:
                if isinstance(err, RuntimeError) and FAILED_TRANSACTION not in str(err):
                    raise
                self._reload_table()
                rival = self._rival_snapshot()
                if rival is not None:
                    self._delete_written_files()
                    props = snapshot_properties(rival)
                    raise ConcurrentRunError(
                        f"run_date {self.run_date} was committed by another attempt while this one ran (snapshot "
                        f"{rival.snapshot_id}, job {props.get('vae.job', '?')}); its rows stand, this attempt "
                        f"published nothing"
                    ) from None
        else:
            raise ConcurrentRunError(f"run_date {self.run_date}: {COMMIT_ATTEMPTS} commits in a row lost to other runs")
        self.faults.reached("committed")
        return self._table.current_snapshot().snapshot_id

    def _rival_snapshot(self):
        """The newest snapshot committed for this run date since the write started, or None."""
        snapshot = self._table.current_snapshot()
        while snapshot is not None and snapshot.snapshot_id != self.base_snapshot:
            if snapshot_properties(snapshot).get(SNAPSHOT_RUN_DATE) == self.run_date:
                return snapshot
            parent = snapshot.parent_snapshot_id
            snapshot = None if parent is None else self._table.snapshot_by_id(parent)
        return None

    def _delete_written_files(self) -> None:
        for result in self._written.write_returns:
            for data_file in result.data_files:
                self._io.delete(data_file.file_path)
