"""`AnomalyDetector`: one estimator that wraps column typing, preprocessing, the model, training and calibration.

    detector = AnomalyDetector().fit(train_frame)          # pandas, pyarrow or a 2-D numpy array
    scores = detector.score_samples(new_frame)             # (N,) higher = more anomalous
    flags = detector.predict(new_frame)                    # (N,) 1 above the calibrated threshold, else 0
    detector.feature_scores(new_frame)                     # DataFrame (N, F): each column's share of the score
    detector.save("model/"); AnomalyDetector.load("model/")

Hyperparameters come from `vae.auto.auto_settings` (chosen from the data's shape) unless `settings` is given.
The parts (`Preprocessor`, `VAE`, `fit`, `Detector`) stay usable on their own for anything this does not cover.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import pandas as pd
import torch

from .auto import Settings, auto_settings, epochs_for, with_values
from .columns import as_columns, infer_feature_types, names, type_kinds
from .config import DataLayout, check_variant
from .config_base import AUTO, from_dict
from .detector import Detector
from .model import VAE
from .persistence import load_detector, save_detector, write_atomically
from .preprocessing import Preprocessor, observed_features
from .training import fit
from .value_screen import UNUSABLE

# The threshold comes from held-out rows (10 %) when the table has at least CALIBRATION_ROWS rows; smaller tables
# cannot spare them (on a few hundred rows the 10 % cost detection quality), so there it comes from the training
# rows' own scores, which runs a little optimistic: slightly more new normal rows exceed it than `contamination`.
VALIDATION_FRACTION = 0.1
ESTIMATOR_FILE = "estimator.json"  # the constructor's arguments, beside the detector's files
CALIBRATION_ROWS = 1000


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto": CUDA when available, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _rows(columns: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in columns.items()}


def _calibration_rows(table: Any, names: list[str], pre: Preprocessor) -> dict[str, np.ndarray]:
    """The usable rows of `table`, which must have the feature columns `names` (in any order, others beside them
    ignored), to calibrate on; the others are left out with a warning, as unusable training rows are."""
    columns = as_columns(table)
    absent = [name for name in names if name not in columns]
    if absent:
        raise ValueError(f"AnomalyDetector.fit: calibration lacks the feature column(s) {absent}; it has "
                         f"{list(columns)}")  # fmt: skip
    columns = {name: columns[name] for name in names}
    usable = ~pre.unusable_rows(columns)
    if not usable.any():
        raise ValueError("AnomalyDetector.fit: calibration has no usable row (none, or every one unusable)")
    if not usable.all():
        left_out = f"{int((~usable).sum()):,} of {usable.size:,} calibration rows left out"
        warnings.warn(f"AnomalyDetector.fit: {left_out}: a value {UNUSABLE}", stacklevel=3)
    return _rows(columns, np.flatnonzero(usable))


class AnomalyDetector:
    """A VAE anomaly detector with a scikit-learn / PyOD style interface.

    numeric / binary / categorical: declared feature columns; when none is given, every column not in `exclude`
    is a feature, typed from its column type or values (see `vae.columns`). contamination: the expected share of
    anomalies, which places the threshold (None: the settings' own, 0.05 in the default); it replaces that of
    `settings` too. settings: hyperparameters instead of the data-driven default.
    overrides: dotted hyperparameters replacing single values of those ({"model.latent_dim": 2}; "auto" keeps one).
    """

    def __init__(
        self,
        *,
        numeric: Sequence[str] | None = None,
        binary: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        contamination: float | None = None,
        settings: Settings | None = None,
        overrides: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        log: Callable[[str], object] | None = None,
    ) -> None:
        declared = (None if kind is None else names(kind) for kind in (numeric, binary, categorical))
        self.numeric, self.binary, self.categorical = declared  # lists of str, as `as_columns` names columns
        self.exclude = tuple(names(exclude))
        self.contamination = None if contamination is None else float(contamination)
        self.settings = settings
        self.overrides = {str(k): v.item() if isinstance(v, np.generic) else v for k, v in (overrides or {}).items()}
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.log = log
        self.detector_: Detector | None = None
        self.numpy_columns_: int | None = None  # fitted on a 2-D array: its width, which scoring arrays must have

    def fit(self, table: Any, calibration: Any = None) -> AnomalyDetector:
        """Train on the rows of `table` (all assumed normal, or nearly so) and calibrate the threshold.

        calibration: rows to place the threshold with, a table with the same columns as `table` (a validation
        split of your own, as the pipeline's); given, every usable row of `table` trains. Otherwise the threshold
        comes from 10 % of `table` held out from training (from the training rows below CALIBRATION_ROWS rows).
        """
        columns = as_columns(table)
        if not columns:
            raise ValueError("AnomalyDetector.fit: the table has no columns")
        n = len(next(iter(columns.values())))
        if n < 2:
            raise ValueError(f"AnomalyDetector.fit: need at least 2 rows, got {n}")
        types = infer_feature_types(
            columns, self.exclude, self.numeric, self.binary, self.categorical, type_kinds(table)
        )
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = round(n * VALIDATION_FRACTION) if calibration is None and n >= CALIBRATION_ROWS else 0
        pre = Preprocessor(types.numeric, types.binary, types.categorical).fit(_rows(columns, order[n_val:]))
        unusable = pre.unusable_rows(columns)  # infinite, huge or off the statistics: left out, as the pipeline does
        if unusable.any():
            left_out = f"{int(unusable.sum()):,} of {n:,} rows left out"
            warnings.warn(f"AnomalyDetector.fit: {left_out}: a value {UNUSABLE}", stacklevel=2)
        train_index, held_out_index = (part[~unusable[part]] for part in (order[n_val:], order[:n_val]))
        if len(train_index) < 2:
            raise ValueError(f"AnomalyDetector.fit: need at least 2 usable rows, got {len(train_index)}")
        train = _rows(columns, train_index)
        if calibration is not None:
            calibrating = _calibration_rows(calibration, pre.columns, pre)
        else:
            calibrating = _rows(columns, held_out_index) if len(held_out_index) else train
        layout = DataLayout(pre.layout_blocks())
        chosen = {} if self.contamination is None else {"score.contamination": self.contamination}
        settings = with_values(self.settings or auto_settings(len(train_index), layout, self.seed),
                               {**chosen, **self.overrides})  # fmt: skip
        if self.settings is None and self.overrides.get("train.epochs", AUTO) == AUTO:
            # the default's epochs keep its step budget at the batch actually used, as `make train` chooses them
            settings = with_values(settings, {"train.epochs": epochs_for(len(train_index), settings.train.batch_size)})
        check_variant(settings.model, settings.objective, settings.score)  # before the budget is spent, not after
        torch.manual_seed(settings.train.seed)  # the initial weights too: the same seed gives the same model
        model = VAE(settings.model, layout)
        observed = observed_features(layout, pre.encoded_missing(train))  # missing values: not learned as values
        fit(model, pre.transform(train), None, settings.objective, settings.train, train_observed=observed,
            device=self.device, log=self.log, log_every=max(1, settings.train.epochs // 10))  # fmt: skip
        self.detector_ = Detector(model, pre, settings.score, objective=settings.objective, seed=self.seed)
        self.numpy_columns_ = table.shape[1] if isinstance(table, np.ndarray) else None
        rows = self.detector_.score_rows(calibrating)
        self.detector_.calibrate(rows.score, rows.contributions, self.detector_.observed(calibrating))
        return self

    @property
    def detector(self) -> Detector:
        if self.detector_ is None:
            raise RuntimeError("AnomalyDetector: call fit() or load() first")
        return self.detector_

    def _columns(self, table: Any) -> dict[str, np.ndarray]:
        """`as_columns` of a table to score; a 2-D array must be as wide as the one fitted on (its columns are
        named by position, so one column more or less would shift every feature)."""
        width = self.numpy_columns_
        if isinstance(table, np.ndarray) and table.ndim == 2 and width is not None and table.shape[1] != width:
            raise ValueError(f"AnomalyDetector: fitted on arrays of {width} columns, got {table.shape[1]}")
        return as_columns(table)

    def score_samples(self, table: Any) -> np.ndarray:
        """Anomaly scores (N,), higher = more anomalous (the negative ELBO in nats by default)."""
        return self.detector.score(self._columns(table))[0]

    def predict(self, table: Any) -> np.ndarray:
        """(N,) int 0/1: 1 where the score is above the calibrated threshold."""
        return self.detector.is_anomaly(self.score_samples(table)).astype(np.int64)

    def feature_scores(self, table: Any, relative: bool = True) -> pd.DataFrame:
        """Each feature's share of the score, (N, F), columns named by feature; for a pandas input, its own
        column labels in its order (an int or tuple label stays one) and its index.

        relative: minus the feature's median share on the held-out training rows, so the column furthest above
        its typical value is the odd one, and NaN for a missing value (left out of the score, it is no evidence
        either way; pandas' idxmax skips it); otherwise the raw shares, 0 for a missing value (which add up to
        the score with the latent term, see `vae.scoring.RowScores`).
        """
        columns = self._columns(table)
        contributions = self.detector.score(columns)[1]
        if relative:
            observed = self.detector.observed(columns)
            shares = self.detector.relative_contributions(contributions)
            if observed is not None:  # an impossible value (+inf) is not observed either, but it is evidence
                shares = np.where(observed | np.isposinf(contributions), shares, np.nan)
            contributions = shares
        frame = pd.DataFrame(contributions, columns=list(self.detector.feature_names))
        if not isinstance(table, pd.DataFrame):
            return frame
        own = {str(label): label for label in table.columns}  # as `as_columns` names them: 1 -> "1"
        order = [name for name in own if name in frame.columns]
        return frame[order].set_axis([own[name] for name in order], axis=1).set_axis(table.index, axis=0)

    def save(self, directory: str | os.PathLike) -> None:
        """Write the fitted detector as plain files (`weights.pt`, `detector.json`) and the estimator's own
        arguments and, when it was fitted on an array, that array's width (`estimator.json`), so a loaded estimator
        scores and fits again as this one did."""
        settings = None if self.settings is None else dataclasses.asdict(self.settings)
        arguments = {"numeric": self.numeric, "binary": self.binary, "categorical": self.categorical,
                     "exclude": list(self.exclude), "contamination": self.contamination, "overrides": self.overrides,
                     "settings": settings, "numpy_columns": self.numpy_columns_}  # fmt: skip
        text = json.dumps(arguments, indent=2)  # first: an argument JSON cannot hold fails before anything is written
        path = save_detector(self.detector, directory)
        write_atomically(path / ESTIMATOR_FILE, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "auto") -> AnomalyDetector:
        """A fitted estimator from `save`'s files, on `device`, with the arguments it was made with (a directory
        written without `estimator.json`, by `save_detector` alone or before it existed, gets the defaults)."""
        arguments_file = Path(directory) / ESTIMATOR_FILE
        arguments = json.loads(arguments_file.read_text()) if arguments_file.exists() else {}
        settings = arguments.pop("settings", None)
        numpy_columns = arguments.pop("numpy_columns", None)
        if settings is not None:
            settings = Settings(
                **{name: from_dict(kind, settings[name]) for name, kind in get_type_hints(Settings).items()}
            )
        estimator = cls(device=device, settings=settings, **arguments)
        estimator.detector_ = load_detector(directory, map_location=estimator.device)
        estimator.seed = estimator.detector_.seed
        estimator.numpy_columns_ = numpy_columns
        return estimator
