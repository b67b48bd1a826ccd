"""Rows at the data boundary of the pipeline: category labels whatever the column's dtype, huge and infinite
numbers in training statistics, training rows and scoring quarantine. Pure functions on pandas batches; the
Ray Data calls run in this process on pandas (`InProcessDataset`): no Ray cluster is started."""

from __future__ import annotations

import decimal
import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from ray.data.aggregate import Sum

from pipelines.runtime.batch_inference import REASON, category_labels, input_json, quarantine_reasons
from pipelines.runtime.parquet_checks import DataError
from pipelines.runtime.parquet_input import SPLIT_BUCKETS, fit_preprocessor, split_bucket
from pipelines.runtime.row_encoding import EncodeRows, left_out_rows, report_left_out
from vae import VAE, DataLayout, Detector, ModelConfig, Preprocessor
from vae.columns import as_columns
from vae.labels import ID_MIN_VALUES, ID_SHARE


class InProcessDataset:
    """The ray.data.Dataset methods the data functions call (map_batches, aggregate, sum) over pandas batches in
    this process; an aggregation is computed by pandas over all the batches' rows, by its Ray Data name."""

    AGGREGATIONS = {
        "count": pd.Series.count,
        "mean": pd.Series.mean,
        "std": lambda s: s.std(ddof=0),  # fit_preprocessor asks Std(ddof=0)
        "unique": lambda s: s.dropna().unique().tolist(),
        "sum": pd.Series.sum,
        "min": pd.Series.min,
        "max": pd.Series.max,
        "sample": lambda s: s.dropna().tolist(),  # every value: these tests hold fewer than SCREEN_SAMPLE
    }

    def __init__(self, batches: list[pd.DataFrame]) -> None:
        self.batches = batches

    def map_batches(self, fn, *, fn_kwargs=None, batch_format="pandas") -> InProcessDataset:
        assert batch_format == "pandas"
        return InProcessDataset([fn(batch, **(fn_kwargs or {})) for batch in self.batches])

    def aggregate(self, *aggregations) -> dict:
        rows = pd.concat(self.batches, ignore_index=True)
        return {a.name: self.AGGREGATIONS[a.get_agg_name()](rows[a.get_target_column()]) for a in aggregations}

    def sum(self, on: str):
        return self.aggregate(Sum(on=on))[f"sum({on})"]


def test_pipeline_statistics_agree_with_the_library_across_int_and_float_batches():
    """One block holds a categorical int column as ints, another as floats with a NaN (Parquet ints with nulls);
    a numeric column holds 1e308 and inf. The aggregations give what Preprocessor.fit gives, all finite."""
    ints = pd.DataFrame({"x": [1.0, 2.0, 3.0], "flag": [0, 1, 1], "grade": [1, 2, 3]})
    floats = pd.DataFrame({"x": [4.0, 1e308, np.inf], "flag": [0.0, np.nan, 1.0], "grade": [2.0, np.nan, 1.0]})
    assert floats["grade"].dtype == np.float64
    pipeline = fit_preprocessor(InProcessDataset([ints, floats]), ("x",), ("flag",), ("grade",), "impute")
    library = Preprocessor(["x"], ["flag"], ["grade"]).fit(pd.concat([ints, floats], ignore_index=True))
    assert pipeline.categories == library.categories == {"grade": ["1", "2", "3"]}
    assert pipeline.label_kinds == library.label_kinds == {"grade": "number"}
    np.testing.assert_allclose(pipeline.mean, [2.5])  # 1e308 and inf left out
    np.testing.assert_allclose(pipeline.std, [np.std([1.0, 2.0, 3.0, 4.0])])
    np.testing.assert_allclose(library.mean, pipeline.mean)
    np.testing.assert_allclose(library.std, pipeline.std)
    np.testing.assert_allclose(pipeline.rate, library.rate)
    np.testing.assert_array_equal(pipeline.transform(floats), library.transform(floats))


def test_pipeline_statistics_leave_out_a_fill_value_as_the_library_does():
    first = pd.DataFrame({"x": np.arange(20.0)})
    second = pd.DataFrame({"x": [3.0, 9.96921e36, 5.0]})  # a fill value in the second block
    pipeline = fit_preprocessor(InProcessDataset([first, second]), ("x",), (), (), "impute")
    library = Preprocessor(["x"]).fit(pd.concat([first, second], ignore_index=True))
    clean = np.r_[np.arange(20.0), 3.0, 5.0]
    np.testing.assert_allclose([pipeline.mean[0], pipeline.std[0]], [clean.mean(), clean.std()])
    np.testing.assert_allclose([library.mean[0], library.std[0]], [pipeline.mean[0], pipeline.std[0]])
    assert pipeline.bounds == library.bounds and left_out_rows(second, [pipeline]).tolist() == [False, True, False]


def arrow_batch(columns: dict[str, pa.Array]) -> pd.DataFrame:
    """A block as Ray Data 2.60 hands it to a pandas UDF: Arrow-backed pandas columns."""
    return pa.table(columns).to_pandas(types_mapper=pd.ArrowDtype)


def test_pipeline_statistics_read_arrow_backed_batches_as_the_library_reads_the_table():
    """float16 and decimal numbers (one null), and integer ids above 2**53 as categories beside a null id: numpy
    reads such a column as floats, where ids 2**60 + 1 and 2**60 + 3 are one number."""
    big = 2**60
    first = {"h": pa.array(np.array([1.5, 2.0, 2.5], np.float16)),
             "d": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("3.75")], pa.decimal128(5, 2)),
             "id": pa.array([big + 1, None, big + 3], pa.int64())}  # fmt: skip
    second = {"h": pa.array(np.array([3.0], np.float16)), "d": pa.array([decimal.Decimal("2.5")], pa.decimal128(5, 2)),
              "id": pa.array([big + 5], pa.int64())}  # fmt: skip
    batches = [arrow_batch(first), arrow_batch(second)]
    pipeline = fit_preprocessor(InProcessDataset(batches), ("h", "d"), (), ("id",), "impute")
    library = Preprocessor(["h", "d"], (), ["id"]).fit(
        as_columns(pa.concat_tables([pa.table(first), pa.table(second)]))
    )
    assert pipeline.categories == library.categories == {"id": [str(big + 1), str(big + 3), str(big + 5)]}
    np.testing.assert_allclose(pipeline.mean, [2.25, 2.5])
    np.testing.assert_allclose([pipeline.mean, pipeline.std], [library.mean, library.std])
    labels = pipeline.labels(batches[0], "id").tolist()
    assert labels == [str(big + 1), None, str(big + 3)]  # scoring reads the batch's ids as training did


def test_a_categorical_column_without_a_value_in_the_training_rows_is_named():
    batches = [pd.DataFrame({"x": [1.0, 2.0], "host": [None, None]}), pd.DataFrame({"x": [3.0], "host": [None]})]
    with pytest.raises(DataError, match=r"^categorical column\(s\) \['host'\] have no value in the training rows$"):
        fit_preprocessor(InProcessDataset(batches), ("x",), (), ("host",), "impute")


def test_a_categorical_column_of_ids_is_refused_in_the_pipeline_as_in_the_library():
    """Every row its own value: thousands of one-hot slots (20,000 rows held 6.5 GB in `fit`), none of which a new
    row can match, so every new row would look anomalous."""
    batches = [pd.DataFrame({"x": np.arange(600.0), "email": [f"u{i}@x.org" for i in range(600 * b, 600 * (b + 1))]})
               for b in range(2)]  # fmt: skip
    message = r"^categorical column 'email' has 1,200 distinct values, more than 1,000: ids or free text"
    with pytest.raises(DataError, match=message):
        fit_preprocessor(InProcessDataset(batches), ("x",), (), ("email",), "impute")
    with pytest.raises(ValueError, match=message):
        Preprocessor(numeric=["x"], categorical=["email"]).fit(pd.concat(batches))
    few = [batch[:150] for batch in batches]  # 300 rows, each its own address
    with pytest.raises(DataError, match=r"^categorical column 'email' has 300 distinct values in 300 rows: ids"):
        fit_preprocessor(InProcessDataset(few), ("x",), (), ("email",), "impute")
    repeated = [batch.assign(email=[f"u{i % 200}@x.org" for i in range(600)]) for batch in batches]
    kept = fit_preprocessor(InProcessDataset(repeated), ("x",), (), ("email",), "impute")  # each value 6 times
    assert len(kept.categories["email"]) == 200


def test_an_id_column_is_refused_by_the_share_of_distinct_values_not_only_by_their_number():
    """400 rows, each its own order id: the threshold came from those rows, all known, and 86 % of new normal
    rows (new ids) were flagged. Above ID_SHARE distinct values in their rows (and more than ID_MIN_VALUES) the
    column is refused; a short or repetitive column is not."""
    ids = np.array([f"o{i}" for i in range(400)], dtype=object)
    with pytest.raises(ValueError, match=r"^categorical column 'order' has 400 distinct values in 400 rows: ids"):
        Preprocessor(categorical=["order"]).fit({"order": ids})
    edge = int(ID_SHARE * 400)  # exactly the share: kept, one value more: refused
    Preprocessor(categorical=["order"]).fit({"order": np.concatenate([ids[:edge], ids[: 400 - edge]])})
    with pytest.raises(ValueError, match="ids or free text"):
        Preprocessor(categorical=["order"]).fit({"order": np.concatenate([ids[: edge + 1], ids[: 399 - edge]])})
    Preprocessor(categorical=["order"]).fit({"order": ids[:ID_MIN_VALUES]})  # too short to tell
    missing = np.array([*ids[:100], *[None] * 300], dtype=object)  # 100 of 100 labelled rows: missing ones don't count
    with pytest.raises(ValueError, match="has 100 distinct values in 100 rows"):
        Preprocessor(categorical=["order"]).fit({"order": missing})


def test_a_rows_split_does_not_depend_on_a_null_key_in_its_batch():
    """The train and validation passes may group rows into other blocks: with a null key in a block, Arrow-backed
    ints were hashed as floats and 1,840 of 10,000 rows changed split. Plain int keys keep the split they had."""
    keys = np.arange(10_000)
    clean = split_bucket(arrow_batch({"k": pa.array(keys)}), ("k",), seed=0)
    with_null = split_bucket(arrow_batch({"k": pa.array([*keys.tolist(), None])}), ("k",), seed=0)[:-1]
    np.testing.assert_array_equal(with_null, clean)
    np.testing.assert_array_equal(split_bucket(pd.DataFrame({"k": keys}), ("k",), seed=0), clean)
    narrow = pd.DataFrame({"k": keys.astype(np.int32)})
    salt = hashlib.sha256(b"0").hexdigest()[:16]  # the hash every earlier run split an int32 key by
    before = pd.util.hash_pandas_object(narrow, index=False, hash_key=salt).to_numpy() % SPLIT_BUCKETS
    np.testing.assert_array_equal(split_bucket(narrow, ("k",), seed=0), before)


def test_training_rows_with_infinite_or_out_of_range_values_are_left_out_and_counted(capsys):
    pre = Preprocessor(numeric=["x"], binary=["flag"]).fit({"x": np.arange(10.0), "flag": np.arange(10) % 2})
    batch = pd.DataFrame({
        "x": [1.0, np.inf, 1e308, np.nan, 1e7, 2.0],  # 1e7: ~3.5e6 training stds off the mean
        "flag": [0, 1, 1, 0, 1, 2],  # 2: not a binary value
        "label": [0, 1, 2, 3, 4, 5],
    })  # fmt: skip
    np.testing.assert_array_equal(left_out_rows(batch, [pre]), [False, True, True, False, True, True])
    encoded = EncodeRows(pre, None, "label")(batch)
    np.testing.assert_array_equal(encoded["label"], [0, 3])  # NaN: the missing policy's to impute
    assert encoded["x"].shape == (2, 2) and np.isfinite(encoded["x"]).all()
    assert report_left_out(InProcessDataset([batch, batch.iloc[:2]]), pre, None) == 5
    assert "5 training rows with non-finite values left out" in capsys.readouterr().out
    assert report_left_out(InProcessDataset([batch.iloc[[0, 3]]]), pre, None) == 0
    assert capsys.readouterr().out == ""


@pytest.fixture
def model_columns():
    """A model's features, fitted on ints: a numeric column, a binary one, an int-coded category."""
    train = {"x": np.arange(10.0), "flag": np.arange(10) % 2, "grade": np.arange(10) % 3 + 1}
    return Preprocessor(numeric=["x"], binary=["flag"], categorical=["grade"]).fit(train)


def test_quarantine_reads_int_categories_from_a_float_column_with_a_nan(model_columns):
    batch = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "flag": [0, 1, 0, 1], "grade": [1.0, np.nan, 3.0, 7.0]})
    reasons = quarantine_reasons(batch, model_columns, None, quarantine_unseen=True)[REASON].tolist()
    assert reasons == [None, None, None, "grade has an unseen category"]  # NaN: missing, scored without it


def test_quarantine_sets_aside_values_out_of_the_training_range_with_their_reason(model_columns):
    batch = pd.DataFrame({
        "x": [1e308, -1e300, np.inf, 4.0, 5.0],
        "flag": [0, 1, 0, 2, 1],
        "grade": [1, 2, 3, 1, 2],
    })  # fmt: skip
    reasons = quarantine_reasons(batch, model_columns, None, quarantine_unseen=False)[REASON].tolist()
    assert reasons == [
        "x is out of the training range",
        "x is out of the training range",
        "x is not finite",
        "flag is out of the training range",
        None,
    ]


def test_missing_feature_values_are_scored_unless_the_row_has_none_or_the_policy_is_error(model_columns):
    batch = pd.DataFrame({
        "x": [np.nan, 1.0, np.nan, np.nan, None],
        "flag": [0, np.nan, np.nan, 1, None],
        "grade": [1, None, 2, None, None],
    })  # fmt: skip
    reasons = quarantine_reasons(batch, model_columns, None, quarantine_unseen=True)[REASON].tolist()
    assert reasons == [None, None, None, None, "no feature has a value"]

    model_columns.missing = "error"  # the model's transform refuses missing values: the job sets them aside
    reasons = quarantine_reasons(batch, model_columns, None, quarantine_unseen=True)[REASON].tolist()
    assert reasons[0] == "x is missing" and reasons[1] == "flag is missing; grade is missing"
    assert reasons[4] == "x is missing; flag is missing; grade is missing"


def test_a_missing_condition_value_is_set_aside_even_when_missing_features_are_scored(model_columns):
    condition = Preprocessor(numeric=["site"]).fit({"site": np.arange(4.0)})
    batch = pd.DataFrame({"x": [np.nan, 1.0], "flag": [0, 1], "grade": [1, 2], "site": [1.0, np.nan]})
    reasons = quarantine_reasons(batch, model_columns, condition, quarantine_unseen=False)[REASON].tolist()
    assert reasons == [None, "site is missing"]


def test_a_quarantined_rows_input_keeps_its_infinite_values_apart_from_missing_ones():
    rows = pd.DataFrame({"x": [np.inf, -np.inf, np.nan, 0.1234567890123456789], "grade": ["a", None, "b", "c"]})
    records = [json.loads(text) for text in input_json(rows)]
    assert [r["x"] for r in records] == ["inf", "-inf", None, 0.123456789012346]  # 15 digits
    assert [r["grade"] for r in records] == ["a", None, "b", "c"]
    assert rows["x"].dtype == np.float64 and np.isinf(rows["x"].iloc[0])  # the batch itself is left as it was


def test_the_scoring_check_gets_each_categorical_columns_label_kind_and_labels():
    pre = Preprocessor(categorical=["sex", "grade"]).fit({"sex": np.array(["F", "M"], dtype=object),
                                                          "grade": np.array([1, 2])})  # fmt: skip
    detector = Detector(VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), DataLayout(pre.layout_blocks())), pre)
    assert category_labels(detector) == {"sex": ("text", ["F", "M"]), "grade": ("number", ["1", "2"])}
