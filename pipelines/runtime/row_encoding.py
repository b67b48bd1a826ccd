"""Raw rows to model inputs with fitted preprocessors, as Ray Data batch functions: the rows training leaves out
(non-finite, huge, outside the statistics' robust screen or out of the training range), their count, and the
encoding of the others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import ray.data

from pipelines.settings.yaml_configs import DataConfig
from vae import DataLayout, ImagePreprocessor, Preprocessor
from vae.preprocessing import observed_features
from vae.value_screen import UNUSABLE


def left_out_rows(batch: pd.DataFrame, preprocessors: list[Preprocessor]) -> np.ndarray:
    """(N,) bool: the rows of a batch of N raw training rows that training leaves out, by any of the model's
    column preprocessors (`Preprocessor.unusable_rows`: infinite, beyond MAX_MAGNITUDE, outside its column's
    `screen_bounds` or out of the training range). Missing values (null, NaN) are the missing policy's to handle."""
    bad = np.zeros(len(batch), dtype=bool)
    for pre in preprocessors:
        bad |= pre.unusable_rows(batch)
    return bad


def _left_out_count(batch: pd.DataFrame, preprocessors: list[Preprocessor]) -> pd.DataFrame:
    return pd.DataFrame({"left_out": [int(left_out_rows(batch, preprocessors).sum())]})


def report_left_out(
    ds: ray.data.Dataset, features: Preprocessor | ImagePreprocessor, condition: Preprocessor | None
) -> int:
    """Count (one Ray Data pass, a sum on the driver) the rows of `ds` that `encode_rows` leaves out, and print
    the count when there are any; returns it."""
    preprocessors = table_preprocessors(features, condition)
    if not preprocessors:
        return 0
    counts = ds.map_batches(_left_out_count, fn_kwargs={"preprocessors": preprocessors}, batch_format="pandas")
    left_out = int(counts.sum("left_out") or 0)
    if left_out:
        print(f"{left_out:,} training rows with non-finite values left out ({UNUSABLE})", flush=True)
    return left_out


def table_preprocessors(
    features: Preprocessor | ImagePreprocessor, condition: Preprocessor | None
) -> list[Preprocessor]:
    """The column preprocessors of a model: its features unless they are an image column, and its condition."""
    return [p for p in (features, condition) if isinstance(p, Preprocessor)]


class EncodeRows:
    """Ray Data batch function: N raw rows -> {"x": (M, D) float32[, "observed": (M, F) bool][, "c": (M, K)]
    [, "label": (M,)]}, the M <= N rows that `left_out_rows` keeps. "observed" (tabular features only) marks the
    features each row has a value for (`vae.preprocessing.observed_features`): scores leave the others out, as the
    scoring job does, and only the encoder sees their fill."""

    def __init__(
        self, features: Preprocessor | ImagePreprocessor, condition: Preprocessor | None, label: str | None
    ) -> None:
        self.features = features
        self.condition = condition
        self.label = label
        self.tables = table_preprocessors(features, condition)
        self.layout = DataLayout(features.layout_blocks()) if isinstance(features, Preprocessor) else None

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        batch = batch[~left_out_rows(batch, self.tables)]
        encoded = {"x": self.features.transform(batch)}
        if self.layout is not None:
            encoded["observed"] = observed_features(self.layout, self.features.encoded_missing(batch))
        if self.condition is not None:
            encoded["c"] = self.condition.transform(batch)
        if self.label is not None:
            encoded["label"] = batch[self.label].to_numpy()
        return encoded


def encode_rows(
    ds: ray.data.Dataset,
    config: DataConfig,
    features: Preprocessor | ImagePreprocessor,
    condition: Preprocessor | None,
) -> ray.data.Dataset:
    """The model inputs of `ds`'s rows but those `left_out_rows` finds (`report_left_out` counts them), and the
    label, for plots and evaluation; materialized in the object store (read once, iterated every epoch) when
    `config.materialize` is set."""
    encoded = ds.map_batches(EncodeRows(features, condition, config.label), batch_format="pandas")
    return encoded.materialize() if config.materialize else encoded
