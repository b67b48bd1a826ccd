"""The Ray Train worker loop: DDP over Ray Data shards, per-epoch validation, checkpoints, resume.

Every rank trains on its shard and reports each epoch; rank 0 attaches the checkpoint (a saved
Detector plus the optimiser state). The workers never touch MLflow: Ray Train's controller logs each epoch once its
checkpoint is stored (`distributed_run.EpochReports`), and the driver logs what the run returns.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from vae import (
    VAE,
    Adversary,
    DataLayout,
    Detector,
    EarlyStopping,
    EpochStats,
    ModelConfig,
    ObjectiveConfig,
    Preprocessor,
    ScoreConfig,
    TrainConfig,
    build_optimizer,
    epoch_metrics,
    evaluate,
    format_epoch,
    from_dict,
    kl_warmup_done,
    load_detector,
    preprocessor_from_dict,
    save_detector,
    score_rows,
    train_epoch,
)

from .cluster import logger_levels
from .shard_batches import ShardBatches

DETECTOR_DIR = "detector"
STATE_FILE = "train_state.pt"


@dataclass
class LoopSpec:
    """What every worker needs, as plain data (it crosses process boundaries)."""

    model: dict[str, Any]
    layout: dict[str, Any]
    objective: dict[str, Any]
    train: dict[str, Any]
    score: dict[str, Any]
    preprocessor: dict[str, Any]
    condition: dict[str, Any] | None
    checkpoint_metric: tuple[str, str] = ("val_loss", "min")  # what the kept checkpoints are ranked by (as
    # CHECKPOINT_SCORE: the metric once the KL warm-up is over, the worst value before)
    nll_samples: int = 0  # > 0: also report val_nll, the importance-sampled NLL of the validation rows
    auroc: bool = False  # also report val_auroc, the anomaly score's AUROC against the validation labels
    selection_rows: int = 0  # > 0: val_nll / val_auroc over at most this many validation rows, all ranks together
    progress: bool = True  # print an epoch line (a sweep prints its own per-trial lines instead)
    shard_memory_bytes: int = 0  # > 0: a worker keeps each split's shard in memory after one pass when it fits


CHECKPOINT_SCORE = "checkpoint_score"


def checkpoint_score(value: float, mode: str, warmed_up: bool) -> float:
    """An epoch's rank among the checkpoints: its metric `value`, or the worst possible value for `mode` ("min" /
    "max") while the KL warm-up lasts, so that an epoch trained at a lower beta is never the best one."""
    if warmed_up:
        return value
    return math.inf if mode == "min" else -math.inf


def _global(stats: EpochStats, device: torch.device) -> EpochStats:
    """Row-weighted means over all ranks (the slowest rank's time): every rank gets the same numbers.
    Every rank runs the same objective, so every rank has the same `extras` names."""
    if not (dist.is_available() and dist.is_initialized()):
        return stats
    names = sorted(stats.extras)
    means = [stats.loss, stats.recon, stats.kl, *(stats.extras[name] for name in names)]
    sums = torch.tensor([*(m * stats.rows for m in means), stats.rows], device=device, dtype=torch.float64)
    seconds = torch.tensor([stats.seconds], device=device, dtype=torch.float64)
    dist.all_reduce(sums)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    rows = int(sums[-1].item())
    loss, recon, kl, *extras = (s / max(rows, 1) for s in sums[:-1].tolist())
    return EpochStats(loss, recon, kl, rows, seconds.item(), stats.step, dict(zip(names, extras, strict=True)))


def _sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    totals = torch.tensor(values, device=device, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    return totals.tolist()


def replica_divergence(modules: list[torch.nn.Module], device: torch.device) -> float:
    """The largest absolute difference between any rank's parameters of `modules` and rank 0's: 0 while DDP keeps
    the replicas in step (the VAE and an AAE's discriminator alike); every rank must call it."""
    flat = torch.cat([p.detach().flatten().double() for m in modules for p in m.parameters()]).to(device)
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    gap = (flat - reference).abs().max()
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    return gap.item()


def _gather(array: np.ndarray) -> np.ndarray:
    """The concatenation of every rank's `array` (N_rank,) in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return array
    parts: list[np.ndarray | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def selection_metrics(
    model: VAE, shard: ShardBatches, spec: LoopSpec, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Metrics that compare runs whatever their beta or objective, over the ranks' validation rows: val_nll (mean
    importance-sampled -log p(x), `spec.nll_samples` draws) and, with `spec.auroc`, val_auroc.

    With `spec.selection_rows` each rank scores only the first ceil(selection_rows / ranks) rows of its shard in
    order (the same rows every epoch once the shard is kept in memory), so the cost per epoch and the scores
    gathered for the AUROC stay bounded however large the validation split is."""
    nll_config = ScoreConfig(kind="nll", samples=spec.nll_samples)
    score_config = from_dict(ScoreConfig, spec.score)
    ranks = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    limit = math.ceil(spec.selection_rows / ranks) if spec.selection_rows > 0 else math.inf
    nll_sum, rows, scores, labels = 0.0, 0, [], []
    for batch in shard.batches(batch_size):
        if rows >= limit:
            if shard.in_memory:
                break
            continue  # a streamed pass is read to its end: an abandoned split iterator would stall the others
        batch = {name: t[: int(min(len(t), limit - rows))] for name, t in batch.items()}
        x, c = batch["x"], batch.get("c")
        observed = batch["observed"].cpu() if "observed" in batch else None  # missing features left out
        nll = score_rows(model, x, c, nll_config, batch_size=batch_size, observed=observed).score
        nll_sum, rows = nll_sum + float(nll.sum()), rows + len(nll)
        if spec.auroc:
            scores.append(score_rows(model, x, c, score_config, batch_size=batch_size, observed=observed).score)
            labels.append(batch["label"].cpu().numpy())
    nll_sum, rows = _sum_over_ranks([nll_sum, rows], device)
    metrics = {"val_nll": nll_sum / max(rows, 1)}
    if spec.auroc:
        from sklearn.metrics import roc_auc_score  # here: a worker that never needs it skips a 1 s import

        y = _gather(np.concatenate(labels) if labels else np.zeros(0)).astype(int)
        s = _gather(np.concatenate(scores) if scores else np.zeros(0))
        metrics["val_auroc"] = float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else float("nan")
    return metrics


def _save_checkpoint(
    directory: Path, detector: Detector, optimizer, adversary: Adversary | None, epoch: int, step: int, stopper
) -> None:
    save_detector(detector, directory / DETECTOR_DIR)
    state = {
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "best": stopper.best,
        "best_epoch": stopper.best_epoch,
        "bad_epochs": stopper.bad_epochs,
    }
    if adversary is not None:
        state["adversary"] = adversary.state_dict()
    torch.save(state, directory / STATE_FILE)


def _progress(line: str) -> None:
    """One line to the driver's console (Ray Train's patched print would log it twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class Resumed:
    """Where a run restarted from a checkpoint goes on; a fresh run starts at epoch 0, step 0, with no saved state."""

    start_epoch: int = 0
    step: int = 0  # optimiser steps so far (the KL warm-up counts them)
    optimizer: dict[str, Any] | None = None
    adversary: dict[str, Any] | None = None


class WorkerRun:
    """One rank's side of a training run, in the steps the loop takes: restore the last checkpoint (if any), build
    the DDP model, its optimiser and an AAE's adversary, then per epoch `run_epoch` and `report`, then `finish`."""

    def __init__(self, spec: LoopSpec) -> None:
        self.spec = spec
        self.rank = ray.train.get_context().get_world_rank()
        self.device = ray.train.torch.get_device()
        self.config: TrainConfig = from_dict(TrainConfig, spec.train)
        self.objective: ObjectiveConfig = from_dict(ObjectiveConfig, spec.objective)
        torch.manual_seed(self.config.seed)
        self.module = VAE(from_dict(ModelConfig, spec.model), from_dict(DataLayout, spec.layout))  # the plain VAE
        self.stopper = EarlyStopping(self.config.patience, self.config.min_delta)
        resumed = self.restore_checkpoint()
        self.start_epoch, self.step = resumed.start_epoch, resumed.step
        self.model, self.optimizer, self.adversary = self.build(resumed)
        self.detector = Detector(
            self.module, preprocessor_from_dict(spec.preprocessor), from_dict(ScoreConfig, spec.score),
            condition=None if spec.condition is None else Preprocessor.from_dict(spec.condition),
            objective=self.objective,
        )  # fmt: skip
        self.train_rows = ShardBatches(ray.train.get_dataset_shard("train"), spec.shard_memory_bytes)
        self.val_rows = ShardBatches(ray.train.get_dataset_shard("validation"), spec.shard_memory_bytes)

    def restore_checkpoint(self) -> Resumed:
        """Load the run's last checkpoint, if any, into the plain VAE and the early stopping; where the run goes on."""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return Resumed()
        with checkpoint.as_directory() as directory:
            self.module.load_state_dict(load_detector(Path(directory) / DETECTOR_DIR).model.state_dict())
            state = torch.load(Path(directory) / STATE_FILE, weights_only=True)
        stopper = self.stopper
        stopper.best, stopper.best_epoch, stopper.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        if self.rank == 0:
            _progress(f"resuming from the checkpoint of epoch {state['epoch'] + 1}")
        return Resumed(state["epoch"] + 1, state["step"], state["optimizer"], state.get("adversary"))

    def build(self, resumed: Resumed) -> tuple[torch.nn.Module, torch.optim.Optimizer, Adversary | None]:
        """The DDP wrapper of the VAE, its optimiser and an AAE's adversary, with the states `resumed` holds."""
        model = ray.train.torch.prepare_model(self.module)
        optimizer = build_optimizer(model, self.config)
        if resumed.optimizer is not None:
            optimizer.load_state_dict(resumed.optimizer)
        # An AAE's discriminator: DDP-wrapped too, so its gradients are averaged and the ranks stay in step.
        adversary = Adversary.for_objective(self.objective, self.module.config.latent_dim,
                                            ray.train.torch.prepare_model, resumed.adversary)  # fmt: skip
        return model, optimizer, adversary

    def run_epoch(self, epoch: int) -> tuple[dict[str, float], EpochStats, EpochStats]:
        """Train on this rank's shard, validate, both as means over all ranks, and update the early stopping.
        Returns the epoch's metrics (the same on every rank) and its training and validation stats."""
        config, objective, device, amp = self.config, self.objective, self.device, self.config.mixed_precision
        batches = self.train_rows.batches(config.batch_size, seed=config.seed + epoch)
        train = _global(
            train_epoch(self.model, batches, self.optimizer, objective, device=device, step=self.step,
                        grad_clip=config.grad_clip, mixed_precision=amp, adversary=self.adversary),
            device,
        )  # fmt: skip
        self.step = train.step
        val = _global(
            evaluate(self.model, self.val_rows.batches(config.batch_size), objective, device=device,
                     mixed_precision=amp, adversary=self.adversary),
            device,
        )  # fmt: skip
        warmed_up = kl_warmup_done(objective, self.step)
        if warmed_up:  # an epoch inside the KL warm-up does not count towards patience
            self.stopper.update(val.loss, epoch)
        metrics = {"epoch": epoch + 1, **epoch_metrics(train, val)}
        if self.spec.nll_samples:
            metrics |= selection_metrics(self.module, self.val_rows, self.spec, config.batch_size, device)
        metric, mode = self.spec.checkpoint_metric
        metrics[CHECKPOINT_SCORE] = checkpoint_score(metrics[metric], mode, warmed_up)
        return metrics, train, val

    def report(self, epoch: int, metrics: dict[str, float], train: EpochStats, val: EpochStats) -> None:
        """Every rank reports the epoch to Ray Train; rank 0 also prints its line and attaches the checkpoint."""
        if self.rank != 0:
            ray.train.report(metrics)
            return
        if self.spec.progress:
            _progress(format_epoch(epoch + 1, self.config.epochs, train, val))
        with tempfile.TemporaryDirectory() as tmp:
            _save_checkpoint(Path(tmp), self.detector, self.optimizer, self.adversary, epoch, self.step, self.stopper)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def finish(self, epoch: int) -> dict[str, Any] | None:
        """After the loop (`epoch`: the last epoch run, counted from 0): every rank measures how far the replicas
        drifted apart; rank 0 returns it with how the run went."""
        modules = [self.module] if self.adversary is None else [self.module, self.adversary.module]
        divergence = replica_divergence(modules, self.device)
        if self.rank != 0:
            return None
        stopper = self.stopper
        if stopper.should_stop and self.spec.progress:
            _progress(f"early stop after epoch {epoch + 1}: no improvement for {stopper.bad_epochs} epochs")
        return {
            "last_epoch": epoch + 1,
            "best_epoch": stopper.best_epoch + 1,
            "stopped_early": stopper.should_stop,
            "replica_divergence": divergence,
        }


def train_loop_per_worker(spec_dict: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point; returns (on rank 0) how the run went."""
    # Ray Train logs every report of every rank at INFO, partly through loggers named by file path: while the loop
    # runs, this worker's console keeps to warnings (the root logger and `ray.train`), so the epoch lines are the
    # progress report; both loggers get their own levels back when it returns.
    with logger_levels(logging.WARNING, None, "ray.train"):
        worker = WorkerRun(LoopSpec(**spec_dict))
        last = worker.start_epoch - 1
        for epoch in range(worker.start_epoch, worker.config.epochs):
            if worker.stopper.should_stop:
                break
            worker.report(epoch, *worker.run_epoch(epoch))
            last = epoch
        return worker.finish(last)
