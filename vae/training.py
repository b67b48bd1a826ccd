"""`fit`: the in-process training loop over in-memory arrays (for notebooks, tests and the laptop demo).

The distributed loop in `pipelines/` drives the same `train_epoch` / `evaluate` engine over Ray Data shards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .adversarial import Adversary
from .config import ObjectiveConfig, TrainConfig, check_resolved, check_variant
from .engine import EarlyStopping, EpochStats, epoch_metrics, evaluate, format_epoch, train_epoch
from .objectives import kl_warmup_done


def tensor_batches(
    x: torch.Tensor,
    c: torch.Tensor | None,
    batch_size: int,
    generator: torch.Generator | None = None,
    observed: torch.Tensor | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Mini-batches {"x": (b, ...)[, "c": (b, K)][, "observed": (b, F)]} in a random order (given a generator) or
    in row order; the parts that are None are left out."""
    order = torch.arange(len(x)) if generator is None else torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        yield {name: part[idx] for name, part in (("x", x), ("c", c), ("observed", observed)) if part is not None}


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Adam parameter groups: `weight_decay` on the weight matrices and kernels (2 or more dimensions), none on
    vectors: the biases and the decoder's noise scales (`log_scale`), whose decay would pull the noise std towards
    its floor. Works on a DDP-wrapped model too (it only looks at shapes)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decayed = [p for p in trainable if p.dim() >= 2]
    plain = [p for p in trainable if p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Adam:
    """The Adam optimiser of a training run: `config.lr`, weight decay by `param_groups`."""
    return torch.optim.Adam(param_groups(model, config.weight_decay), lr=config.lr)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch
    best_epoch: int = -1
    best_val_loss: float = float("inf")


def _as_tensor(a: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(a, dtype=torch.float32)


def fit(
    model: torch.nn.Module,
    train_x: np.ndarray | torch.Tensor,
    val_x: np.ndarray | torch.Tensor | None,
    objective: ObjectiveConfig,
    config: TrainConfig,
    *,
    train_c: np.ndarray | torch.Tensor | None = None,
    val_c: np.ndarray | torch.Tensor | None = None,
    train_observed: np.ndarray | torch.Tensor | None = None,
    val_observed: np.ndarray | torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], object] | None = print,
    log_every: int = 1,
) -> FitResult:
    """Train with Adam (`build_optimizer`), validate every epoch, stop early on the validation loss and restore
    the best weights. Epochs that end inside the KL warm-up (`kl_warmup_done`) are neither candidates for the best
    weights nor count towards the patience; a run that never leaves the warm-up keeps its last weights (best_epoch
    -1).

    train_x is (N, D) or (N, C, H, W); val_x likewise, or None: then every epoch of the budget runs and the last
    weights are kept (what the data-driven default does, `vae.auto`). train_observed / val_observed (N, F) bool
    (`vae.preprocessing.observed_features`), where given, leave each row's missing features out of the loss (see
    `compute_loss`). Prints a line every `log_every` epochs through `log`.
    An AAE objective trains its discriminator alongside (its own Adam); raises ConfigError when the objective
    does not suit the model (see `check_variant`) or `config` still holds 'auto' values (see `vae.auto.resolve`).
    """
    check_variant(model.config, objective)
    check_resolved(config, "fit")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device)
    optimizer = build_optimizer(model, config)
    adversary = Adversary.for_objective(objective, model.config.latent_dim, wrap=lambda d: d.to(device))
    tx, tc, vx, vc = map(_as_tensor, (train_x, train_c, val_x, val_c))
    to, vo = (None if m is None else torch.as_tensor(m, dtype=torch.bool) for m in (train_observed, val_observed))
    stopper = EarlyStopping(config.patience, config.min_delta)
    result, best_state, step = FitResult(), None, 0
    amp = config.mixed_precision
    for epoch in range(config.epochs):
        train: EpochStats = train_epoch(
            model,
            tensor_batches(tx, tc, config.batch_size, generator, to),
            optimizer,
            objective,
            device=device,
            step=step,
            grad_clip=config.grad_clip,
            mixed_precision=amp,
            adversary=adversary,
        )
        step = train.step
        val = None
        if vx is not None:
            val = evaluate(model, tensor_batches(vx, vc, config.batch_size, observed=vo), objective, device=device,
                           mixed_precision=amp, adversary=adversary)  # fmt: skip
        result.history.append({"epoch": epoch, **epoch_metrics(train, val)})
        if val is not None and kl_warmup_done(objective, step) and stopper.update(val.loss, epoch):
            best_state = copy.deepcopy(model.state_dict())
        if log is not None and (epoch + 1) % log_every == 0:
            log(format_epoch(epoch + 1, config.epochs, train, val))
        if stopper.should_stop:
            if log is not None:
                log(f"early stop: no improvement for {stopper.bad_epochs} epochs")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.best_epoch, result.best_val_loss = stopper.best_epoch, stopper.best
    if vx is None:
        result.best_epoch = len(result.history) - 1
    return result
