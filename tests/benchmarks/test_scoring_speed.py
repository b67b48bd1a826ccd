"""Scoring throughput of the library on one process, per score kind (rows/s): `make bench`."""

import time

import pytest
import torch

from vae import VAE, DataLayout, FeatureBlock, ModelConfig, ScoreConfig, score_array


@pytest.mark.benchmark
def test_scoring_throughput_table():
    torch.manual_seed(0)
    layout = DataLayout((FeatureBlock("gaussian", 20), FeatureBlock("categorical", 8, ("category",))))
    model = VAE(ModelConfig(latent_dim=8, hidden_dims=(128, 128)), layout)
    x = torch.cat([torch.randn(20_000, 20), torch.nn.functional.one_hot(torch.randint(0, 8, (20_000,)), 8)], 1)
    rows = [("kind", "samples", "rows", "seconds", "rows/s")]
    for kind, samples, n in [("reconstruction", 1, 20_000), ("negative_elbo", 16, 20_000), ("nll", 1000, 2_000)]:
        start = time.perf_counter()
        scores, _ = score_array(model, x[:n], config=ScoreConfig(kind=kind, samples=samples), batch_size=1024)
        seconds = time.perf_counter() - start
        assert scores.shape == (n,) and torch.isfinite(torch.as_tensor(scores)).all()
        rows.append((kind, str(samples), str(n), f"{seconds:.2f}", f"{n / seconds:,.0f}"))
    print(f"\nlibrary scoring throughput ({torch.get_num_threads()} threads, {torch.__version__})")
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")
