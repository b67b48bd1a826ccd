"""Parquet input checks from the footers: every file, hive partition keys included."""

import pandas as pd
import pytest

from pipelines.runtime.parquet_checks import DataError, check_parquet

ROWS = pd.DataFrame({"row_id": [1, 2, 3], "TSH": [1.0, 2.0, 3.0]})


def test_rows_are_counted_over_every_file_and_a_hive_key_counts_as_a_column(tmp_path):
    for day in (1, 2):
        (tmp_path / f"day={day}").mkdir()
        ROWS.to_parquet(tmp_path / f"day={day}" / "part-0.parquet", index=False)
    assert check_parquet(str(tmp_path), ("row_id", "TSH", "day"), ("TSH",)) == 6


def test_a_file_lacking_a_column_the_first_file_has_is_named(tmp_path):
    ROWS.to_parquet(tmp_path / "part-0.parquet", index=False)
    ROWS.drop(columns=["TSH"]).to_parquet(tmp_path / "part-1.parquet", index=False)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'part-1.parquet'}: missing column\(s\) \['TSH'\], which other"):
        check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",))


def test_a_file_whose_numeric_column_holds_text_is_named_though_the_first_file_has_numbers(tmp_path):
    ROWS.to_parquet(tmp_path / "part-0.parquet", index=False)
    ROWS.assign(TSH=["1.0", "n/a", "3.0"]).to_parquet(tmp_path / "part-1.parquet", index=False)
    second = tmp_path / "part-1.parquet"
    with pytest.raises(DataError, match=rf"^{second}: numeric feature column\(s\) hold non-numeric values: \{{'TSH'"):
        check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",))
    ROWS.assign(TSH=[1, 2, 3]).to_parquet(tmp_path / "part-1.parquet", index=False)  # integers are numbers
    assert check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",)) == 6


def test_a_directory_without_parquet_files_says_so(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path} holds no Parquet files$"):
        check_parquet(str(tmp_path), ("row_id",), ())
