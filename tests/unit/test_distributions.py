"""The posterior, the prior and each likelihood against closed forms and `torch.distributions`."""

import math

import pytest
import torch
from torch import distributions as D

from vae import DataLayout, FeatureBlock
from vae.likelihoods import MixedLikelihood
from vae.model import DiagonalGaussian, standard_normal_log_prob


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample(200_000, generator=g)  # (S, 4, 3)
    monte_carlo = (q.log_prob(z) - standard_normal_log_prob(z)).mean(0)
    closed = q.kl_to_standard_normal()
    # The MC estimate's std error is below 0.01 nats for these scales; 0.03 is three of them.
    assert torch.allclose(monte_carlo, closed, atol=0.03)
    reference = D.kl_divergence(D.Normal(mu, (0.5 * logvar).exp()), D.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(closed, reference, atol=1e-5)


def test_posterior_log_prob_and_prior_match_torch():
    mu, logvar = torch.randn(5, 2), torch.randn(5, 2)
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample(3)
    expected = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1).log_prob(z)
    assert torch.allclose(q.log_prob(z), expected, atol=1e-5)
    assert torch.allclose(standard_normal_log_prob(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)


def test_reparameterised_samples_have_the_posterior_moments():
    q = DiagonalGaussian(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, math.log(4.0)]]))
    z = q.rsample(100_000, generator=torch.Generator().manual_seed(0))[:, 0]
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 2.0]), atol=0.02)


def test_gaussian_block_matches_normal_with_learned_scale():
    lik = MixedLikelihood(DataLayout((FeatureBlock("gaussian", 3),)), gaussian_min_scale=1e-3)
    lik.blocks[0].set_scale(torch.tensor([0.5, 1.0, 2.0]))
    params, x = torch.randn(7, 3), torch.randn(7, 3)
    expected = D.Normal(params, torch.tensor([0.5, 1.0, 2.0])).log_prob(x)
    assert torch.allclose(lik.log_prob(params, x), expected, atol=1e-5)


def test_gaussian_samples_have_the_learned_scale():
    lik = MixedLikelihood(DataLayout((FeatureBlock("gaussian", 3),)), gaussian_min_scale=0.05)
    scale = torch.tensor([0.2, 1.0, 3.0])
    lik.blocks[0].set_scale(scale)
    params = torch.tensor([[1.0, -2.0, 0.5]]).expand(100_000, 3)
    draws = lik.sample(params, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(draws.mean(0), params[0], atol=0.03)
    assert torch.allclose(draws.std(0), scale, rtol=0.01)  # the std error of a std from 1e5 draws is 0.2 %


def test_gaussian_scale_is_floored():
    lik = MixedLikelihood(DataLayout((FeatureBlock("gaussian", 1),)), gaussian_min_scale=0.1)
    with torch.no_grad():
        lik.blocks[0].log_scale.fill_(-20.0)
    x = torch.tensor([[0.3]])
    assert torch.allclose(lik.log_prob(torch.zeros(1, 1), x), D.Normal(0.0, 0.1).log_prob(x), atol=1e-5)


def test_bernoulli_block_matches_torch_including_fractional_pixels():
    lik = MixedLikelihood(DataLayout((FeatureBlock("bernoulli", 4),)))
    logits = torch.randn(6, 4)
    x = torch.randint(0, 2, (6, 4)).float()
    assert torch.allclose(lik.log_prob(logits, x), D.Bernoulli(logits=logits).log_prob(x), atol=1e-5)
    p = torch.rand(6, 4)  # pixel intensities in [0, 1]: x log s(l) + (1 - x) log(1 - s(l))
    expected = p * torch.nn.functional.logsigmoid(logits) + (1 - p) * torch.nn.functional.logsigmoid(-logits)
    assert torch.allclose(lik.log_prob(logits, p), expected, atol=1e-5)


def test_categorical_block_is_one_feature_matching_torch():
    lik = MixedLikelihood(DataLayout((FeatureBlock("categorical", 5, ("colour",)),)))
    logits = torch.randn(6, 5)
    index = torch.randint(0, 5, (6,))
    x = torch.nn.functional.one_hot(index, 5).float()
    out = lik.log_prob(logits, x)
    assert out.shape == (6, 1)
    assert torch.allclose(out[:, 0], D.Categorical(logits=logits).log_prob(index), atol=1e-5)


def test_mixed_row_is_the_sum_of_its_blocks(mixed_layout, mixed_batch):
    lik = MixedLikelihood(mixed_layout, gaussian_min_scale=1e-3)
    params = torch.randn(4, *mixed_batch.shape)  # (S, B, D): several samples broadcast against x
    out = lik.log_prob(params, mixed_batch)
    assert out.shape == (4, 8, 6)
    numeric = D.Normal(params[..., :3], lik.blocks[0].scale()).log_prob(mixed_batch[:, :3])  # std 1 + 1e-3
    binary = D.Bernoulli(logits=params[..., 3:5]).log_prob(mixed_batch[:, 3:5])
    colour = D.Categorical(logits=params[..., 5:]).log_prob(mixed_batch[:, 5:].argmax(-1))
    assert torch.allclose(out, torch.cat([numeric, binary, colour[..., None]], -1), atol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "bernoulli", "categorical"])
def test_samples_have_the_likelihood_mean(kind):
    width = 3
    lik = MixedLikelihood(DataLayout((FeatureBlock(kind, width, ("f",) if kind == "categorical" else ()),)))
    params = torch.tensor([[0.5, -1.0, 2.0]]).expand(50_000, width)
    draws = lik.sample(params)
    assert torch.allclose(draws.mean(0), lik.mean(params)[0], atol=0.03)
