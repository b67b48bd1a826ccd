"""Table 1c: the demo's sweep with four trials, timed, and where each trial's time goes.

`pipelines.commands.tune.run` with the demo's settings (`pipelines.commands.demo.DEMO_SWEEP`: every setting `auto`,
one Ray Train worker per trial, two trials at once) over latent sizes auto, 2, 4 and 8 on the bundled thyroid rows,
on the running local Ray (its start excluded). Per trial, from its MLflow child run (opened by Tune's driver when the
trial starts, closed when it ends) and the timestamps of its epoch metrics: the start-up until its first epoch was
reported, its epochs, and its end.
"""

from __future__ import annotations

import statistics
import time

from mlflow import MlflowClient

from pipelines.commands import tune
from pipelines.commands.demo import DEMO_SWEEP
from pipelines.commands.sweep_trials import trial_run_name
from pipelines.sample_data.datasets import write_thyroid_parquet
from pipelines.settings.yaml_configs import CONFIG_DIR, TunePipelineConfig, load_config
from pipelines.tracking.runs import Tracker

from .context import Setup
from .tables import Table, num, target

LATENT_GRID, QUICK_LATENT_GRID = "[auto,2,4,8]", "[auto]"
QUICK_EPOCHS = 2  # quick mode: one trial of two epochs instead of four of the default's budget
TARGET_S = 60.0  # the sweep (Tune's fit) on an idle 2-core machine
EPOCH_METRIC = "rows_per_s"  # logged once per epoch by the controller (`EpochReports`)


def _trial_phases(client: MlflowClient, run) -> tuple[float, float, float, int]:
    """(start-up s, epochs s, end s, epochs) of one trial's child run: from its start to its first epoch's metric,
    from there to its last epoch's, from there to the run's end."""
    stamps = sorted(m.timestamp for m in client.get_metric_history(run.info.run_id, EPOCH_METRIC))
    start, end = run.info.start_time, run.info.end_time or stamps[-1]
    return (stamps[0] - start) / 1e3, (stamps[-1] - stamps[0]) / 1e3, (end - stamps[-1]) / 1e3, len(stamps)


def run(setup: Setup) -> Table:
    train_path, _ = write_thyroid_parquet(setup.workdir / "thyroid")
    grid = QUICK_LATENT_GRID if setup.quick else LATENT_GRID
    overrides = [*DEMO_SWEEP, f"tune.space.model.latent_dim.grid={grid}", f"data.path={train_path}",
                 "tune.name=bench-sweep", f"run.storage_path={setup.workdir / 'runs'}",
                 f"tracking.tracking_uri={setup.tracking_uri}", "tracking.experiment=bench-sweep"]  # fmt: skip
    if setup.quick:
        overrides.append(f"train.epochs={QUICK_EPOCHS}")
    config = load_config(CONFIG_DIR / "tune.yaml", overrides, cls=TunePipelineConfig)
    started = time.perf_counter()
    outcome = tune.run(config)
    wall = time.perf_counter() - started
    parent = Tracker(config.tracking)
    parent.run_id = outcome.parent_run_id
    fit_s = parent.client.get_run(parent.run_id).data.metrics["sweep_s"]
    children = parent.child_runs()
    table = Table(
        f"Table 1c. The demo's sweep of {len(outcome.trials)} trials, and where a trial's time goes "
        "(`pipelines.commands.tune.run`)",
        ["trial", "latent", "start-up s (start to first epoch)", "epochs", "epochs s", "end s", "trial s"],
    )  # fmt: skip
    startups = []
    for trial in sorted(outcome.trials, key=lambda t: t.trial_id):
        child = children[trial_run_name(config.tune.name, trial.trial_id)]
        startup, epochs_s, end_s, epochs = _trial_phases(parent.client, child)
        startups.append(startup)
        table.add(trial.trial_id, trial.params.get("model.latent_dim"), num(startup, 1), epochs, num(epochs_s, 1),
                  num(end_s, 1), num(startup + epochs_s + end_s, 1))  # fmt: skip
    table.add("**sweep (Tune's fit)**", "", f"median {num(statistics.median(startups), 1)}", "", "", "",
              f"{num(fit_s, 1)} ({target(fit_s, TARGET_S, at_least=False, digits=0)})")  # fmt: skip
    table.add("**whole tune.run**", "", "", "", "", "", num(wall, 1))
    table.notes += [
        f"{len(outcome.trials)} trials over latent sizes {grid} (every other setting `auto`: the default's budget "
        "of optimiser steps over the thyroid rows), one Ray Train worker of "
        f"{config.scaling.cpus_per_worker} CPU each, {config.tune.max_concurrent_trials} at once, on the local Ray "
        "the tables share (its start excluded).",
        "Per trial, from its MLflow child run: start-up = the run's start (Tune's driver starts the trial) to its "
        "first epoch's metric (Train controller, worker group, the worker's setup and first epoch, the checkpoint "
        "and the report); epochs = first to last epoch metric; end = last epoch to the run's end (Tune ends the "
        "trial). Sweep: Tune's fit ('sweep finished in'); whole tune.run adds the preparation with Ray Data, the "
        f"selection and the registration. Target: the sweep at most {TARGET_S:g} s on an idle 2-core machine.",
    ]
    return table
