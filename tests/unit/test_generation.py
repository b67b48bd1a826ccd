"""Generation: rows drawn from a trained VAE come back in the training columns, values and types."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipelines.storage.arrow_types import SCHEMA_KEY, column_types, recorded_schema, to_arrow
from vae import VAE, DataLayout, FeatureBlock, ModelConfig
from vae.generation import generate, generate_table

from .tabular_models import mixed_table, train_detector


@pytest.fixture(scope="module")
def table():
    return mixed_table()


@pytest.fixture(scope="module")
def detector(table):
    return train_detector(table)


@pytest.fixture(scope="module")
def conditional(table):
    return train_detector(table, conditional=True)


@pytest.mark.parametrize("mode", ["mean", "sample"])
def test_generated_rows_respect_the_training_schema(detector, table, mode):
    rows = generate_table(detector.model, detector.preprocessor, 300, mode=mode, seed=3)
    assert list(rows) == ["income", "age", "smoker", "colour", "grade"]
    assert all(len(v) == 300 for v in rows.values())
    assert rows["income"].dtype == np.float64 and np.isfinite(rows["income"]).all()
    assert set(rows["smoker"].tolist()) <= {0, 1} and rows["smoker"].dtype == np.int64
    assert set(rows["colour"]) <= {"blue", "green", "red"} and set(rows["grade"]) <= {"1", "2", "3"}
    # un-standardized: on the training scale, not around 0
    assert abs(np.median(rows["income"]) / np.median(table["income"]) - 1) < 0.5
    assert 20 < rows["age"].mean() < 70
    types = column_types(detector)  # no recorded schema: the defaults
    arrays = {name: to_arrow(values, types[name]) for name, values in rows.items()}
    assert [str(a.type) for a in arrays.values()] == ["double", "double", "int64", "string", "string"]


def test_recorded_training_types_are_restored(detector):
    training = pa.schema({"income": pa.float32(), "age": pa.int64(), "smoker": pa.bool_(),
                          "colour": pa.large_string(), "grade": pa.int32(), "row_id": pa.int64()})  # fmt: skip
    detector.metadata[SCHEMA_KEY] = recorded_schema(training, tuple(detector.preprocessor.columns))
    try:
        rows = generate_table(detector.model, detector.preprocessor, 50, seed=1)
        types = column_types(detector)
        arrays = {name: to_arrow(values, types[name]) for name, values in rows.items()}
    finally:
        detector.metadata.pop(SCHEMA_KEY)
    assert {n: str(a.type) for n, a in arrays.items()} == {"income": "float", "age": "int64", "smoker": "bool",
                                                           "colour": "large_string", "grade": "int32"}  # fmt: skip
    np.testing.assert_array_equal(arrays["age"].to_numpy(), np.rint(rows["age"]))  # rounded, not truncated
    assert set(arrays["grade"].to_pylist()) <= {1, 2, 3}
    np.testing.assert_array_equal(arrays["smoker"].to_numpy(zero_copy_only=False), rows["smoker"] == 1)


def test_generation_is_seeded_and_never_emits_the_unknown_bucket(detector):
    model, pre = detector.model, detector.preprocessor
    with torch.no_grad():  # make the unknown buckets the decoder's favourite: they must still never come out
        for slot in np.flatnonzero(pre.unknown_slots()):
            model.decoder.out.bias[slot] += 100.0
    try:
        a = generate(model, 200, mode="sample", seed=5, forbidden=pre.unknown_slots())
        b = generate(model, 200, mode="sample", seed=5, forbidden=pre.unknown_slots())
        rows = pre.inverse_transform(a)
    finally:
        with torch.no_grad():
            for slot in np.flatnonzero(pre.unknown_slots()):
                model.decoder.out.bias[slot] -= 100.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate(model, 200, mode="sample", seed=6, forbidden=pre.unknown_slots()))
    assert None not in set(rows["colour"]) and None not in set(rows["grade"])


def test_the_condition_steers_conditional_generation(conditional):
    north = generate_table(conditional.model, conditional.preprocessor, 20, conditional.condition,
                           {"region": "north"}, seed=0)  # fmt: skip
    assert (north["region"] == "north").all() and set(north["colour"]) <= {"blue", "green", "red"}
    decoder_input = []  # the decoder sees the one-hot of the requested region on every row
    hook = conditional.model.decoder.register_forward_hook(lambda m, args, out: decoder_input.append(args[1]))
    try:
        generate_table(conditional.model, conditional.preprocessor, 4, conditional.condition, {"region": "south"})
    finally:
        hook.remove()
    south = conditional.condition.transform({"region": np.array(["south"] * 4, dtype=object)})
    np.testing.assert_array_equal(decoder_input[0].numpy(), south)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, r"set a value for each condition column; missing \['region'\]"),
        ({"region": "east"}, r"condition region='east' was not seen in training; known: \['north', 'south'\]"),
        ({"region": "north", "planet": "mars"}, r"unknown condition column\(s\) \['planet'\]"),
    ],
)
def test_bad_conditions_fail_with_their_reason(conditional, values, message):
    with pytest.raises(ValueError, match=message):
        generate_table(conditional.model, conditional.preprocessor, 5, conditional.condition, values)


def test_bad_requests_fail_with_their_reason(detector):
    with pytest.raises(ValueError, match="the model is not conditional"):
        generate_table(detector.model, detector.preprocessor, 5, None, {"region": "north"})
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match="the number of rows must be a positive integer"):
            generate(detector.model, n)
    with pytest.raises(ValueError, match=r"mode must be one of \['mean', 'sample'\]"):
        generate(detector.model, 3, mode="median")


def test_image_layouts_generate_in_model_space():
    layout = DataLayout((FeatureBlock("bernoulli", 64),), image_shape=(1, 8, 8))
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,), network="conv"), layout)
    means = generate(model, 6, mode="mean", seed=0)
    draws = generate(model, 6, mode="sample", seed=0)
    assert means.shape == draws.shape == (6, 64)
    assert ((means > 0) & (means < 1)).all() and set(np.unique(draws)) <= {0.0, 1.0}


def test_drawn_numbers_beyond_an_integer_columns_range_become_its_nearest_value():
    """A Gaussian draw of a uint8 count can be -1: the cast failed ("Float value -1.000000 was truncated")."""
    drawn = np.array([-1.4, 2.6, 300.2, np.nan])
    assert to_arrow(drawn, pa.uint8()).to_pylist() == [0, 3, 255, None]
    assert to_arrow(drawn, pa.int8()).to_pylist() == [-1, 3, 127, None]
