"""Each epoch of a training run is logged once, by Ray Train's controller from rank 0's report, however often the
run restarts (against a real MLflow store, SQLite): a restart trains again the epochs after its last checkpoint."""

import pickle

import pytest
from mlflow import MlflowClient

from pipelines.runtime.distributed_run import EpochReports
from pipelines.runtime.worker_loop import CHECKPOINT_SCORE
from pipelines.settings.yaml_configs import TrackingSettings
from pipelines.tracking.runs import EpochLogger, Tracker


def _epoch(loss: float) -> dict[str, float]:
    return {"val_loss": loss, "train_loss": loss + 1}


def test_epochs_an_earlier_attempt_logged_are_not_logged_again(tmp_path):
    tracker = Tracker(TrackingSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="restarts"))
    run_id, _ = tracker.start("run", {})
    first = EpochLogger(tracker.uri, run_id)
    for epoch in (1, 2, 3):  # the worker dies after logging epoch 3, before its checkpoint: it resumes after 2
        first.log(epoch, _epoch(10.0 - epoch))
    second = EpochLogger(tracker.uri, run_id)
    for epoch in (3, 4):
        second.log(epoch, _epoch(20.0 - epoch))
    second.log(4, {"replica_divergence": 0.0})  # the run's last line, at the last epoch: not an epoch's metrics
    third = EpochLogger(tracker.uri, run_id)  # another restart, from epoch 4's checkpoint
    third.log(5, _epoch(1.0))

    history = {name: [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, name)]
               for name in ("val_loss", "train_loss", "replica_divergence")}  # fmt: skip
    assert sorted(history["val_loss"]) == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 16.0), (5, 1.0)]
    assert [step for step, _ in sorted(history["train_loss"])] == [1, 2, 3, 4, 5]
    assert history["replica_divergence"] == [(4, 0.0)]


@pytest.mark.parametrize("stoppable", [True, False], ids=["sweep trial", "plain run"])
def test_the_controller_logs_rank_zeros_report_at_its_epoch_until_tune_closes_a_trials_run(
    tmp_path, monkeypatch, stoppable
):
    asked = []
    get_run = MlflowClient.get_run
    monkeypatch.setattr(MlflowClient, "get_run", lambda client, rid: asked.append(rid) or get_run(client, rid))
    tracker = Tracker(TrackingSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="reports"))
    run_id, _ = tracker.start("run", {})
    callback = pickle.loads(pickle.dumps(EpochReports(tracker.uri, run_id, stoppable)))  # as Ray Train gets it
    for epoch in (1, 2):
        ranks = [{"epoch": epoch, "val_loss": 5.0 - epoch, CHECKPOINT_SCORE: 5.0 - epoch, "rows_per_s": 100.0},
                 {"epoch": epoch, "val_loss": 99.0, CHECKPOINT_SCORE: 99.0, "rows_per_s": 100.0}]  # fmt: skip
        callback.after_report(None, ranks, checkpoint=None)
    assert len(asked) == (2 if stoppable else 0)  # a trial's status before each epoch; a plain run's never
    run = tracker.client.get_run(run_id)
    assert set(run.data.metrics) == {"val_loss", "rows_per_s"}
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, "val_loss")] == [(1, 4.0), (2, 3.0)]

    tracker.end(ok=True)  # a sweep: Tune stopped the trial and closed its run; the epochs still reported are not logged
    for epoch in (3, 4):
        callback.after_report(None, [{"epoch": epoch, "val_loss": 1.0, CHECKPOINT_SCORE: 1.0}], checkpoint=None)
    logged = [m.step for m in tracker.client.get_metric_history(run_id, "val_loss")]
    assert logged == ([1, 2] if stoppable else [1, 2, 3, 4])
    assert len(asked) == (4 if stoppable else 1)  # a closed trial's run is not asked again (+1: `run` above)


def test_the_controller_polls_about_a_hundred_worker_statuses_a_second_whatever_the_group():
    from pipelines.runtime.distributed_run import report_poll_s

    assert [report_poll_s(n) for n in (1, 2, 32)] == [0.01, 0.02, 0.32]
    assert all(abs(n / report_poll_s(n) - 100) < 1e-9 for n in (1, 4, 64))
