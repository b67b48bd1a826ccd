"""One run lifecycle for every command: `tracked_run` ends the run FINISHED when its block completes, FAILED when
it raises (a sweep's trial runs: test_tune_trial_runs.py). No MLflow: a stand-in tracker records the calls."""

import pytest
from mlflow.exceptions import MlflowException

from pipelines.tracking.runs import TrackingError, tracked_run


class StandIn:
    """What `tracked_run` calls on a Tracker, recorded."""

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
