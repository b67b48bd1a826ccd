import json

import numpy as np
import pytest
import torch

from vae import VAE, DataLayout, Detector, ModelConfig, Preprocessor, ScoreConfig, load_detector, save_detector
from vae.persistence import SPEC_FILE, WEIGHTS_FILE


@pytest.fixture
def detector():
    rng = np.random.default_rng(0)
    table = {
        "x1": rng.normal(size=200),
        "x2": rng.normal(5, 2, size=200),
        "flag": rng.integers(0, 2, size=200),
        "kind": rng.choice(["a", "b", "c"], size=200).astype(object),
        "group": rng.choice(["u", "v"], size=200).astype(object),
    }
    pre = Preprocessor(numeric=["x1", "x2"], binary=["flag"], categorical=["kind"]).fit(table)
    cond = Preprocessor(categorical=["group"]).fit(table)
    layout = DataLayout(pre.layout_blocks(), condition_dim=3)
    model = VAE(ModelConfig(latent_dim=3, hidden_dims=(16, 8)), layout)
    det = Detector(model, pre, ScoreConfig(kind="nll", samples=50), condition=cond, metadata={"run": "unit"})
    det.calibrate(det.score(table)[0])
    return det, table


def test_round_trip_gives_identical_scores(detector, tmp_path):
    det, table = detector
    save_detector(det, tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    for kind in ("negative_elbo", "nll", "reconstruction"):
        det.score_config = loaded.score_config = ScoreConfig(kind=kind, samples=30)
        a, ca = det.score(table, seed=3)
        b, cb = loaded.score(table, seed=3)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ca, cb)
    assert loaded.threshold == det.threshold
    assert loaded.metadata == {"run": "unit"}
    assert loaded.feature_names == ("x1", "x2", "flag", "kind")


def test_files_are_a_plain_state_dict_and_json(detector, tmp_path):
    det, _ = detector
    save_detector(det, tmp_path)
    state = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert set(state) == set(det.model.state_dict())
    spec = json.loads((tmp_path / SPEC_FILE).read_text())
    assert spec["model_config"]["latent_dim"] == 3 and spec["layout"]["condition_dim"] == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_loading_a_missing_or_foreign_model_fails_clearly(detector, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{SPEC_FILE} is missing"):
        load_detector(tmp_path)
    det, _ = detector
    save_detector(det, tmp_path)
    spec = json.loads((tmp_path / SPEC_FILE).read_text())
    (tmp_path / SPEC_FILE).write_text(json.dumps({**spec, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_detector(tmp_path)


def test_threshold_is_required_to_flag_rows(detector):
    det, table = detector
    det.threshold = None
    with pytest.raises(RuntimeError, match="no threshold"):
        det.is_anomaly(np.zeros(3))
