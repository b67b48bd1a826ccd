"""`make soak`: the scoring job killed again and again at each step of its commit, on a real local Ray, a real
MLflow server and the scores table on a local warehouse with its SQLite catalog.

For each fault point (`write`, `commit`, `committed`, see `pipelines.storage.fault_points`) the job is killed
`--kills` times (at `write` in the n-th write task, n drawn from a seeded generator) while a reader polls the
table; after each kill the table must hold one run's rows for the date (the old ones, or the new ones after
`committed`) and a re-run must complete with every input row exactly once. Prints one row per point: runs,
kills, reads taken while the job ran, partial reads seen, and rows lost or duplicated after the re-runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd

RUN_DATE = "2026-11-24"


def _input(thyroid_test: Path, directory: Path, copies: int = 8) -> pd.DataFrame:
    """The held-out thyroid rows `copies` times with fresh ids, in 8 files (several write tasks); returns them."""
    rows = pd.read_parquet(thyroid_test)
    big = pd.concat([rows] * copies, ignore_index=True).assign(row_id=lambda f: np.arange(len(f)))
    directory.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(big)), 8)):
        big.iloc[rows].to_parquet(directory / f"part-{i}.parquet", index=False)
    return big


class Reader(threading.Thread):
    """Reads the run date's rows in a loop while a job runs; a read is partial when it holds rows of more than one
    run or not exactly the input's ids."""

    def __init__(self, table, ids: collections.Counter) -> None:
        super().__init__(daemon=True)
        self.table, self.ids = table, ids
        self.stop, self.reads, self.partial = threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.check()

    def check(self) -> bool:
        rows = self.table.read(RUN_DATE, columns=("row_id", "scored_at")).to_pandas()
        whole = rows.scored_at.nunique() <= 1 and (rows.empty or collections.Counter(rows.row_id) == self.ids)
        self.reads += 1
        self.partial += not whole
        return whole


def soak(kills: int, seed: int, root: Path) -> list[dict]:
    import ray

    from pipelines.commands import score
    from pipelines.runtime.cluster import start_local_ray
    from pipelines.sample_data.datasets import write_thyroid_parquet
    from pipelines.settings.model_jobs import ScoreJobConfig
    from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
    from pipelines.storage.fault_points import FAULT_ENV, POINTS
    from pipelines.storage.scores_table import ScoresTable
    from pipelines.tracking.scoped_env import quiet_artifact_transfers
    from tests.integration.conftest import register_scoring_model, running_mlflow_server

    rng = np.random.default_rng(seed)
    train, test = write_thyroid_parquet(root / "thyroid")
    (root / "thyroid" / "train").mkdir()
    shutil.copy(train, root / "thyroid" / "train" / "part-0.parquet")
    source = _input(test, root / "input")
    ids = collections.Counter(source.row_id)
    (root / "mlflow").mkdir()
    with running_mlflow_server(root / "mlflow") as (uri, _):
        model = register_scoring_model(uri, root / "thyroid")
        start_local_ray(num_cpus=4)
        overrides = [f"input={root / 'input'}", f"output={root / 'scores'}", f"model={model}", f"run_date={RUN_DATE}",
                     f"tracking.tracking_uri={uri}", "actors=1", "rows_per_file=2048"]  # fmt: skip
        config = load_config(CONFIG_DIR / "score.yaml", overrides, cls=ScoreJobConfig)
        command = [sys.executable, "-m", "pipelines", "score", "--config", str(CONFIG_DIR / "score.yaml"), *overrides,
                   f"ray_address={ray.get_runtime_context().gcs_address}"]  # fmt: skip
        table = ScoresTable.at(str(root / "scores"), "vae.scores")

        def quiet() -> contextlib.ExitStack:  # the in-process runs print nothing
            stack = contextlib.ExitStack()
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            stack.enter_context(quiet_artifact_transfers())
            return stack

        with quiet():
            score.run(config)  # the rows a first kill must leave in place
        results = []
        for point in POINTS:
            counts = {"point": point, "runs": 0, "kills": 0, "reads": 0, "partial reads": 0, "rows lost": 0,
                      "rows duplicated": 0}  # fmt: skip
            for _ in range(kills):
                nth = int(rng.integers(1, 4)) if point == "write" else 1  # the input makes 3 write tasks
                reader = Reader(table, ids)
                reader.start()
                job = subprocess.run(command, env={**os.environ, FAULT_ENV: f"{point}:{nth}"}, capture_output=True,
                                     text=True, timeout=600, start_new_session=True)  # fmt: skip
                reader.stop.set()
                reader.join()
                reader.check()  # after the kill
                counts["kills"] += job.returncode == -signal.SIGKILL
                with quiet():
                    score.run(config)
                rows = collections.Counter(table.read(RUN_DATE, columns=("row_id",)).to_pandas().row_id)
                counts["runs"] += 2
                counts["reads"] += reader.reads
                counts["partial reads"] += reader.partial
                counts["rows lost"] += sum((ids - rows).values())
                counts["rows duplicated"] += sum((rows - ids).values())
                print(f"{point}:{nth} killed={job.returncode == -signal.SIGKILL} reads={reader.reads} "
                      f"partial={reader.partial}", flush=True)  # fmt: skip
            results.append(counts)
        ray.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per fault point")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vae-soak-") as root:
        results = soak(args.kills, args.seed, Path(root))
    columns = list(results[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in results:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    bad = sum(r["partial reads"] + r["rows lost"] + r["rows duplicated"] + (r["kills"] != args.kills) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
