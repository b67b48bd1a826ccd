import re

import pytest
import torch

from vae import VAE, ConfigError, DataLayout, FeatureBlock, ModelConfig, ObjectiveConfig, ScoreConfig, TrainConfig
from vae.config_base import from_dict, to_dict
from vae.likelihoods import LIKELIHOODS, MixedLikelihood
from vae.networks import ACTIVATIONS, NETWORKS, build_networks, mlp
from vae.objectives import OBJECTIVES, compute_loss
from vae.scoring import SCORES, score_batch


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


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ModelConfig(latent_dim=0), "ModelConfig.latent_dim: must be an integer >= 1 or 'auto', got 0"),
        (lambda: ModelConfig(gaussian_min_scale=-1.0), "ModelConfig.gaussian_min_scale: must be > 0, got -1.0"),
        (lambda: ObjectiveConfig(iwae_samples=0), "ObjectiveConfig.iwae_samples: must be >= 1, got 0"),
        (lambda: ObjectiveConfig(beta=True), "ObjectiveConfig.beta: must be a number >= 0, got True"),
        (lambda: TrainConfig(epochs=2.5), "TrainConfig.epochs: must be an integer >= 1 or 'auto', got 2.5"),
        (lambda: ScoreConfig(contamination=1.5), "ScoreConfig.contamination: must be a number in (0, 1) or null, got "
                                                 "1.5"),
        (lambda: from_dict(DataLayout, {"blocks": [{"kind": "gaussian", "width": 0}]}),
         "blocks.0.width: must be >= 1, got 0"),
    ],
)  # fmt: skip
def test_the_line_says_what_the_field_accepts_and_what_it_got(build, message):
    """Built in Python, a config names its field with its class; a section's field is named by its dotted path."""
    with pytest.raises(ConfigError) as err:
        build()
    assert str(err.value) == message


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


@pytest.mark.parametrize(
    ("cls", "field", "registry", "known"),
    [
        (ModelConfig, "activation", ACTIVATIONS, {"relu", "gelu", "silu", "tanh"}),
        (ModelConfig, "network", NETWORKS, {"mlp", "conv"}),
        (ObjectiveConfig, "kind", OBJECTIVES, {"elbo", "iwae", "aae"}),
        (ScoreConfig, "kind", SCORES, {"negative_elbo", "nll", "reconstruction"}),
        (FeatureBlock, "kind", LIKELIHOODS, {"gaussian", "bernoulli", "categorical"}),
    ],
)
def test_config_choices_are_the_registries_of_their_implementations(cls, field, registry, known):
    """Each choice is validated against the one registry that dispatches it: every registered name is accepted,
    any other fails naming the field and the registered names."""
    assert set(registry) == known
    required = {"width": 2} if cls is FeatureBlock else {}
    for name in registry:
        assert getattr(cls(**{field: name, **required}), field) == name
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}.{field}: must be one of {re.escape(str(list(registry)))}"):
        cls(**{field: "unknown", **required})
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}.{field}: must be one of"):
        cls(**{field: {"not": "a name"}, **required})  # an unhashable YAML value fails as a config error too


def _tampered(config, field: str, value: str):
    """`config` with `field` set to `value` past validation (as a frozen dataclass changed in place would be)."""
    object.__setattr__(config, field, value)
    return config


def test_dispatch_never_falls_back_on_an_unknown_name():
    """Past validation (a config changed in place, a direct argument), an unknown name still fails by name."""
    layout = DataLayout((FeatureBlock("gaussian", 2),))
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(4,)), layout)
    x = torch.zeros(3, 2)
    cases = [
        (lambda: build_networks(_tampered(ModelConfig(), "network", "rnn"), layout), "ModelConfig.network", NETWORKS),
        (lambda: MixedLikelihood(DataLayout((_tampered(FeatureBlock("gaussian", 2), "kind", "poisson"),))),
         "FeatureBlock.kind", LIKELIHOODS),
        (lambda: mlp(2, (4,), "swish"), "activation", ACTIVATIONS),
        (lambda: compute_loss(model, x, None, _tampered(ObjectiveConfig(), "kind", "gan")), "ObjectiveConfig.kind",
         OBJECTIVES),
        (lambda: score_batch(model, x, None, _tampered(ScoreConfig(), "kind", "entropy")), "ScoreConfig.kind", SCORES),
    ]  # fmt: skip
    for call, what, registry in cases:
        with pytest.raises(ValueError, match=rf"^{what} must be one of {re.escape(str(list(registry)))}, got '"):
            call()
