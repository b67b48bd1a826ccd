"""Data shipped with the project (thyroid here, scikit-learn's digits images in its package) and the
semi-supervised anomaly-detection split that published numbers use."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vae.images import encode_png

THYROID_COLUMNS = ("age", "TSH", "T3", "TT4", "T4U", "FTI")
DIGITS_SHAPE = (1, 8, 8)
DIGITS_SCALE = 16  # digits' pixels are integers 0..16


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


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images (1797, 1, 8, 8) of integers 0..16 and their classes (1797,) 0..9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.uint8).reshape(-1, *DIGITS_SHAPE), digits.target.astype(np.int64)


def digits_table(images: np.ndarray, classes: np.ndarray, ids: np.ndarray, encoding: str = "array") -> pa.Table:
    """`image_id`, `digit` and `pixels`: per row 64 numbers (a fixed-size list, encoding "array") or the bytes of
    an 8x8 grey PNG whose pixel values are the digits' 0..16 (encoding "png")."""
    if encoding == "png":
        pixels = pa.array([encode_png(image) for image in images], pa.binary())
    elif encoding == "array":
        flat = images.reshape(len(images), -1)
        pixels = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.uint8()), flat.shape[1])
    else:
        raise ValueError(f"encoding must be 'array' or 'png', got {encoding!r}")
    return pa.table({"image_id": pa.array(ids, pa.int64()), "digit": pa.array(classes, pa.int64()), "pixels": pixels})


def write_digits_parquet(
    directory: str | Path, encoding: str = "array", seed: int = 0, test_share: float = 0.2
) -> tuple[Path, Path]:
    """The digits as image Parquet: `train.parquet` and `test.parquet` (a seeded `test_share` of the images),
    columns as `digits_table` describes."""
    images, classes = load_digits_images()
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(round(test_share * len(images)))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "train.parquet", directory / "test.parquet"
    for path, rows in zip(paths, (np.sort(order[n_test:]), np.sort(order[:n_test])), strict=True):
        pq.write_table(digits_table(images[rows], classes[rows], rows, encoding), path)
    return paths
