"""Evaluation numbers against sklearn.metrics computed directly, the baselines against closed forms, and the
promotion rule."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from pipelines.commands.promotion import decide, isolation_forest_scores, metrics, pca_reconstruction_scores


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


def test_the_first_model_becomes_champion():
    decision = decide("auroc", 0.01, ("m/1", 0.7), None)
    assert decision.kind == "first_champion" and decision.moves_champion
    assert "0.7000" in decision.reason


@pytest.mark.parametrize(
    ("challenger", "kind"),
    [(0.95, "promoted"), (0.91, "kept"), (0.905, "kept"), (0.5, "kept")],  # margin 0.01 over 0.90: 0.91 is a tie
)
def test_the_challenger_must_beat_the_champion_by_more_than_the_margin(challenger, kind):
    decision = decide("average_precision", 0.01, ("m/2", challenger), ("m/1", 0.90))
    assert decision.kind == kind and decision.moves_champion == (kind == "promoted")
    assert f"AP {challenger:.4f} vs champion m/1 0.9000" in decision.reason


def test_a_challenger_that_is_already_champion_is_kept():
    decision = decide("auroc", 0.0, ("m/3", 0.9), ("m/3", 0.9))
    assert decision.kind == "kept" and "already the champion" in decision.reason
