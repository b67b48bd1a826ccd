"""The scoring job's output, written by Ray Data write tasks that also tally what they wrote.

Each write task splits the scoring actors' rows into scored rows (`<location>/part-*.parquet`) and quarantined
rows (`<location>/_quarantine/part-*.parquet`), one file of each per task, and returns a `Tally`: row counts,
anomalies, the scores' counts per reference decile (for the PSI) and a bounded uniform sample of the scores (for
quantiles and the plot). The driver merges the tasks' tallies: it receives scalars and the sample, never the
scores themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from pipelines.storage import filesystems
from pipelines.tracking.monitoring import decile_counts

REASON = "quarantine_reason"
SAMPLE_ROWS = 50_000  # expected size of the score sample that reaches the driver


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


class ScoredOutputSink(Datasink[Tally]):
    """Writes scored and quarantined rows under a staging location and keeps the merged `Tally` in `tally`.

    The input rows are the scoring actors' tables: the `scored` columns filled where `quarantine_reason` is
    null, the `quarantined` columns (which include the reason) elsewhere. `sample_fraction` of the scored rows
    are kept in the sample; `reference_quantiles` (101, the model's) define the deciles, or None."""

    def __init__(self, location: str, quarantine: str, scored: list[str], quarantined: list[str],
                 reference_quantiles: list[float] | None, sample_fraction: float,
                 rows_per_file: int) -> None:  # fmt: skip
        self.location, self.quarantine = location, quarantine
        self.scored, self.quarantined = scored, quarantined
        self.reference_quantiles = reference_quantiles
        self.sample_fraction = sample_fraction
        self.rows_per_file = rows_per_file
        self.write_id = uuid.uuid4().hex[:8]  # one per job: a retried task rewrites its own files, samples the same
        self.seed = int(self.write_id, 16)
        self.tally = Tally()

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable[Block], ctx) -> Tally:
        scored, quarantined = [], []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            good = pc.is_null(table[REASON])
            scored.append(table.filter(good).select(self.scored))
            quarantined.append(table.filter(pc.invert(good)).select(self.quarantined))
        if not scored:
            return Tally()
        name = f"part-{self.write_id}-{ctx.task_idx:06d}.parquet"
        scored_rows = self._write(scored, filesystems.join(self.location, name))
        quarantined_rows = self._write(quarantined, filesystems.join(self.quarantine, name))
        scores = scored_rows["anomaly_score"].to_numpy()
        kept = np.random.default_rng([self.seed, ctx.task_idx]).random(len(scores)) < self.sample_fraction
        deciles = None if self.reference_quantiles is None else decile_counts(scores, self.reference_quantiles)
        anomalies = int(pc.sum(scored_rows["is_anomaly"]).as_py() or 0)
        return Tally(len(scores), quarantined_rows.num_rows, anomalies, deciles, scores[kept])

    @staticmethod
    def _write(parts: list[pa.Table], location: str) -> pa.Table:
        """The parts' rows as one Parquet file at `location`, none when there are no rows; returns them."""
        table = pa.concat_tables(parts, promote_options="default")
        if table.num_rows:
            fs, path = filesystems.filesystem(location)
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            pq.write_table(table, path, filesystem=fs)
        return table

    def on_write_complete(self, write_result) -> None:
        self.tally = Tally.merge(write_result.write_returns)
