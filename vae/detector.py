"""An anomaly detector: a trained VAE with the preprocessing and threshold needed to score raw rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ObjectiveConfig, ScoreConfig, check_score_kind
from .images import ImagePreprocessor
from .model import VAE
from .preprocessing import Preprocessor
from .scoring import calibrate_threshold, score_array


@dataclass
class Detector:
    """Scores tables (column name -> values) with `model`; rows above `threshold` are anomalies."""

    model: VAE
    preprocessor: Preprocessor | ImagePreprocessor  # the feature columns, or the image column
    score_config: ScoreConfig = field(default_factory=ScoreConfig)
    threshold: float | None = None
    condition: Preprocessor | None = None  # encodes the condition columns of a conditional VAE
    metadata: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # how it was trained: decides valid scores

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.model.layout.feature_names

    def encode(self, table: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """The model inputs for a table: x (N, D) and c (N, K) or None."""
        x = self.preprocessor.transform(table)
        c = None if self.condition is None else self.condition.transform(table)
        return x, c

    def score(self, table: Mapping[str, Any], seed: int = 0, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores (N,) and per-feature contributions (N, F) of a table's rows.

        Raises ConfigError when the score kind does not suit the model (an AAE scores by reconstruction only).
        """
        check_score_kind(self.objective, self.score_config.kind)
        x, c = self.encode(table)
        return score_array(self.model, x, c, self.score_config, batch_size=batch_size, seed=seed)

    def calibrate(self, scores: np.ndarray) -> float:
        """Set the threshold from validation scores and the configured contamination or quantile."""
        self.threshold = calibrate_threshold(scores, self.score_config.contamination, self.score_config.quantile)
        return self.threshold

    def is_anomaly(self, scores: np.ndarray) -> np.ndarray:
        """(N,) booleans: score above the calibrated threshold."""
        if self.threshold is None:
            raise RuntimeError("Detector.is_anomaly: no threshold; call calibrate() with validation scores first")
        return np.asarray(scores) > self.threshold
