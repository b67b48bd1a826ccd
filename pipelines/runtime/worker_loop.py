"""The Ray Train worker loop: DDP over Ray Data shards, per-epoch validation, checkpoints, resume.

Every rank trains on its shard and reports each epoch; rank 0 attaches the checkpoint (a saved
Detector plus the optimiser state) and logs the epoch to MLflow, so metrics appear once per epoch.
"""

from __future__ import annotations

import logging
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
from sklearn.metrics import roc_auc_score

from pipelines.tracking.runs import EpochLogger
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

DETECTOR_DIR = "detector"
STATE_FILE = "train_state.pt"
SHUFFLE_BUFFER = 4096


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
    tracking_uri: str
    run_id: str
    checkpoint_metric: tuple[str, str] = ("val_loss", "min")  # what the kept checkpoints are ranked by
    nll_samples: int = 0  # > 0: also report val_nll, the importance-sampled NLL of the validation rows
    auroc: bool = False  # also report val_auroc, the anomaly score's AUROC against the validation labels
    progress: bool = True  # print an epoch line (a sweep prints its own per-trial lines instead)


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


def selection_metrics(model: VAE, shard, spec: LoopSpec, batch_size: int, device: torch.device) -> dict[str, float]:
    """Metrics that compare runs whatever their beta or objective, over all ranks' validation rows:
    val_nll (mean importance-sampled -log p(x), `spec.nll_samples` draws) and, with `spec.auroc`, val_auroc."""
    nll_config = ScoreConfig(kind="nll", samples=spec.nll_samples)
    score_config = from_dict(ScoreConfig, spec.score)
    nll_sum, rows, scores, labels = 0.0, 0, [], []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        x, c = batch["x"], batch.get("c")
        nll = score_rows(model, x, c, nll_config, batch_size=batch_size).score
        nll_sum, rows = nll_sum + float(nll.sum()), rows + len(nll)
        if spec.auroc:
            scores.append(score_rows(model, x, c, score_config, batch_size=batch_size).score)
            labels.append(np.asarray(batch["label"]))
    nll_sum, rows = _sum_over_ranks([nll_sum, rows], device)
    metrics = {"val_nll": nll_sum / max(rows, 1)}
    if spec.auroc:
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


def train_loop_per_worker(spec_dict: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point; returns (on rank 0) how the run went."""
    # Ray Train logs every report of every rank at INFO, partly through loggers named by file path: keep the
    # console to warnings, so the epoch lines below are the progress report.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    spec = LoopSpec(**spec_dict)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    train_cfg: TrainConfig = from_dict(TrainConfig, spec.train)
    objective: ObjectiveConfig = from_dict(ObjectiveConfig, spec.objective)
    torch.manual_seed(train_cfg.seed)

    model = VAE(from_dict(ModelConfig, spec.model), from_dict(DataLayout, spec.layout))
    optimizer_state, adversary_state, start_epoch, step = None, None, 0, 0
    stopper = EarlyStopping(train_cfg.patience, train_cfg.min_delta)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            model.load_state_dict(load_detector(Path(directory) / DETECTOR_DIR).model.state_dict())
            state = torch.load(Path(directory) / STATE_FILE, weights_only=True)
        optimizer_state, start_epoch, step = state["optimizer"], state["epoch"] + 1, state["step"]
        adversary_state = state.get("adversary")
        stopper.best, stopper.best_epoch, stopper.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        if rank == 0:
            _progress(f"resuming from the checkpoint of epoch {state['epoch'] + 1}")

    module = model  # the plain VAE, for checkpoints; `model` becomes the DDP wrapper
    model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(model, train_cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    # An AAE's discriminator: DDP-wrapped too, so its gradients are averaged and the ranks stay in step.
    adversary = Adversary.for_objective(objective, module.config.latent_dim, ray.train.torch.prepare_model,
                                        adversary_state)  # fmt: skip

    detector = Detector(
        module,
        preprocessor_from_dict(spec.preprocessor),
        from_dict(ScoreConfig, spec.score),
        condition=None if spec.condition is None else Preprocessor.from_dict(spec.condition),
        objective=objective,
    )
    logger = EpochLogger(spec.tracking_uri, spec.run_id) if rank == 0 else None
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    amp = train_cfg.mixed_precision
    epoch = start_epoch - 1
    for epoch in range(start_epoch, train_cfg.epochs):
        if stopper.should_stop:
            break
        batches = train_shard.iter_torch_batches(
            batch_size=train_cfg.batch_size, local_shuffle_buffer_size=SHUFFLE_BUFFER,
            local_shuffle_seed=train_cfg.seed + epoch,
        )  # fmt: skip
        train = _global(
            train_epoch(model, batches, optimizer, objective, device=device, step=step, grad_clip=train_cfg.grad_clip,
                        mixed_precision=amp, adversary=adversary),
            device,
        )  # fmt: skip
        step = train.step
        val = _global(
            evaluate(model, val_shard.iter_torch_batches(batch_size=train_cfg.batch_size), objective, device=device,
                     mixed_precision=amp, adversary=adversary),
            device,
        )  # fmt: skip
        if kl_warmup_done(objective, step):  # an epoch inside the KL warm-up does not count towards patience
            stopper.update(val.loss, epoch)
        metrics = {"epoch": epoch + 1, **epoch_metrics(train, val)}
        if spec.nll_samples:
            metrics |= selection_metrics(module, val_shard, spec, train_cfg.batch_size, device)
        if rank == 0:
            if spec.progress:
                _progress(format_epoch(epoch + 1, train_cfg.epochs, train, val))
            logger.log(epoch + 1, {k: v for k, v in metrics.items() if k != "epoch"})
            with tempfile.TemporaryDirectory() as tmp:
                _save_checkpoint(Path(tmp), detector, optimizer, adversary, epoch, step, stopper)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
    divergence = replica_divergence([module] if adversary is None else [module, adversary.module], device)
    if rank == 0:
        if stopper.should_stop and spec.progress:
            _progress(f"early stop after epoch {epoch + 1}: no improvement for {stopper.bad_epochs} epochs")
        logger.log(epoch + 1, {"replica_divergence": divergence})
        return {"last_epoch": epoch + 1, "best_epoch": stopper.best_epoch + 1, "stopped_early": stopper.should_stop}
    return None
