"""MLflow "model from code": a pyfunc that scores rows with the Detector stored beside it as plain files.

MLflow copies this file into every logged model; loading it imports `vae` (the installed package) and
reads `weights.pt` + `detector.json` from the `detector` artifact: no pickled project objects.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from vae import load_detector


class DetectorModel(PythonModel):
    """predict(DataFrame of raw feature columns) -> DataFrame(anomaly_score, is_anomaly)."""

    def load_context(self, context) -> None:
        self.detector = load_detector(context.artifacts["detector"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        scores, _ = self.detector.score(model_input)
        return pd.DataFrame({"anomaly_score": scores, "is_anomaly": self.detector.is_anomaly(scores)})


mlflow.models.set_model(DetectorModel())
