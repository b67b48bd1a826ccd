"""The detection harness's baselines, each `fit on standardised training rows (N, d) -> scores (M,)` of test rows,
higher = more anomalous: KNN, IsolationForest, PCA reconstruction error and a plain reference VAE.

The reference VAE is deliberately the plain recipe a practitioner writes in 40 lines (MLP 128-128, GELU,
latent min(16, max(2, d/2)), Gaussian decoder with a learned per-feature variance, 3000 Adam steps of batch 128
at lr 1e-3, score = -ELBO averaged over 10 samples): the project's default has to beat it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import KDTree
from torch import nn

KNN_K = 5
KNN_CHUNK = 1024  # test rows per distance block: a (1024, N_train) float32 block
KD_TREE_MAX_DIM = 12  # a k-d tree beats brute force up to about this many dimensions


def knn(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """Distance of each test row to its 5th nearest training row (exact: a k-d tree in few dimensions, else
    blocks of squared distances on torch's BLAS)."""
    k = min(KNN_K, len(train))
    if train.shape[1] <= KD_TREE_MAX_DIM:
        return KDTree(train).query(test, k=k)[0][:, -1]
    reference = torch.from_numpy(train.astype(np.float32))
    ref_sq = reference.square().sum(1)  # (N,)
    out = []
    for start in range(0, len(test), KNN_CHUNK):
        block = torch.from_numpy(test[start : start + KNN_CHUNK].astype(np.float32))
        sq = block.square().sum(1, keepdim=True) - 2 * block @ reference.T + ref_sq  # (b, N) squared distances
        out.append(sq.topk(k, dim=1, largest=False).values[:, -1].clamp(min=0).sqrt())
    return torch.cat(out).double().numpy()


def isolation_forest(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """scikit-learn's IsolationForest with its defaults and random_state = seed."""
    return -IsolationForest(random_state=seed).fit(train).score_samples(test)


def pca(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """Squared reconstruction error from half the principal components (at least one)."""
    model = PCA(n_components=max(1, train.shape[1] // 2), random_state=seed).fit(train)
    return np.square(test - model.inverse_transform(model.transform(test))).sum(1)


class _PlainVAE(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        latent = min(16, max(2, d // 2))
        self.enc = nn.Sequential(
            nn.Linear(d, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 2 * latent)
        )
        self.dec = nn.Sequential(nn.Linear(latent, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, d))
        self.log_sigma = nn.Parameter(torch.zeros(d))

    def neg_elbo(self, x: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """-ELBO per row (B,), E_q[log p(x|z)] averaged over `samples` draws, closed-form KL."""
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = mu + (0.5 * logvar).exp() * torch.randn(samples, *mu.shape)  # (S, B, L)
        err = (x - self.dec(z)) / self.log_sigma.exp()
        log_px = (-0.5 * err.square() - self.log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1).mean(0)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
        return kl - log_px


def reference_vae(train: np.ndarray, test: np.ndarray, seed: int, steps: int = 3000) -> np.ndarray:
    """The plain VAE: `steps` (3000) Adam steps of batch 128 at lr 1e-3, scored by -ELBO over 10 samples."""
    torch.manual_seed(seed)
    x = torch.from_numpy(train.astype(np.float32))
    model = _PlainVAE(x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = x[torch.randint(len(x), (min(128, len(x)),))]
        loss = model.neg_elbo(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        rows = torch.from_numpy(test.astype(np.float32))
        return torch.cat([model.neg_elbo(b, samples=10) for b in rows.split(4096)]).double().numpy()


BASELINES = {"knn": knn, "iforest": isolation_forest, "pca": pca, "reference_vae": reference_vae}
