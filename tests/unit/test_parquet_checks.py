"""Parquet input checks from the footers: every file, hive partition keys included."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.runtime.parquet_checks import DataError, check_parquet

ROWS = pd.DataFrame({"row_id": [1, 2, 3], "TSH": [1.0, 2.0, 3.0]})


def test_rows_are_counted_over_every_file_and_a_hive_key_counts_as_a_column(tmp_path):
    for day in (1, 2):
        (tmp_path / f"day={day}").mkdir()
        ROWS.to_parquet(tmp_path / f"day={day}" / "part-0.parquet", index=False)
    assert check_parquet(str(tmp_path), ("row_id", "TSH", "day"), ("TSH",)).rows == 6


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
    assert check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",)).rows == 6


def test_a_directory_without_parquet_files_says_so(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path} holds no Parquet files$"):
        check_parquet(str(tmp_path), ("row_id",), ())


def test_a_categorical_column_whose_type_cannot_hold_its_text_labels_is_named(tmp_path):
    rows = pd.DataFrame({"row_id": [1, 2, 3], "sex": [1, 2, 3], "ok": [True, False, True], "grade": [1, 2, 1]})
    rows.to_parquet(tmp_path / "part-0.parquet", index=False)
    required = ("row_id", "sex", "ok", "grade")
    with pytest.raises(DataError, match=r"categorical column 'sex' is int64 here, but its training labels are text "
                                        r"\(F, M\): every value would be a category never seen"):  # fmt: skip
        check_parquet(str(tmp_path), required, (), categories={"sex": ("text", ["F", "M"])})
    with pytest.raises(DataError, match="categorical column 'ok' is bool here"):
        check_parquet(str(tmp_path), required, (), categories={"ok": ("text", ["no", "yes"])})
    # labels a value of the type can read as: digits for integers, True/False for booleans, or any label for text
    readable = {"sex": ("text", ["1", "F"]), "ok": ("text", ["True"])}
    assert check_parquet(str(tmp_path), required, (), categories=readable).rows == 3
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    rows.assign(sex=["F", "M", "F"]).to_parquet(mixed / "part-0.parquet", index=False)
    rows.to_parquet(mixed / "part-1.parquet", index=False)  # a later file with the column as integers
    with pytest.raises(DataError, match=rf"^{mixed / 'part-1.parquet'}: categorical column 'sex' is int64"):
        check_parquet(str(mixed), required, (), categories={"sex": ("text", ["F", "M"])})


def test_numbers_cannot_stand_for_text_labels_that_spell_numbers_with_more_digits(tmp_path):
    """Zip codes as text in training ("02134"), as integers at scoring: 2134 reads as "2134", a category never
    seen, so the rows would score as anomalies; labels a number prints as they are ("10001") were matched alone."""
    pd.DataFrame({"row_id": [1, 2], "zip": [2134, 10001]}).to_parquet(tmp_path / "part-0.parquet", index=False)
    with pytest.raises(DataError, match=r"categorical column 'zip' is int64 here, but training labels such as "
                                        r"\['02134'\] spell numbers with digits a number does not keep"):  # fmt: skip
        check_parquet(str(tmp_path), ("row_id", "zip"), (), categories={"zip": ("text", ["02134", "10001"])})
    assert check_parquet(str(tmp_path), ("row_id", "zip"), (), categories={"zip": ("text", ["10001", "x"])}).rows == 2


@pytest.mark.parametrize("kind", ["text", "number"])
def test_a_categorical_column_of_lists_or_structs_is_refused_whatever_its_labels(tmp_path, kind):
    """Training types such a column as no feature; at scoring every value would be an unseen category (or crash
    the job on a list of two values)."""
    rows = pa.table({"row_id": [1, 2], "grade": pa.array([[1], [2, 3]]), "unit": [{"a": 1}, {"a": 2}]})
    pq.write_table(rows, tmp_path / "part-0.parquet")
    for column in ("grade", "unit"):
        with pytest.raises(DataError, match=rf"categorical column '{column}' is (list|struct).* here, a type no "
                                            "category is read from"):  # fmt: skip
            check_parquet(str(tmp_path), ("row_id", column), (), categories={column: (kind, ["1", "2"])})


def test_a_column_whose_type_cannot_merge_with_another_files_is_named_with_both_files(tmp_path):
    ROWS.assign(flag=[True, False, True]).to_parquet(tmp_path / "part-0.parquet", index=False)
    ROWS.assign(flag=[1, 0, 1]).to_parquet(tmp_path / "part-1.parquet", index=False)
    first, second = tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"
    with pytest.raises(DataError, match=rf"^{second}: column 'flag' is int64 here but bool in {first}, and the two"):
        check_parquet(str(tmp_path), ("row_id", "TSH", "flag"), ("TSH", "flag"))
    ROWS.assign(flag=[1.0, 0.0, None]).to_parquet(tmp_path / "part-0.parquet", index=False)  # int64 and double merge
    checked = check_parquet(str(tmp_path), ("row_id", "TSH", "flag"), ("TSH", "flag"))
    assert checked.rows == 6 and str(checked.schema.field("flag").type) == "double"
    ROWS.assign(flag=[1, 0, 1]).to_parquet(tmp_path / "part-0.parquet", index=False)
    ROWS.assign(flag=[1.0, 0.0, None]).to_parquet(tmp_path / "part-1.parquet", index=False)  # double in a later file
    assert str(check_parquet(str(tmp_path), ("row_id", "flag"), ("flag",)).schema.field("flag").type) == "double"


def test_only_the_files_ray_data_reads_are_checked_and_counted(tmp_path):
    ROWS.to_parquet(tmp_path / "part-0.parquet", index=False)
    ROWS.to_parquet(tmp_path / "000001_0", index=False)  # a Hive-style name: read_parquet skips it
    assert check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",)).rows == 3
    (tmp_path / "part-0.parquet").unlink()
    with pytest.raises(DataError, match=r"holds no Parquet files \(Ray Data reads only files named \*\.parquet; here"):
        check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",))


@pytest.mark.parametrize("beside", ["README.txt", "zz_notes.txt"])
def test_a_text_file_beside_the_parquet_files_is_skipped_whatever_its_name_sorts_as(tmp_path, beside):
    """A README.txt sorting first was read for the dataset's schema: 'cannot read Parquet'; zz_notes.txt passed."""
    ROWS.to_parquet(tmp_path / "part-0.parquet", index=False)
    (tmp_path / beside).write_text("notes")
    (tmp_path / "_SUCCESS").write_text("")
    assert check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",)).rows == 3


def test_a_single_file_ray_data_would_skip_is_refused_before_training(tmp_path):
    from pipelines.runtime.parquet_checks import check_ray_readable
    from pipelines.runtime.parquet_input import check_training_data
    from pipelines.settings.yaml_configs import DataConfig

    single = tmp_path / "rows.pq"  # named on its own, read_parquet still skips it: "no files found under [...]"
    ROWS.to_parquet(single, index=False)
    assert check_parquet(str(single), ("row_id", "TSH"), ("TSH",)).rows == 3  # pyarrow (evaluate, impute) reads it
    with pytest.raises(DataError, match=rf"^{single}: Ray Data reads only files named \*\.parquet; rename the file$"):
        check_training_data(DataConfig(path=str(single), numeric=("TSH",), key=("row_id",)))
    check_ray_readable(str(single.rename(tmp_path / "rows.PARQUET")))  # the suffix in any case
    check_ray_readable(str(tmp_path))  # a directory: Ray Data reads its *.parquet files


def test_a_key_of_structs_or_lists_is_refused_before_ray(tmp_path):
    """The split hashes each row's key: a struct key passed every check and failed inside Ray Data's tasks."""
    from pipelines.runtime.parquet_input import check_training_data
    from pipelines.settings.yaml_configs import DataConfig

    table = pa.table({"TSH": [1.0, 2.0], "who": [{"a": 1}, {"a": 2}], "tags": [[1], [2]]})
    pq.write_table(table, tmp_path / "rows.parquet")
    for key in ("who", "tags"):
        with pytest.raises(DataError, match=rf"key column\(s\) \['{key}'\] hold lists, structs or maps"):
            check_training_data(DataConfig(path=str(tmp_path), numeric=("TSH",), key=(key,)))


def test_a_struct_column_does_not_shift_the_null_counts_of_the_columns_after_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    nested = pa.array([{"a": 1, "b": 2}] * 3, type=pa.struct([("a", pa.int64()), ("b", pa.int64())]))
    table = pa.table({"row_id": [1, 2, 3], "point": nested, "TSH": [1.0, 2.0, 3.0], "note": pa.nulls(3, pa.string())})
    pq.write_table(table, tmp_path / "part-0.parquet")
    assert check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",)).rows == 3  # TSH was read as note's all-null leaf
    with pytest.raises(DataError, match=r"column\(s\) \['note'\] hold only nulls"):
        check_parquet(str(tmp_path), ("row_id", "TSH", "note"), ("TSH",))


def test_a_first_file_with_null_typed_columns_takes_the_later_files_types(tmp_path):
    from pipelines.runtime.parquet_checks import open_merged
    from pipelines.runtime.parquet_input import check_training_data, inferred_kinds, merged_schema, open_parquet
    from pipelines.settings.yaml_configs import DataConfig

    pd.DataFrame({"row_id": [], "TSH": []}).to_parquet(tmp_path / "part-0.parquet", index=False)  # both null-typed
    ROWS.assign(TSH=[None, None, None]).to_parquet(tmp_path / "part-1.parquet", index=False)  # TSH null-typed here
    ROWS.assign(TSH=[1, 2, 3]).to_parquet(tmp_path / "part-2.parquet", index=False)  # int64 ...
    ROWS.to_parquet(tmp_path / "part-3.parquet", index=False)  # ... and double
    checked = check_parquet(str(tmp_path), ("row_id", "TSH"), ("TSH",))  # was: "column(s) [...] hold only nulls"
    assert checked.rows == 9 and str(checked.schema.field("TSH").type) == "double"
    config = DataConfig(path=str(tmp_path), key=("row_id",), validation_fraction=0.5)
    assert inferred_kinds(config, merged_schema(open_parquet(str(tmp_path)))) == {"TSH": "numeric"}
    assert check_training_data(config) == 9  # was: no feature kind for column(s) {'TSH': 'null'}
    merged = open_merged(str(tmp_path))
    assert merged.to_table(columns=["TSH"]).column("TSH").to_pylist() == [None] * 3 + [1.0, 2, 3] * 2
