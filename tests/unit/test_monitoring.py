import numpy as np
import pytest

from pipelines.tracking.monitoring import decile_counts, population_stability_index, reference_statistics


def test_psi_is_near_zero_for_the_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    reference = reference_statistics(rng.normal(size=50_000))
    same = population_stability_index(decile_counts(rng.normal(size=20_000), reference["quantiles"]))
    shifted = population_stability_index(decile_counts(rng.normal(0.5, 1.0, size=20_000), reference["quantiles"]))
    assert same < 0.01 and shifted > 0.1


def test_psi_matches_the_formula_on_a_hand_computed_case():
    quantiles = list(np.linspace(0, 100, 101))  # deciles at 0, 10, ..., 100
    scores = np.array([5.0] * 50 + [95.0] * 50)  # half in the first decile, half in the last
    expected = 2 * (0.5 - 0.1) * np.log(0.5 / 0.1) + 8 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert population_stability_index(decile_counts(scores, quantiles)) == pytest.approx(expected)


def test_decile_counts_of_parts_add_up_to_the_counts_of_the_whole():
    rng = np.random.default_rng(1)
    quantiles = np.quantile(rng.normal(size=1000), np.linspace(0, 1, 101)).tolist()
    scores = rng.normal(size=5000)
    whole = decile_counts(scores, quantiles)
    assert whole.sum() == 5000 and len(whole) == 10
    np.testing.assert_array_equal(decile_counts(scores[:1234], quantiles) + decile_counts(scores[1234:], quantiles),
                                  whole)  # fmt: skip


def test_reference_statistics_keep_the_quantiles_of_the_scores():
    stats = reference_statistics(np.arange(101.0))
    assert stats["quantiles"][50] == 50.0 and len(stats["quantiles"]) == 101
    assert (stats["rows"], stats["mean"]) == (101, 50.0)
