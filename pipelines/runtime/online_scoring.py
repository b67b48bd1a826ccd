"""Online scoring with Ray Serve: `POST /score` scores JSON rows as the batch job scores Parquet rows (the same
checks set rows that cannot be scored aside, with their reason; the same scores, flags and top features), and
`GET /healthz` answers once a replica has its model. Each replica follows the registry alias it serves: when the
alias moves, it loads the new version beside the old one and swaps it in between batches, so no request fails.

The application is built by `build_app`, the import path a KubeRay RayService or `serve run` names; the `serve`
command deploys it on a local Ray or the cluster at RAY_ADDRESS."""

import asyncio
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from pipelines.settings.model_jobs import MODEL_SPEC, ServeConfig
from pipelines.tracking.registry import load_model_spec, resolve_model_version
from pipelines.tracking.runs import TrackingError, resolve_tracking_uri
from pipelines.tracking.scoped_env import TRACKING_RETRIES
from vae import ConfigError, Detector, Preprocessor, from_dict

from .batch_inference import category_labels, feature_baseline, feature_columns, quarantine_reasons, top_features
from .parquet_checks import category_mismatch
from .scored_output import REASON

APP_NAME = "vae-score"
SCORE_BATCH = 1024  # rows per model call
logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ServedModel:
    """One registered model version, ready to score JSON rows."""

    version: str  # NAME/VERSION
    detector: Detector
    threshold: float
    numeric: list[str]  # numeric and binary input columns
    categorical: list[str]
    baseline: np.ndarray  # (F,) typical feature contributions
    labels: dict[str, tuple[str, list[str]]]  # categorical column -> its training label kind and labels

    @classmethod
    def load(cls, spec: str, tracking_uri: str) -> "ServedModel":
        """The model `NAME@ALIAS` points to now (or `NAME/VERSION`), from the registry (`of`)."""
        detector, version = load_model_spec(spec, tracking_uri)
        return cls.of(detector, version)

    @classmethod
    def of(cls, detector: Detector, version: str) -> "ServedModel":
        """`detector` ready to serve as `version`; raises ConfigError for a model that cannot score JSON rows (an
        image model) or flag anomalies (no calibrated threshold)."""
        if not isinstance(detector.preprocessor, Preprocessor):
            raise ConfigError(f"model {version} scores images: the endpoint serves tabular models")
        if detector.calibration is None:
            raise ConfigError(f"model {version} has no calibrated threshold: it cannot flag anomalies online")
        numeric, categorical = feature_columns(detector)
        return cls(version, detector, detector.calibration.threshold, numeric, categorical,
                   feature_baseline(detector), category_labels(detector))  # fmt: skip

    def score(self, rows: list[Any], top: int, quarantine_unseen: bool) -> list[dict[str, Any]]:
        """One result per row, in order: {"score", "is_anomaly", "top_features": [[name, share], ...], "reason"};
        a row that cannot be scored gets null score, flag and features, and its reason."""
        frame, reasons = self._frame(rows)
        tagged = quarantine_reasons(frame, self.detector.preprocessor, self.detector.condition, quarantine_unseen)
        for i, reason in enumerate(tagged[REASON]):
            reasons[i] = reasons[i] or reason  # what is wrong with the JSON itself comes first, alone
        good = np.array([reason is None for reason in reasons], dtype=bool)
        results: list[dict[str, Any]] = [
            {"score": None, "is_anomaly": None, "top_features": None, "reason": reason} for reason in reasons
        ]
        if good.any():
            # in model batches of SCORE_BATCH rows: one call for all the rows of up to max_batch_size requests of
            # max_rows each held 540 MiB for 80k rows of a tiny model (a row's score does not depend on its batch)
            scores, contributions = self.detector.score(frame[good], batch_size=SCORE_BATCH)
            order, shares = top_features(contributions, self.baseline, top)
            names = self.detector.feature_names
            for i, score, ranks, parts in zip(np.flatnonzero(good), scores, order, shares, strict=True):
                results[i] = {"score": float(score), "is_anomaly": bool(score > self.threshold),
                              "top_features": [[names[r], float(p)] for r, p in zip(ranks, parts, strict=True)],
                              "reason": None}  # fmt: skip
        return results

    def _frame(self, rows: list[Any]) -> tuple[pd.DataFrame, list[str | None]]:
        """The rows as a DataFrame of the model's input columns, and per row why its JSON cannot be used (not an
        object, a column left out, a number that is not a number), or None; such values become missing."""
        reasons: list[str | None] = [None] * len(rows)
        columns: dict[str, list[Any]] = {column: [] for column in [*self.numeric, *self.categorical]}
        for i, row in enumerate(rows):
            if isinstance(row, dict):  # a column left out is a client's mistake; null is a missing value
                wrong = [f"{column} is not in the row" for column in columns if column not in row]
            else:
                reasons[i], row, wrong = "the row is not a JSON object", {}, []
            for column in self.numeric:
                value = row.get(column)
                if value is not None and not isinstance(value, Real):
                    wrong.append(f"{column} is not a number")
                    value = None
                try:
                    columns[column].append(math.nan if value is None else float(value))
                except OverflowError:  # a JSON integer of hundreds of digits
                    wrong.append(f"{column} is beyond the range of a float")
                    columns[column].append(math.nan)
            for column in self.categorical:
                value = row.get(column)
                kind, named = JSON_TYPES.get(type(value), NESTED)
                problem = None if value is None else category_mismatch(kind, *self.labels[column])
                if problem:  # a value the batch job's schema check would refuse for the whole column
                    wrong.append(f"{column} is {named} here, {problem}")
                    value = None
                columns[column].append(value)
            if wrong:
                reasons[i] = "; ".join(wrong)
        kinds = {column: float if column in self.numeric else object for column in columns}
        frame = pd.DataFrame({column: pd.Series(values, dtype=kinds[column]) for column, values in columns.items()})
        return frame, reasons


# A JSON value's Arrow type as a Parquet column of such values would have it, and its name in a reason.
JSON_TYPES = {bool: (pa.bool_(), "true/false"), int: (pa.int64(), "a number"), float: (pa.float64(), "a number"),
              str: (pa.string(), "text")}  # fmt: skip
NESTED = (pa.binary(), "a list or an object")  # a type no category is read from


# No `from __future__ import annotations` in this module: FastAPI reads the endpoints' annotations as they are, and
# a request body type given as a string is taken for a query parameter.
class ScoreRequest(BaseModel):
    """The body of `POST /score`: rows of {column: value} with the model's input columns."""

    rows: list[Any] = Field(description="one JSON object per row: the training columns and their values")


api = FastAPI(title="vae-anomaly online scoring")


@serve.deployment
@serve.ingress(api)
class ScoringEndpoint:
    """A replica: the model `config.model` names, requests scored in batches, the alias followed."""

    def __init__(self, config: ServeConfig, tracking_uri: str) -> None:
        self.config, self.tracking_uri = config, tracking_uri
        self.model = ServedModel.load(config.model, tracking_uri)
        self.score_batch.set_max_batch_size(config.max_batch_size)
        self.score_batch.set_batch_wait_timeout_s(config.batch_wait_ms / 1000)
        self.alias = MODEL_SPEC.match(config.model)["alias"]
        if self.alias:
            threading.Thread(target=self._follow_alias, daemon=True, name="follow-alias").start()

    def _follow_alias(self) -> None:
        """Every `alias_poll_s`, ask the registry where the alias points; load a new version and swap it in (one
        attribute assignment: a batch already running finishes with the model it started with)."""
        name = MODEL_SPEC.match(self.config.model)["name"]
        while True:
            time.sleep(self.config.alias_poll_s)
            try:
                version = f"{name}/{resolve_model_version(name, self.alias, None, self.tracking_uri)}"
                if version != self.model.version:
                    self.model = ServedModel.load(version, self.tracking_uri)
                    logger.warning("%s@%s moved: now serving %s", name, self.alias, version)
            except (TrackingError, ConfigError) as err:  # keep serving the loaded version
                logger.warning("cannot follow %s@%s: %s", name, self.alias, err)

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        """Ready: the replica has its model."""
        return {"status": "ok", "model": self.model.version}

    @api.post("/score")
    async def score(self, request: ScoreRequest) -> dict[str, Any]:
        """{"model": "NAME/VERSION", "results": [...]}: one result per row, in order (`ServedModel.score`)."""
        if len(request.rows) > self.config.max_rows:
            raise HTTPException(413, f"{len(request.rows)} rows in one request; at most {self.config.max_rows}")
        return await self.score_batch(request.rows)

    @serve.batch
    async def score_batch(self, requests: list[list[Any]]) -> list[dict[str, Any]]:
        """The rows of several requests scored in one model call, by one model version."""
        model = self.model
        rows = [row for request in requests for row in request]
        results = await asyncio.to_thread(
            model.score, rows, self.config.top_features, self.config.unknown_categories == "quarantine"
        )
        answers, start = [], 0
        for request in requests:
            answers.append({"model": model.version, "results": results[start : start + len(request)]})
            start += len(request)
        return answers


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for `args`, the fields of a ServeConfig (the `args` of a RayService application,
    or of `serve run pipelines.runtime.online_scoring:build_app model=...`); `host` and `port` are the Serve
    proxy's, set where Serve starts."""
    return endpoint(from_dict(ServeConfig, args))


def endpoint(config: ServeConfig) -> Application:
    """The Serve application of `config`: `config.replicas` replicas of `cpus_per_replica` CPUs each."""
    # Replicas are workers of the cluster, not children of this process: they get the commands' MLflow settings here.
    settings = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **TRACKING_RETRIES}
    env_vars = {name: os.environ.get(name, value) for name, value in settings.items()}
    deployment = ScoringEndpoint.options(
        num_replicas=config.replicas, max_ongoing_requests=4 * config.max_batch_size,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "runtime_env": {"env_vars": env_vars}},
    )  # fmt: skip
    return deployment.bind(config, resolve_tracking_uri(config.tracking))
