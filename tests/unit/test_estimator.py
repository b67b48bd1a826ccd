"""`vae.AnomalyDetector`: tables of every kind in, inferred column types, calibrated flags, named feature scores,
save/load, and the same model for the same seed whatever ran before."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vae import AnomalyDetector, ConfigError
from vae.auto import Settings, auto_settings, epochs_for, latent_size, resolve, with_values
from vae.columns import as_columns, type_kinds
from vae.config import DataLayout, FeatureBlock, ModelConfig, ScoreConfig, TrainConfig

EPOCHS = 25


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Two correlated numbers, a 0/1 integer flag that follows them and a colour."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    return pd.DataFrame({
        "id": np.arange(n), "a": a, "b": 2 * a + 0.1 * rng.normal(size=n), "flag": (a > 0).astype(np.int64),
        "colour": rng.choice(["red", "blue"], size=n),
    }, index=pd.RangeIndex(100, 100 + n))  # fmt: skip


def quick(rows: int = 360, epochs: int = EPOCHS) -> Settings:
    """The default's choices for this data with a short budget (unit-test speed)."""
    layout = DataLayout((FeatureBlock("gaussian", 2, ("a", "b")), FeatureBlock("bernoulli", 1, ("flag",)),
                         FeatureBlock("categorical", 3, ("colour",))))  # fmt: skip
    settings = auto_settings(rows, layout)
    return dataclasses.replace(settings, train=dataclasses.replace(settings.train, epochs=epochs))


@pytest.fixture(scope="module")
def fitted() -> AnomalyDetector:
    return AnomalyDetector(exclude=["id"], settings=quick(), device="cpu").fit(frame(400))


def test_a_large_number_on_a_to_numpy_row_is_scored_as_the_dataframe_would_be():
    table = frame(400).drop(columns="id").to_numpy()  # an object array: floats, ints and strings
    detector = AnomalyDetector(settings=quick(), device="cpu").fit(table)
    odd = table[:1].copy()
    odd[0, 0] = 1e6
    assert detector.score_samples(odd)[0] > 1e3 * detector.score_samples(table[:1])[0]  # was the same score


def test_dates_and_times_are_refused_by_name_unless_excluded():
    table = frame(300).assign(when=pd.date_range("2024-01-01", periods=300, freq="h"))
    tz = table.assign(when=table["when"].dt.tz_localize("Europe/Paris"))
    for source in (table, tz, pa.Table.from_pandas(table, preserve_index=False)):
        with pytest.raises(ValueError, match=r"column\(s\) \['when'\] hold dates, times"):
            AnomalyDetector(exclude=["id"], settings=quick(epochs=1), device="cpu").fit(source)
    fitted = AnomalyDetector(exclude=["id", "when"], settings=quick(epochs=1), device="cpu").fit(table)
    assert "when" not in fitted.detector.feature_names


def test_a_pandas_index_stored_in_an_arrow_table_is_not_a_feature():
    filtered = frame(300).query("a > -1")  # a filtered frame's index is no RangeIndex: pyarrow keeps it as a column
    table = pa.Table.from_pandas(filtered)
    assert "__index_level_0__" in table.column_names
    assert list(as_columns(table)) == list(filtered.columns) and "__index_level_0__" not in type_kinds(table)
    named = pa.Table.from_pandas(filtered.rename_axis("row"))  # a named index stays a column: a user names it
    assert list(as_columns(named)) == [*filtered.columns, "row"]
    fitted = AnomalyDetector(exclude=["row", "id"], settings=quick(epochs=1), device="cpu").fit(named)
    assert fitted.detector.feature_names == ("a", "b", "flag", "colour")
    with pytest.raises(ValueError, match=r"more than one column \['a'\]"):
        as_columns(pa.table([[1.0], [2.0]], names=["a", "a"]))


def test_column_lists_may_be_a_pandas_index_an_array_or_one_name():
    table = frame(300)
    by_index = AnomalyDetector(numeric=table[["a", "b"]].columns, categorical=np.array(["colour"]),
                               settings=quick(epochs=1), device="cpu").fit(table)  # fmt: skip
    assert by_index.detector.feature_names == ("a", "b", "colour")
    one_name = AnomalyDetector(exclude="id", settings=quick(epochs=1), device="cpu").fit(table)
    assert one_name.exclude == ("id",) and "id" not in one_name.detector.feature_names


def test_numpy_arguments_are_saved_as_plain_json_and_a_failed_save_writes_nothing(tmp_path):
    made = AnomalyDetector(exclude=pd.Index(["id"]), contamination=np.float32(0.1),
                           overrides={"model.latent_dim": np.int64(3)}, seed=np.int64(1), settings=quick(epochs=1),
                           device="cpu").fit(frame(300))  # fmt: skip
    made.save(tmp_path / "model")
    loaded = AnomalyDetector.load(tmp_path / "model", device="cpu")
    assert (loaded.contamination, loaded.overrides, loaded.exclude) == (
        pytest.approx(0.1),
        {"model.latent_dim": 3},
        ("id",),
    )
    made.overrides = {"model.latent_dim": object()}
    with pytest.raises(TypeError, match="not JSON serializable"):
        made.save(tmp_path / "half")
    assert not (tmp_path / "half").exists()


def test_an_array_of_another_width_is_refused_when_scoring(tmp_path):
    table = frame(300)[["a", "b"]].to_numpy()
    fitted = AnomalyDetector(settings=quick(epochs=1), device="cpu").fit(table)
    with_id = np.column_stack([np.arange(3.0), table[:3]])  # an id in front would shift every feature
    with pytest.raises(ValueError, match=r"fitted on arrays of 2 columns, got 3"):
        fitted.score_samples(with_id)
    with pytest.raises(ValueError, match=r"fitted on arrays of 2 columns, got 3"):
        fitted.feature_scores(with_id)
    fitted.save(tmp_path)
    with pytest.raises(ValueError, match=r"fitted on arrays of 2 columns, got 3"):
        AnomalyDetector.load(tmp_path, device="cpu").predict(with_id)
    assert fitted.score_samples(table[:3]).shape == (3,)


def test_a_date_in_a_numeric_column_at_scoring_is_refused_as_at_fitting(fitted):
    new = frame(3).assign(a=pd.date_range("2024-01-01", periods=3))
    with pytest.raises(ValueError, match="column 'a' must be numeric, got dates or times"):
        fitted.score_samples(new)


def test_a_categorical_column_of_integers_fits_and_scores_as_categories():
    train = frame(300).assign(size=pd.Categorical(np.resize([10, 20, 30], 300)))
    fitted = AnomalyDetector(exclude=["id"], settings=quick(epochs=2), device="cpu").fit(train)
    assert fitted.detector.preprocessor.categorical == ["colour", "size"]
    assert fitted.detector.preprocessor.categories["size"] == ["10", "20", "30"]
    unseen = frame(4, seed=6).assign(size=pd.Categorical([10, 20, 40, None]))
    assert fitted.detector.preprocessor.unknown_counts(as_columns(unseen)) == {"colour": 0, "size": 1}


def test_the_default_follows_the_data_shape():
    wide = DataLayout((FeatureBlock("gaussian", 40),))
    settings = auto_settings(1000, wide)
    assert settings.model.latent_dim == latent_size(40) == 16 and latent_size(3) == 2 and latent_size(9) == 4
    assert settings.train.batch_size == 128 and settings.train.epochs == epochs_for(1000, 128) == 375
    assert auto_settings(50, wide).train.batch_size == 50 and auto_settings(50, wide).train.epochs == 3000
    assert settings.train.patience is None and settings.score.kind == "negative_elbo"
    with pytest.raises(ValueError, match="at least one training row"):
        auto_settings(0, wide)


def test_fit_types_columns_flags_at_the_contamination_and_names_the_odd_column(fitted):
    pre = fitted.detector.preprocessor
    assert (pre.numeric, pre.binary, pre.categorical) == (["a", "b"], ["flag"], ["colour"])
    new = frame(2000, seed=1)
    flags = fitted.predict(new)
    assert set(np.unique(flags)) <= {0, 1} and 0.01 < flags.mean() < 0.12  # calibrated at 5 % on held-out rows
    odd = new.copy()
    odd["b"] = odd["b"] + 8  # four standard deviations off in every row
    assert np.median(fitted.score_samples(odd)) > np.quantile(fitted.score_samples(new), 0.99)
    scores = fitted.feature_scores(odd)
    assert list(scores.columns) == ["a", "b", "flag", "colour"] and scores.index.equals(odd.index)
    assert (scores.idxmax(axis=1) == "b").mean() > 0.9
    raw = fitted.feature_scores(new, relative=False)
    assert np.all(raw.sum(axis=1).to_numpy() <= fitted.score_samples(new) + 1e-3)  # the KL (>= 0) is the rest


def test_numpy_and_pyarrow_tables_score_like_pandas(fitted):
    new = frame(50, seed=2)
    expected = fitted.score_samples(new)
    np.testing.assert_allclose(fitted.score_samples(pa.Table.from_pandas(new)), expected, rtol=1e-6)
    numeric = AnomalyDetector(settings=quick(epochs=2), device="cpu").fit(new[["a", "b"]].to_numpy())
    assert numeric.detector.preprocessor.numeric == ["x0", "x1"] and numeric.score_samples(np.ones((3, 2))).shape == (
        3,
    )


def test_save_and_load_give_the_same_scores_and_flags(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = AnomalyDetector.load(tmp_path / "model", device="cpu")
    new = frame(100, seed=3)
    np.testing.assert_array_equal(loaded.score_samples(new), fitted.score_samples(new))
    np.testing.assert_array_equal(loaded.predict(new), fitted.predict(new))


def test_a_loaded_estimator_keeps_its_arguments_so_fitting_it_again_gives_the_same_model(tmp_path):
    made = AnomalyDetector(exclude=["id"], contamination=0.2, overrides={"model.latent_dim": 3},
                           settings=quick(epochs=2), device="cpu")  # fmt: skip
    made.fit(frame(300)).save(tmp_path)
    loaded = AnomalyDetector.load(tmp_path, device="cpu")
    assert (loaded.exclude, loaded.contamination, loaded.overrides) == (("id",), 0.2, {"model.latent_dim": 3})
    assert loaded.settings == made.settings
    again = loaded.fit(frame(300))  # was: every column a feature (the id too), latent 2, contamination 0.05
    assert again.detector.feature_names == made.detector.feature_names
    assert again.detector.threshold == made.detector.threshold
    np.testing.assert_allclose(again.score_samples(frame(5)), made.score_samples(frame(5)), rtol=1e-6)


def test_a_loaded_model_scores_with_the_seed_it_was_fitted_with(tmp_path):
    seeded = AnomalyDetector(exclude=["id"], settings=quick(epochs=2), seed=7, device="cpu").fit(frame(200))
    seeded.save(tmp_path / "model")
    loaded = AnomalyDetector.load(tmp_path / "model", device="cpu")
    new = frame(50, seed=3)
    assert loaded.seed == 7
    np.testing.assert_array_equal(loaded.score_samples(new), seeded.score_samples(new))
    np.testing.assert_array_equal(loaded.feature_scores(new), seeded.feature_scores(new))


def test_a_missing_value_has_no_relative_feature_score(fitted):
    rows = frame(3).drop(columns="id")
    rows.loc[rows.index[0], "b"] = np.nan
    relative, raw = fitted.feature_scores(rows), fitted.feature_scores(rows, relative=False)
    assert np.isnan(relative.loc[rows.index[0], "b"]) and raw.loc[rows.index[0], "b"] == 0.0
    assert relative.iloc[0].idxmax() != "b" and np.isfinite(relative.iloc[1:].to_numpy()).all()


def test_a_column_missing_in_most_rows_is_not_blamed_for_rows_that_have_it():
    """Its reference is its typical contribution where it is observed, not the 0 its missing rows contribute: on
    complete normal rows of four exchangeable columns, the often-missing one is the top feature in 37 % of them
    (99 % with a median over every row)."""

    def exchangeable(n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return pd.DataFrame(rng.normal(size=(n, 1)) + 0.5 * rng.normal(size=(n, 4)), columns=list("abcd"))

    train = exchangeable(1000, 0)
    train.loc[np.random.default_rng(1).random(1000) < 0.7, "a"] = np.nan
    fitted = AnomalyDetector(overrides={"train.epochs": 10}, device="cpu").fit(train)
    reference = np.asarray(fitted.detector.calibration.reference)
    assert reference[0] == pytest.approx(reference[1:].mean(), abs=0.3)
    top = fitted.feature_scores(exchangeable(1000, 2)).idxmax(axis=1)
    assert (top == "a").mean() < 0.5


def test_an_objective_that_cannot_give_the_score_fails_before_training(monkeypatch):
    monkeypatch.setattr("vae.estimator.fit", lambda *args, **kwargs: pytest.fail("trained before the check"))
    with pytest.raises(ConfigError, match="aae"):  # the default scores by the ELBO, which an AAE does not train
        AnomalyDetector(overrides={"objective.kind": "aae"}, device="cpu").fit(frame(50))


def test_infinite_and_non_binary_values_score_plus_infinity_in_their_column(fitted):
    new = frame(6, seed=5)
    clean = fitted.score_samples(new)
    odd = new.assign(a=[np.inf, -np.inf, 0.0, 0.0, 0.0, 0.0], flag=[0, 1, 2, -1, 1, 0])
    odd.loc[odd.index[4], "b"] = np.nan  # missing, not impossible: marginalised out
    scores = odd.pipe(fitted.score_samples)
    assert np.isposinf(scores[:4]).all() and np.isfinite(scores[4:]).all() and scores[5] != clean[5]
    np.testing.assert_array_equal(fitted.predict(odd), [1, 1, 1, 1, fitted.predict(odd.iloc[4:])[0], 0])
    features = fitted.feature_scores(odd)
    np.testing.assert_array_equal(np.isposinf(features[["a", "flag"]]).to_numpy(), [[1, 0], [1, 0], [0, 1], [0, 1],
                                                                                     [0, 0], [0, 0]])  # fmt: skip


def test_training_rows_with_infinite_or_out_of_range_values_are_left_out_with_a_warning():
    train = frame(300)
    train.loc[train.index[:4], "a"] = [np.inf, 1e300, -np.inf, 9.96921e36]  # the last: a fill value
    with pytest.warns(UserWarning, match=r"4 of 300 rows left out: a value infinite, beyond 1e\+100, more than"):
        detector = AnomalyDetector(exclude=["id"], settings=quick(epochs=2), device="cpu").fit(train)
    assert np.isfinite(detector.detector.threshold) and np.isfinite(detector.score_samples(frame(5))).all()
    assert detector.detector.preprocessor.std[0] < 2  # a is N(0, 1): the fill value set no statistic
    with pytest.raises(ValueError, match="need at least 2 usable rows, got 1"), pytest.warns(UserWarning):
        AnomalyDetector(settings=quick(epochs=2), device="cpu").fit(pd.DataFrame({"a": [1.0, np.inf, -np.inf]}))


def test_given_calibration_rows_every_row_trains_and_the_threshold_is_their_quantile():
    table, calibration = frame(1200), frame(300, seed=2)  # 1200 rows: alone, the estimator holds out 120 of them
    given = AnomalyDetector(exclude=["id"], settings=quick(epochs=2), device="cpu").fit(table, calibration=calibration)
    np.testing.assert_allclose(given.detector.preprocessor.mean, table[["a", "b"]].mean())  # every row's statistics
    threshold = given.detector.calibrated_threshold()
    assert threshold == pytest.approx(np.quantile(given.score_samples(calibration), 0.95))
    alone = AnomalyDetector(exclude=["id"], settings=quick(epochs=2), device="cpu").fit(table)
    assert not np.allclose(alone.detector.preprocessor.mean, table[["a", "b"]].mean())  # 10 % held out
    with pytest.raises(ValueError, match=r"calibration lacks the feature column\(s\) \['colour'\]; it has \['id'"):
        given.fit(table, calibration=calibration.drop(columns="colour"))
    assert given.detector.calibrated_threshold() == threshold  # refused before anything was trained
    shuffled = calibration[["colour", "flag", "b", "a"]].assign(label=0)  # no id, another order, a label beside
    again = AnomalyDetector(exclude=["id"], settings=quick(epochs=2), device="cpu").fit(table, calibration=shuffled)
    assert again.detector.calibrated_threshold() == pytest.approx(threshold)
    calibration.loc[calibration.index[:2], "b"] = np.inf
    with pytest.warns(UserWarning, match=r"2 of 300 calibration rows left out: a value infinite"):
        AnomalyDetector(exclude=["id"], settings=quick(epochs=2), device="cpu").fit(table, calibration=calibration)


def test_contamination_places_the_threshold_with_given_settings_too(fitted):
    assert fitted.detector.score_config.contamination == 0.05  # the settings' own
    wide = AnomalyDetector(exclude=["id"], settings=quick(epochs=2), contamination=0.3, device="cpu").fit(frame(200))
    assert wide.detector.score_config.contamination == 0.3
    assert 0.2 < wide.predict(frame(1000, seed=7)).mean() < 0.4
    with pytest.raises(ValueError, match="contamination"):
        AnomalyDetector(settings=quick(epochs=1), contamination=1.5, device="cpu").fit(frame(50)[["a"]])


def test_an_empty_table_gets_empty_scores(fitted):
    empty = frame(5).head(0)
    assert fitted.score_samples(empty).shape == (0,) and fitted.predict(empty).shape == (0,)
    features = fitted.feature_scores(empty)
    assert features.shape == (0, 4) and list(features.columns) == ["a", "b", "flag", "colour"]


def test_unfitted_and_too_small_inputs_fail_clearly():
    with pytest.raises(RuntimeError, match="call fit"):
        AnomalyDetector().score_samples(frame(3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        AnomalyDetector().fit(frame(1))
    for no_columns in (pd.DataFrame(index=range(500)), np.empty((500, 0))):
        with pytest.raises(ValueError, match="the table has no columns"):
            AnomalyDetector().fit(no_columns)


SCRIPT = """
from tests.unit.test_estimator import frame, quick
from vae import AnomalyDetector
print(repr(AnomalyDetector(exclude=["id"], settings=quick(epochs=3), seed=7, device="cpu").fit(frame(200))
           .score_samples(frame(20, seed=4)).tolist()))
"""


def test_the_same_seed_gives_the_same_model_after_other_fits_and_in_a_fresh_process():
    def scores(seed: int) -> np.ndarray:
        return AnomalyDetector(exclude=["id"], settings=quick(epochs=3), seed=seed, device="cpu").fit(frame(200)) \
            .score_samples(frame(20, seed=4))  # fmt: skip

    first = scores(7)
    other = scores(8)
    np.random.default_rng(0).normal(size=5)  # unrelated draws in between change nothing
    np.testing.assert_array_equal(scores(7), first)
    assert not np.allclose(other, first)
    fresh = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    np.testing.assert_array_equal(np.array(eval(fresh.stdout)), first)


def test_dotted_values_replace_the_default_and_auto_keeps_it():
    base = auto_settings(500, DataLayout((FeatureBlock("gaussian", 10),)))
    point = with_values(base, {"objective.beta": 0.1, "model.latent_dim": "auto"})
    assert point.objective.beta == 0.1 and point.model.latent_dim == base.model.latent_dim == 5
    assert point.train == base.train and with_values(base, {"model.latent_dim": 2}).model.latent_dim == 2

    with pytest.raises(ValueError, match="'network.depth' is not in a section"):
        with_values(base, {"network.depth": 3})


def test_a_batch_size_given_alone_keeps_the_default_step_budget_as_make_train_does(monkeypatch):
    trained = []
    monkeypatch.setattr("vae.estimator.fit", lambda *args, **kwargs: trained.append(args[4]))  # its TrainConfig
    AnomalyDetector(exclude=["id"], overrides={"train.batch_size": 32}, device="cpu").fit(frame(400))
    AnomalyDetector(exclude=["id"], overrides={"train.batch_size": 32, "train.epochs": 5}, device="cpu").fit(frame(400))
    layout = DataLayout((FeatureBlock("gaussian", 2), FeatureBlock("bernoulli", 1), FeatureBlock("categorical", 3)))
    _, pipeline, _ = resolve(ModelConfig(), TrainConfig(batch_size=32, epochs="auto"), ScoreConfig(), 400, layout)
    assert [t.epochs for t in trained] == [pipeline.epochs, 5] and pipeline.epochs == epochs_for(400, 32) == 231


def test_one_threshold_rule_given_alone_replaces_the_other():
    base = auto_settings(500, DataLayout((FeatureBlock("gaussian", 10),)))  # contamination 0.05
    by_quantile = with_values(base, {"score.quantile": 0.99}).score  # failed: "set exactly one of ..."
    assert (by_quantile.quantile, by_quantile.contamination) == (0.99, None)
    back = with_values(with_values(base, {"score.quantile": 0.99}), {"score.contamination": 0.1}).score
    assert (back.contamination, back.quantile) == (0.1, None)
    with pytest.raises(ConfigError, match="set exactly one of contamination and quantile"):
        with_values(base, {"score.quantile": 0.99, "score.contamination": 0.1})  # both given: still refused


def test_overrides_change_one_setting_of_the_default():
    rows = np.random.default_rng(0).normal(size=(60, 6))
    fitted = AnomalyDetector(overrides={"model.latent_dim": 2, "train.epochs": 1}, device="cpu").fit(rows)
    assert fitted.detector.model.config.latent_dim == 2
    assert fitted.detector.model.config.hidden_dims == (128, 128)  # the rest stays the default


def test_feature_scores_carry_the_inputs_own_column_labels_in_its_order():
    """Labels 0..3 came back as "0".."3", grouped by kind: scores[1] raised KeyError."""
    table = frame(300).drop(columns="id")[["colour", "b", "flag", "a"]].set_axis([3, 1, 2, 0], axis=1)
    detector = AnomalyDetector(settings=quick(epochs=2), device="cpu").fit(table)
    scores = detector.feature_scores(table)
    assert list(scores.columns) == [3, 1, 2, 0] and scores.index.equals(table.index)
    reordered = detector.feature_scores(table[[0, 1, 2, 3]])
    assert list(reordered.columns) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(reordered[[3, 1, 2, 0]], scores)
    assert scores[1].shape == (300,) and set(scores.idxmax(axis=1)) <= {3, 1, 2, 0}
