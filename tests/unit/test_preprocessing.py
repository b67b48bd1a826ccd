import json

import numpy as np
import pytest

from vae import FeatureBlock, Preprocessor


@pytest.fixture
def table():
    return {
        "age": np.array([20.0, 30.0, 40.0, 50.0]),
        "const": np.array([7.0, 7.0, 7.0, 7.0]),
        "smoker": np.array([0, 1, 1, 0]),
        "colour": np.array(["red", "blue", "red", "green"], dtype=object),
    }


def _fitted(table, **kw):
    return Preprocessor(numeric=["age", "const"], binary=["smoker"], categorical=["colour"], **kw).fit(table)


def test_standardizes_with_training_statistics(table):
    x = _fitted(table).transform(table)
    assert x.shape == (4, 2 + 1 + 4) and x.dtype == np.float32
    age = (table["age"] - 35.0) / np.std(table["age"])
    np.testing.assert_allclose(x[:, 0], age, rtol=1e-6)
    np.testing.assert_array_equal(x[:, 2], table["smoker"])


def test_constant_column_is_centred_not_divided_by_zero(table):
    pre = _fitted(table)
    assert pre.std[1] == 1.0
    x = pre.transform({**table, "const": np.array([7.0, 8.0, 7.0, 5.0])})
    np.testing.assert_array_equal(x[:, 1], [0.0, 1.0, 0.0, -2.0])


def test_a_column_of_tiny_values_with_a_real_spread_is_not_constant():
    farads = np.array([1.0, 1.1, 0.9]) * 1e-12  # capacitances in farads: the spread is real, not rounding
    rounded = np.full(3, 0.1)
    assert np.std(rounded) > 0  # 1.4e-17: the rounding of the mean, not a spread
    pre = Preprocessor(numeric=["cap", "rounded"]).fit({"cap": farads, "rounded": rounded})
    np.testing.assert_allclose(pre.std[0], np.std(farads))
    assert pre.std[1] == 1.0
    odd = pre.transform({"cap": np.array([2e-12]), "rounded": np.array([0.1])})
    assert odd[0, 0] == pytest.approx((2e-12 - farads.mean()) / np.std(farads), rel=1e-5)  # 13 std, as in picofarads


def test_unknown_and_missing_categories_go_to_the_unknown_bucket(table):
    pre = _fitted(table)
    assert pre.categories["colour"] == ["blue", "green", "red"]
    new = {**table, "colour": np.array(["red", "purple", None, "blue"], dtype=object)}
    onehot = pre.transform(new)[:, 3:]
    np.testing.assert_array_equal(onehot.argmax(1), [3, 0, 0, 1])  # slot 0 = unknown
    np.testing.assert_array_equal(onehot.sum(1), 1.0)
    assert pre.unknown_counts(new) == {"colour": 1}


def test_missing_numbers_are_imputed_with_training_statistics(table):
    pre = _fitted(table)
    new = {**table, "age": np.array([np.nan, 30.0, np.inf, 50.0]), "smoker": np.array([np.nan, 1, 0, 0])}
    x = pre.transform(new)
    assert x[0, 0] == 0.0 and x[2, 0] == 0.0  # the training mean, standardized
    assert x[0, 2] == pytest.approx(0.5)  # the training share of ones
    assert set(pre.missing_mask(new)) == {"age", "smoker"}
    np.testing.assert_array_equal(pre.missing_mask(new)["age"], [True, False, True, False])


def test_infinite_and_non_binary_values_are_impossible_and_filled_for_the_encoder(table):
    pre = _fitted(table)
    new = {**table, "age": np.array([-np.inf, 1e300, np.nan, 50.0]), "smoker": np.array([0, 2, np.inf, np.nan])}
    masks = pre.impossible_mask(new)
    np.testing.assert_array_equal(masks["age"], [True, False, False, False])  # 1e300 is finite: out of range
    np.testing.assert_array_equal(masks["smoker"], [False, True, True, False])  # NaN is missing, not impossible
    assert "const" not in masks
    x = pre.transform(new)
    np.testing.assert_allclose(x[:, 2], [0.0, 0.5, 0.5, 0.5])  # 2, inf and NaN: the training share of ones
    np.testing.assert_array_equal(pre.unusable_rows(new), [True, True, True, False])


def test_missing_values_can_be_refused(table):
    pre = _fitted(table, missing="error")
    with pytest.raises(ValueError, match=r"missing or non-finite values \(rows per column\): \{'age': 2\}"):
        pre.transform({**table, "age": np.array([np.nan, 1.0, np.nan, 2.0])})


def test_bad_input_fails_naming_the_column(table):
    pre = _fitted(table)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['smoker'\]"):
        pre.transform({k: v for k, v in table.items() if k != "smoker"})
    with pytest.raises(ValueError, match="binary column 'smoker' has values other than 0/1"):
        _fitted({**table, "smoker": np.array([0, 2, 1, 0])})
    with pytest.raises(ValueError, match="column 'age' must be numeric"):
        pre.transform({**table, "age": np.array(["x", "y", "z", "w"], dtype=object)})
    with pytest.raises(ValueError, match="column 'age' has no finite value"):
        Preprocessor(numeric=["age"]).fit({"age": np.array([np.nan, np.nan])})
    with pytest.raises(ValueError, match=r"declared twice: \['age'\]"):
        Preprocessor(numeric=["age"], categorical=["age"])


def test_layout_blocks_follow_the_encoded_columns(table):
    assert _fitted(table).layout_blocks() == (
        FeatureBlock("gaussian", 2, ("age", "const")),
        FeatureBlock("bernoulli", 1, ("smoker",)),
        FeatureBlock("categorical", 4, ("colour",)),
    )


def test_json_round_trip_encodes_identically(table):
    pre = _fitted(table)
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    new = {**table, "colour": np.array(["red", "purple", None, "blue"], dtype=object)}
    np.testing.assert_array_equal(pre.transform(new), again.transform(new))


def test_pandas_missing_markers_count_as_missing(table):
    import pandas as pd

    pre = _fitted(table)
    frame = pd.DataFrame({**table, "colour": pd.array(["red", None, "blue", "red"], dtype="string")})
    assert frame["colour"].isna().sum() == 1
    np.testing.assert_array_equal(pre.transform(frame)[:, 3:].argmax(1), [3, 0, 1, 3])
    np.testing.assert_array_equal(pre.missing_mask(frame)["colour"], [False, True, False, False])


def test_inverse_transform_undoes_transform_on_real_rows():
    from pipelines.sample_data.datasets import THYROID_COLUMNS, load_thyroid

    thyroid, _ = load_thyroid()
    rng = np.random.default_rng(0)
    table = {**thyroid, "flag": rng.integers(0, 2, len(thyroid["age"])),
             "kind": rng.choice(["a", "b", "c"], len(thyroid["age"])).astype(object)}  # fmt: skip
    pre = Preprocessor(numeric=THYROID_COLUMNS, binary=["flag"], categorical=["kind"]).fit(table)
    back = pre.inverse_transform(pre.transform(table))
    for column in THYROID_COLUMNS:  # float32 encoding: 1e-5 of the column's spread
        np.testing.assert_allclose(back[column], table[column], rtol=1e-5, atol=1e-5 * table[column].std())
    np.testing.assert_array_equal(back["flag"], table["flag"])
    np.testing.assert_array_equal(back["kind"], table["kind"])


def test_inverse_transform_reads_probabilities_and_the_unknown_bucket(table):
    pre = _fitted(table)
    x = np.zeros((3, pre.input_dim))
    x[:, 2] = [0.49, 0.5, 0.9]  # smoker probabilities
    x[:, 3:] = [[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 1.0, 0.0]]  # unknown, blue, green, red
    back = pre.inverse_transform(x)
    np.testing.assert_array_equal(back["smoker"], [0, 1, 1])
    assert back["colour"].tolist() == ["red", None, "green"]
    np.testing.assert_array_equal(back["age"], [35.0] * 3)  # 0 is the training mean
    np.testing.assert_array_equal(pre.unknown_slots(), [False, False, False, True, False, False, False])
    with pytest.raises(ValueError, match=r"expected encoded rows \(N, 7\), got \(3, 6\)"):
        pre.inverse_transform(x[:, :6])


def test_encoded_missing_flags_whole_categorical_groups(table):
    pre = _fitted(table)
    holed = {**table, "age": np.array([np.nan, 1.0, np.inf, 2.0]), "colour": np.array([None, "red", "x", "blue"])}
    mask = pre.encoded_missing(holed)
    assert mask.shape == (4, 7)
    np.testing.assert_array_equal(mask[:, 0], [True, False, True, False])
    np.testing.assert_array_equal(mask[:, 3:], np.array([[True] * 4, [False] * 4, [False] * 4, [False] * 4]))
    assert not mask[:, 1:3].any()


def test_int_categories_encode_the_same_when_scored_from_a_float_column_with_a_nan():
    """A pandas int column with one NaN (or Parquet ints with nulls) arrives as float64: 1 becomes 1.0."""
    import pandas as pd

    pre = Preprocessor(categorical=["grade"]).fit({"grade": np.array([1, 2, 3, 1])})
    ints = pd.DataFrame({"grade": [3, 1, 2, 2]})
    floats = pd.DataFrame({"grade": [3.0, 1.0, np.nan, 2.0]})
    assert floats["grade"].dtype == np.float64
    np.testing.assert_array_equal(pre.transform(floats)[[0, 1, 3]], pre.transform(ints)[[0, 1, 3]])
    np.testing.assert_array_equal(pre.transform(floats).argmax(1), [3, 1, 0, 2])  # the NaN: unknown bucket
    assert pre.unknown_counts(floats) == {"grade": 0}
    np.testing.assert_array_equal(pre.missing_mask(floats)["grade"], [False, False, True, False])
    fitted_on_floats = Preprocessor(categorical=["grade"]).fit(floats)  # and the other way round
    np.testing.assert_array_equal(fitted_on_floats.transform(ints), pre.transform(ints))
    assert pre.categories["grade"] == ["1", "2", "3"] and pre.label_kinds == {"grade": "number"}


def test_canonical_labels_of_numpy_scalars_bytes_bools_and_numeric_text():
    from vae.labels import canonical_label, canonical_labels

    one = [1, 1.0, np.int64(1), np.float32(1.0), np.uint8(1), "1", b"1"]
    assert [canonical_label(v) for v in one] == ["1"] * len(one)
    assert canonical_label(b"caf\xc3\xa9") == "café" and canonical_label(np.str_("red")) == "red"
    assert [canonical_label(v) for v in (1.5, 1e20, -0.0, True, np.False_)] == [
        "1.5", "100000000000000000000", "0", "True", "False",
    ]  # fmt: skip
    assert [canonical_label(v, "number") for v in ("2.0", " 3 ", True, "x")] == ["2", "3", "1", "x"]
    assert [canonical_label(v, "bool") for v in (1.0, 0, True, "True")] == ["True", "False", "True", "True"]
    assert canonical_labels([None, np.nan, "a", 2.0]).tolist() == [None, None, "a", "2"]
    assert canonical_labels([True, 2, 2**53 + 1]).tolist() == ["True", "2", "9007199254740993"]  # a list as is


def test_a_fractional_category_is_one_label_in_float32_and_float64_whatever_the_table():
    import pandas as pd
    import pyarrow as pa

    from vae.columns import as_columns
    from vae.labels import canonical_label, canonical_labels

    narrow = np.array([0.1, 0.7, np.nan], dtype=np.float32)  # 0.1 widens to 0.10000000149011612
    assert canonical_labels(narrow).tolist() == canonical_labels(narrow.astype(np.float64).round(6)).tolist()
    assert canonical_labels(narrow).tolist() == ["0.1", "0.7", None] and canonical_label(np.float16(0.1)) == "0.1"
    tables = [pd.DataFrame({"zone": pd.Categorical(narrow)}), pa.table({"zone": pa.array(narrow).dictionary_encode()}),
              {"zone": narrow}, pd.DataFrame({"zone": narrow}), pa.table({"zone": pa.array(narrow)})]  # fmt: skip
    for table in tables:  # a plain float32 column was fitted on its widened labels: every value unknown
        pre = Preprocessor(categorical=["zone"]).fit(as_columns(table))
        assert pre.categories["zone"] == ["0.1", "0.7"]
        assert pre.unknown_counts({"zone": np.array([0.1, 0.7])}) == {"zone": 0}


def test_a_categorical_column_with_no_value_in_training_is_refused():
    """One slot, always certain: any value would score as normal, as a numeric column of NaN is refused."""
    with pytest.raises(ValueError, match=r"^column 'host' has no value to fit on$"):
        Preprocessor(categorical=["host"]).fit({"host": np.array([None, None], dtype=object)})


def test_the_text_nan_in_a_number_categorical_is_missing_as_in_a_numeric_column():
    from vae.labels import canonical_label

    pre = Preprocessor(categorical=["code"]).fit({"code": np.array([1, 2, 1])})
    assert canonical_label("nan", "number") is None and canonical_label("NaN", "text") == "NaN"
    assert pre.missing_mask({"code": np.array(["nan", "1"], dtype=object)})["code"].tolist() == [True, False]


def test_bool_categories_read_0_and_1_as_the_training_bools():
    pre = Preprocessor(categorical=["flag"]).fit({"flag": np.array([True, False, True], dtype=object)})
    np.testing.assert_array_equal(pre.transform({"flag": np.array([1.0, 0.0, np.nan])}).argmax(1), [2, 1, 0])
    assert pre.categories["flag"] == ["False", "True"] and pre.label_kinds == {"flag": "bool"}


def test_label_kinds_are_saved_and_files_without_them_keep_recognising_their_categories(table):
    pre = Preprocessor(categorical=["grade", "colour"]).fit({"grade": np.array([2, 1]), "colour": table["colour"][:2]})
    saved = json.loads(json.dumps(pre.to_dict()))
    old = {k: v for k, v in saved.items() if k != "label_kinds"}  # saved before kinds were recorded:
    old["categories"] = {"grade": ["1.0", "2.0"], "colour": ["blue", "red"]}  # str(value) of a float column
    again = Preprocessor.from_dict(old)
    rows = {"grade": np.array([2, 1]), "colour": np.array(["red", "blue"], dtype=object)}
    np.testing.assert_array_equal(again.transform(rows), pre.transform(rows))
    np.testing.assert_array_equal(again.transform({**rows, "grade": np.array([2.0, 1.0])}), pre.transform(rows))
    assert again.categories == {"grade": ["1", "2"], "colour": ["blue", "red"]}
    clash = {**old, "categories": {"grade": ["1", "1.0"], "colour": ["blue"]}}  # two labels, one number
    assert Preprocessor.from_dict(clash).categories["grade"] == ["1", "1.0"]  # kept as they were saved
    assert saved["label_kinds"] == {"grade": "number", "colour": "text"}
    assert Preprocessor.from_dict(saved).label_kinds == pre.label_kinds


def test_huge_and_infinite_training_values_are_left_out_of_finite_statistics():
    values = np.array([1.0, 2.0, 3.0, 1e308, 1e308, -np.inf, np.inf, np.nan])
    pre = Preprocessor(numeric=["a"]).fit({"a": values})
    assert np.isfinite(pre.mean).all() and np.isfinite(pre.std).all()
    np.testing.assert_allclose([pre.mean[0], pre.std[0]], [2.0, np.std([1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="column 'a' has no finite value"):
        Preprocessor(numeric=["a"]).fit({"a": np.array([1e200, -np.inf])})


def test_screen_bounds_are_10_to_the_4_robust_stds_around_the_median():
    from vae.value_screen import IQR_STDS, MAD_STDS, Z_BOUND, screen_bounds

    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 1e30])  # quartiles 1.25 and 3.75 (numpy's linear rule)
    np.testing.assert_allclose(screen_bounds(values), 2.5 + np.array([-1, 1]) * Z_BOUND * 2.5 / IQR_STDS)
    sparse = np.array([0.0] * 8 + [3.0, 5.0])  # IQR 0: the median deviation of the values off the median, 4
    np.testing.assert_allclose(screen_bounds(sparse), np.array([-1, 1]) * Z_BOUND * 4.0 / MAD_STDS)
    assert screen_bounds(np.full(4, 7.0)) == screen_bounds(np.array([])) == (-np.inf, np.inf)
    mostly_zeros = np.r_[np.zeros(240), np.random.default_rng(0).normal(size=59), 9.96921e36]  # rain, and a fill
    low, high = screen_bounds(mostly_zeros)
    assert low > -1e5 and high < 1e5  # the fill value moves no bound: it lies outside them


def test_a_fill_value_in_training_is_left_out_of_the_statistics_and_its_row_of_training():
    """One 9.97e36 among 300 values of N(0, 1) set the std alone (5.8e35), and every finite value looked normal."""
    values = np.random.default_rng(0).normal(size=300)
    values[7] = 9.96921e36
    pre = Preprocessor(numeric=["a"]).fit({"a": values})
    clean = np.delete(values, 7)
    np.testing.assert_allclose([pre.mean[0], pre.std[0]], [clean.mean(), clean.std()])
    assert np.flatnonzero(pre.unusable_rows({"a": values})).tolist() == [7]
    far = pre.out_of_range_mask({"a": np.array([0.5, 1e6, 1e9])})["a"]
    assert far.tolist() == [False, True, True]
    assert not Preprocessor.from_dict(pre.to_dict()).bounds  # training-time state: a loaded one scores as before


def test_values_far_outside_the_training_range_are_flagged_and_encoded_without_overflow(table):
    pre = _fitted(table)
    far = {**table, "age": np.array([1e300, -1e308, np.nan, 35.0]), "smoker": np.array([0, 2, 1, np.nan])}
    x = pre.transform({**far, "smoker": table["smoker"]})
    assert x.dtype == np.float32 and np.isfinite(x).all()
    from vae.value_screen import Z_BOUND

    np.testing.assert_array_equal(x[:, 0], [Z_BOUND, -Z_BOUND, 0.0, 0.0])  # clipped; missing -> the mean
    masks = pre.out_of_range_mask(far)
    assert sorted(masks) == ["age", "smoker"]
    np.testing.assert_array_equal(masks["age"], [True, True, False, False])
    np.testing.assert_array_equal(masks["smoker"], [False, True, False, False])
    edge = 35.0 + 0.999 * Z_BOUND * pre.std[0]  # just inside the bound
    assert pre.out_of_range_mask({**table, "age": np.array([edge, 35.0, 35.0, 35.0])}) == {}


def test_a_row_with_a_huge_value_scores_far_above_normal_rows():
    """Detector.score (the library path, no quarantine): 1e308 in one feature is encoded as Z_BOUND
    standard deviations, which no normal row comes near, and every score stays finite."""
    from vae import VAE, DataLayout, Detector, ModelConfig, ObjectiveConfig, TrainConfig, fit

    rng = np.random.default_rng(0)
    base = rng.normal(size=(600, 1))
    table = {f"f{i}": (base[:, 0] * (i + 1) + rng.normal(scale=0.3, size=600)) for i in range(4)}
    pre = Preprocessor(numeric=list(table)).fit(table)
    x = pre.transform(table)
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(16,)), DataLayout(pre.layout_blocks()))
    fit(model, x[:500], x[500:], ObjectiveConfig(), TrainConfig(epochs=5, batch_size=64, lr=5e-3), log=None)
    detector = Detector(model, pre)
    normal, _ = detector.score({c: v[500:] for c, v in table.items()})
    huge = {c: v[500:510].copy() for c, v in table.items()}
    huge["f2"][:] = 1e308
    huge["f0"][5:] = -1e308
    scores, contributions = detector.score(huge)
    assert np.isfinite(normal).all() and np.isfinite(scores).all() and np.isfinite(contributions).all()
    assert (scores > np.quantile(normal, 0.999)).all()


def test_one_hot_encoding_takes_memory_in_rows_not_in_categories_squared():
    import tracemalloc

    from vae.labels import MAX_CATEGORIES

    labels = np.array([f"c{i}" for i in range(MAX_CATEGORIES)] * 2, dtype=object)  # each twice: no id column
    pre = Preprocessor(categorical=["code"]).fit({"code": labels})
    tracemalloc.start()
    x = pre.transform({"code": np.array(["c7", "never seen"], dtype=object)})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert x.shape == (2, MAX_CATEGORIES + 1) and x[0, 1 + pre.categories["code"].index("c7")] == 1 and x[1, 0] == 1
    assert x.sum() == 2 and peak < 2**20  # np.eye(1001) alone is 8 MB (np.eye(20001) was 3.2 GB)
