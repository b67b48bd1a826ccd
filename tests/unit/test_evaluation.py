"""Evaluation numbers against sklearn.metrics computed directly, the baselines against closed forms, and the
promotion rule."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from pipelines.commands.evaluate import check_features, usable_training_rows
from pipelines.commands.promotion import (
    Gate,
    decide,
    gain_interval,
    isolation_forest_scores,
    metrics,
    pca_reconstruction_scores,
)
from pipelines.runtime.parquet_checks import DataError
from vae import VAE, DataLayout, Detector, ModelConfig, Preprocessor


def test_metrics_match_sklearn_on_a_tiny_labelled_set():
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 0, 1, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.35, 0.2, 0.05, 0.7, 0.3])  # a tie across classes at 0.35
    threshold = 0.35  # strictly above is flagged: rows 1, 3, 4, 8
    flagged = (scores > threshold).astype(int)
    got = metrics(labels, scores, threshold)
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert got["average_precision"] == pytest.approx(average_precision_score(labels, scores))
    assert got["precision"] == pytest.approx(precision_score(labels, flagged))
    assert got["recall"] == pytest.approx(recall_score(labels, flagged))
    assert got["f1"] == pytest.approx(f1_score(labels, flagged))
    # by hand: flagged rows 1, 3, 4, 8 hold anomalies 4 and 8 of the four anomalies 2, 4, 5, 8
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((0.5, 0.5, 0.5))


def test_metrics_on_random_scores_match_sklearn():
    rng = np.random.default_rng(3)
    labels = (rng.random(200) < 0.1).astype(int)
    scores = rng.normal(size=200) + 1.5 * labels
    threshold = float(np.quantile(scores, 0.9))
    flagged = (scores > threshold).astype(int)
    got = metrics(labels, scores, threshold)
    expected = [roc_auc_score(labels, scores), average_precision_score(labels, scores),
                precision_score(labels, flagged), recall_score(labels, flagged), f1_score(labels, flagged)]  # fmt: skip
    assert [got[k] for k in ("auroc", "average_precision", "precision", "recall", "f1")] == pytest.approx(expected)


def test_no_flagged_row_gives_zero_precision_recall_and_f1_but_keeps_the_ranking_metrics():
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.2, 0.3])
    got = metrics(labels, scores, threshold=5.0)
    assert (got["precision"], got["recall"], got["f1"]) == (0.0, 0.0, 0.0)
    assert got["auroc"] == pytest.approx(1.0) and got["average_precision"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0, 0, 0], "both|each class"), ([0, 2, 1], "0/1"), ([1, 1, 1], "each class")],
)
def test_metrics_refuse_labels_that_are_not_two_classes_of_0_and_1(labels, message):
    with pytest.raises(ValueError, match=message):
        metrics(np.array(labels), np.array([0.1, 0.2, 0.3]), 0.15)


def test_pca_reconstruction_error_is_the_squared_distance_to_the_training_plane():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(500, 2)) * np.array([2.0, 1.0])  # variance 4 : 1 -> 0.8 then 1.0 explained
    train = np.column_stack([plane, np.zeros(500)]) + np.array([1.0, -2.0, 3.0])
    rows = np.array([[1.0, -2.0, 3.0], [5.0, 0.0, 4.0], [0.0, 0.0, 1.0]])
    train_scores, row_scores = pca_reconstruction_scores(train, rows, variance=0.9)  # keeps 2 components
    assert train_scores == pytest.approx(np.zeros(500), abs=1e-18)
    assert row_scores == pytest.approx([0.0, 1.0, 4.0])  # (z - 3)^2: the off-plane distance


def test_pca_keeps_a_residual_even_when_the_variance_share_asks_for_every_component():
    train = np.random.default_rng(1).normal(size=(300, 3))  # full rank: 0.99 would need all three components
    rows = np.array([[0.0, 0.0, 10.0]])
    train_scores, row_scores = pca_reconstruction_scores(train, rows, variance=0.99)
    assert train_scores.max() > 0 and row_scores[0] > 0


def test_isolation_forest_is_seeded_and_ranks_outliers_above_inliers():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(400, 4))
    rows = np.vstack([rng.normal(size=(20, 4)), rng.normal(size=(5, 4)) + 8.0])
    train_scores, row_scores = isolation_forest_scores(train, rows, seed=7)
    again = isolation_forest_scores(train, rows, seed=7)[1]
    np.testing.assert_array_equal(row_scores, again)
    assert train_scores.shape == (400,) and row_scores[20:].min() > row_scores[:20].max()


GATE = Gate(metric="auroc", floor=0.5, margin=0.01, confidence=0.95)
CLEAR = (0.02, 0.1)  # a bootstrap interval of the gain that lies above zero


def test_the_first_model_becomes_champion_when_it_clears_the_floor_and_the_baselines():
    decision = decide(GATE, ("m/1", 0.7), {"isolation_forest": 0.65, "pca": 0.6}, None)
    assert decision.kind == "first_champion" and decision.moves_champion
    assert "0.7000" in decision.reason
    assert decision.numbers == {"challenger": 0.7, "floor": 0.5, "baseline_isolation_forest": 0.65,
                                "baseline_pca": 0.6}  # fmt: skip


def test_a_weak_first_challenger_is_refused_by_the_floor():
    decision = decide(GATE, ("m/1", 0.15), {}, None)
    assert decision.kind == "refused" and not decision.moves_champion
    assert "0.1500 is below the floor 0.5" in decision.reason


@pytest.mark.parametrize("champion", [None, ("m/1", 0.8, CLEAR)])
def test_a_challenger_that_does_not_beat_every_baseline_is_refused(champion):
    decision = decide(GATE, ("m/2", 0.9), {"isolation_forest": 0.95, "pca": 0.7}, champion)
    assert decision.kind == "refused" and not decision.moves_champion
    assert "does not beat the baseline(s) isolation_forest 0.9500" in decision.reason and "pca" not in decision.reason


def test_a_tie_with_a_baseline_does_not_beat_it():
    assert decide(GATE, ("m/2", 0.9), {"pca": 0.9}, None).kind == "refused"


@pytest.mark.parametrize(
    ("challenger", "kind"),
    [(0.95, "promoted"), (0.91, "kept"), (0.905, "kept"), (0.5, "kept")],  # margin 0.01 over 0.90: 0.91 is a tie
)
def test_the_challenger_must_beat_the_champion_by_more_than_the_margin(challenger, kind):
    gate = Gate(metric="average_precision", floor=0.0, margin=0.01, confidence=0.95)
    decision = decide(gate, ("m/2", challenger), {}, ("m/1", 0.90, CLEAR))
    assert decision.kind == kind and decision.moves_champion == (kind == "promoted")
    assert f"AP {challenger:.4f} vs champion m/1 0.9000" in decision.reason


def test_a_gain_whose_interval_includes_zero_keeps_the_champion():
    decision = decide(GATE, ("m/2", 0.95), {}, ("m/1", 0.90, (-0.01, 0.11)))
    assert decision.kind == "kept" and "includes zero" in decision.reason and "[-0.0100, +0.1100]" in decision.reason
    assert decision.numbers["gain"] == pytest.approx(0.05) and decision.numbers["gain_low"] == -0.01


def test_a_challenger_that_is_already_champion_is_kept():
    decision = decide(GATE, ("m/3", 0.9), {}, ("m/3", 0.9, None))
    assert decision.kind == "kept" and "already the champion" in decision.reason


def test_the_gain_interval_is_zero_for_the_same_scores_and_seeded():
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.2).astype(int)
    scores = rng.normal(size=300) + labels
    assert gain_interval(labels, scores, scores, "auroc", 0.95, 50, seed=1) == (0.0, 0.0)
    other = rng.normal(size=300) + 0.5 * labels
    first = gain_interval(labels, scores, other, "average_precision", 0.9, 50, seed=1)
    assert first == gain_interval(labels, scores, other, "average_precision", 0.9, 50, seed=1)
    assert first != gain_interval(labels, scores, other, "average_precision", 0.9, 50, seed=2)


def test_the_gain_interval_shrinks_with_rows_around_the_true_gain():
    """Challenger separates the classes by 2 sd, champion by 1 sd: the AUROC gain is Phi(2/sqrt2) - Phi(1/sqrt2)
    = 0.1816. On 40 rows the 95 % interval is wide and includes zero; on 4000 it is narrow and holds the truth."""
    from scipy.stats import norm

    truth = norm.cdf(2 / np.sqrt(2)) - norm.cdf(1 / np.sqrt(2))

    def interval(rows: int) -> tuple[float, float]:
        rng = np.random.default_rng(rows)
        labels = np.repeat([0, 1], rows // 2)
        noise = rng.normal(size=rows)  # the same noise in both models' scores: a paired comparison
        return gain_interval(labels, noise + 2 * labels, noise + labels, "auroc", 0.95, 200, seed=0)

    small, large = interval(40), interval(4000)
    assert large[0] < truth < large[1] and large[1] - large[0] < 0.05 and large[0] > 0
    assert small[1] - small[0] > 4 * (large[1] - large[0])


def test_the_baselines_leave_out_the_training_rows_that_training_leaves_out(capsys):
    pre = Preprocessor(numeric=["x"]).fit({"x": np.arange(10.0)})
    detector = Detector(VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), DataLayout(pre.layout_blocks())), pre)
    train = pd.DataFrame({"x": [1.0, np.inf, 1e308, np.nan, 2.0]})
    kept = usable_training_rows(train, detector)
    assert kept["x"].tolist()[:1] == [1.0] and len(kept) == 3 and np.isnan(kept["x"].iloc[1])  # NaN: imputed
    assert capsys.readouterr().out.startswith("2 baseline training rows left out, as training leaves them out")
    with pytest.raises(DataError, match="none of the 2 baseline training rows is usable"):
        usable_training_rows(train.iloc[1:3], detector)


def test_evaluation_input_whose_text_category_arrives_as_numbers_is_refused(tmp_path):
    pre = Preprocessor(categorical=["sex"]).fit({"sex": np.array(["F", "M"], dtype=object)})
    detector = Detector(VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), DataLayout(pre.layout_blocks())), pre)
    pd.DataFrame({"sex": [1, 2]}).to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(DataError, match="categorical column 'sex' is int64 here"):
        check_features(str(tmp_path / "rows.parquet"), [detector])
    pd.DataFrame({"sex": ["F", "X"]}).to_parquet(tmp_path / "rows.parquet")
    assert check_features(str(tmp_path / "rows.parquet"), [detector]) == ["sex"]


def test_an_infinite_score_is_ranked_above_every_other_and_flagged_as_it_was():
    from pipelines.commands.promotion import ranked_finite

    scores = np.array([1.0, np.inf, 3.0, 2.0])
    ranked = ranked_finite(scores, threshold=10.0)  # above the threshold too, so it stays flagged
    assert np.isfinite(ranked).all() and ranked[1] > 10.0 and ranked[[0, 2, 3]].tolist() == [1.0, 3.0, 2.0]
    assert metrics(np.array([0, 1, 0, 0]), ranked, 10.0)["auroc"] == 1.0  # scikit-learn refused the inf
    assert ranked_finite(np.array([np.inf, np.inf]), 0.5).tolist() == [1.5, 1.5]
    assert ranked_finite(scores[[0, 2]], 0.0).tolist() == [1.0, 3.0]  # nothing infinite: unchanged
