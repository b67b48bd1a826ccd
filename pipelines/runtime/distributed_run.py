"""The Ray Train side of one training run: the TorchTrainer (DDP workers, fault tolerance, the checkpoints it
keeps, each epoch logged to MLflow by its controller), the plain-data spec its workers get, and the Detector read
back from one of its checkpoints."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from typing import Any

from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    Result,
    RunConfig,
    ScalingConfig,
    UserCallback,
)
from ray.train.torch import TorchTrainer

from pipelines.settings.yaml_configs import TrainPipelineConfig
from pipelines.tracking.scoped_env import environment_defaults
from vae import Detector, ScoreConfig, load_detector, to_dict

from .parquet_input import PreparedData
from .worker_loop import CHECKPOINT_SCORE, DETECTOR_DIR, LoopSpec, train_loop_per_worker


class EpochReports(UserCallback):
    """Ray Train callback, run by the controller: logs rank 0's report of each epoch to the MLflow run `run_id` at
    the step of its epoch (less `epoch` and CHECKPOINT_SCORE), once the epoch's checkpoint is stored. A lost worker
    makes Ray Train train again only the epochs after the last stored checkpoint, so no epoch is logged twice; the
    workers never import MLflow. Listed before Tune's callback, an epoch is logged before ASHA can stop the trial.
    With `stoppable` (a sweep's trial) the run's status is asked before each epoch is logged: Tune closes the run
    of a trial it stops; a plain run is closed only by its own driver, so it is never asked."""

    def __init__(self, tracking_uri: str, run_id: str, stoppable: bool = False) -> None:
        self.tracking_uri, self.run_id, self.stoppable = tracking_uri, run_id, stoppable
        self.stopped = False
        self.ready: concurrent.futures.Future | None = None  # the EpochLogger, made where the callback is unpickled

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "stoppable": self.stoppable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Ray Train's controller unpickles its callbacks as it starts: MLflow (about 1.5 s of CPU to import) is made
        # ready on a thread there and then, while the worker group starts, neither delaying that start nor taking a
        # core from the workers' epochs later.
        self.__init__(**state)
        self._make_logger()

    def _make_logger(self) -> None:
        self.ready = concurrent.futures.Future()

        def make() -> None:
            try:
                from pipelines.tracking.runs import EpochLogger

                self.ready.set_result(EpochLogger(self.tracking_uri, self.run_id))
            except Exception as err:  # raised again at the first report
                self.ready.set_exception(err)

        threading.Thread(target=make, daemon=True, name="epoch-logger").start()

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        if self.ready is None:  # never pickled: called in the process that made it
            self._make_logger()
        logger = self.ready.result()
        self.stopped = self.stopped or (self.stoppable and not logger.run_is_open())
        if self.stopped:
            # Tune stopped the trial (ASHA) and `TrialRuns` closed its run; the epochs Ray Train finishes before the
            # stop reaches it are not part of the trial's result, so they are not logged to its run either.
            return
        first = metrics[0]
        logger.log(int(first["epoch"]), {k: v for k, v in first.items() if k not in ("epoch", CHECKPOINT_SCORE)})


def build_trainer(
    config: TrainPipelineConfig,
    prepared: PreparedData,
    spec: LoopSpec,
    tracking_uri: str,
    run_id: str,
    storage_path: str | None = None,
    callbacks: tuple = (),
    stoppable: bool = False,
) -> TorchTrainer:
    """The TorchTrainer of one run (`config.run.name`), keeping the best checkpoints by `spec.checkpoint_metric`
    (reported as CHECKPOINT_SCORE: epochs inside the KL warm-up rank last), logging each epoch to the MLflow run
    `run_id` at `tracking_uri` (`EpochReports`, `stoppable` for a sweep's trial) before `callbacks` see it."""
    scaling = config.scaling
    _, mode = spec.checkpoint_metric
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=dataclasses.asdict(spec),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker=scaling.resources_per_worker(),
        ),
        run_config=RunConfig(
            name=config.run.name,
            storage_path=storage_path or config.run.resolved_storage_path(),
            failure_config=FailureConfig(max_failures=config.run.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.run.checkpoints_to_keep, checkpoint_score_attribute=CHECKPOINT_SCORE,
                checkpoint_score_order=mode,
            ),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=[EpochReports(tracking_uri, run_id, stoppable), *callbacks],
        ),
        datasets={"train": prepared.train, "validation": prepared.validation},
    )  # fmt: skip


# How often Ray Train's controller collects its workers' reports (Ray's default: 2 s). A worker hands over one
# report at a time and waits for the controller to take it, so the interval bounds the epoch rate: 40 epochs of the
# thyroid rows took 112.8 s at 2 s and 50.4 s at 0.05 s (2 workers, 2 cores); 231 epochs with one worker trained in
# 26.2 s at 0.05 s and 19.6 s at 0.01 s. Each poll asks every worker for its status, so the interval grows with the
# group (about 100 status calls a second, whatever its size).
POLL_PER_WORKER_S = 0.01


def report_poll_s(workers: int) -> float:
    """The controller's polling interval for a group of `workers`: POLL_PER_WORKER_S each."""
    return POLL_PER_WORKER_S * max(workers, 1)


def fit(trainer: TorchTrainer) -> Result:
    """`trainer.fit()` with the controller polling every `report_poll_s` (Ray Train passes the variable on to its
    controller and workers; a user's own RAY_TRAIN_HEALTH_CHECK_INTERVAL_S wins)."""
    poll = report_poll_s(trainer.scaling_config.num_workers)
    with environment_defaults(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=f"{poll:g}"):
        return trainer.fit()


def loop_spec(config: TrainPipelineConfig, prepared: PreparedData, **extra) -> LoopSpec:
    """What the workers of `config`'s run need, as plain data (`extra`: LoopSpec's sweep fields)."""
    return LoopSpec(
        model=to_dict(config.model), layout=to_dict(prepared.layout), objective=to_dict(config.objective),
        train=to_dict(config.train), score=to_dict(config.score), preprocessor=prepared.features.to_dict(),
        condition=None if prepared.condition is None else prepared.condition.to_dict(),
        shard_memory_bytes=int(config.scaling.shard_memory_mb * 2**20), **extra,
    )  # fmt: skip


def load_checkpoint_detector(checkpoint: Checkpoint, score: ScoreConfig) -> Detector:
    """The Detector saved in a training checkpoint (local or remote storage), scoring with `score`."""
    with checkpoint.as_directory() as directory:
        detector = load_detector(os.path.join(directory, DETECTOR_DIR))
    detector.score_config = score
    return detector
