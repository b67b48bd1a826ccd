"""An anomaly detector: a trained VAE with the preprocessing and threshold needed to score raw rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ObjectiveConfig, ScoreConfig, check_resolved, check_score_kind
from .config_base import ConfigError
from .images import ImagePreprocessor
from .model import VAE
from .preprocessing import Preprocessor, observed_features
from .scoring import RowScores, calibrate_threshold, score_rows, typical_contributions


@dataclass(frozen=True)
class Calibration:
    """A threshold bound to the score it was calibrated on: its value is in the units of that score only."""

    threshold: float
    score: ScoreConfig  # the score configuration of the calibration scores (kind, samples, contamination/quantile)
    reference: tuple[float, ...] | None = None  # (F,) median per-feature contribution of the calibration rows

    def check(self, score: ScoreConfig) -> None:
        """Raise ConfigError (one line) when `score` is not the configuration this calibration was made with."""
        if score != self.score:
            fields = (f.name for f in dataclasses.fields(ScoreConfig))
            changed = [n for n in fields if getattr(score, n) != getattr(self.score, n)]
            was = ", ".join(f"{n}={getattr(self.score, n)!r}" for n in changed)
            now = ", ".join(f"{n}={getattr(score, n)!r}" for n in changed)
            raise ConfigError(
                f"Detector.score_config: the threshold was calibrated with {was} but the detector now scores with "
                f"{now}; call calibrate() with scores of the current configuration"
            )


@dataclass
class Detector:
    """Scores tables (column name -> values) with `model`; rows above the calibrated threshold are anomalies.

    The threshold lives in `calibration` together with the ScoreConfig it was calibrated with: flagging rows or
    relating contributions to the reference with another `score_config` raises ConfigError.
    """

    model: VAE
    preprocessor: Preprocessor | ImagePreprocessor  # the feature columns, or the image column
    score_config: ScoreConfig = field(default_factory=ScoreConfig)
    calibration: Calibration | None = None
    condition: Preprocessor | None = None  # encodes the condition columns of a conditional VAE
    metadata: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # how it was trained: decides valid scores
    seed: int = 0  # the posterior draws' seed when `score` / `score_rows` is given none

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.model.layout.feature_names

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold (in the units of `calibration.score`), None before calibration."""
        return None if self.calibration is None else self.calibration.threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        """Set a threshold by hand, for the current `score_config` (None removes the calibration)."""
        self.calibration = None if value is None else Calibration(float(value), self.score_config)

    def encode(self, table: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """The model inputs for a table: x (N, D) and c (N, K) or None."""
        x = self.preprocessor.transform(table)
        c = None if self.condition is None else self.condition.transform(table)
        return x, c

    def observed(self, table: Mapping[str, Any]) -> np.ndarray | None:
        """(N, F) bool: the features with a value in each row (missing ones are filled for the encoder only and
        left out of the scores); None for images, which are complete or rejected."""
        if isinstance(self.preprocessor, ImagePreprocessor):
            return None
        return observed_features(self.model.layout, self.preprocessor.encoded_missing(table))

    def score_rows(self, table: Mapping[str, Any], seed: int | None = None, batch_size: int = 1024) -> RowScores:
        """Scores (N,), per-feature contributions (N, F) and the latent term (N,) of a table's rows, with
        score = contributions.sum(1) + latent; missing features are marginalised out (see `vae.scoring`), and a
        feature whose value no model can give a likelihood above zero (+-inf, a binary value other than 0/1:
        `Preprocessor.impossible_mask`) contributes +inf, so its row scores +inf: an anomaly, whatever the
        threshold.

        Raises ConfigError when the score kind does not suit the model (an AAE scores by reconstruction only) or
        `score_config` still holds 'auto' values.
        """
        check_resolved(self.score_config, "scoring")
        check_score_kind(self.objective, self.score_config.kind)
        x, c = self.encode(table)
        observed = self.observed(table)
        seed = self.seed if seed is None else seed
        rows = score_rows(self.model, x, c, self.score_config, batch_size=batch_size, seed=seed, observed=observed)
        if isinstance(self.preprocessor, Preprocessor):  # images are complete or rejected
            for column, impossible in self.preprocessor.impossible_mask(table).items():
                rows.contributions[impossible, self.feature_names.index(column)] = np.inf
                rows.score[impossible] = np.inf
        return rows

    def score(
        self, table: Mapping[str, Any], seed: int | None = None, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores (N,) and per-feature contributions (N, F) of a table's rows (see `score_rows`)."""
        rows = self.score_rows(table, seed, batch_size)
        return rows.score, rows.contributions

    def calibrate(
        self, scores: np.ndarray, contributions: np.ndarray | None = None, observed: np.ndarray | None = None
    ) -> float:
        """Set the threshold from validation scores (N,) and the configured contamination or quantile, bound to
        the current `score_config`; with the rows' contributions (N, F), also record each feature's median
        contribution over the rows that have it (`observed` (N, F), see `typical_contributions`) as the reference
        of `relative_contributions`. Returns the threshold."""
        threshold = calibrate_threshold(scores, self.score_config.contamination, self.score_config.quantile)
        reference = None if contributions is None else tuple(typical_contributions(contributions, observed).tolist())
        self.calibration = Calibration(threshold, self.score_config, reference)
        return threshold

    def calibrated_threshold(self) -> float:
        """The threshold, checked against the current `score_config`.

        Raises RuntimeError without a calibration, ConfigError when the score configuration changed since.
        """
        if self.calibration is None:
            raise RuntimeError("Detector: no threshold; call calibrate() with validation scores first")
        self.calibration.check(self.score_config)
        return self.calibration.threshold

    def is_anomaly(self, scores: np.ndarray) -> np.ndarray:
        """(N,) booleans: score above the calibrated threshold (errors: see `calibrated_threshold`)."""
        return np.asarray(scores) > self.calibrated_threshold()

    def relative_contributions(self, contributions: np.ndarray) -> np.ndarray:
        """Contributions (N, F) minus each feature's median contribution on the calibration rows: how much more
        than usual each feature adds to the score (the largest: the column that is most out of the ordinary).

        Raises RuntimeError when the calibration recorded no reference, ConfigError when the score changed.
        """
        self.calibrated_threshold()
        if self.calibration.reference is None:
            raise RuntimeError("Detector.relative_contributions: calibrate() was given no contributions to refer to")
        return np.asarray(contributions) - np.asarray(self.calibration.reference)
