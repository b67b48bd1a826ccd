"""One run lifecycle for every command: `tracked_run` ends the run FINISHED when its block completes, FAILED when
it raises; a sweep closes what its trials left open or untagged. No MLflow: a stand-in tracker records the calls."""

from types import SimpleNamespace

import pytest

from pipelines.commands.tune import ASHA_STOP, COMPLETED, FAILED, OUTCOME_TAG, TrialSummary, _close_stopped_trials
from pipelines.tracking.runs import tracked_run


class StandIn:
    """What `tracked_run` and `_close_stopped_trials` call on a Tracker, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, run_name, params, resume=True, parent_run_id=None):
        self.calls.append(("start", run_name, dict(params), resume, parent_run_id))
        return "run-1", False

    def end(self, ok: bool) -> None:
        self.calls.append(("end", ok))

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
