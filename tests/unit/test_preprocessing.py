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


def test_missing_values_can_be_refused(table):
    pre = _fitted(table, missing="error")
    with pytest.raises(ValueError, match=r"missing or non-finite values \(rows per column\): \{'age': 2\}"):
        pre.transform({**table, "age": np.array([np.nan, 1.0, np.nan, 2.0])})


def test_bad_input_fails_naming_the_column(table):
    pre = _fitted(table)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['smoker'\]"):
        pre.transform({k: v for k, v in table.items() if k != "smoker"})
    with pytest.raises(ValueError, match="binary column 'smoker' has values other than 0/1"):
        pre.transform({**table, "smoker": np.array([0, 2, 1, 0])})
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
    from pipelines.datasets import THYROID_COLUMNS, load_thyroid

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
