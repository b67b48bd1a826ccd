import math

import numpy as np
import pytest
import torch

from vae import VAE, DataLayout, EarlyStopping, FeatureBlock, ModelConfig, ObjectiveConfig, evaluate, train_epoch
from vae.engine import unpack_batch
from vae.objectives import compute_loss


def _data(n=512, seed=0):
    """Rows on a 1-D curve embedded in 4-D plus noise: easy to compress into a small latent."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 1, generator=g) * 4 - 2
    return torch.cat([t, t.square(), torch.sin(t), -t], 1) + 0.05 * torch.randn(n, 4, generator=g)


def _model():
    return VAE(ModelConfig(latent_dim=2, hidden_dims=(32, 32)), DataLayout((FeatureBlock("gaussian", 4),)))


def test_training_lowers_the_validation_loss_and_counts_steps():
    x, val = _data(), _data(256, seed=1)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    objective = ObjectiveConfig(kl_warmup_steps=20)
    before = evaluate(model, [val], objective).loss
    step = 0
    for _ in range(30):
        stats = train_epoch(model, x.split(64), optimizer, objective, step=step, grad_clip=5.0)
        assert stats.step == step + 8 and stats.rows == 512
        step = stats.step
    after = evaluate(model, val.split(100), objective)
    assert after.rows == 256 and after.step == 0
    assert after.loss < before - 2.0, (before, after.loss)
    assert after.loss == pytest.approx(-(after.recon - after.kl), rel=1e-5)


def test_every_batch_form_is_accepted():
    x, c = torch.ones(3, 2, dtype=torch.float64), torch.zeros(3, 1)
    observed = np.array([[True, False], [True, True], [False, True]])  # as Ray Data hands a numpy column over
    for batch in (x, (x, c), {"x": x, "c": c}, {"x": x}, {"x": x, "observed": observed}):
        bx, bc, bo = unpack_batch(batch, "cpu")
        assert bx.dtype == torch.float32 and bx.shape == (3, 2)
        assert bc is None or bc.shape == (3, 1)
        assert bo is None or (bo.dtype == torch.bool and bo.tolist() == observed.tolist())
    assert unpack_batch({"x": x, "observed": observed}, "cpu")[2] is not None


def test_gradients_are_clipped_to_the_bound():
    norms = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            norms.append(math.sqrt(sum(p.grad.square().sum().item() for g in self.param_groups for p in g["params"])))
            return super().step(closure)

    model = _model()
    train_epoch(model, [_data(64) * 100], Recording(model.parameters(), lr=0.0), ObjectiveConfig(), grad_clip=0.5)
    assert norms and norms[0] == pytest.approx(0.5, rel=1e-4)


def test_a_diverging_loss_stops_with_a_clear_error():
    with pytest.raises(FloatingPointError, match="training loss is nan at step 0"):
        model = _model()
        train_epoch(
            model, [torch.full((4, 4), float("nan"))], torch.optim.SGD(model.parameters(), 0.1), ObjectiveConfig()
        )


def test_epoch_stats_are_the_row_weighted_means_of_the_batch_losses():
    model, objective = _model(), ObjectiveConfig()
    batches = [_data(3, seed=1), _data(5, seed=2)]
    torch.manual_seed(0)
    stats = evaluate(model, batches, objective)
    torch.manual_seed(0)  # the same draws of z, in the same order
    with torch.no_grad():
        parts = [compute_loss(model, x, None, objective, step=None) for x in batches]
    for name in ("total", "recon", "kl"):
        expected = (3 * getattr(parts[0], name) + 5 * getattr(parts[1], name)).item() / 8
        assert getattr(stats, "loss" if name == "total" else name) == pytest.approx(expected, rel=1e-6), name
    assert stats.rows == 8 and stats.extras == {}


def test_the_error_names_the_first_step_whose_loss_was_not_finite():
    """The check runs on the device and is read at the end of the epoch: a later finite or infinite batch does
    not hide the first bad step (here the third batch of an epoch that starts at step 5)."""
    model = _model()
    batches = [_data(8), _data(8), torch.full((8, 4), float("nan")), torch.full((8, 4), float("inf")), _data(8)]
    with pytest.raises(FloatingPointError, match=r"^training loss is nan at step 7; lower the lr$"):
        train_epoch(model, batches, torch.optim.SGD(model.parameters(), 0.1), ObjectiveConfig(), step=5)


def test_early_stopping_waits_for_patience_and_respects_min_delta():
    stopper = EarlyStopping(patience=2, min_delta=0.1)
    history = [(5.0, True), (4.95, False), (4.8, True), (4.75, False), (4.71, False)]
    for epoch, (value, improved) in enumerate(history):
        assert stopper.update(value, epoch) is improved
    assert stopper.should_stop and stopper.best == 4.8 and stopper.best_epoch == 2
    never = EarlyStopping(patience=None)
    for epoch in range(100):
        never.update(1.0, epoch)
    assert not never.should_stop
