"""The registered model's signature and input example follow the training input's Arrow types, so MLflow's own
schema check accepts the example (and input read from the same Parquet) for every feature kind."""

from __future__ import annotations

import decimal

import numpy as np
import pyarrow as pa
import pytest
from mlflow.models.utils import _enforce_schema

from pipelines.tracking.runs import input_example, input_signature, signature_type


def raw_table() -> pa.Table:
    """One column of each Arrow type the pipeline types as a feature; nulls in the first row only."""
    n = 8
    return pa.table({
        "price": pa.array([None, *np.linspace(1, 2, n - 1)], pa.float64()),
        "visits": pa.array([None, *range(n - 1)], pa.int64()),
        "flag": pa.array([0, 1] * (n // 2), pa.int8()),
        "ok": pa.array([True, False] * (n // 2)),
        "amount": pa.array([decimal.Decimal("1.25")] * n, pa.decimal128(6, 2)),
        "sex": pa.array(["F", "M"] * (n // 2)).dictionary_encode(),
        "grade": pa.array([1, 2] * (n // 2), pa.int32()).dictionary_encode(),
        "city": pa.array(["a", "b"] * (n // 2)),
    })  # fmt: skip


def test_signature_types_follow_the_arrow_types():
    table = raw_table()
    types = {field.name: signature_type(field.type) for field in table.schema}
    assert types == {"price": "double", "visits": "long", "flag": "long", "ok": "boolean", "amount": "double",
                     "sex": "string", "grade": "long", "city": "string"}  # fmt: skip


def test_mlflow_accepts_the_example_of_every_feature_kind():
    table = raw_table()
    signature = input_signature(("price", "visits", "flag", "ok", "amount"), ("sex", "grade", "city"), None,
                                {field.name: field.type for field in table.schema})  # fmt: skip
    example = input_example(table, 5)
    assert len(example) == 5 and example["visits"].tolist() == [0, 1, 2, 3, 4]  # the row with nulls is left out
    _enforce_schema(example, signature.inputs)  # raises MlflowException on a type it cannot safely convert
    with pytest.raises(Exception, match="int64"):  # the types before: every number a double
        _enforce_schema(example, input_signature(("price", "visits", "flag", "ok", "amount"), ("sex", "city")).inputs)
    assert input_example(table.slice(0, 1), 5) is None
