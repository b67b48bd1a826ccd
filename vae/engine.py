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


def unpack_batch(
    batch: Batch, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(x, c, observed) on `device` from any supported batch form, x and c as float32, the (B, F) bool `observed`
    mask (a mapping's "observed", `vae.preprocessing.observed_features`) as bool; c and observed None when
    absent."""
    observed = None
    if isinstance(batch, Mapping):
        x, c, observed = batch["x"], batch.get("c"), batch.get("observed")
    elif isinstance(batch, (tuple, list)):
        x, c = batch
    else:
        x, c = batch, None
    x = x.to(device, dtype=torch.float32, non_blocking=True)
    c = None if c is None else c.to(device, dtype=torch.float32, non_blocking=True)
    return x, c, None if observed is None else torch.as_tensor(observed).to(device, dtype=torch.bool)


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
    """An epoch's running sums, kept as tensors on the batches' device and read once, in `stats`: adding a batch
    never waits for the device (no `.item()` per step). Also the first step whose loss was not finite."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}  # "loss", "recon", "kl" and the variant's extras: sum over rows
        self.rows = 0
        self.bad: torch.Tensor | None = None  # (2,) [step, loss] of the first non-finite loss; step -1: none yet
        self.start = time.perf_counter()

    def add(self, parts: LossParts, rows: int, step: int | None = None) -> None:
        """Add a batch of `rows` rows; with `step` (training), note the step if its total is not finite."""
        values = {"loss": parts.total, "recon": parts.recon, "kl": parts.kl, **parts.extras}
        for name, value in values.items():
            value = value.detach().float() * rows
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        if step is not None:
            total = parts.total.detach().float()
            if self.bad is None:
                self.bad = torch.tensor([-1.0, 0.0], device=total.device)
            first = (self.bad[0] < 0) & ~torch.isfinite(total)
            self.bad = torch.where(first, torch.stack([torch.full_like(total, step), total]), self.bad)
        self.rows += rows

    def check_finite(self) -> None:
        """Raise FloatingPointError naming the first step whose training loss was NaN or infinite."""
        if self.bad is not None:
            step, loss = self.bad.tolist()
            if step >= 0:
                raise FloatingPointError(f"training loss is {loss} at step {int(step)}; lower the lr")

    def stats(self, step: int) -> EpochStats:
        n = max(self.rows, 1)
        seconds = time.perf_counter() - self.start
        names = list(self.sums)
        means = (torch.stack([self.sums[name] for name in names]) / n).tolist() if names else []
        values = dict(zip(names, means, strict=True))
        loss, recon, kl = (values.pop(name, 0.0) for name in ("loss", "recon", "kl"))
        return EpochStats(loss, recon, kl, self.rows, seconds, step, values)


def _encoded(parts: LossParts) -> torch.Tensor:
    """The detached latents (S * B, L) of an AAE objective's parts, which its discriminator learns from."""
    if not isinstance(parts, AAEParts):
        raise ValueError("an adversary trains with the adversarial autoencoder objective only (objective.kind=aae)")
    return parts.encoded


def _batch_loss(
    model: torch.nn.Module,
    batch: Batch,
    objective: ObjectiveConfig,
    device: torch.device | str,
    mixed_precision: bool,
    step: int | None,
    discriminator: torch.nn.Module | None,
) -> tuple[int, LossParts]:
    """One batch moved to `device` and its loss under autocast: (rows, parts); `step` None means full beta."""
    x, c, observed = unpack_batch(batch, device)
    with autocast(device, mixed_precision):
        return x.shape[0], compute_loss(model, x, c, objective, step, discriminator, observed)


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
    Raises FloatingPointError at the end of the epoch when the loss became NaN or infinite, naming the first such
    step (checked on the device, so no step waits for it).
    """
    model.train()
    totals = _Totals()
    discriminator = None if adversary is None else adversary.module
    for batch in batches:
        rows, parts = _batch_loss(model, batch, objective, device, mixed_precision, step, discriminator)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if adversary is not None:
            with autocast(device, mixed_precision):
                parts.extras["adv_discriminator"] = adversary.step(_encoded(parts))
        totals.add(parts, rows, step)
        step += 1
    totals.check_finite()
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
        rows, parts = _batch_loss(model, batch, objective, device, mixed_precision, None, discriminator)
        if adversary is not None:
            with autocast(device, mixed_precision):
                parts.extras["adv_discriminator"] = adversary.loss(_encoded(parts))
        totals.add(parts, rows)
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
