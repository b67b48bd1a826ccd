"""The sweep's trial runs are opened and closed by Tune's driver (`TrialRuns`), against a real MLflow store
(SQLite): every way a trial ends leaves its run terminated with its outcome, never RUNNING."""

import pickle
from types import SimpleNamespace

import pytest

from pipelines.commands.sweep_trials import (
    ASHA_STOP,
    COMPLETED,
    FAILED,
    OUTCOME_TAG,
    PATIENCE_STOP,
    TRIAL_TAG,
    TrialRuns,
)
from pipelines.settings.yaml_configs import TrackingSettings
from pipelines.tracking.runs import Tracker


@pytest.fixture
def sweep(tmp_path) -> tuple[TrialRuns, Tracker]:
    settings = TrackingSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="sweeps")
    parent = Tracker(settings)
    parent.start("grid", {})
    return TrialRuns(settings, "grid", parent.run_id, epochs=6), parent


def _trial(trial_id: str, epochs: int = 0) -> SimpleNamespace:
    """What the callback reads of a Tune trial: its id, values and last result (`epochs` reported)."""
    return SimpleNamespace(trial_id=trial_id, config={"objective.beta": 0.5}, last_result={"epoch": epochs})


def _trial_logs(runs: TrialRuns, trial_id: str, outcome: str | None) -> None:
    """What `run_trial` does with the run: attach to it by name, log, tag how it ended (if it got that far)."""
    tracker = Tracker(runs.tracking)
    tracker.start(f"grid-{trial_id}", {"objective.beta": "0.5"}, parent_run_id=runs.parent_run_id)
    tracker.log_metrics({"val_loss": 1.0}, step=1)
    if outcome is not None:
        tracker.set_tags({OUTCOME_TAG: outcome})


def test_each_way_a_trial_ends_closes_its_one_run_with_its_outcome(sweep):
    runs, parent = sweep
    for trial_id in ("patient", "full", "cut", "broke"):
        runs.on_trial_start(0, [], _trial(trial_id))
    _trial_logs(runs, "patient", PATIENCE_STOP)  # its function returned after its own early stop
    _trial_logs(runs, "full", None)  # ASHA stops a trial at its budget too, before its function tags it
    _trial_logs(runs, "cut", None)  # ASHA stops it mid-run: it never tags an outcome
    _trial_logs(runs, "broke", None)
    runs.on_trial_start(0, [], _trial("broke"))  # a retry after a failure goes on in the same run
    runs.on_trial_complete(0, [], _trial("patient", epochs=3))
    runs.on_trial_complete(0, [], _trial("full", epochs=6))
    runs.on_trial_complete(0, [], _trial("cut", epochs=2))
    runs.on_trial_error(0, [], _trial("broke", epochs=1))

    children = parent.child_runs()
    assert sorted(children) == ["grid-broke", "grid-cut", "grid-full", "grid-patient"]
    ended = {name: (run.info.status, run.data.tags[OUTCOME_TAG]) for name, run in children.items()}
    assert ended == {"grid-patient": ("FINISHED", PATIENCE_STOP), "grid-full": ("FINISHED", COMPLETED),
                     "grid-cut": ("FINISHED", ASHA_STOP), "grid-broke": ("FAILED", FAILED)}  # fmt: skip
    assert children["grid-full"].data.tags[TRIAL_TAG] == "full"
    assert children["grid-full"].data.tags["vae.param.objective.beta"] == "0.5"
    assert children["grid-full"].data.params == {"objective.beta": "0.5"}


def test_the_callback_survives_the_pickling_of_a_sweeps_state(sweep):
    runs, parent = sweep
    restored = pickle.loads(pickle.dumps(runs))
    restored.on_trial_start(0, [], _trial("again"))
    restored.on_trial_complete(0, [], _trial("again"))
    assert parent.child_runs()["grid-again"].info.status == "FINISHED"
