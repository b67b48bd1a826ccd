import pytest
import torch

from vae import VAE, DataLayout, FeatureBlock, ModelConfig


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def mixed_layout() -> DataLayout:
    """Three numeric columns, two binary columns and a categorical column with 4 slots: D = 9, F = 6."""
    return DataLayout(
        (
            FeatureBlock("gaussian", 3, ("a", "b", "c")),
            FeatureBlock("bernoulli", 2, ("flag1", "flag2")),
            FeatureBlock("categorical", 4, ("colour",)),
        )
    )


@pytest.fixture
def mixed_batch() -> torch.Tensor:
    """8 rows laid out as `mixed_layout`: (8, 9)."""
    g = torch.Generator().manual_seed(1)
    numeric = torch.randn(8, 3, generator=g)
    binary = torch.randint(0, 2, (8, 2), generator=g).float()
    onehot = torch.nn.functional.one_hot(torch.randint(0, 4, (8,), generator=g), 4).float()
    return torch.cat([numeric, binary, onehot], dim=1)


@pytest.fixture
def mixed_model(mixed_layout) -> VAE:
    return VAE(ModelConfig(latent_dim=3, hidden_dims=(16,)), mixed_layout)


class LinearGaussian:
    """z ~ N(0, I_L), x | z ~ N(W z + b, s^2 I_D) with orthogonal columns in W, as a VAE with linear nets.

    Its marginal p(x) = N(b, W W^T + s^2 I) and its posterior is Gaussian with diagonal covariance
    (W^T W is diagonal), so both are known in closed form and the encoder can be set to the exact posterior.
    """

    def __init__(self, dim: int = 5, latent: int = 2, noise: float = 0.5, seed: int = 0, flow_steps: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
        self.singular = torch.linspace(2.0, 1.0, latent)
        self.w = q[:, :latent] * self.singular  # (D, L)
        self.b = torch.randn(dim, generator=g)
        self.noise = noise
        self.model = VAE(
            ModelConfig(latent_dim=latent, hidden_dims=(), gaussian_min_scale=1e-3, flow_steps=flow_steps),
            DataLayout((FeatureBlock("gaussian", dim),)),
        )
        with torch.no_grad():
            self.model.decoder.out.weight.copy_(self.w)
            self.model.decoder.out.bias.copy_(self.b)
            self.model.likelihood.blocks[0].set_scale(noise)
        self.set_posterior(mean_shift=0.0, logvar_shift=0.0)

    def set_posterior(self, mean_shift: float, logvar_shift: float) -> None:
        """The exact posterior, optionally shifted: q(z|x) = N(m(x) + mean_shift, v * exp(logvar_shift))."""
        var = 1.0 / (1.0 + self.singular.square() / self.noise**2)  # (L,) diagonal posterior covariance
        gain = var[:, None] * self.w.T / self.noise**2  # (L, D)
        enc = self.model.encoder
        with torch.no_grad():
            enc.mu.weight.copy_(gain)
            enc.mu.bias.copy_(-gain @ self.b + mean_shift)
            enc.logvar.weight.zero_()
            enc.logvar.bias.copy_(var.log() + logvar_shift)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x): (B,)."""
        cov = self.w @ self.w.T + self.noise**2 * torch.eye(len(self.b))
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.w.shape[1], generator=g)
        return z @ self.w.T + self.b + self.noise * torch.randn(n, len(self.b), generator=g)


@pytest.fixture
def linear_gaussian() -> LinearGaussian:
    return LinearGaussian()


def pytest_collection_modifyitems(config, items):
    """Tests under tests/integration/ carry the `integration` marker (select with -m). Unit tests run first (some
    check that nothing started Ray), then the integration tests that share the session's local Ray, then those
    marked `own_ray`, so the shared Ray starts once and is stopped once, for them."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: (item.get_closest_marker("integration") is not None,
                                 item.get_closest_marker("own_ray") is not None))  # fmt: skip
