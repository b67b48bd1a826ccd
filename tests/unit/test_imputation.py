"""Imputation: chains that target p(x_missing | x_observed), checked against a closed form, observed entries
copied through exactly, and a real data set on which the model beats mean imputation."""

import numpy as np
import pytest
import torch

from pipelines.commands.impute import mean_imputation, numeric_rmse
from vae import VAE, DataLayout, ModelConfig, ObjectiveConfig, Preprocessor, TrainConfig, fit
from vae.imputation import impute, impute_table

from .tabular_models import mixed_table, train_detector


def conditional_mean(lg, x: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """E[x_m | x_o] of the linear-Gaussian model's marginal N(b, W W^T + s^2 I), row by row: (N, D)."""
    cov = (lg.w @ lg.w.T + lg.noise**2 * torch.eye(len(lg.b))).double().numpy()
    b = lg.b.double().numpy()
    out = x.astype(np.float64).copy()
    for i, (row, m) in enumerate(zip(x, missing, strict=True)):
        o = ~m
        gain = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
        out[i, m] = b[m] + gain @ (row[o] - b[o])
    return out


@pytest.fixture
def holed(linear_gaussian):
    x = linear_gaussian.sample(6).numpy()
    missing = np.zeros_like(x, dtype=bool)
    missing[:, [0, 3]] = True
    missing[::2, 1] = True
    x[missing] = 0.0  # the fill a preprocessor would give; it must not matter
    return x, missing


@pytest.mark.parametrize("method", ["metropolis", "pseudo_gibbs"])
def test_exact_encoder_recovers_the_closed_form_conditional_mean(linear_gaussian, holed, method):
    x, missing = holed
    result = impute(linear_gaussian.model, x, missing, iterations=150, chains=128, method=method, seed=0)
    expected = conditional_mean(linear_gaussian, x, missing)
    np.testing.assert_allclose(result.estimate[missing], expected[missing], atol=0.1)  # seeds 0-7: max 0.056
    np.testing.assert_array_equal(result.estimate[~missing], x[~missing])


def test_metropolis_corrects_a_wrong_encoder_that_biases_pseudo_gibbs(linear_gaussian, holed):
    """With q(z|x) shifted away from the posterior, pseudo-Gibbs samples a wrong conditional; the Metropolis
    step (Mattei & Frellsen 2018) still targets the model's exact one."""
    x, missing = holed
    linear_gaussian.set_posterior(mean_shift=0.25, logvar_shift=0.5)
    expected = conditional_mean(linear_gaussian, x, missing)[missing]
    errors, acceptance = {}, {}
    for method in ("metropolis", "pseudo_gibbs"):
        result = impute(linear_gaussian.model, x, missing, iterations=200, chains=64, method=method, seed=1)
        errors[method] = np.abs(result.estimate[missing] - expected).max()
        acceptance[method] = result.acceptance.rate
    assert errors["metropolis"] < 0.15 and errors["pseudo_gibbs"] > 0.5, errors  # seeds 0-7: <= 0.091, >= 1.49
    assert 0.2 < acceptance["metropolis"] < 0.8 and acceptance["pseudo_gibbs"] == 1.0, acceptance


@pytest.fixture(scope="module")
def detector():
    return train_detector(mixed_table(), epochs=10)


def holed_table(seed: int = 1) -> tuple[dict, dict]:
    """Fresh mixed rows with NaN / None / inf holes: (table, column -> mask of the holes)."""
    table = mixed_table(60, seed=seed)
    rng = np.random.default_rng(seed)
    masks = {c: rng.random(60) < 0.3 for c in ("income", "smoker", "colour")}
    table["income"] = np.where(masks["income"], np.where(rng.random(60) < 0.5, np.nan, np.inf), table["income"])
    table["smoker"] = np.where(masks["smoker"], np.nan, table["smoker"].astype(float))
    table["colour"] = np.where(masks["colour"], None, table["colour"]).astype(object)
    table["colour"][5] = "purple"  # observed, unseen in training: kept as it is
    masks["colour"][5] = False
    return table, masks


def test_observed_values_come_back_untouched(detector):
    table, masks = holed_table()
    result = impute_table(detector.model, detector.preprocessor, table, iterations=10, chains=3, seed=0)
    assert {c: m.tolist() for c, m in result.missing.items()} == {c: m.tolist() for c, m in masks.items()}
    for imputed in (result.estimate, *result.draws):
        filled = result.fill(table, imputed)
        for column, values in table.items():
            hole = masks.get(column, np.zeros(60, dtype=bool))
            assert filled[column][~hole].tolist() == values[~hole].tolist(), column  # exact, unseen "purple" too
            assert all(v is not None and v == v and v != np.inf for v in filled[column][hole]), column
        assert set(filled["smoker"][masks["smoker"]]) <= {0, 1}
        assert set(filled["colour"][masks["colour"]]) <= {"blue", "green", "red"}
    assert len(result.draws) == 3


def test_rows_with_nothing_observed_are_drawn_from_the_prior(detector):
    table = {c: np.array([None, None], dtype=object) for c in detector.preprocessor.columns}
    result = impute_table(detector.model, detector.preprocessor, table, iterations=20, chains=16, seed=0)
    filled = result.fill(table)
    assert np.isfinite(filled["income"].astype(float)).all() and np.isfinite(filled["age"].astype(float)).all()
    assert set(filled["colour"]) <= {"blue", "green", "red"} and set(filled["grade"]) <= {"1", "2", "3"}
    # no observation tells the two rows apart: their estimates are the same marginal mean up to Monte Carlo error
    assert abs(filled["age"][0] - filled["age"][1]) < 5 and 30 < filled["age"][0] < 60


def test_imputation_is_seeded(detector):
    table, _ = holed_table()
    model, pre = detector.model, detector.preprocessor
    runs = [impute_table(model, pre, table, iterations=5, chains=2, seed=seed) for seed in (4, 4, 5)]
    np.testing.assert_array_equal(runs[0].estimate["income"], runs[1].estimate["income"])
    assert not np.array_equal(runs[0].estimate["income"], runs[2].estimate["income"])


def test_bad_settings_fail_with_their_reason(linear_gaussian, holed):
    x, missing = holed
    with pytest.raises(ValueError, match=r"method must be one of \['metropolis', 'pseudo_gibbs'\], got 'em'"):
        impute(linear_gaussian.model, x, missing, method="em")
    with pytest.raises(ValueError, match="iterations and chains must be >= 1"):
        impute(linear_gaussian.model, x, missing, chains=0)
    with pytest.raises(ValueError, match=r"missing mask \(6, 4\) does not match x \(6, 5\)"):
        impute(linear_gaussian.model, x, missing[:, :4])
    with pytest.raises(ValueError, match="no masked numeric entry"):
        numeric_rmse(Preprocessor(numeric=["a"]).fit({"a": np.ones(3)}), {}, {}, {})
    pre = Preprocessor(numeric=["a"]).fit({"a": np.arange(3.0)})
    holes = {"a": np.array([True, False, True])}
    with pytest.raises(ValueError, match=r"truth: column 'a' lacks 1 of the values the input lacks"):  # was: nan
        numeric_rmse(pre, {"a": np.array([1.0, 2.0, np.nan])}, {"a": np.zeros(3)}, holes)


def test_a_flow_posterior_imputes_by_pseudo_gibbs_and_refuses_metropolis(holed):
    x, missing = holed
    layout = DataLayout(({"kind": "gaussian", "width": x.shape[1]},))
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,), flow_steps=2), layout)
    with pytest.raises(ValueError, match="an IAF posterior .* use method=pseudo_gibbs"):
        impute(model, x, missing, method="metropolis")
    estimate = impute(model, x, missing, method="pseudo_gibbs", iterations=4, chains=2).estimate
    assert np.isfinite(estimate).all() and (estimate[~missing] == x[~missing]).all()


@pytest.mark.slow
def test_model_imputes_held_out_thyroid_rows_better_than_the_mean():
    from pipelines.sample_data.datasets import THYROID_COLUMNS, load_thyroid, one_class_split

    thyroid, labels = load_thyroid()
    split = one_class_split(labels, seed=0, validation_share=0.1)
    rows = lambda index: {c: v[index] for c, v in thyroid.items()}  # noqa: E731
    pre = Preprocessor(numeric=THYROID_COLUMNS).fit(rows(split.train))
    model = VAE(ModelConfig(latent_dim=4), DataLayout(pre.layout_blocks()))
    fit(model, pre.transform(rows(split.train)), pre.transform(rows(split.validation)), ObjectiveConfig(),
        TrainConfig(epochs=20, batch_size=64, lr=5e-3, patience=None), log=None)  # fmt: skip
    normal_test = split.test[labels[split.test] == 0]
    truth = rows(normal_test)
    rng = np.random.default_rng(0)
    masked = {c: rng.random(len(normal_test)) < 0.2 for c in THYROID_COLUMNS}
    holed = {c: np.where(masked[c], np.nan, truth[c]) for c in THYROID_COLUMNS}
    result = impute_table(model, pre, holed, iterations=50, chains=8, seed=0)
    model_rmse = numeric_rmse(pre, truth, result.fill(holed), masked)
    mean_rmse = numeric_rmse(pre, truth, mean_imputation(pre, holed), masked)
    print(f"thyroid imputation RMSE (standardized) on {sum(m.sum() for m in masked.values())} masked values of "
          f"{len(normal_test)} normal test rows: model {model_rmse:.4f}, mean {mean_rmse:.4f}, "
          f"acceptance {result.acceptance.rate:.2f}")  # fmt: skip
    assert model_rmse < 0.9 * mean_rmse
