"""`choose_over_reference`: the default is kept unless another model's per-row held-out NLL is significantly lower."""

import numpy as np
import pytest

from vae import choose_over_reference

N = 200


def _reference(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 2.0, N)


def test_a_model_no_better_row_by_row_leaves_the_reference_chosen_even_with_a_lower_mean():
    reference = _reference()
    noise = np.random.default_rng(1).normal(0.0, 0.5, N)
    same = reference + noise - noise.mean() - 1e-3  # a hair lower on average, no better row by row
    tail = reference.copy()
    tail[0] = 1e4  # one held-out row the reference fits terribly
    worse_but_for_one_row = reference + 0.1  # worse on every row but that one: its mean is far lower
    nll = np.stack([tail, same, worse_but_for_one_row])
    choice = choose_over_reference(nll, reference=0)
    assert choice.index == 0 and nll[2].mean() < nll[0].mean()
    assert np.isnan(choice.p_values[0]) and choice.p_values[1] > 0.05 and choice.p_values[2] > 0.99


def test_of_the_significantly_better_models_the_lowest_mean_nll_wins():
    reference = _reference()
    rng = np.random.default_rng(2)
    slightly, clearly = reference - 0.3 + rng.normal(0, 0.3, N), reference - 1.0 + rng.normal(0, 0.3, N)
    choice = choose_over_reference(np.stack([slightly, reference, clearly]), reference=1)
    assert choice.index == 2 and choice.p_values[0] < 1e-6 and choice.p_values[2] < 1e-6
    # at a significance no p-value reaches, the reference stays
    assert choose_over_reference(np.stack([slightly, reference, clearly]), reference=1, significance=0.0).index == 1


def test_an_identical_model_is_no_evidence_and_non_finite_rows_are_left_out():
    reference = _reference()
    better = reference - 1.0
    better[:5] = np.inf  # rows this model could not score: compared on the others
    choice = choose_over_reference(np.stack([reference, reference.copy(), better]), reference=0)
    assert choice.p_values[1] == 1.0 and choice.index == 2


def test_the_shape_and_the_reference_are_checked():
    with pytest.raises(ValueError, match=r"nll must be \(P, N\) with the reference among the P, got \(3,\)"):
        choose_over_reference(np.zeros(3), reference=0)
    with pytest.raises(ValueError, match="got \\(2, 4\\)"):
        choose_over_reference(np.zeros((2, 4)), reference=2)


def test_row_hashes_are_equal_for_equal_rows_only():
    from vae import row_hashes

    x = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [1.0, np.nan], [1.0, np.nan]], dtype=np.float32)
    hashes = row_hashes(x)
    assert hashes.shape == (5,) and hashes.dtype == np.uint64
    assert hashes[0] == hashes[1] and hashes[3] == hashes[4]  # a missing value repeats too
    assert len({hashes[0], hashes[2], hashes[3]}) == 3  # the same values in another order are another row
    condition = np.array([[0.0], [1.0], [0.0], [0.0], [0.0]])
    with_condition = row_hashes(x, condition, None)
    assert with_condition[0] != with_condition[1] and with_condition[3] == with_condition[4]
    images = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # (N, H, W): each row is flattened
    assert row_hashes(images)[0] == row_hashes(images[:1].reshape(1, 12))[0]
    with pytest.raises(ValueError, match="no array given"):
        row_hashes(None)
    assert row_hashes(np.empty((0, 3, 4))).shape == (0,)
