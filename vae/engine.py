"""A training engine that knows nothing of Ray: one epoch of training, one pass of evaluation, and early stopping.

Batches come from any iterable: a tensor x, an (x, c) pair, or a mapping with "x" and optionally "c"
(what Ray Data's `iter_torch_batches` yields). x is (B, D) or (B, C, H, W); c is (B, K).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from .adversarial import Adversary
from .config import ObjectiveConfig
from .objectives import AAEParts, LossParts, compute_loss

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | Mapping[str, torch.Tensor]


@dataclass
class EpochStats:
    loss: float  # mean of the objective's total over rows
    recon: float  # mean E_q[log p(x|z)] per row
    kl: float  # mean KL per row
    rows: int
    seconds: float
    step: int  # optimiser steps taken so far (training); 0 for evaluation
    extras: dict[str, float] = field(default_factory=dict)  # the variant's own parts (LossParts.extras), per row

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.inf


def format_epoch(epoch: int, epochs: int, train: EpochStats, val: EpochStats | None) -> str:
    """The one-line progress report of an epoch (1-based `epoch`); `val` None: training without validation."""
    extras = "".join(f", {name} {value:.4f}" for name, value in train.extras.items())
    validation = "" if val is None else f"  val {val.loss:9.4f}"
    return (
        f"epoch {epoch:3d}/{epochs}  train {train.loss:9.4f} (recon {train.recon:9.4f}, kl {train.kl:7.4f}{extras})"
        f"{validation}  {train.rows_per_second:8.0f} rows/s"
    )


def epoch_metrics(train: EpochStats, val: EpochStats | None) -> dict[str, float]:
    """An epoch's metrics by name: train_/val_ loss, recon, kl, the variant's parts and rows (the rows the epoch
    went through), and rows_per_s."""
    metrics = {}
    for prefix, stats in (("train", train), ("val", val)):
        if stats is not None:
            parts = {"loss": stats.loss, "recon": stats.recon, "kl": stats.kl, **stats.extras, "rows": stats.rows}
            metrics |= {f"{prefix}_{name}": value for name, value in parts.items()}
    return metrics | {"rows_per_s": train.rows_per_second}


def unpack_batch(batch: Batch, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, c) on `device` as float32 from any supported batch form; c is None without a condition."""
    if isinstance(batch, Mapping):
        x, c = batch["x"], batch.get("c")
    elif isinstance(batch, (tuple, list)):
        x, c = batch
    else:
        x, c = batch, None
    x = x.to(device, dtype=torch.float32, non_blocking=True)
    return x, None if c is None else c.to(device, dtype=torch.float32, non_blocking=True)


def autocast(
    device: torch.device | str, enabled: bool, *, allow_cpu: bool = False
) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU runs stay in float32), unless `allow_cpu` also
    enables it on CPU (slow there: for tests of the mixed-precision path without a GPU).

    Under it the networks run in bf16, while the VAE keeps x, the likelihood parameters, the densities and the KL
    in float32 (see `vae.model`)."""
    kind = torch.device(device).type
    if enabled and (kind == "cuda" or (allow_cpu and kind == "cpu")):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Totals:
    def __init__(self) -> None:
        self.loss = self.recon = self.kl = 0.0
        self.extras: dict[str, float] = {}
        self.rows = 0
        self.start = time.perf_counter()

    def add(self, parts: LossParts, rows: int) -> None:
        self.loss += parts.total.item() * rows
        self.recon += parts.recon.item() * rows
        self.kl += parts.kl.item() * rows
        for name, value in parts.extras.items():
            self.extras[name] = self.extras.get(name, 0.0) + value.item() * rows
        self.rows += rows

    def stats(self, step: int) -> EpochStats:
        n = max(self.rows, 1)
        seconds = time.perf_counter() - self.start
        extras = {name: total / n for name, total in self.extras.items()}
        return EpochStats(self.loss / n, self.recon / n, self.kl / n, self.rows, seconds, step, extras)


def _encoded(parts: LossParts) -> torch.Tensor:
    """The detached latents (S * B, L) of an AAE objective's parts, which its discriminator learns from."""
    if not isinstance(parts, AAEParts):
        raise ValueError("an adversary trains with the adversarial autoencoder objective only (objective.kind=aae)")
    return parts.encoded


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    objective: ObjectiveConfig,
    *,
    device: torch.device | str = "cpu",
    step: int = 0,
    grad_clip: float | None = None,
    mixed_precision: bool = False,
    adversary: Adversary | None = None,
) -> EpochStats:
    """One pass of optimisation over `batches`; `step` counts optimiser steps for the KL warm-up.

    An AAE objective needs its `adversary`: each batch is an encoder/decoder step followed by a
    discriminator step on that step's encoded latents (`AAEParts.encoded`; its loss reported as
    `adv_discriminator`).
    Raises FloatingPointError when the loss becomes NaN or infinite, naming the step.
    """
    model.train()
    totals = _Totals()
    discriminator = None if adversary is None else adversary.module
    for batch in batches:
        x, c = unpack_batch(batch, device)
        with autocast(device, mixed_precision):
            parts = compute_loss(model, x, c, objective, step, discriminator)
        if not torch.isfinite(parts.total):
            raise FloatingPointError(f"training loss is {parts.total.item()} at step {step}; lower the lr")
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if adversary is not None:
            with autocast(device, mixed_precision):
                parts.extras["adv_discriminator"] = adversary.step(_encoded(parts))
        step += 1
        totals.add(parts, x.shape[0])
    return totals.stats(step)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    objective: ObjectiveConfig,
    *,
    device: torch.device | str = "cpu",
    mixed_precision: bool = False,
    adversary: Adversary | None = None,
) -> EpochStats:
    """The objective over `batches` without gradients, at full beta (no warm-up); with an `adversary` (AAE)
    also its discriminator's loss on these rows."""
    model.eval()
    totals = _Totals()
    discriminator = None if adversary is None else adversary.module
    for batch in batches:
        x, c = unpack_batch(batch, device)
        with autocast(device, mixed_precision):
            parts = compute_loss(model, x, c, objective, step=None, discriminator=discriminator)
            if adversary is not None:
                parts.extras["adv_discriminator"] = adversary.loss(_encoded(parts))
        totals.add(parts, x.shape[0])
    return totals.stats(step=0)


class EarlyStopping:
    """Stops after `patience` epochs in which the monitored value did not drop by more than `min_delta`."""

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True when it is a new best."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience
