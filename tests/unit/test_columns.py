"""`vae.columns`: which columns are features and of what kind, from pandas, pyarrow and numpy tables, as the
estimator and `make train` type them."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vae.columns import INTEGER, FeatureTypes, arrow_kind, as_columns, infer_feature_types, type_kinds
from vae.labels import canonical_labels

from .test_estimator import frame


def test_column_types_are_inferred_from_the_values():
    types = infer_feature_types(as_columns(frame(10)), exclude=["id"])
    assert (types.numeric, types.binary, types.categorical) == (("a", "b"), ("flag",), ("colour",))
    floats = infer_feature_types({"x": np.array([0.0, 1.0]), "n": np.array([0, 2])})
    assert floats.numeric == ("x", "n")  # a float column of 0/1 may hold anything when scored; 2 is not binary
    declared = infer_feature_types(as_columns(frame(10)), numeric=["a"])
    assert declared.columns == ("a",)


def typed_frame() -> pd.DataFrame:
    """One column of each type whose kind its dtype fixes, with missing values where the type allows them."""
    return pd.DataFrame({
        "size": pd.Categorical([10, 20, 30, 10]),  # integer categories: categorical, not numeric
        "pair": pd.Categorical([0, 1, 1, 0]),  # 0/1 categories: still categorical
        "ok": pd.array([True, None, False, True], dtype="boolean"),
        "count": pd.array([0, 1, None, 1], dtype="Int64"),  # nullable 0/1 integers: binary
        "visits": pd.array([3, None, 5, 8], dtype="Int64"),
        "price": pd.array([1.5, None, 2.0, 3.0], dtype="Float64"),
        "name": ["a", "b", None, "a"],
    })  # fmt: skip


def test_pandas_and_arrow_column_types_give_the_same_kinds_as_the_pipeline():
    table = typed_frame()
    expected = (("visits", "price"), ("ok", "count"), ("size", "pair", "name"))
    for source in (table, pa.Table.from_pandas(table, preserve_index=False)):
        types = infer_feature_types(as_columns(source), types=type_kinds(source))
        assert (types.numeric, types.binary, types.categorical) == expected, type(source)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    kinds = {f.name: arrow_kind(f.type) for f in arrow.schema}  # what `make train` reads from a Parquet schema
    assert kinds["size"] == kinds["pair"] == "categorical" and kinds["ok"] == "binary" and kinds["count"] == INTEGER
    np.testing.assert_array_equal(as_columns(table)["price"], [1.5, np.nan, 2.0, 3.0])
    assert as_columns(table)["size"].tolist() == [10, 20, 30, 10]


def test_object_columns_are_typed_by_their_values_python_types():
    import datetime
    import decimal

    mixed = pd.DataFrame({"x": [1.5, 2.5, 3.5], "n": [0, 1, 1], "label": ["a", "b", "a"]})
    assert infer_feature_types(as_columns(mixed.to_numpy())) == FeatureTypes(("x0",), ("x1",), ("x2",))
    objects = {"amount": np.array([decimal.Decimal("1.50"), None, decimal.Decimal("2")], dtype=object),
               "listed": np.array([1.0, None, 3.0], dtype=object), "code": np.array(["1", 2, 3], dtype=object),
               "flag": np.array([True, None, False], dtype=object)}  # fmt: skip
    assert infer_feature_types(objects) == FeatureTypes(("amount", "listed"), ("flag",), ("code",))
    days = {"x": np.arange(3.0), "day": np.array([datetime.date(2026, 1, d) for d in (1, 2, 3)], dtype=object)}
    with pytest.raises(ValueError, match=r"\['day'\] hold dates"):
        infer_feature_types(days)
    decimals = pd.ArrowDtype(pa.decimal128(5, 2))
    arrow_backed = pd.DataFrame({"d": pd.array([decimal.Decimal("1.5"), None], dtype=decimals),
                                 "s": pd.array(["a", "b"], dtype=pd.ArrowDtype(pa.string()))})  # fmt: skip
    assert type_kinds(arrow_backed) == {"d": "numeric", "s": "categorical"}


def test_excluded_or_declared_columns_the_table_lacks_are_named():
    with pytest.raises(ValueError, match=r"\['ID'\] named in exclude .* not in the table"):
        infer_feature_types(as_columns(frame(10)), exclude=["ID"])
    with pytest.raises(ValueError, match=r"\['zip'\] named in exclude"):
        infer_feature_types(as_columns(frame(10)), numeric=["a", "zip"])
    numbered = pd.DataFrame(np.arange(12.0).reshape(4, 3))  # column labels 0, 1, 2 are "0", "1", "2"
    assert infer_feature_types(as_columns(numbered), exclude=[0]).numeric == ("1", "2")


def test_repeated_column_names_are_refused_by_name():
    table = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"more than one column \['a'\]"):
        as_columns(table)
    assert list(as_columns(pd.DataFrame([[1.0, 2.0]], columns=[0, "0b"]))) == ["0", "0b"]


def test_integer_codes_beyond_float_precision_keep_their_labels_whatever_the_dtype():
    big = 2**53
    codes = [big + 1, big + 2, big + 3, None]  # 2**53 + 1 has no float64 of its own
    expected = ["9007199254740993", "9007199254740994", "9007199254740995"]
    sources = [
        pd.Series(codes, dtype="Int64"),
        pd.Series(codes[:3], dtype="Int64"),
        pd.Series(codes, dtype="int64[pyarrow]"),
    ]
    for series in sources:
        values = as_columns(pd.DataFrame({"code": series}))["code"]
        assert [str(v) for v in values[:3]] == expected, series.dtype
    arrow = as_columns(pa.table({"code": pa.array(codes, pa.int64())}))["code"]
    assert [str(v) for v in arrow[:3]] == expected and arrow[3] is None
    small = as_columns(pd.DataFrame({"n": pd.Series([1, None, 3], dtype="Int64")}))["n"]  # exact in float64: floats
    assert small.dtype == np.float64 and np.isnan(small[1])
    sparse = as_columns(pd.get_dummies(pd.Series(["a", "b", "a"]), sparse=True, dtype=int))  # SparseDtype: kind "i"
    assert sparse["a"].tolist() == [1, 0, 1]


def test_decimal_codes_beyond_float_precision_stay_apart():
    """18-digit decimal codes read as float64 were one category (a code never seen scored as a seen one)."""
    codes = pa.array([Decimal("100000000000000001"), Decimal("100000000000000002"), None], pa.decimal128(18, 0))
    values = as_columns(pa.table({"code": codes}))["code"]
    assert canonical_labels(values, "number").tolist() == ["100000000000000001", "100000000000000002", None]
    short = as_columns(pa.table({"x": pa.array([Decimal("1.25"), None], pa.decimal128(5, 2))}))["x"]
    assert short.dtype == np.float64 and short[0] == 1.25  # a number a float64 holds: read as one


def test_nullable_floats_keep_their_width_so_float32_categories_match_plain_ones():
    values = as_columns(pd.DataFrame({"c": pd.array([0.1, None], dtype="Float32")}))["c"]
    assert values.dtype == np.float32 and canonical_labels(values).tolist() == ["0.1", None]


def test_a_mapping_with_columns_of_different_lengths_or_one_name_twice_is_refused():
    with pytest.raises(ValueError, match=r"^the table's columns differ in length: \{'a': 2, 'b': 3\}$"):
        as_columns({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"more than one column \['1'\]"):
        as_columns({1: [1.0], "1": [2.0]})


def test_a_column_declared_and_excluded_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^column\(s\) \['id'\] are declared as features and excluded"):
        infer_feature_types(as_columns(frame(10)), exclude=["id"], numeric=["a", "id"])


def test_a_masked_arrays_masked_entries_are_missing_not_the_data_under_the_mask():
    data = np.array([[1.0, -999.0], [2.0, 3.0]])
    masked = np.ma.masked_array(data, mask=[[False, True], [False, False]])
    for table in (masked, {"x0": masked[:, 0], "x1": masked[:, 1]}):
        columns = as_columns(table)
        assert columns["x1"].tolist() == [None, 3.0] and columns["x0"].tolist() == [1.0, 2.0]
    assert as_columns(np.asarray(data))["x1"].tolist() == [-999.0, 3.0]  # a plain array keeps every value


def test_a_matrix_is_read_as_its_array_and_a_mapping_of_single_values_is_refused():
    columns = as_columns(np.matrix([[1.0, 2.0], [3.0, 4.0]]))
    assert columns["x1"].shape == (2,) and columns["x1"].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match=r"^the table's column\(s\) \['a', 'b'\] are one value, not a column of rows"):
        as_columns({"a": 0.1, "b": 3.0})


def test_a_column_of_lists_or_arrays_has_no_feature_kind_and_is_refused_by_name():
    table = frame(4).assign(embedding=[np.zeros(3)] * 4, tags=[["a"], ["b"], [], ["a", "b"]])
    with pytest.raises(ValueError, match=r"^column\(s\) \['embedding', 'tags'\] hold dates, times or other values"):
        infer_feature_types(as_columns(table), exclude=["id"])
    kinds = infer_feature_types(as_columns(table), exclude=["id", "embedding", "tags"])
    assert kinds.categorical == ("colour",)
