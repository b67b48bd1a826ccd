"""Data shipped with the project and the semi-supervised anomaly-detection split that published numbers use."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

THYROID_COLUMNS = ("age", "TSH", "T3", "TT4", "T4U", "FTI")


@dataclass
class Split:
    """Row indices of one semi-supervised split: train and validation hold normal rows only."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def load_thyroid() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The bundled thyroid table (column -> (N,) values) and its labels (N,), 1 = anomaly."""
    with resources.as_file(resources.files("pipelines").joinpath("sample_data/thyroid.npz")) as path:
        x, y = load_adbench(path)
    return {name: x[:, i] for i, name in enumerate(THYROID_COLUMNS)}, y


def load_adbench(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An ADBench "Classical" `.npz` file: features X (N, d) as float64 and labels y (N,), 1 = anomaly.

    Raises FileNotFoundError naming the path, ValueError when the arrays are not X (N, d) and y (N,).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data or "y" not in data:
            raise ValueError(f"{path}: expected arrays X and y, found {sorted(data.keys())}")
        x, y = data["X"].astype(np.float64), data["y"].astype(np.int64)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"{path}: X must be (N, d) and y (N,), got {x.shape} and {y.shape}")
    return x, y


def one_class_split(labels: np.ndarray, seed: int, validation_share: float = 0.1) -> Split:
    """ADBench protocol: shuffle the normal rows, train on half, test on the other half plus every anomaly.

    A `validation_share` of the training half is set aside (normal rows only) for early stopping and the
    threshold; the test rows are exactly the protocol's.
    """
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(labels == 0))
    half = len(normal) // 2
    train, rest = normal[:half], normal[half:]
    n_val = int(round(len(train) * validation_share))
    return Split(
        train=train[n_val:],
        validation=train[:n_val],
        test=np.concatenate([rest, np.flatnonzero(labels == 1)]),
    )


def write_thyroid_parquet(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """The thyroid split as Parquet: `train.parquet` (the training half of the normal rows) and
    `test.parquet` (the other normals and every anomaly), each with `row_id`, the features and `label`."""
    table, labels = load_thyroid()
    frame = pd.DataFrame(table).assign(label=labels)
    frame.insert(0, "row_id", np.arange(len(frame)))
    split = one_class_split(labels, seed, validation_share=0.0)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "train.parquet", directory / "test.parquet"
    for path, rows in zip(paths, (split.train, np.sort(split.test)), strict=True):
        frame.iloc[rows].to_parquet(path, index=False)
    return paths
