"""How a sweep chooses the trial it registers: among the trials that ran their whole budget, the default trial (the
config's own value on every swept axis) is kept unless another trial's per-row validation NLL is significantly
lower (`vae.selection`); with `tune.metric: auroc`, without a significance or without a finished default trial, the
best metric wins."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.train import Checkpoint

from pipelines.commands.sweep_trials import FINISHED
from pipelines.runtime.distributed_run import load_checkpoint_detector
from pipelines.runtime.parquet_input import PreparedData
from pipelines.runtime.validation_pass import drop_seen, sample_rows
from pipelines.settings.dotted_yaml import get_dotted
from pipelines.settings.search_space import Axis
from pipelines.settings.yaml_configs import TunePipelineConfig
from vae import ScoreConfig, choose_over_reference, score_rows, to_dict

P_COLUMN = "p vs default"  # the results table's column of TrialSummary.p_vs_default


@dataclass
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    epochs: int
    best: float  # the best epoch's selection metric (nan when the trial reported none)
    best_epoch: int
    val_loss: float  # the training objective at the best epoch
    outcome: str  # completed / early stop (patience) / stopped by ASHA / failed
    checkpoint_path: str | None  # the best epoch's checkpoint
    run_id: str | None  # the trial's MLflow child run
    p_vs_default: float = math.nan  # one-sided p of "lower validation NLL than the default trial" (`choose_trial`)


def finished_trials(trials: list[TrialSummary], sweep: str, metric: str) -> list[TrialSummary]:
    """The trials that ran their whole budget (completed, or stopped by their own patience) and have a best
    checkpoint; RuntimeError when there are none.

    Trials stopped by ASHA are left out: their metric comes from fewer epochs, and a short run's validation
    metric is not comparable with a full one's (ASHA already compared them with the others at equal epochs).
    """
    finished = [t for t in trials if t.outcome in FINISHED and not math.isnan(t.best) and t.checkpoint_path]
    if not finished:
        raise RuntimeError(f"sweep {sweep!r}: no trial ran its whole budget and reported {metric}; "
                           f"outcomes: {', '.join(sorted({t.outcome for t in trials}))}")  # fmt: skip
    return finished


def select_best(trials: list[TrialSummary], mode: str, sweep: str, metric: str) -> TrialSummary:
    """The finished trial (`finished_trials`) with the best metric."""
    return (min if mode == "min" else max)(finished_trials(trials, sweep, metric), key=lambda t: t.best)


def default_trial(
    config: TunePipelineConfig, axes: tuple[Axis, ...], trials: list[TrialSummary]
) -> TrialSummary | None:
    """The trial that ran the config's own value on every swept axis (what `make train` trains), or None. Values
    compare as the validated config holds them: Tune hands a trial a list as a tuple, and YAML 1.1 reads 1e-3 as
    the text '1e-3', which the config reads as 0.001."""
    base = config.train_dict()

    def swept(values: dict[str, Any]) -> list[Any]:
        return [get_dotted(values, axis.name) for axis in axes]

    own = swept(base)
    return next((t for t in trials if swept(to_dict(config.trial_config(t.params, run_name="default"))) == own), None)


def choose_trial(
    config: TunePipelineConfig, axes: tuple[Axis, ...], trials: list[TrialSummary], prepared: PreparedData
) -> tuple[TrialSummary, str]:
    """The trial to register and a line saying why. With `tune.metric: nll` and a `tune.significance`, the default
    trial is kept unless another finished trial's per-row NLL of one sample of validation rows (at most
    `tune.selection_rows`, less those labelled anomalous and those that repeat a training row, scored by a Ray
    task per trial from its best checkpoint) is significantly lower (`vae.selection.choose_over_reference`);
    otherwise, or without a finished default trial, the best metric wins."""
    settings = config.tune
    metric, mode = settings.reported_metric
    finished = finished_trials(trials, settings.name, metric)
    default = default_trial(config, axes, finished)
    tested = settings.metric == "nll" and settings.significance is not None and default is not None
    rows = _normal_rows(prepared, settings.selection_rows) if tested and len(finished) > 1 else None
    if rows is None or not len(rows["x"]):
        best = select_best(trials, mode, settings.name, metric)
        return best, f"selected trial {best.trial_id}: the best {metric} of {len(finished)} finished trial(s)"
    rows = drop_seen(rows, prepared.train)
    if not len(rows["x"]):
        return default, (f"kept the default trial {default.trial_id}: every sampled validation row repeats a "
                         f"training row, so none tells a model that generalises from one that remembers")  # fmt: skip
    nll_config = ScoreConfig(kind="nll", samples=settings.nll_samples)
    scaling = config.scaling
    scorer = _checkpoint_nll.options(num_cpus=scaling.cpus_per_worker,
                                     num_gpus=scaling.gpus_per_worker if scaling.use_gpu else 0)  # fmt: skip
    shared = ray.put(rows)
    nll = ray.get([scorer.remote(trial.checkpoint_path, shared, nll_config) for trial in finished])
    choice = choose_over_reference(np.stack(nll), finished.index(default), settings.significance)
    for trial, p in zip(finished, choice.p_values, strict=True):
        trial.p_vs_default = float(p)
    chosen, n = finished[choice.index], len(rows["x"])
    if chosen is default:
        return default, (f"kept the default trial {default.trial_id}: no trial's validation NLL was significantly "
                         f"lower on {n} rows unseen in training (one-sided Wilcoxon, "
                         f"p >= {settings.significance:g})")  # fmt: skip
    return chosen, (f"selected trial {chosen.trial_id}: its validation NLL is lower than the default trial's on {n} "
                    f"rows unseen in training (one-sided Wilcoxon p = {chosen.p_vs_default:.2g} < "
                    f"{settings.significance:g})")  # fmt: skip


@ray.remote
def _checkpoint_nll(checkpoint_path: str, rows: dict[str, np.ndarray], config: ScoreConfig) -> np.ndarray:
    """(N,) per-row NLL of `rows` under the model of one trial's checkpoint, computed on the cluster (on a GPU when
    the trials had one), so the driver only gathers N numbers per trial."""
    import torch

    detector = load_checkpoint_detector(Checkpoint(checkpoint_path), config)
    detector.model.to("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
    return score_rows(detector.model, rows["x"], rows.get("c"), config, observed=rows.get("observed")).score


def _normal_rows(prepared: PreparedData, limit: int) -> dict[str, np.ndarray]:
    """One seeded sample of at most `limit` encoded validation rows on the driver, those labelled anomalous left
    out (the default should fit normal rows)."""
    rows = sample_rows(prepared.validation, prepared.validation_rows, limit)
    return {name: column[rows["label"] != 1] for name, column in rows.items()} if "label" in rows else rows
