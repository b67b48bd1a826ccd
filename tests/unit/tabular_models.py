"""Small mixed tables and VAEs trained on them in-process, shared by the generation and imputation tests."""

from __future__ import annotations

import numpy as np

from vae import VAE, DataLayout, Detector, ModelConfig, ObjectiveConfig, Preprocessor, TrainConfig, fit


def mixed_table(n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """income (float, log-normal), age (int), smoker (0/1 int), colour (str), grade (int codes), region (str):
    smokers are older and mostly red, so the columns depend on each other."""
    rng = np.random.default_rng(seed)
    smoker = (rng.random(n) < 0.4).astype(np.int64)
    age = np.round(rng.normal(40 + 15 * smoker, 5)).astype(np.int64)
    colour = np.where(smoker == 1, rng.choice(["red", "blue"], n, p=[0.9, 0.1]), rng.choice(["green", "blue"], n))
    return {
        "income": np.exp(rng.normal(10 + 0.02 * age, 0.3)),
        "age": age,
        "smoker": smoker,
        "colour": colour.astype(object),
        "grade": rng.choice([1, 2, 3], n),
        "region": rng.choice(["north", "south"], n).astype(object),
    }


def train_detector(table: dict[str, np.ndarray], conditional: bool = False, epochs: int = 15) -> Detector:
    """A VAE on the table's features (with `region` as the condition when `conditional`), trained for a few epochs."""
    pre = Preprocessor(numeric=["income", "age"], binary=["smoker"], categorical=["colour", "grade"]).fit(table)
    condition = Preprocessor(categorical=["region"]).fit(table) if conditional else None
    c = None if condition is None else condition.transform(table)
    layout = DataLayout(pre.layout_blocks(), condition_dim=0 if c is None else c.shape[1])
    model = VAE(ModelConfig(latent_dim=3, hidden_dims=(32,)), layout)
    x = pre.transform(table)
    fit(model, x, x[:50], ObjectiveConfig(), TrainConfig(epochs=epochs, batch_size=64, lr=5e-3, patience=None),
        train_c=c, val_c=None if c is None else c[:50], log=None)  # fmt: skip
    return Detector(model, pre, condition=condition)
