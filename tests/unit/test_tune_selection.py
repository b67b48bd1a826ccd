"""The sweep's final choice compares trials at equal budgets: a trial cut short by ASHA never wins on a metric
measured after fewer epochs."""

import math
from types import SimpleNamespace

import pytest

from pipelines.commands.sweep_selection import TrialSummary, select_best
from pipelines.commands.sweep_trials import ASHA_STOP, COMPLETED, FAILED, PATIENCE_STOP


def trial(trial_id: str, best: float, outcome: str, epochs: int = 12) -> TrialSummary:
    checkpoint = f"/ckpt/{trial_id}"
    return TrialSummary(trial_id, {"objective.beta": 1.0}, epochs, best, epochs, best, outcome, checkpoint, None)


def test_a_trial_stopped_by_asha_is_not_selected_even_with_the_best_metric():
    trials = [trial("short", 1.0, ASHA_STOP, epochs=2), trial("full", 5.0, COMPLETED), trial("worse", 6.0, COMPLETED)]
    assert select_best(trials, "min", "s", "nll").trial_id == "full"


def test_patience_stopped_trials_compete_and_mode_max_picks_the_highest():
    trials = [trial("a", 0.7, COMPLETED), trial("b", 0.9, PATIENCE_STOP, epochs=7), trial("c", 0.99, ASHA_STOP, 2)]
    assert select_best(trials, "max", "s", "auroc").trial_id == "b"


def test_trials_without_a_metric_or_checkpoint_are_skipped():
    no_metric = trial("nan", math.nan, COMPLETED)
    no_checkpoint = trial("lost", 0.5, COMPLETED)
    no_checkpoint.checkpoint_path = None
    assert select_best([no_metric, no_checkpoint, trial("ok", 3.0, COMPLETED)], "min", "s", "nll").trial_id == "ok"


def test_no_finished_trial_is_an_error_naming_the_outcomes():
    with pytest.raises(RuntimeError, match=r"sweep 'demo': no trial ran its whole budget.*failed, stopped by ASHA"):
        select_best([trial("a", 1.0, ASHA_STOP, 2), trial("b", math.nan, FAILED)], "min", "demo", "nll")


def test_a_trials_best_epoch_is_never_one_inside_the_kl_warm_up():
    import pandas as pd

    from pipelines.commands.tune import summarize

    frame = pd.DataFrame({"epoch": [1, 2, 3], "val_nll": [1.0, 3.0, 2.0], "val_loss": [1.5, 3.5, 2.5],
                          "checkpoint_score": [math.inf, 3.0, 2.0],
                          "checkpoint_path": ["/c/1", "/c/2", "/c/3"]})  # fmt: skip
    result = SimpleNamespace(metrics_dataframe=frame, metrics={"trial_id": "t"}, path="/t", config={}, error=None)
    summary = summarize(result, "val_nll", "min", 3, None)
    assert (summary.best, summary.best_epoch, summary.checkpoint_path) == (2.0, 3, "/c/3")
    result.metrics_dataframe = frame.assign(checkpoint_score=math.inf)  # all inside the warm-up: all compete
    assert summarize(result, "val_nll", "min", 3, None).best_epoch == 1


def test_the_default_trial_ran_the_configs_own_value_on_every_swept_axis():
    from pipelines.commands.sweep_selection import default_trial
    from pipelines.settings.search_space import parse_space
    from pipelines.settings.yaml_configs import CONFIG_DIR, TunePipelineConfig, load_config

    config = load_config(CONFIG_DIR / "tune.yaml", cls=TunePipelineConfig)  # beta 1.0 and latent auto, swept
    axes = parse_space(config.tune.space)

    def ran(trial_id: str, beta: float, latent) -> TrialSummary:
        params = {"objective.beta": beta, "model.latent_dim": latent}
        return TrialSummary(trial_id, params, 12, 1.0, 12, 1.0, COMPLETED, f"/ckpt/{trial_id}", None)

    trials = [ran("a", 0.1, "auto"), ran("b", 1.0, 2), ran("c", 1.0, "auto"), ran("d", 0.1, 8)]
    assert default_trial(config, axes, trials).trial_id == "c"
    assert default_trial(config, axes, trials[:2] + trials[3:]) is None
    swept_elsewhere = load_config(CONFIG_DIR / "tune.yaml", ["objective.beta=0.1"], cls=TunePipelineConfig)
    assert default_trial(swept_elsewhere, axes, trials).trial_id == "a"


def test_the_default_trial_is_found_by_validated_values_whatever_form_tune_hands_them_in():
    """Tune gives a trial a listed grid value as a tuple, and YAML 1.1 reads 1e-3 as the text '1e-3': compared as
    they came, no trial was the default one, and the best NLL won without the significance rule."""
    from pipelines.commands.sweep_selection import default_trial
    from pipelines.settings.search_space import parse_space
    from pipelines.settings.yaml_configs import CONFIG_DIR, TunePipelineConfig, load_config

    sweep = [
        "train.lr=1e-3",
        "model.hidden_dims=[64, 64]",
        "tune.space={train: {lr: {grid: [1e-4, 1e-3]}}, model: {hidden_dims: {grid: [[64, 64], [128, 128]]}}}",
    ]
    config = load_config(CONFIG_DIR / "tune.yaml", sweep, cls=TunePipelineConfig)  # fmt: skip
    axes = parse_space(config.tune.space)
    trials = [
        TrialSummary(name, {"train.lr": lr, "model.hidden_dims": dims}, 12, 1.0, 12, 1.0, COMPLETED, "/c", None)
        for name, lr, dims in [("a", "1e-4", (64, 64)), ("b", "1e-3", (64, 64)), ("c", "1e-3", (128, 128))]
    ]
    assert default_trial(config, axes, trials).trial_id == "b"
