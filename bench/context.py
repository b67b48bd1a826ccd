"""What every table needs: the data directory, quick or full mode, the device, a scratch directory and a
local MLflow store in it; and the data helpers the tables share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipelines.sample_data.datasets import load_adbench

TABULAR = {"thyroid": "38_thyroid.npz", "cardio": "6_cardio.npz", "mammography": "23_mammography.npz",
           "shuttle": "32_shuttle.npz", "donors": "11_donors.npz"}  # fmt: skip


@dataclass(frozen=True)
class Setup:
    data_dir: Path
    quick: bool
    device: torch.device
    workdir: Path  # scratch space, removed after the run

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow' / 'mlflow.db'}"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def tabular(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """X (N, d) float64 and y (N,) of one data set under `tabular/`."""
        return load_adbench(self.data_dir / "tabular" / TABULAR[name])


def feature_names(width: int) -> list[str]:
    return [f"x{i}" for i in range(width)]


def rows_table(x: np.ndarray, rows: int, start: int = 0) -> pd.DataFrame:
    """Rows start..start+rows of x (N, d) repeated in order past N, as a frame `row_id, x0..x{d-1}` (row_id = the
    row's position)."""
    index = np.arange(start, start + rows)
    frame = pd.DataFrame(x[index % len(x)], columns=feature_names(x.shape[1]))
    frame.insert(0, "row_id", index.astype(np.int64))
    return frame


def write_rows(x: np.ndarray, rows: int, directory: Path, rows_per_file: int) -> Path:
    """`rows_table(x, rows)` as a directory of Parquet files of at most `rows_per_file` rows (a partition as a job
    reads it), generated file by file so that no more than one file's rows are ever in memory."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, rows_per_file)):
        part = pa.Table.from_pandas(rows_table(x, min(rows_per_file, rows - start), start), preserve_index=False)
        pq.write_table(part, directory / f"part-{i:04d}.parquet", row_group_size=25_000)
    return directory


def steady(values: list[float]) -> tuple[float, int]:
    """The median of per-epoch values after the first (warm-up) epoch, and how many epochs it covers."""
    kept = values[1:] if len(values) > 1 else values
    return float(np.median(kept)), len(kept)
