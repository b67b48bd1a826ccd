"""Images kept in one table column, decoded to pixel rows in [0, 1] for a VAE over (C, H, W) images.

Each row of the column holds either C*H*W numbers (encoding "array": a flat list, nested lists or an array of
shape (C, H, W), or (H, W) for one channel) or the bytes of a PNG file (encoding "png", decoded with Pillow).
Pixels are divided by `scale`, the largest value a pixel can take (16 for scikit-learn's digits, 255 for
8-bit PNG). The encoded matrix is (N, D) float32, D = C*H*W in channel-major order: one feature block whose
likelihood is Bernoulli (intensities in [0, 1]) or Gaussian.

An image that is missing, of another size, holds NaN/inf or pixels outside [0, scale] has a *problem*:
`problems` names it per row (scoring sets such rows aside), `transform` refuses a table with any.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .config import FeatureBlock
from .labels import is_missing

IMAGE_ENCODINGS = ("array", "png")
IMAGE_LIKELIHOODS = ("bernoulli", "gaussian")


class ImageError(ValueError):
    """Images that cannot be encoded; the message names the column, the first bad row and why."""


def _unnest(value: Any) -> Any:
    """Nested lists as pandas gives them from Arrow (object arrays of arrays) -> nested Python lists."""
    if isinstance(value, np.ndarray) and value.dtype == object or isinstance(value, (list, tuple)):
        return [_unnest(v) for v in value]
    return value


class ImagePreprocessor:
    """Decodes the image column `column` into (N, C*H*W) pixel rows in [0, 1]; nothing is fitted."""

    kind = "image"

    def __init__(
        self,
        column: str,
        shape: Sequence[int],
        encoding: str = "array",
        scale: float = 255.0,
        likelihood: str = "bernoulli",
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"ImagePreprocessor.shape: must be (C, H, W) with sizes >= 1, got {shape}")
        if encoding not in IMAGE_ENCODINGS:
            raise ValueError(f"ImagePreprocessor.encoding: must be one of {list(IMAGE_ENCODINGS)}, got {encoding!r}")
        if likelihood not in IMAGE_LIKELIHOODS:
            raise ValueError(
                f"ImagePreprocessor.likelihood: must be one of {list(IMAGE_LIKELIHOODS)}, got {likelihood!r}"
            )
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"ImagePreprocessor.scale: must be a number > 0, got {scale!r}")
        self.column = column
        self.shape = shape
        self.encoding = encoding
        self.scale = float(scale)
        self.likelihood = likelihood

    @property
    def size(self) -> int:
        """Pixels per image, C*H*W."""
        return math.prod(self.shape)

    @property
    def described_size(self) -> str:
        """ "64 values (1x8x8)": what a row must hold, for messages."""
        return f"{self.size} values ({'x'.join(map(str, self.shape))})"

    @property
    def columns(self) -> list[str]:
        return [self.column]

    @property
    def fitted(self) -> bool:
        return True

    def fit(self, table: Mapping[str, Any]) -> ImagePreprocessor:
        """Nothing to learn from images: pixel scaling is fixed by `scale`."""
        self.check_columns(table)
        return self

    def check_columns(self, table: Mapping[str, Any]) -> None:
        if self.column not in table:
            raise ValueError(f"missing image column {self.column!r}; the table has {sorted(map(str, table.keys()))}")

    def _decode_png(self, value: Any) -> tuple[np.ndarray | None, str | None]:
        from PIL import Image, UnidentifiedImageError  # only PNG-encoded images need Pillow

        if not isinstance(value, (bytes, bytearray, memoryview)):
            return None, f"{self.column} is not PNG bytes (got {type(value).__name__})"
        try:
            with Image.open(io.BytesIO(value)) as image:
                if image.mode in ("1", "P", "PA"):  # bits and palette indices are no intensities: expand them
                    image = image.convert({1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(self.shape[0], "RGB"))
                pixels = np.asarray(image)
        except (UnidentifiedImageError, OSError, ValueError):
            return None, f"{self.column} is not a readable PNG image"
        pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)  # (C, H, W)
        if pixels.shape != self.shape:
            found = "x".join(map(str, pixels.shape))
            return None, f"{self.column} is a {found} PNG image, expected {'x'.join(map(str, self.shape))}"
        return pixels, None

    def _decode_array(self, value: Any) -> tuple[np.ndarray | None, str | None]:
        try:
            pixels = np.asarray(_unnest(value), dtype=np.float64)
        except (TypeError, ValueError):
            return None, f"{self.column} is not an array of numbers of equal-length rows"
        accepted = {(self.size,), self.shape} | ({self.shape[1:]} if self.shape[0] == 1 else set())
        if pixels.shape not in accepted:
            found = f"{pixels.size} values" if pixels.ndim == 1 else f"shape {pixels.shape}"
            return None, f"{self.column} has {found}, expected {self.described_size}"
        return pixels, None

    def _decode(self, value: Any) -> tuple[np.ndarray | None, str | None]:
        """One image as (D,) float64 in [0, 1], or None and the reason it cannot be used."""
        if not isinstance(value, (list, tuple, np.ndarray, bytes, bytearray, memoryview)) and is_missing(value):
            return None, f"{self.column} is missing"
        pixels, problem = self._decode_png(value) if self.encoding == "png" else self._decode_array(value)
        if problem:
            return None, problem
        if not np.isfinite(pixels).all():
            return None, f"{self.column} has NaN or infinite pixels"
        if pixels.min() < 0 or pixels.max() > self.scale:
            return None, f"{self.column} has pixels outside [0, {self.scale:g}]"
        return pixels.reshape(-1) / self.scale, None

    def decode(self, table: Mapping[str, Any]) -> tuple[np.ndarray, list[str | None]]:
        """Pixel rows (N, D) float32 in [0, 1] (zeros where a row has a problem) and each row's problem or None."""
        self.check_columns(table)
        values = table[self.column]
        values = values.tolist() if hasattr(values, "tolist") and not isinstance(values, np.ndarray) else values
        out = np.zeros((len(values), self.size), dtype=np.float32)
        problems: list[str | None] = []
        for i, value in enumerate(values):
            pixels, problem = self._decode(value)
            if pixels is not None:
                out[i] = pixels
            problems.append(problem)
        return out, problems

    def problems(self, table: Mapping[str, Any]) -> list[str | None]:
        """Per row, why its image cannot be used ("pixels has 63 values, expected 64 (1x8x8)"), or None."""
        return self.decode(table)[1]

    def transform(self, table: Mapping[str, Any]) -> np.ndarray:
        """Encode the images: (N, D) float32 in [0, 1]. Raises ImageError on the first unusable image."""
        pixels, problems = self.decode(table)
        bad = [i for i, p in enumerate(problems) if p]
        if bad:
            raise ImageError(f"{len(bad)} image(s) cannot be used; row {bad[0]}: {problems[bad[0]]}")
        return pixels

    def images(self, x: np.ndarray) -> np.ndarray:
        """Encoded rows (N, D) back to images (N, C, H, W) in [0, 1] (clipped), e.g. for plots."""
        return np.clip(np.asarray(x, dtype=np.float32).reshape(-1, *self.shape), 0.0, 1.0)

    def inverse_transform(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Encoded rows (N, D) back to the image column as the training data held it: (N,) objects, each a flat
        list of C*H*W pixel values on the original `scale` (array encoding) or PNG bytes (png encoding)."""
        pixels = self.images(x) * self.scale  # (N, C, H, W)
        if self.encoding == "png":
            values = [encode_png(np.clip(np.rint(image), 0, 255)) for image in pixels]
        else:
            values = [image.reshape(-1).tolist() for image in pixels]
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return {self.column: column}

    def unknown_slots(self) -> None:
        """Pixels have no unknown-category slots to keep out of generated rows."""
        return None

    def layout_blocks(self) -> tuple[FeatureBlock, ...]:
        """One block of D pixel features named `column[c,h,w]`."""
        channels, height, width = self.shape
        names = tuple(f"{self.column}[{c},{h},{w}]" for c in range(channels) for h in range(height)
                      for w in range(width))  # fmt: skip
        return (FeatureBlock(self.likelihood, self.size, names),)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "column": self.column, "shape": list(self.shape), "encoding": self.encoding,
                "scale": self.scale, "likelihood": self.likelihood}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImagePreprocessor:
        return cls(data["column"], data["shape"], data["encoding"], data["scale"], data["likelihood"])


def encode_png(image: np.ndarray) -> bytes:
    """The PNG bytes of one image (C, H, W) of integers in [0, 255] (C = 1 grey, 3 RGB, 4 RGBA)."""
    from PIL import Image

    pixels = np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3, 4):
        raise ValueError(f"encode_png: expected (C, H, W) with C in (1, 3, 4), got {pixels.shape}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("encode_png: pixels must lie in [0, 255]")
    array = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
