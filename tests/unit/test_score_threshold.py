"""The scoring job's threshold: the model's calibrated one only for the score it was calibrated on."""

import pytest

from pipelines.commands.score import _threshold
from pipelines.settings.model_jobs import ScoreJobConfig
from vae import VAE, ConfigError, DataLayout, Detector, FeatureBlock, ModelConfig, Preprocessor, ScoreConfig


def calibrated_detector() -> Detector:
    pre = Preprocessor(numeric=["a"]).fit({"a": [0.0, 1.0, 2.0]})
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(4,)), DataLayout((FeatureBlock("gaussian", 1, ("a",)),)))
    detector = Detector(model, pre, ScoreConfig(kind="negative_elbo", samples=16))
    detector.calibrate([1.0, 2.0, 3.0, 4.0])
    return detector


def job(**overrides) -> ScoreJobConfig:
    return ScoreJobConfig(input="rows.parquet", **overrides)


def test_the_models_threshold_serves_the_score_it_was_calibrated_on():
    detector = calibrated_detector()
    assert _threshold(job(), detector) == detector.threshold
    assert _threshold(job(kind="negative_elbo", samples=16), detector) == detector.threshold
    assert _threshold(job(samples=64, threshold=7.5), detector) == 7.5


@pytest.mark.parametrize(("overrides", "message"), [
    ({"samples": 64}, "calibrated with samples=16 but this job scores with samples=64"),
    ({"kind": "nll"}, "calibrated with kind='negative_elbo' but this job scores with kind='nll'"),
])  # fmt: skip
def test_another_score_needs_its_own_threshold(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _threshold(job(**overrides), calibrated_detector())
