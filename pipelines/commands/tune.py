"""`python pipelines/commands/tune.py --config pipelines/configs/tune.yaml key.sub=value ...` (what `ray submit`
runs on the head node), also `python -m pipelines tune` and `make tune`.

The recipe: validate the config and every value of its search space -> start (or join) Ray -> split, fit the
preprocessing and encode once for all trials -> Ray Tune runs one driver function per trial, which fits a
TorchTrainer (DDP workers) and forwards its epochs to Tune; ASHA stops weak trials, seeded Optuna or a grid picks
the values -> the chosen trial's best checkpoint (`sweep_selection.py`: the default trial unless another fits
the validation rows significantly better) is calibrated, logged and registered with the alias `challenger`.
MLflow holds one parent run per sweep (results table, plots) with one child run per trial (params, epochs).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune
from ray.train import Checkpoint
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from pipelines.cli import run_config_command
from pipelines.commands.sweep_selection import P_COLUMN, TrialSummary, choose_trial
from pipelines.commands.sweep_trials import (
    ASHA_STOP,
    COMPLETED,
    FAILED,
    OUTCOME_TAG,
    PATIENCE_STOP,
    TrialProgress,
    TrialRuns,
    short_text,
    trial_run_name,
)
from pipelines.commands.train import (
    TrainOutcome,
    chosen_params,
    prepare,
    record_changes,
    register,
    registered_outcome,
    report_auto,
    resolve_auto,
)
from pipelines.commands.train import report as report_training
from pipelines.runtime.cluster import cluster_capacity, ray_data_context, ray_session, require_local_resources, verbose
from pipelines.runtime.distributed_run import build_trainer, fit, load_checkpoint_detector, loop_spec
from pipelines.runtime.parquet_checks import DataError
from pipelines.runtime.parquet_input import PreparedData, check_training_data
from pipelines.runtime.shared_storage import require_shared
from pipelines.runtime.worker_loop import CHECKPOINT_SCORE
from pipelines.settings.search_space import Axis, parse_space
from pipelines.settings.yaml_configs import TrainPipelineConfig, TunePipelineConfig
from pipelines.storage import filesystems
from pipelines.tracking import plots
from pipelines.tracking.run_identity import CONFIG_HASH_TAG, ChangedResume, allowed_changes, config_hash
from pipelines.tracking.runs import REGISTERED_TAG, Tracker, flatten, tracked_run
from pipelines.tracking.scoped_env import environment_defaults
from vae import to_dict

TRIAL_DRIVER_CPUS = 0.1  # a trial's driver only waits on its trainer; the workers hold the real resources


@dataclass
class SweepOutcome:
    trials: list[TrialSummary]
    best: TrialSummary
    metric: str
    training: TrainOutcome  # the best trial's registration
    parent_run_id: str


def search_space(axes: tuple[Axis, ...]) -> dict[str, Any]:
    """The one place where config axes become Ray Tune domains, keyed by dotted config name."""
    make = {
        "grid": lambda v: tune.grid_search(list(v)),
        "choice": lambda v: tune.choice(list(v)),
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    return {axis.name: make[axis.kind](axis.values) for axis in axes}


def concurrent_trials(config: TunePipelineConfig) -> int:
    """The configured limit, else as many trials as the cluster's GPUs (or CPUs) hold at once: at its autoscaling
    maximum, so a GPU group that starts at zero nodes does not run the sweep one trial at a time."""
    if config.tune.max_concurrent_trials:
        return config.tune.max_concurrent_trials
    scaling = config.scaling
    if scaling.use_gpu:
        need, have = scaling.num_workers * scaling.gpus_per_worker, cluster_capacity("GPU")
    else:
        need, have = scaling.num_workers * scaling.cpus_per_worker, cluster_capacity("CPU")
    return max(1, int(have // need))


def trial_config(
    config: TunePipelineConfig, params: dict[str, Any], run_name: str, prepared: PreparedData
) -> tuple[TrainPipelineConfig, tuple[str, ...]]:
    """One trial's training config, its swept `params` in and then its remaining "auto" values chosen for the
    prepared rows (a swept value overrides "auto"; auto epochs follow the trial's batch), and the keys chosen."""
    trial = config.trial_config(params, run_name=run_name)
    return resolve_auto(trial, prepared), trial.auto_fields


def run_trial(
    params: dict[str, Any], *, config: TunePipelineConfig, prepared: PreparedData, tracking_uri: str, parent_run_id: str
) -> None:
    """Tune's driver function for one trial: a full Ray Train run of the trial's config, logged to the trial's child
    MLflow run (which `TrialRuns` opens and closes), tagged with how it ended.

    The Train run's name holds the trial id, so a restarted trial resumes from its last checkpoint.
    """
    with ray_data_context():  # this process's Ray Data context drives the trial's dataset splits
        trial_id = tune.get_context().get_trial_id()
        trial, chosen = trial_config(config, params, trial_run_name(config.tune.name, trial_id), prepared)
        tracker = Tracker(replace(trial.tracking, tracking_uri=tracking_uri))
        tracker.start(  # the run TrialRuns opened, found by its name
            trial.run.name, flatten(to_dict(trial)) | chosen_params(trial, chosen), parent_run_id=parent_run_id
        )
        metric, mode = config.tune.reported_metric
        spec = loop_spec(
            trial, prepared, checkpoint_metric=(metric, mode),
            nll_samples=config.tune.nll_samples, auroc=config.tune.metric == "auroc", progress=False,
            selection_rows=config.tune.selection_rows,
        )  # fmt: skip
        storage = f"{config.run.resolved_storage_path()}/{config.tune.name}-trials"
        trainer = build_trainer(trial, prepared, spec, tracker.uri, tracker.run_id, storage_path=storage,
                                callbacks=(TuneReportCallback(),), stoppable=True)  # fmt: skip
        returned = fit(trainer).return_value or {}
        tracker.log_metrics({"replica_divergence": returned["replica_divergence"]}, step=returned["last_epoch"])
        tracker.set_tags({OUTCOME_TAG: PATIENCE_STOP if returned.get("stopped_early") else COMPLETED})


def quiet_tune_output() -> contextlib.AbstractContextManager[None]:
    """Tune's console output off for one block unless `verbose()`: its "new output engine" prints the experiment's
    banner (search algorithm, scheduler, trial count, results path, a TensorBoard hint) even at `verbose=0`; the
    legacy engine at 0 prints nothing, and `TrialProgress` prints the sweep's own lines."""
    return contextlib.nullcontext() if verbose() else environment_defaults(RAY_AIR_NEW_OUTPUT="0")


def _tuner(config: TunePipelineConfig, trainable, param_space: dict[str, Any], runs: TrialRuns) -> tune.Tuner:
    """A new Tuner, or the one of an earlier run of the same sweep name (finished trials are kept); `runs` opens
    and closes the trials' MLflow runs."""
    settings, storage = config.tune, config.run.resolved_storage_path()
    path = f"{storage}/{settings.name}"
    if tune.Tuner.can_restore(path):
        print(f"resuming sweep {settings.name!r} from {path}", flush=True)
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True, param_space=param_space)
    metric, mode = settings.reported_metric
    asha = settings.asha
    scheduler = (
        ASHAScheduler(time_attr="epoch", max_t=config.train.epochs,
                      grace_period=min(asha.grace_period, config.train.epochs),
                      reduction_factor=asha.reduction_factor)
        if asha.enabled else FIFOScheduler()
    )  # fmt: skip
    # The grid generator limits concurrency itself (Tune ignores max_concurrent_trials for it).
    concurrency = concurrent_trials(config)
    search = (
        OptunaSearch(seed=settings.seed) if settings.search == "optuna"
        else BasicVariantGenerator(random_state=settings.seed, max_concurrent=concurrency)
    )  # fmt: skip
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, scheduler=scheduler, search_alg=search, num_samples=settings.num_samples,
            max_concurrent_trials=concurrency if settings.search == "optuna" else None,
        ),
        run_config=tune.RunConfig(
            name=settings.name, storage_path=storage, verbose=1 if verbose() else 0,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            callbacks=[TrialProgress(metric, config.train.epochs), runs],
        ),
    )  # fmt: skip


def summarize(result: tune.Result, metric: str, mode: str, epochs: int, child) -> TrialSummary:
    """A trial's row of the results table, from its per-epoch results and its MLflow child run."""
    frame = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
    params = dict(result.config or {})
    done = int(frame["epoch"].max()) if "epoch" in frame else 0  # epochs, not Tune iterations: a restarted trial
    # resumes its Train run mid-way while Tune counts its reports from 1 again
    scored = frame[frame[metric].notna()] if metric in frame else frame.iloc[0:0]
    if CHECKPOINT_SCORE in scored and np.isfinite(scored[CHECKPOINT_SCORE]).any():
        scored = scored[np.isfinite(scored[CHECKPOINT_SCORE])]  # epochs inside the KL warm-up never win
    if scored.empty:
        best, best_epoch, val_loss, checkpoint = math.nan, 0, math.nan, None
    else:
        row = scored.loc[scored[metric].idxmin() if mode == "min" else scored[metric].idxmax()]
        best, best_epoch, val_loss = float(row[metric]), int(row["epoch"]), float(row["val_loss"])
        checkpoint = row.get("checkpoint_path")
    if result.error is not None:
        outcome = FAILED
    elif child is not None and OUTCOME_TAG in child.data.tags:
        outcome = child.data.tags[OUTCOME_TAG]
    else:
        outcome = COMPLETED if done >= epochs else ASHA_STOP
    run_id = None if child is None else child.info.run_id
    return TrialSummary(trial_id, params, done, best, best_epoch, val_loss, outcome, checkpoint, run_id)


def results_table(trials: list[TrialSummary], metric: str) -> pd.DataFrame:
    """One row per trial: its values, epochs run, best metric and how it ended, best first."""
    rows = [{"trial": t.trial_id, **t.params, "epochs": t.epochs, f"best {metric}": t.best,
             "best epoch": t.best_epoch, "outcome": t.outcome, P_COLUMN: t.p_vs_default} for t in trials]  # fmt: skip
    frame = pd.DataFrame(rows)
    return frame if frame[P_COLUMN].notna().any() else frame.drop(columns=P_COLUMN)


def markdown_table(frame: pd.DataFrame) -> str:
    """`frame` as a GitHub markdown table, floats to 4 significant digits."""
    cells = [[short_text(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def run(config: TunePipelineConfig) -> SweepOutcome:
    """Run (or resume) the sweep, register the best trial's model; raises ConfigError / DataError / TrackingError."""
    check_training_data(config.data)
    axes = parse_space(config.tune.space)
    parent = Tracker(config.tracking)
    filesystems.check_writable(config.run.resolved_storage_path())
    params = flatten(to_dict(config))
    done, changes = _check_resume(config, parent, params)
    if done is not None:
        return done
    cpus, gpus = config.scaling.group_resources()
    require_local_resources(config.run.ray_address, config.run.local_cpus, cpus + TRIAL_DRIVER_CPUS, gpus, "a trial")
    with ray_session(config.run.ray_address, config.run.local_cpus):
        require_shared(config.run.storage_path, "run.storage_path")
        with tracked_run(parent, config.tune.name, params) as tracked:
            swept = ", ".join(a.name for a in axes)
            print(f"{'resuming' if tracked.resumed else 'starting'} sweep {config.tune.name!r} over {swept}; "
                  f"MLflow {parent.uri} (parent run {tracked.run_id})", flush=True)  # fmt: skip
            record_changes(parent, changes)
            outcome = _sweep_and_register(config, axes, parent)
            parent.set_tags({CONFIG_HASH_TAG: config_hash(params)})
            return outcome


def _check_resume(
    config: TunePipelineConfig, parent: Tracker, params: dict[str, str]
) -> tuple[SweepOutcome | None, ChangedResume | None]:
    """Before Ray starts, what an existing sweep of `tune.name` allows (as for a training run,
    `pipelines.commands.train.check_resume`): (its outcome, None) when it finished and registered its best model
    with this very config, read back from MLflow (nothing is swept or registered again); (None, the changes
    `run.resume_changed` lets in, or None) to resume it; another config is refused with the fields named."""
    previous = parent.find_run(config.tune.name)
    if previous is None:
        return None, None
    training = registered_outcome(parent, previous, params)
    if training is not None:
        print(f"sweep {config.tune.name!r} already ran and registered {training.registered.name}/"
              f"{training.registered.version} with this config: nothing to sweep or register (a new tune.name "
              "sweeps again)", flush=True)  # fmt: skip
        trials = _logged_trials(parent, previous.info.run_id, config.tune.reported_metric[0])
        best = next(t for t in trials if t.trial_id == previous.data.tags.get("vae.best_trial"))
        return SweepOutcome(trials, best, config.tune.reported_metric[0], training, previous.info.run_id), None
    data = previous.data
    return None, allowed_changes(data.params, data.tags, params, "tune.name", config.tune.name,
                                 config.run.resume_changed)  # fmt: skip


def _logged_trials(parent: Tracker, run_id: str, metric: str) -> list[TrialSummary]:
    """A finished sweep's trials as its results table (`sweep/results.csv` of its parent run) records them."""
    table = parent.read_csv_artifact(run_id, "sweep/results.csv")
    fixed = {"trial", "epochs", f"best {metric}", "best epoch", "outcome", P_COLUMN}
    return [TrialSummary(str(row["trial"]), {k: v for k, v in row.items() if k not in fixed}, int(row["epochs"]),
                         float(row[f"best {metric}"]), int(row["best epoch"]), math.nan, row["outcome"], None, None)
            for row in table.to_dict("records")]  # fmt: skip


def _sweep_and_register(config: TunePipelineConfig, axes: tuple[Axis, ...], parent: Tracker) -> SweepOutcome:
    config, prepared = prepare(config)
    base = resolve_auto(config, prepared)  # the values trials get where they sweep nothing: epochs for ASHA
    report_auto(base, tuple(k for k in config.auto_fields if k not in {a.name for a in axes}))
    metric, mode = config.tune.reported_metric
    if config.tune.metric == "auroc":
        _require_both_classes(prepared, config.data.label)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, config=config, prepared=prepared, tracking_uri=parent.uri,
                             parent_run_id=parent.run_id),
        {"CPU": TRIAL_DRIVER_CPUS},
    )  # fmt: skip
    started = time.perf_counter()
    runs = TrialRuns(replace(config.tracking, tracking_uri=parent.uri), config.tune.name, parent.run_id,
                     base.train.epochs)  # fmt: skip
    with quiet_tune_output():
        results = _tuner(base, trainable, search_space(axes), runs).fit()
    sweep_s = time.perf_counter() - started
    print(f"sweep finished in {sweep_s:.1f} s", flush=True)

    children = parent.child_runs()
    trials = [summarize(r, metric, mode, base.train.epochs, children.get(_run_name(config, r))) for r in results]
    best, why = choose_trial(config, axes, trials, prepared)
    print(why, flush=True)
    trials.sort(key=lambda t: (math.isnan(t.best), t.best if mode == "min" else -t.best))

    table = results_table(trials, metric)
    parent.log_text(markdown_table(table), "sweep/results.md")
    parent.log_text(table.to_csv(index=False), "sweep/results.csv")
    parent.log_figure(plots.metric_by_param(table, metric, [a.name for a in axes]), "plots/metric_by_param.png")
    parent.log_metrics({f"best_{metric}": best.best, "trials": len(trials), "sweep_s": sweep_s,
                        "trials_stopped_early": sum(t.epochs < base.train.epochs for t in trials)})  # fmt: skip

    trial, _ = trial_config(config, best.params, trial_run_name(config.tune.name, best.trial_id), prepared)
    detector = load_checkpoint_detector(Checkpoint(best.checkpoint_path), trial.score)
    tracker = Tracker(replace(trial.tracking, tracking_uri=parent.uri))
    with tracked_run(tracker, trial.run.name, {}):  # the best trial's own run gets the model
        best_metrics = {"best_val_loss": best.val_loss, f"best_{metric}": best.best}
        training = register(trial, tracker, detector, prepared, best_metrics, best.epochs)
    parent.set_tags({"vae.best_trial": best.trial_id, "vae.selection": why, REGISTERED_TAG:
                     f"{training.registered.name}/{training.registered.version}"})  # fmt: skip
    return SweepOutcome(trials, best, metric, training, parent.run_id)


def _run_name(config: TunePipelineConfig, result: tune.Result) -> str:
    return trial_run_name(config.tune.name, (result.metrics or {}).get("trial_id", ""))


def _require_both_classes(prepared: PreparedData, label: str) -> None:
    counts = prepared.validation.groupby("label").count().to_pandas()
    if len(counts) < 2:
        raise DataError(f"tune.metric=auroc needs normal and anomalous rows in the validation split; label "
                        f"{label!r} there holds only {counts['label'].tolist()}")  # fmt: skip


def report(outcome: SweepOutcome) -> None:
    table = results_table(outcome.trials, outcome.metric)
    print(f"\nsweep results ({len(outcome.trials)} trials, best first):")
    print(markdown_table(table))
    print(f"\nbest trial {outcome.best.trial_id}: {outcome.metric} {outcome.best.best:.4f} at epoch "
          f"{outcome.best.best_epoch}")  # fmt: skip
    report_training(outcome.training)


def main(argv: list[str] | None = None) -> SweepOutcome:
    return run_config_command("tune", __doc__, "tune.yaml", "tune.num_samples=4", TunePipelineConfig, argv, run, report,
                              resumes=True)  # fmt: skip


if __name__ == "__main__":  # `ray submit cluster.yaml pipelines/commands/tune.py -- --config ...` runs this file
    from pipelines.cli import main as cli_main

    sys.exit(cli_main(["tune", *sys.argv[1:]]))
