"""Feature columns typed from a Parquet schema when the config declares none (pure pyarrow: no Ray started)."""

import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.runtime.feature_kinds import INTEGER, arrow_kind, describe, feature_types, schema_kinds
from pipelines.runtime.parquet_checks import DataError
from pipelines.runtime.parquet_input import check_training_data, declare_features, inferred_kinds
from pipelines.settings.yaml_configs import DataConfig
from vae.columns import FeatureTypes


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (pa.float64(), "numeric"), (pa.float32(), "numeric"), (pa.float16(), "numeric"),
        (pa.decimal128(10, 2), "numeric"),
        (pa.bool_(), "binary"),
        (pa.int64(), INTEGER), (pa.int8(), INTEGER), (pa.uint8(), INTEGER), (pa.uint64(), INTEGER),
        (pa.string(), "categorical"), (pa.large_string(), "categorical"), (pa.string_view(), "categorical"),
        (pa.dictionary(pa.int32(), pa.string()), "categorical"),
        (pa.list_(pa.float64()), None), (pa.list_(pa.uint8(), 64), None), (pa.binary(), None),
        (pa.large_binary(), None), (pa.timestamp("us"), None), (pa.date32(), None), (pa.null(), None),
        (pa.struct([("a", pa.int64())]), None),
    ],
)  # fmt: skip
def test_each_arrow_type_maps_to_a_kind_or_none(kind, expected):
    assert arrow_kind(kind) == expected


SCHEMA = pa.schema([("row_id", pa.int64()), ("age", pa.float64()), ("smoker", pa.bool_()), ("visits", pa.int32()),
                    ("flag", pa.int8()), ("sex", pa.string()), ("region", pa.dictionary(pa.int8(), pa.string())),
                    ("label", pa.int64()), ("seen", pa.timestamp("ms"))])  # fmt: skip


def test_schema_kinds_skip_the_excluded_columns_and_keep_schema_order():
    kinds = schema_kinds(SCHEMA, exclude=("row_id", "label", "seen"))
    assert kinds == {"age": "numeric", "smoker": "binary", "visits": INTEGER, "flag": INTEGER,
                     "sex": "categorical", "region": "categorical"}  # fmt: skip


def test_a_pandas_index_written_to_the_parquet_file_is_no_feature(tmp_path):
    import pandas as pd

    rows = pd.DataFrame({"row_id": range(6), "age": [30.0, 41, 52, 29, 33, 60]}).query("age > 30")  # index 1, 2, 4, 5
    rows.to_parquet(tmp_path / "rows.parquet")  # stored as the column __index_level_0__
    schema = pq.read_schema(tmp_path / "rows.parquet")
    assert "__index_level_0__" in schema.names
    assert inferred_kinds(DataConfig(path=str(tmp_path), key=("row_id",)), schema) == {"age": "numeric"}
    merged = pa.schema([("row_id", pa.int64()), ("age", pa.float64()), ("__index_level_0__", pa.int64())])
    assert schema_kinds(merged, ("row_id",)) == {"age": "numeric"}  # a later file's index: no pandas metadata here


def test_integer_columns_are_binary_only_when_they_hold_zero_and_one():
    kinds = schema_kinds(SCHEMA, exclude=("row_id", "label", "seen"))
    types = feature_types(kinds, zero_one={"flag"})
    assert types == FeatureTypes(numeric=("age", "visits"), binary=("smoker", "flag"), categorical=("sex", "region"))
    assert feature_types(kinds, zero_one=()).numeric == ("age", "visits", "flag")


def test_the_printed_line_counts_each_kind_and_names_them_when_few():
    types = FeatureTypes(numeric=tuple(f"x{i}" for i in range(30)), binary=("flag",))
    assert describe(types) == "30 numeric, 1 binary (flag), 0 categorical"


def _config(**kwargs) -> DataConfig:
    return DataConfig(path="rows.parquet", key=("row_id",), label="label", **kwargs)


def test_inference_is_on_only_when_no_feature_column_is_declared():
    assert _config().infers_features and not _config(numeric=("age",)).infers_features
    assert set(_config(exclude=("seen",), condition_categorical=("region",)).not_features) == {
        "row_id", "label", "seen", "region"}  # fmt: skip


def test_a_column_without_a_kind_fails_naming_it_unless_excluded():
    with pytest.raises(DataError, match=r"no feature kind for column\(s\) \{'seen': 'timestamp\[ms\]'\}; list them"):
        inferred_kinds(_config(), SCHEMA)
    assert "seen" not in inferred_kinds(_config(exclude=("seen",)), SCHEMA)
    with pytest.raises(DataError, match="no feature columns: each of"):
        inferred_kinds(_config(), pa.schema([("row_id", pa.int64()), ("label", pa.int64())]))


def test_the_pre_ray_check_types_the_schema_of_the_file(tmp_path):
    rows = {"row_id": [1, 2], "age": [40.0, 51.5], "flag": [0, 1], "label": [0, 0],
            "tags": [["a"], ["b", "c"]]}  # fmt: skip
    pq.write_table(pa.table(rows), tmp_path / "rows.parquet")
    config = DataConfig(path=str(tmp_path / "rows.parquet"), key=("row_id",), label="label")
    with pytest.raises(DataError, match=r"\{'tags': 'list<element: string>'\}"):
        check_training_data(config)
    excluded = DataConfig(path=config.path, key=("row_id",), label="label", exclude=("tags",), validation_fraction=0.5)
    assert check_training_data(excluded) == 2
    stamped = pa.table({**rows, "tags": [datetime.datetime(2026, 1, 1)] * 2})
    pq.write_table(stamped, tmp_path / "rows.parquet")
    with pytest.raises(DataError, match=r"'tags': 'timestamp\[us\]'"):
        check_training_data(config)


def test_the_training_label_is_checked_before_ray_starts(tmp_path):
    import pandas as pd

    from pipelines.runtime.parquet_checks import check_label

    rows = pd.DataFrame({"row_id": [1, 2, 3], "age": [30.0, 41.0, 52.0], "label": ["normal", "anomaly", "normal"]})
    rows.to_parquet(tmp_path / "text.parquet", index=False)
    config = DataConfig(path=str(tmp_path / "text.parquet"), key=("row_id",), label="label")
    with pytest.raises(DataError, match=r"label column 'label' must hold 0 \(normal\) and 1 \(anomaly\), or booleans; "
                                        r"it is (large_)?string$"):  # fmt: skip
        check_training_data(config)  # was: a 335-line traceback from the Ray Train workers
    with pytest.raises(DataError, match=r"missing column\(s\) \['Label'\]"):
        check_training_data(DataConfig(path=str(tmp_path / "text.parquet"), key=("row_id",), label="Label"))
    rows.assign(label=[False, True, False]).to_parquet(tmp_path / "flags.parquet", index=False)
    flags = DataConfig(path=str(tmp_path / "flags.parquet"), key=("row_id",), label="label", validation_fraction=0.5)
    assert check_training_data(flags) == 3
    check_label("x", pa.schema([("y", pa.dictionary(pa.int8(), pa.int64()))]), "y")  # a dictionary of numbers


def test_a_validation_fraction_that_leaves_no_row_is_refused_before_training(tmp_path):
    import pandas as pd

    pd.DataFrame({"row_id": range(300), "age": range(300)}).to_parquet(tmp_path / "rows.parquet", index=False)
    config = DataConfig(path=str(tmp_path / "rows.parquet"), key=("row_id",), validation_fraction=0.001)
    with pytest.raises(DataError, match=r"data.validation_fraction=0.001 of 300 rows leaves 0.3 rows to calibrate"):
        check_training_data(config)  # was: a whole training run, then "no validation rows to calibrate ..."
    assert check_training_data(DataConfig(path=str(tmp_path / "rows.parquet"), key=("row_id",))) == 300


def test_hive_partition_keys_are_no_inferred_features(tmp_path, capsys):
    """`date=.../hour=.../` directories: a date typed categorical would be a category no later night has seen,
    and scoring one night's directory would lack the column."""
    for day in ("2026-11-01", "2026-11-02"):
        (tmp_path / f"date={day}" / "hour=3").mkdir(parents=True)
        pq.write_table(pa.table({"row_id": [1, 2], "amount": [1.0, 2.0]}),
                       tmp_path / f"date={day}" / "hour=3" / "part-0.parquet")  # fmt: skip
    config = DataConfig(path=str(tmp_path), key=("row_id",), validation_fraction=0.5)
    declared = declare_features(config)
    assert (declared.numeric, declared.binary, declared.categorical) == (("amount",), (), ())
    assert "hive partition key(s) ['date', 'hour'] are no features" in capsys.readouterr().out
    assert check_training_data(config) == 4


def test_a_misspelt_excluded_column_is_named_not_ignored():
    """The column it meant (an id) would otherwise be trained on as a feature."""
    config = _config(exclude=("seen", "custmer_id"))
    with pytest.raises(DataError, match=r"data.exclude names column\(s\) \['custmer_id'\] the data does not have"):
        inferred_kinds(config, SCHEMA)
