"""Missing features are marginalised out of every score: their log p(x_f | z) terms (squared errors) are left out;
only the encoder sees a value for them (at scoring, `vae.scoring.refined_input`)."""

import numpy as np
import pytest
import torch

from vae import ScoreConfig, importance_sampled_nll, preprocessing, scoring

from .tabular_models import mixed_table, train_detector

KINDS = ["negative_elbo", "nll", "reconstruction"]


def test_a_categorical_group_is_one_feature_missing_when_any_of_its_columns_is(mixed_layout):
    missing = np.zeros((3, 9), dtype=bool)  # columns: a b c | flag1 flag2 | colour x 4
    missing[0, 1] = True  # b
    missing[1, 5:9] = True  # colour, as Preprocessor.encoded_missing marks it
    missing[2, [3, 6]] = True  # flag1, and one slot of colour
    expected = np.ones((3, 6), dtype=bool)  # features: a b c flag1 flag2 colour
    expected[0, 1] = expected[1, 5] = expected[2, 3] = expected[2, 5] = False
    np.testing.assert_array_equal(preprocessing.observed_features(mixed_layout, missing), expected)
    with pytest.raises(ValueError, match=r"\(N, 9\)"):
        preprocessing.observed_features(mixed_layout, missing[:, :5])


def _blind_to(model, columns: slice) -> None:
    """Make the encoder ignore some input columns, so changing them can only act through the likelihood."""
    with torch.no_grad():
        model.encoder.trunk[0].weight[:, columns] = 0.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("feature", "columns"), [(1, slice(1, 2)), (5, slice(5, 9))])  # numeric b; colour
def test_the_value_of_a_masked_feature_does_not_change_the_score(mixed_model, mixed_batch, kind, feature, columns):
    _blind_to(mixed_model, columns)
    config = ScoreConfig(kind=kind, samples=50)
    other = mixed_batch.clone()
    other[:, columns] = mixed_batch[:, columns] + 3.0 if feature == 1 else torch.roll(mixed_batch[:, columns], 1, 1)
    observed = np.ones((8, 6), dtype=bool)
    observed[:, feature] = False
    masked = scoring.score_rows(mixed_model, mixed_batch.numpy(), config=config, observed=observed)
    masked_other = scoring.score_rows(mixed_model, other.numpy(), config=config, observed=observed)
    np.testing.assert_allclose(masked.score, masked_other.score, rtol=1e-6)
    assert (masked.contributions[:, feature] == 0).all()
    full = scoring.score_rows(mixed_model, mixed_batch.numpy(), config=config)
    full_other = scoring.score_rows(mixed_model, other.numpy(), config=config)
    assert np.abs(full.score - full_other.score).min() > 1e-3  # observed, the value does matter
    if kind != "nll":  # the -ELBO and the squared error are sums over features: masking drops one term exactly
        np.testing.assert_allclose(masked.score, full.score - full.contributions[:, feature], rtol=1e-5, atol=1e-5)


def test_nll_of_a_row_with_a_missing_value_is_the_closed_form_marginal_of_the_rest(linear_gaussian):
    """p(x_o) = N(b_o, (W W^T + s^2 I)_oo). The encoder sees the missing value filled with its mean b_j, so its
    posterior is p(z | x_o, x_j = b_j), not p(z | x_o); importance sampling corrects that. Feature 3 loads little
    on z (|W_3| <= 0.45), so the two posteriors are close: measured over 64 rows, max error 0.012 nats, mean
    0.0003; the bounds are four and fifteen times those. (A feature with a large loading would need a wider
    proposal: with W_2 = (1.40, -0.13) the max error at k = 5000 is 2.3 nats.)"""
    x = linear_gaussian.sample(64)
    x[:, 3] = linear_gaussian.b[3]  # the fill: the training mean
    observed = torch.ones(64, 5, dtype=torch.bool)
    observed[:, 3] = False
    keep = [0, 1, 2, 4]
    cov = linear_gaussian.w @ linear_gaussian.w.T + linear_gaussian.noise**2 * torch.eye(5)
    exact = -torch.distributions.MultivariateNormal(linear_gaussian.b[keep], cov[keep][:, keep]).log_prob(x[:, keep])
    g = torch.Generator().manual_seed(0)
    estimate = importance_sampled_nll(linear_gaussian.model, x, k=5000, generator=g, observed=observed).score
    assert (estimate - exact).abs().max() < 0.05
    assert (estimate - exact).mean().abs() < 0.005
    full = -linear_gaussian.log_marginal(x)
    assert (full - exact).abs().min() > 0.1  # scoring the fill as observed would be far off


def test_a_row_with_a_missing_category_is_no_longer_flagged():
    """Filled with the unknown bucket and scored as observed, a missing colour made nearly every row an anomaly;
    marginalised out, such rows are flagged about as often as complete ones (measured: 4 % against 5 %)."""
    detector = train_detector(mixed_table(600, seed=0))
    validation = mixed_table(300, seed=1)
    detector.calibrate(detector.score(validation)[0])
    holed = {**validation, "colour": np.full(300, None, dtype=object)}
    scores, contributions = detector.score(holed)
    assert detector.is_anomaly(scores).mean() < 0.15
    colour = detector.feature_names.index("colour")
    assert (contributions[:, colour] == 0).all()
    numbers = {**validation, "age": np.full(300, np.nan)}
    assert detector.is_anomaly(detector.score(numbers)[0]).mean() < 0.15


def test_validation_scoring_on_encoded_rows_leaves_missing_features_out_as_the_detector_does():
    import pandas as pd

    from pipelines.runtime.row_encoding import EncodeRows
    from pipelines.runtime.validation_pass import EncodedScorer

    table = mixed_table(120)
    detector = train_detector(table, epochs=2)
    detector.score_config = ScoreConfig(kind="negative_elbo", samples=4)
    rows = pd.DataFrame(table)
    rows.loc[::3, "income"] = np.nan
    rows.loc[1::4, "colour"] = None
    encoded = EncodeRows(detector.preprocessor, None, None)(rows)
    assert encoded["observed"].shape == (120, 5) and not encoded["observed"][::3, 0].any()
    scored = EncodedScorer(detector)(encoded)
    expected, contributions = detector.score(rows)
    np.testing.assert_allclose(scored["score"], expected, rtol=1e-5)
    np.testing.assert_allclose(scored["contributions"], contributions, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scored["observed"], detector.observed(rows))  # for the features' references
    as_if_observed = EncodedScorer(detector)({"x": encoded["x"]})["score"]
    assert not np.allclose(as_if_observed[::3], expected[::3])  # the fill scored as a value: what it did before


@pytest.mark.parametrize(("feature", "columns"), [(1, slice(1, 2)), (5, slice(5, 9))])  # numeric b; colour
def test_training_leaves_a_missing_feature_out_of_the_loss(mixed_model, mixed_batch, feature, columns):
    from vae import ObjectiveConfig
    from vae.engine import evaluate

    _blind_to(mixed_model, columns)
    other = mixed_batch.clone()  # the fill-in changed: for a missing feature the loss must not see it
    other[:, columns] = mixed_batch[:, columns] + 3.0 if feature == 1 else torch.roll(mixed_batch[:, columns], 1, 1)
    observed = torch.ones((8, 6), dtype=torch.bool)
    observed[:, feature] = False

    def loss(x: torch.Tensor, mask: torch.Tensor | None) -> float:
        torch.manual_seed(0)  # the same posterior draws
        batch = {"x": x} if mask is None else {"x": x, "observed": mask}
        return evaluate(mixed_model, [batch], ObjectiveConfig()).loss

    assert loss(mixed_batch, observed) == pytest.approx(loss(other, observed), rel=1e-6)
    assert abs(loss(mixed_batch, None) - loss(other, None)) > 1e-3  # observed, the decoder learns from the value


def test_missing_training_categories_do_not_teach_the_model_that_an_unseen_one_is_normal():
    import pandas as pd

    from vae import AnomalyDetector

    rng = np.random.default_rng(0)
    a = rng.normal(size=900)
    cat = np.where(a > 0, "pos", "neg").astype(object)
    cat[rng.random(900) < 0.3] = None  # 30 % of the training rows lack it: they filled the unknown bucket
    detector = AnomalyDetector(overrides={"train.epochs": 40}, device="cpu").fit(
        pd.DataFrame({"a": a, "b": rng.normal(size=900), "cat": cat})
    )
    rows = pd.DataFrame({"a": [1.0, 1.0], "b": [0.0, 0.0], "cat": ["pos", "never-seen"]})
    assert detector.predict(rows).tolist() == [0, 1]  # the unseen category scored below the threshold (3.3 < 4.9)
    assert detector.feature_scores(rows, relative=False)["cat"].iloc[1] > 3.0


def test_a_missing_features_columns_are_its_columns_in_the_encoded_row(mixed_layout):
    from vae.likelihoods import MixedLikelihood

    observed = torch.tensor([[True, False, True, True, True, False]])  # a b c flag1 flag2 colour
    expected = [[True, False, True, True, True, False, False, False, False]]  # colour: its 4 columns
    assert MixedLikelihood(mixed_layout).column_mask(observed).tolist() == expected


EPOCHS = 300  # enough to fit the factor closely: a looser fit takes the fill in its stride


def test_the_encoder_sees_what_the_model_expects_for_a_missing_value_not_its_fill(monkeypatch):
    """Three features of one factor, trained complete: one blank, its fill (the mean) is a value the encoder never
    saw beside the others, which then scored worse; refined, such rows are flagged about as often as complete
    ones. Observed values and complete rows reach the encoder as they are."""
    from vae import AnomalyDetector

    rng = np.random.default_rng(0)
    rows = lambda n: rng.normal(size=(n, 1)) * [1, -1, 2] + 0.1 * rng.normal(size=(n, 3))  # noqa: E731
    estimator = AnomalyDetector(overrides={"train.epochs": EPOCHS}, seed=0, device="cpu").fit(rows(600))
    test = rows(400)
    holed = test.copy()
    holed[:, 0] = np.nan
    complete, refined = estimator.predict(test).mean(), estimator.predict(holed).mean()
    monkeypatch.setattr(scoring, "refined_input", lambda model, x, c, observed: x)
    filled = estimator.predict(holed).mean()
    assert refined < max(2 * complete, 0.1) < filled

    detector = estimator.detector
    x = torch.tensor(detector.preprocessor.transform(dict(zip(detector.feature_names, holed[:3].T, strict=True))))
    observed = torch.ones(3, 3, dtype=torch.bool)
    observed[1, 0] = False
    monkeypatch.undo()
    one_step = scoring.refined_input(detector.model, x, None, observed, steps=1)
    np.testing.assert_array_equal(one_step[[0, 2]], x[[0, 2]])  # complete rows as they are
    np.testing.assert_array_equal(one_step[1, 1:], x[1, 1:])  # and every observed value
    assert one_step[1, 0] == detector.model.reconstruct(x[1:2])[0, 0]  # the decoder's mean at the posterior mean
