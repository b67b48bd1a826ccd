"""Images in a table column: decoding (arrays, PNG) against known pixels, the problems that set a row aside,
the image config, schema checks, quarantine reasons, image grids and the bundled digits as Parquet."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.runtime.batch_inference import quarantine_reasons
from pipelines.runtime.parquet_checks import DataError, check_parquet
from pipelines.runtime.parquet_input import ImageProblems
from pipelines.sample_data.datasets import load_digits_images, write_digits_parquet
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from pipelines.tracking.image_figures import image_figures, sample_conditions
from pipelines.tracking.plots import image_grid
from pipelines.tracking.runs import input_signature
from vae import (
    VAE,
    ConfigError,
    DataLayout,
    Detector,
    ImageError,
    ImagePreprocessor,
    ModelConfig,
    Preprocessor,
    load_detector,
    save_detector,
)
from vae.images import encode_png

# Two 1x2x3 images with pixels 0..16; divided by 16 they are the expected encoded rows.
PIXELS = np.array([[[[0, 4, 8], [12, 16, 2]]], [[[16, 0, 16], [0, 8, 1]]]], dtype=np.uint8)  # (2, 1, 2, 3)
EXPECTED = PIXELS.reshape(2, -1) / 16.0


def _digits_like(encoding: str = "array") -> ImagePreprocessor:
    return ImagePreprocessor("pixels", (1, 2, 3), encoding=encoding, scale=16)


@pytest.mark.parametrize(
    "column",
    [
        pa.array(PIXELS.reshape(2, -1).tolist(), pa.list_(pa.int64())),  # flat list
        pa.FixedSizeListArray.from_arrays(pa.array(PIXELS.reshape(-1)), 6),  # fixed-size list
        pa.array(PIXELS[:, 0].tolist(), pa.list_(pa.list_(pa.float64()))),  # nested (H, W) rows
        pa.array(PIXELS.tolist(), pa.list_(pa.list_(pa.list_(pa.int32())))),  # nested (C, H, W)
    ],
    ids=["list", "fixed_size_list", "nested_hw", "nested_chw"],
)
@pytest.mark.parametrize("arrow_backed", [False, True], ids=["numpy", "arrow"])  # Ray Data gives arrow-backed
def test_array_images_decode_to_the_known_pixels_in_channel_major_order(column, arrow_backed):
    frame = pa.table({"pixels": column}).to_pandas(types_mapper=pd.ArrowDtype if arrow_backed else None)
    x = _digits_like().transform(frame)
    assert x.dtype == np.float32 and x.shape == (2, 6)
    np.testing.assert_allclose(x, EXPECTED)


def test_png_images_decode_to_the_known_pixels_grey_and_colour():
    x = _digits_like("png").transform({"pixels": [encode_png(image) for image in PIXELS]})
    np.testing.assert_allclose(x, EXPECTED)
    rgb = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) * 20  # (C, H, W), channels distinct
    decoded = ImagePreprocessor("img", (3, 2, 2), "png", 255).transform({"img": [encode_png(rgb)]})
    np.testing.assert_allclose(decoded[0], rgb.reshape(-1) / 255.0, atol=1e-7)  # R plane, then G, then B


@pytest.mark.parametrize("palette", [False, True])
def test_bilevel_and_palette_pngs_decode_to_intensities_not_bits_or_palette_indices(palette):
    import io

    from PIL import Image

    square = np.zeros((8, 8), np.uint8)
    square[2:6, 2:6] = 255  # a white square on black
    buffer = io.BytesIO()
    image = Image.fromarray(square)
    (image.quantize(2) if palette else image.convert("1")).save(buffer, format="PNG")  # modes "P" and "1"
    decoded = ImagePreprocessor("img", (1, 8, 8), "png", 255).transform({"img": [buffer.getvalue()]})
    np.testing.assert_allclose(decoded[0], square.reshape(-1) / 255.0)  # was 1/255 or palette indices


@pytest.mark.parametrize("encoding", ["array", "png"])
def test_inverse_transform_gives_back_the_training_column(encoding):
    image = _digits_like(encoding)
    column = list(PIXELS.reshape(len(PIXELS), -1)) if encoding == "array" else [encode_png(p) for p in PIXELS]
    restored = image.inverse_transform(image.transform({"pixels": column}))["pixels"]
    assert restored.shape == (len(PIXELS),)
    if encoding == "array":
        np.testing.assert_allclose(np.stack([np.asarray(r) for r in restored]), PIXELS.reshape(len(PIXELS), -1),
                                   atol=1e-5)  # fmt: skip
    else:
        assert list(restored) == column  # the same PNG bytes
    assert image.unknown_slots() is None


def test_unusable_images_get_a_reason_each_and_transform_refuses_them():
    good = PIXELS[0].reshape(-1).tolist()
    rows = [good, good[:5], [*good[:5], float("nan")], [*good[:5], 17], None, [[1, 2], [3]], good]
    problems = _digits_like().problems({"pixels": rows})
    assert problems == [
        None,
        "pixels has 5 values, expected 6 values (1x2x3)",
        "pixels has NaN or infinite pixels",
        "pixels has pixels outside [0, 16]",
        "pixels is missing",
        "pixels is not an array of numbers of equal-length rows",
        None,
    ]
    with pytest.raises(ImageError, match=r"5 image\(s\) cannot be used; row 1: pixels has 5 values, expected 6"):
        _digits_like().transform({"pixels": rows})
    png = _digits_like("png").problems({"pixels": [b"not a png", encode_png(np.zeros((1, 3, 2))), 7]})
    assert png == ["pixels is not a readable PNG image", "pixels is a 1x3x2 PNG image, expected 1x2x3",
                   "pixels is not PNG bytes (got int)"]  # fmt: skip


def test_image_layout_round_trip_and_a_saved_conv_detector_scores_identically(tmp_path):
    image = ImagePreprocessor("pixels", (1, 4, 4), scale=16, likelihood="gaussian")
    (block,) = image.layout_blocks()
    assert (block.kind, block.width, block.names[0], block.names[-1]) == ("gaussian", 16, "pixels[0,0,0]",
                                                                          "pixels[0,3,3]")  # fmt: skip
    assert ImagePreprocessor.from_dict(image.to_dict()).to_dict() == image.to_dict()
    condition = Preprocessor(categorical=["digit"]).fit({"digit": np.array([1, 2])})
    layout = DataLayout(image.layout_blocks(), image_shape=image.shape, condition_dim=3)
    detector = Detector(VAE(ModelConfig(latent_dim=2, network="conv", hidden_dims=(8,), conv_channels=(4, 4)),
                            layout), image, condition=condition)  # fmt: skip
    table = {"pixels": list(np.random.default_rng(0).integers(0, 17, (5, 16))), "digit": np.array([1, 2, 1, 2, 3])}
    loaded = load_detector(save_detector(detector, tmp_path / "d"))
    assert isinstance(loaded.preprocessor, ImagePreprocessor) and loaded.model.layout.image_shape == (1, 4, 4)
    np.testing.assert_allclose(loaded.score(table)[0], detector.score(table)[0], rtol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.image.shape=[8,8]", r"^data\.image\.shape: must be three integers \[C, H, W\] >= 1, got \[8, 8\]$"),
        ("data.image.encoding=jpeg", r"^data\.image\.encoding: must be one of \['array', 'png'\], got 'jpeg'$"),
        ("data.image.scale=0", r"^data\.image\.scale: must be > 0, got 0$"),
        ("data.image.likelihood=categorical", r"^data\.image\.likelihood: must be one of"),
        ("data.image.column=", r"^data\.image\.column: name the column"),
        ("data.image.size=3", r"^data\.image: unknown key\(s\) \['size'\]"),
        ("data.numeric=[a]", r"^data\.image: an image model reads only its image column"),
        ("data.key=[]", r"^data\.key: image rows are split by their key columns"),
        ("data.image.column=digit", r"^data\.columns: .*repeated: \['digit'\]"),
        ("data.image.shape=[1,6,6]", r"^model\.network: 'conv' needs image height and width divisible by 4"),
        ("data.image=null", r"^model\.network: 'conv' needs image rows \(data\.image\)"),  # features inferred: mlp
    ],
)
def test_impossible_image_configs_fail_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG_DIR / "train-digits.yaml", [override])


def _write(tmp_path, column: pa.Array) -> str:
    path = tmp_path / "images.parquet"
    pq.write_table(pa.table({"image_id": pa.array(range(len(column))), "pixels": column}), path)
    return str(path)


def test_the_schema_check_names_the_image_column_and_its_expected_size(tmp_path):
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(10, np.uint8)), 5)
    with pytest.raises(DataError, match=r"image column 'pixels' holds 5 values per row; expected 6 values \(1x2x3\)"):
        check_parquet(_write(tmp_path, fixed), ("image_id", "pixels"), (), _digits_like())
    text = pa.array(["a", "b"])
    with pytest.raises(DataError, match=r"'pixels' has type string; expected 6 values \(1x2x3\) per row as a list"):
        check_parquet(_write(tmp_path, text), ("image_id", "pixels"), (), _digits_like())
    with pytest.raises(DataError, match=r"'pixels' has type list<element: int64>; expected .* as PNG bytes"):
        check_parquet(_write(tmp_path, pa.array([[1], [2]])), ("image_id", "pixels"), (), _digits_like("png"))
    strings = pa.array([["a"], ["b"]])
    with pytest.raises(DataError, match=r"'pixels' has type list<element: string>"):
        check_parquet(_write(tmp_path, strings), ("image_id", "pixels"), (), _digits_like())
    ragged = pa.array([[1, 2], [3]])  # a list type fixes no size: rows are checked one by one later
    assert check_parquet(_write(tmp_path, ragged), ("image_id", "pixels"), (), _digits_like()).rows == 2


def test_scoring_quarantines_each_unusable_image_with_its_reason():
    good = PIXELS[0].reshape(-1).tolist()
    batch = pd.DataFrame({"image_id": [1, 2, 3, 4], "pixels": [good, good[:4], [*good[:5], np.inf], good],
                          "digit": [3.0, 3.0, 3.0, np.nan]})  # fmt: skip
    digit = Preprocessor(numeric=["digit"]).fit({"digit": np.array([1.0, 5.0])})
    tagged = quarantine_reasons(batch, _digits_like(), digit, quarantine_unseen=False)
    assert [r if isinstance(r, str) else None for r in tagged["quarantine_reason"]] == [
        None,
        "pixels has 4 values, expected 6 values (1x2x3)",
        "pixels has NaN or infinite pixels",
        "digit is missing",
    ]


def test_image_grid_has_one_tile_per_image_in_rows_of_the_given_lengths():
    rng = np.random.default_rng(0)
    figure = image_grid([("a", rng.random((5, 1, 8, 8))), ("b", rng.random((3, 1, 8, 8)))], "t")
    tiles = [ax for ax in figure.axes if ax.images]
    assert len(figure.axes) == 2 * 5 and len(tiles) == 8
    assert all(ax.images[0].get_array().shape == (8, 8) for ax in tiles)
    colour = image_grid([("rgb", rng.random((2, 3, 4, 6)))], "t")
    assert colour.axes[0].images[0].get_array().shape == (4, 6, 3)


def test_an_image_cvae_logs_reconstructions_and_one_sample_row_per_class():
    image = ImagePreprocessor("pixels", (1, 8, 8), scale=16)
    condition = Preprocessor(categorical=["digit"]).fit({"digit": np.arange(10)})
    layout = DataLayout(image.layout_blocks(), image_shape=image.shape, condition_dim=11)
    model = VAE(ModelConfig(latent_dim=2, network="conv", hidden_dims=(8,), conv_channels=(4, 4)), layout)
    detector = Detector(model, image, condition=condition)
    assert [label for label, _ in sample_conditions(detector, None)] == [f"digit={d}" for d in range(10)]
    x = np.random.default_rng(0).random((12, 64)).astype(np.float32)
    c = condition.transform({"digit": np.arange(12) % 10})
    figures = image_figures(detector, x, c)
    assert sorted(figures) == ["plots/reconstructions.png", "plots/samples.png"]
    assert sum(bool(ax.images) for ax in figures["plots/reconstructions.png"].axes) == 2 * 10
    assert sum(bool(ax.images) for ax in figures["plots/samples.png"].axes) == 10 * 10
    unconditional = Detector(VAE(model.config, DataLayout(image.layout_blocks(), image_shape=image.shape)), image)
    assert len(sample_conditions(unconditional, None)) == 4 and sample_conditions(unconditional, None)[0][1] is None


def test_the_digits_as_array_and_png_parquet_hold_the_same_images(tmp_path):
    images, classes = load_digits_images()
    assert images.shape == (1797, 1, 8, 8) and images.max() == 16 and sorted(set(classes)) == list(range(10))
    arrays = write_digits_parquet(tmp_path / "a")
    pngs = write_digits_parquet(tmp_path / "p", encoding="png")
    train, test = (pq.read_table(p) for p in arrays)
    assert train.num_rows + test.num_rows == 1797 and test.num_rows == 359
    assert str(train.schema.field("pixels").type) == "fixed_size_list<element: uint8>[64]"
    assert set(train["image_id"].to_pylist()).isdisjoint(test["image_id"].to_pylist())
    image = ImagePreprocessor("pixels", (1, 8, 8), scale=16)
    from_arrays = image.transform(test.to_pandas())
    from_pngs = ImagePreprocessor("pixels", (1, 8, 8), "png", 16).transform(pq.read_table(pngs[1]).to_pandas())
    np.testing.assert_array_equal(from_arrays, from_pngs)
    ids = test["image_id"].to_numpy()
    np.testing.assert_allclose(from_arrays, images[ids].reshape(len(ids), -1) / 16.0)
    assert torch.equal(torch.tensor(test["digit"].to_numpy()), torch.tensor(classes[ids]))


def test_training_finds_the_keys_of_unusable_images_and_the_model_signature_names_the_image_column():
    good = PIXELS[0].reshape(-1).tolist()
    batch = pd.DataFrame({"image_id": [7, 8, 9], "pixels": [good, None, good[:2]]})
    bad = ImageProblems(_digits_like(), ("image_id",))(batch)
    assert bad.to_dict("records") == [
        {"image_id": "8", "problem": "pixels is missing"},
        {"image_id": "9", "problem": "pixels has 2 values, expected 6 values (1x2x3)"},
    ]
    arrays = input_signature((), ("digit",), _digits_like()).inputs.to_dict()
    pngs = input_signature((), (), _digits_like("png")).inputs.to_dict()
    assert arrays[-1] == {"type": "array", "items": {"type": "double"}, "name": "pixels", "required": True}
    assert pngs == [{"type": "binary", "name": "pixels", "required": True}]
