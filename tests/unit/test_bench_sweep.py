"""`python -m bench sweep`: the replayed grid is the tune config's, and its table compares the NLL-selected
candidate with the default per set."""

from pathlib import Path

import numpy as np
import pytest

from bench.sweep import (
    DEFAULT,
    DEFAULT_CONFIG,
    ENSEMBLE,
    ensemble_scores,
    main,
    read_csv,
    read_sweep,
    summary_table,
    synthetic_anomalies,
    write_csv,
)


def test_the_shipped_tune_config_is_replayed_as_its_grid():
    sweep = read_sweep(DEFAULT_CONFIG)
    assert sweep.grid == {"objective.beta": (0.1, 1.0), "model.latent_dim": ("auto", 2, 4, 8)}
    assert len(sweep.points()) == 8 and {"objective.beta": 0.1, "model.latent_dim": 8} in sweep.points()
    assert sweep.validation_fraction == 0.1 and sweep.nll_samples == 32
    assert sweep.reference == {"objective.beta": 1.0, "model.latent_dim": "auto"}  # the default point


def test_only_grid_axes_can_be_replayed(tmp_path: Path):
    path = tmp_path / "tune.yaml"
    path.write_text("data: {}\ntune:\n  nll_samples: 8\n  space:\n    train:\n      lr: {loguniform: [0.001, 0.01]}\n")
    with pytest.raises(ValueError, match="tune.space.train.lr: only grid axes"):
        read_sweep(path)


def test_summary_selected_against_default_default_point_and_hindsight_best():
    def row(name, seed, candidate, auroc, selected=False, nll=1.0):
        return {"dataset": name, "seed": seed, "candidate": candidate, "val_nll": nll, "auroc": auroc,
                "selected": selected, "reference": candidate == "z=4"}  # fmt: skip

    rows = [row("a", 0, DEFAULT, 80, nll=np.nan), row("a", 0, "z=2", 70, True), row("a", 0, "z=4", 90),
            row("a", 1, DEFAULT, 82, nll=np.nan), row("a", 1, "z=2", 74), row("a", 1, "z=4", 86, True),
            row("b", 0, DEFAULT, 60, nll=np.nan), row("b", 0, "z=2", 66, True), row("b", 0, "z=4", 50),
            row("b", 1, DEFAULT, 62, nll=np.nan), row("b", 1, "z=2", 64, True), row("b", 1, "z=4", 52)]  # fmt: skip
    table = summary_table(rows, seeds=2)
    assert table.rows[0] == ["a", "81.00", "88.00", "78.00", "88.00", "z=2, z=4"]
    assert table.rows[1] == ["b", "61.00", "51.00", "65.00", "65.00", "z=2"]
    assert table.rows[2][1:5] == ["**71.00**", "**69.50**", "**71.50**", "**76.50**"]
    assert table.notes == [
        # a: -10, +4 (mean -3) and b: +6, +2 (+4); the interval's ends: each set's worst (best) seed drawn twice
        "sweep-selected minus default [95 % interval over seeds]: +0.50 [-4.00, +5.00] AUROC points on average; "
        "minus the default point on the sweep's rows: +2.00 [-4.00, +8.00]",
        "selected by the lowest mean val_nll minus default: -2.50",  # every nll ties: the first point, z=2
    ]


def test_selection_by_a_synthetic_anomaly_auroc_is_reported_against_the_default():
    def row(seed, candidate, auroc, synthetic):
        return {"dataset": "a", "seed": seed, "candidate": candidate, "val_nll": 1.0, "val_marginals": synthetic,
                "auroc": auroc, "selected": candidate == "z=2", "reference": False}  # fmt: skip

    rows = [row(0, DEFAULT, 80, np.nan), row(0, "z=2", 70, 60.0), row(0, "z=4", 90, 75.0),
            row(1, DEFAULT, 82, np.nan), row(1, "z=2", 74, 80.0), row(1, "z=4", 86, 55.0)]  # fmt: skip
    notes = summary_table(rows, seeds=2).notes  # picks z=4 (90) on seed 0, z=2 (74) on seed 1: 82 vs 81
    assert notes[2] == "selected by the highest val_marginals (AUROC against synthetic anomalies) minus default: +1.00"


def test_the_ensemble_averages_each_models_scores_scaled_by_its_held_out_median_and_iqr():
    held_out = np.array([np.arange(5.0), 10 * np.arange(5.0) + 100])  # medians 2 and 120, IQRs 2 and 20
    test = np.array([[2.0, 6.0], [100.0, 160.0]])
    assert np.allclose(ensemble_scores(test, held_out), [(0 - 1) / 2, (2 + 2) / 2])
    assert np.allclose(ensemble_scores(test[:1], held_out[:1]), [0.0, 2.0])  # one model: its scaled scores


def test_the_ensemble_is_reported_against_the_default_and_is_no_grid_point():
    def row(seed, candidate, auroc):
        nll = np.nan if candidate in (DEFAULT, ENSEMBLE) else 1.0
        return {"dataset": "a", "seed": seed, "candidate": candidate, "val_nll": nll, "auroc": auroc,
                "selected": candidate == "z=2", "reference": False}  # fmt: skip

    rows = [row(0, DEFAULT, 80), row(0, "z=2", 70), row(0, ENSEMBLE, 95), row(1, DEFAULT, 82), row(1, "z=2", 74),
            row(1, ENSEMBLE, 85)]  # fmt: skip
    table = summary_table(rows, seeds=2)
    assert table.rows[0][4] == "72.00"  # the best grid point in hindsight: the ensemble is not one
    assert (
        "ensemble of the grid's distinct models (scores scaled by their held-out rows' median and IQR, averaged) "
        "minus default: +9.00"
    ) in table.notes


def test_synthetic_anomalies_are_made_of_the_held_out_values():
    rows = np.arange(40.0).reshape(10, 4) + np.array([0, 100, 200, 300])
    made = synthetic_anomalies(rows, seed=0, count=50)
    assert made["marginals"].shape == made["half_swapped"].shape == (50, 4)
    for j in range(4):  # every column drawn from that column's held-out values
        assert set(made["marginals"][:, j]) <= set(rows[:, j])
    assert all(set(row) <= set(rows.ravel()) for row in made["half_swapped"])
    # half of each row's features come from one held-out row, the rest from another
    origin = (made["half_swapped"][:, :, None] == rows.T[None]).argmax(axis=2)  # (50, 4) source row per feature
    assert all(len(set(o)) <= 2 for o in origin) and any(len(set(o)) == 2 for o in origin)


def test_the_summary_is_printed_again_from_a_runs_csv(tmp_path: Path, capsys):
    rows = [{"dataset": "a", "seed": seed, "candidate": candidate, "val_nll": np.nan if candidate == DEFAULT else 1.5,
             "auroc": auroc + seed, "selected": candidate == "z=2", "reference": candidate == "z=4"}
            for seed in (0, 1) for candidate, auroc in ((DEFAULT, 80.0), ("z=2", 70.0), ("z=4", 90.0))]  # fmt: skip
    path = tmp_path / "rows.csv"
    write_csv(rows, path)
    back = read_csv(path)
    assert [{k: v for k, v in r.items() if k != "val_nll"} for r in back] == [
        {k: v for k, v in r.items() if k != "val_nll"} for r in rows
    ]
    assert np.isnan(back[0]["val_nll"]) and back[1]["val_nll"] == 1.5
    assert main(["--from-csv", str(path)]) == 0
    assert "| a | 80.50 | 90.50 | 70.50 | 90.50 | z=2 |" in capsys.readouterr().out
