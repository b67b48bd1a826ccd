"""A sweep's trials as Tune's driver sees them: how each ended (the outcome tagged on its MLflow run), its run
opened and closed by a Tune callback (`TrialRuns`), and one console line per trial event (`TrialProgress`)."""

from __future__ import annotations

import math
import time
from typing import Any

from ray import tune

from pipelines.settings.yaml_configs import TrackingSettings
from pipelines.tracking.runs import Tracker

OUTCOME_TAG = "vae.trial.outcome"
TRIAL_TAG = "vae.trial.id"
COMPLETED, PATIENCE_STOP, ASHA_STOP, FAILED = "completed", "early stop (patience)", "stopped by ASHA", "failed"
FINISHED = (COMPLETED, PATIENCE_STOP)  # outcomes whose best metric counts in the selection


def trial_run_name(sweep: str, trial_id: str) -> str:
    """The name of a trial's Ray Train run and MLflow run: the sweep's name and the trial's id."""
    return f"{sweep}-{trial_id}"


class TrialRuns(tune.Callback):
    """Each trial's MLflow child run, opened by Tune's driver when a trial starts (again: a retry, a resumed sweep
    goes on in the same run) and closed with the trial's outcome when Tune ends it, so none is left RUNNING:
    FAILED when it errored for good, else FINISHED with the outcome the trial tagged (it returned: completed, or
    stopped by its own patience) or, untagged, what its last result says: `epochs` reached is completed (ASHA stops
    a trial at its budget, before its function returns), fewer is stopped by ASHA. Holds only settings (Tune
    pickles its callbacks with the sweep's state)."""

    def __init__(self, tracking: TrackingSettings, sweep: str, parent_run_id: str, epochs: int) -> None:
        self.tracking, self.sweep, self.parent_run_id, self.epochs = tracking, sweep, parent_run_id, epochs

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        tracker = Tracker(self.tracking)
        tracker.start(trial_run_name(self.sweep, trial.trial_id), {}, parent_run_id=self.parent_run_id)
        tracker.set_tags({TRIAL_TAG: trial.trial_id, **{f"vae.param.{k}": v for k, v in trial.config.items()}})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._close(trial, ok=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._close(trial, ok=False)

    def _close(self, trial, ok: bool) -> None:
        tracker = Tracker(self.tracking)
        run = tracker.find_run(trial_run_name(self.sweep, trial.trial_id))
        if run is not None:
            budget_reached = (trial.last_result or {}).get("epoch", 0) >= self.epochs
            outcome = run.data.tags.get(OUTCOME_TAG, COMPLETED if budget_reached else ASHA_STOP) if ok else FAILED
            tracker.close_run(run.info.run_id, ok, {OUTCOME_TAG: outcome})


class TrialProgress(tune.Callback):
    """One console line per trial event: started (with its values), each epoch's metric, finished."""

    def __init__(self, metric: str, epochs: int) -> None:
        self.metric, self.epochs = metric, epochs

    @staticmethod
    def _say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        values = ", ".join(f"{k}={short_text(v)}" for k, v in trial.config.items())
        self._say(f"trial {trial.trial_id} started: {values}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric, math.nan)
        self._say(f"trial {trial.trial_id} epoch {result.get('epoch', 0):3d}/{self.epochs}  "
                  f"{self.metric} {value:.4f}  val_loss {result.get('val_loss', math.nan):.4f}")  # fmt: skip

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epochs = trial.last_result.get("epoch", 0)
        self._say(f"trial {trial.trial_id} finished after {epochs} epoch(s)")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._say(f"trial {trial.trial_id} failed: {str(trial.error_file or 'see the Ray logs')}")


def short_text(value: Any) -> str:
    """A value for a console line or a table cell: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
