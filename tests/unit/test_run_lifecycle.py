"""One run lifecycle for every command: `tracked_run` ends the run FINISHED when its block completes, FAILED when
it raises; a sweep closes what its trials left open or untagged. No MLflow: a stand-in tracker records the calls."""

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from pipelines.commands.tune import ASHA_STOP, COMPLETED, FAILED, OUTCOME_TAG, TrialSummary, _close_stopped_trials
from pipelines.tracking.runs import TrackingError, tracked_run


class StandIn:
    """What `tracked_run` and `_close_stopped_trials` call on a Tracker, recorded."""

    uri = "http://127.0.0.1:5000"

    def __init__(self, end_fails: bool = False) -> None:
        self.calls: list[tuple] = []
        self.end_fails = end_fails

    def start(self, run_name, params, resume=True, parent_run_id=None):
        self.calls.append(("start", run_name, dict(params), resume, parent_run_id))
        return "run-1", False

    def end(self, ok: bool) -> None:
        self.calls.append(("end", ok))
        if self.end_fails:
            raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/update failed\nMax retries exceeded")

    def close_run(self, run_id, ok, tags) -> None:
        self.calls.append(("close", run_id, ok, dict(tags)))


def test_a_block_that_completes_ends_the_run_finished():
    tracker = StandIn()
    with tracked_run(tracker, "train-1", {"a": "1"}, resume=False, parent_run_id="parent") as run:
        assert run.run_id == "run-1" and not run.resumed
        assert tracker.calls == [("start", "train-1", {"a": "1"}, False, "parent")]
    assert tracker.calls[-1] == ("end", True)


def test_a_return_inside_the_block_counts_as_completed():
    tracker = StandIn()

    def recipe() -> str:
        with tracked_run(tracker, "score-1", {}):
            return "summary"

    assert recipe() == "summary" and tracker.calls[-1] == ("end", True)


def test_a_block_that_raises_ends_the_run_failed_and_the_error_goes_on():
    tracker = StandIn()
    with pytest.raises(KeyError, match="boom"), tracked_run(tracker, "tune-1", {}):
        raise KeyError("boom")
    assert tracker.calls[-1] == ("end", False)


def test_a_tracking_server_failing_inside_the_block_is_one_tracking_error_line():
    tracker = StandIn(end_fails=True)  # the dead server fails the closing call too: the block's error stands
    with pytest.raises(TrackingError) as err, tracked_run(tracker, "score-1", {}):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/log-batch failed\nMax retries exceeded")
    assert str(err.value) == (f"MLflow at {tracker.uri} failed during run 'score-1': API request to endpoint "
                              "/api/2.0/mlflow/runs/log-batch failed")  # fmt: skip
    assert tracker.calls[-1] == ("end", False)


def test_a_failure_to_end_the_run_leaves_the_blocks_own_error_standing():
    with pytest.raises(KeyError, match="boom"), tracked_run(StandIn(end_fails=True), "tune-1", {}):
        raise KeyError("boom")


def test_a_completed_block_whose_run_cannot_be_ended_is_a_tracking_error():
    ending = "could not end run 'train-1': API request to endpoint /api/2.0/mlflow"
    with pytest.raises(TrackingError, match=ending), tracked_run(StandIn(end_fails=True), "train-1", {}):
        pass


def _child(run_id: str, status: str, tags: dict) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, status=status), data=SimpleNamespace(tags=tags))


def _trial(trial_id: str, outcome: str) -> TrialSummary:
    return TrialSummary(trial_id, {}, 3, 0.5, 3, 0.5, outcome, None, f"run-{trial_id}")


def test_the_sweep_closes_open_trial_runs_and_tags_failed_ones_with_their_outcome():
    children = {
        "a": _child("run-a", "RUNNING", {}),  # stopped by ASHA: its driver was killed mid-run
        "b": _child("run-b", "FAILED", {}),  # raised: `tracked_run` ended it FAILED, no outcome yet
        "c": _child("run-c", "FINISHED", {OUTCOME_TAG: COMPLETED}),  # closed by the trial itself
    }
    tracker = StandIn()
    _close_stopped_trials(tracker, [_trial("a", ASHA_STOP), _trial("b", FAILED), _trial("c", COMPLETED)], children)
    assert tracker.calls == [
        ("close", "run-a", True, {OUTCOME_TAG: ASHA_STOP}),
        ("close", "run-b", False, {OUTCOME_TAG: FAILED}),
    ]
