import pytest

from vae import ConfigError, DataLayout, FeatureBlock, ModelConfig, ObjectiveConfig, ScoreConfig, TrainConfig
from vae.config import from_dict, to_dict


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (ModelConfig, {"latent_dim": 0}, "ModelConfig.latent_dim"),
        (ModelConfig, {"latent_dim": 2.5}, "ModelConfig.latent_dim"),
        (ModelConfig, {"hidden_dims": (64, 0)}, "ModelConfig.hidden_dims"),
        (ModelConfig, {"network": "transformer"}, "ModelConfig.network"),
        (ModelConfig, {"gaussian_min_scale": -1.0}, "ModelConfig.gaussian_min_scale"),
        (ObjectiveConfig, {"beta": -0.1}, "ObjectiveConfig.beta"),
        (ObjectiveConfig, {"beta": "high"}, "ObjectiveConfig.beta"),
        (ObjectiveConfig, {"kind": "gan"}, "ObjectiveConfig.kind"),
        (ObjectiveConfig, {"iwae_samples": 0}, "ObjectiveConfig.iwae_samples"),
        (TrainConfig, {"lr": 0}, "TrainConfig.lr"),
        (TrainConfig, {"batch_size": -8}, "TrainConfig.batch_size"),
        (TrainConfig, {"epochs": float("nan")}, "TrainConfig.epochs"),
        (ScoreConfig, {"contamination": 1.5}, "ScoreConfig.contamination"),
        (ScoreConfig, {"contamination": None}, "ScoreConfig.contamination"),
        (ScoreConfig, {"kind": "entropy"}, "ScoreConfig.kind"),
        (FeatureBlock, {"kind": "poisson", "width": 2}, "FeatureBlock.kind"),
        (FeatureBlock, {"kind": "gaussian", "width": 2, "names": ("a",)}, "FeatureBlock.names"),
    ],
)
def test_impossible_values_fail_naming_the_field(cls, kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        cls(**kwargs)


def test_layout_checks_image_shape_against_width():
    with pytest.raises(ConfigError, match="DataLayout.image_shape"):
        DataLayout((FeatureBlock("bernoulli", 10),), image_shape=(1, 4, 4))


def test_from_dict_rejects_unknown_keys_by_name():
    with pytest.raises(ConfigError, match=r"ModelConfig: unknown key\(s\) \['latent_size'\]"):
        from_dict(ModelConfig, {"latent_size": 4})


def test_to_dict_from_dict_round_trip(mixed_layout):
    for config in (
        ModelConfig(latent_dim=5, hidden_dims=(32, 16)),
        ObjectiveConfig(kind="iwae", iwae_samples=5),
        TrainConfig(patience=None),
        ScoreConfig(quantile=0.99, contamination=None),
        mixed_layout,
    ):
        assert from_dict(type(config), to_dict(config)) == config


def test_layout_counts_features_and_columns(mixed_layout):
    assert mixed_layout.input_dim == 9
    assert mixed_layout.n_features == 6
    assert mixed_layout.feature_names == ("a", "b", "c", "flag1", "flag2", "colour")
