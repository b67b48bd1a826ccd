"""ELBO and IWAE: their relations to each other, to beta, and to the KL warm-up."""

import pytest
import torch

from vae import (
    VAE,
    DataLayout,
    FeatureBlock,
    ModelConfig,
    ObjectiveConfig,
    compute_loss,
    elbo,
    iwae,
    kl_weight,
    train_epoch,
)


def _bounds(model, x, k, seed):
    """Mean over rows of the IWAE bound with k samples and of the (analytic-KL) ELBO."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bound = -iwae(model(x, n_samples=k, generator=g)).total
        lower = -elbo(model(x, n_samples=1, generator=g)).total
    return bound.item(), lower.item()


def test_iwae_with_one_sample_is_the_elbo(mixed_model, mixed_batch):
    with torch.no_grad():
        out = mixed_model(mixed_batch, n_samples=1, generator=torch.Generator().manual_seed(3))
    for beta in (0.0, 0.5, 1.0, 4.0):
        a, b = iwae(out, beta), elbo(out, beta, analytic_kl=False)
        for part in ("total", "recon", "kl"):
            assert torch.allclose(getattr(a, part), getattr(b, part), atol=1e-6), (beta, part)


def test_iwae_is_at_least_the_elbo_and_grows_with_k(linear_gaussian):
    """On a model with known log p(x) and a deliberately wrong posterior: ELBO <= IWAE_k <= log p(x), rising in k."""
    linear_gaussian.set_posterior(mean_shift=0.8, logvar_shift=1.0)
    model, x = linear_gaussian.model, linear_gaussian.sample(64)
    exact = linear_gaussian.log_marginal(x).mean().item()
    seeds = range(10)
    elbo_mean = sum(_bounds(model, x, 1, s)[1] for s in seeds) / len(seeds)
    means = [sum(_bounds(model, x, k, s)[0] for s in seeds) / len(seeds) for k in (1, 5, 50, 500)]
    # k = 1 and the analytic-KL ELBO share an expectation: over 640 row-draws they agree to sampling noise.
    assert means[0] == pytest.approx(elbo_mean, abs=0.05)
    assert means == sorted(means), means
    assert elbo_mean < exact - 0.5  # the wrong posterior makes the ELBO loose ...
    assert means[-1] > elbo_mean + 0.4  # ... and importance sampling closes most of the gap
    assert means[-1] <= exact + 1e-3


def test_beta_zero_removes_the_kl_term_and_beta_scales_it(mixed_model, mixed_batch):
    with torch.no_grad():
        out = mixed_model(mixed_batch)
    recon = out.log_px.sum(-1).mean()
    kl = out.kl.mean()
    assert kl > 0
    assert torch.allclose(elbo(out, beta=0.0).total, -recon, atol=1e-6)
    for beta in (0.5, 1.0, 3.0):
        parts = elbo(out, beta=beta)
        assert torch.allclose(parts.total, -recon + beta * kl, atol=1e-5)
        assert torch.allclose(parts.kl, kl) and torch.allclose(parts.recon, recon)


def test_kl_warmup_ramps_linearly_to_beta():
    config = ObjectiveConfig(beta=2.0, kl_warmup_steps=100)
    assert [kl_weight(config, s) for s in (0, 25, 50, 100, 1000)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_weight(config, None) == 2.0
    assert kl_weight(ObjectiveConfig(beta=0.3), 0) == 0.3


@pytest.mark.parametrize("kind", ["elbo", "iwae"])
def test_training_steps_weigh_the_kl_by_the_warmup(mixed_model, mixed_batch, kind):
    """Step t of a warm-up over 4 steps to beta = 2 minimises -recon + 2 min(1, t / 4) * KL (IWAE: beta inside
    the weights, so with one sample the same); an epoch that starts at step 2 takes steps 2 .. 7."""
    objective = ObjectiveConfig(kind=kind, beta=2.0, kl_warmup_steps=4)
    optimizer = torch.optim.SGD(mixed_model.parameters(), lr=0.0)  # the model stays as it is
    torch.manual_seed(0)
    stats = train_epoch(mixed_model, [mixed_batch] * 6, optimizer, objective, step=2)
    torch.manual_seed(0)  # the same draws again, batch by batch
    steps = {step: compute_loss(mixed_model, mixed_batch, None, objective, step) for step in range(2, 8)}
    assert stats.step == 8
    assert stats.loss == pytest.approx(sum(p.total.item() for p in steps.values()) / len(steps), rel=1e-5)
    for step, parts in steps.items():
        weight = 2.0 * min(1.0, step / 4)
        assert parts.total.item() == pytest.approx(-parts.recon.item() + weight * parts.kl.item(), rel=1e-5), step


def test_compute_loss_uses_the_configured_objective(mixed_model, mixed_batch):
    torch.manual_seed(5)
    got = compute_loss(mixed_model, mixed_batch, None, ObjectiveConfig(kind="iwae", iwae_samples=7))
    torch.manual_seed(5)
    want = iwae(mixed_model(mixed_batch, n_samples=7))
    assert torch.allclose(got.total, want.total)


def test_loss_gradients_reach_every_parameter(mixed_model, mixed_batch):
    compute_loss(mixed_model, mixed_batch, None, ObjectiveConfig(kind="iwae", iwae_samples=4)).total.backward()
    missing = [n for n, p in mixed_model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_conditional_vae_requires_its_condition():
    layout = DataLayout((FeatureBlock("gaussian", 4),), condition_dim=2)
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), layout)
    x, c = torch.randn(5, 4), torch.randn(5, 2)
    assert model(x, c).log_px.shape == (1, 5, 4)
    with pytest.raises(ValueError, match=r"c must be \(B, 2\)"):
        model(x)
    plain = VAE(ModelConfig(latent_dim=2), DataLayout((FeatureBlock("gaussian", 4),)))
    with pytest.raises(ValueError, match="has no condition"):
        plain(x, c)
