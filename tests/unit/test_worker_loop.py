"""The Ray Train worker loop run in this process, one rank, with Ray Train's session calls stood in for: every
epoch is reported with a checkpoint, and a run restarted from one goes on where it stopped. No Ray is started."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import ray.train
import ray.train.torch
import torch

from pipelines.runtime import worker_loop
from pipelines.runtime.shard_batches import ShardBatches
from pipelines.tracking import runs
from vae import (
    VAE,
    DataLayout,
    ModelConfig,
    ObjectiveConfig,
    Preprocessor,
    ScoreConfig,
    TrainConfig,
    from_dict,
    score_rows,
    to_dict,
)

EPOCHS = 3


class Shard:
    """What the loop reads of a Ray Data shard: torch batches (shuffled by seed) and numpy batches."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x.astype(np.float32)

    def iter_torch_batches(
        self, batch_size, prefetch_batches=1, local_shuffle_buffer_size=None, local_shuffle_seed=None
    ):
        order = np.random.default_rng(local_shuffle_seed).permutation(len(self.x))
        for start in range(0, len(order), batch_size):
            yield {"x": torch.tensor(self.x[order[start : start + batch_size]])}

    def iter_batches(self, batch_size, batch_format="numpy"):
        for start in range(0, len(self.x), batch_size):
            yield {"x": self.x[start : start + batch_size]}


class Session:
    """Ray Train's side of one run: the shards, the checkpoint it starts from, and what the loop reports."""

    def __init__(self, root: Path, x: np.ndarray, checkpoint: ray.train.Checkpoint | None = None) -> None:
        self.root, self.checkpoint = root, checkpoint
        self.shards = {"train": Shard(x[40:]), "validation": Shard(x[:40])}
        self.reports: list[tuple[dict, Path | None]] = []

    def report(self, metrics: dict, checkpoint: ray.train.Checkpoint | None = None) -> None:
        kept = None
        if checkpoint is not None:  # the loop deletes its directory after the call: keep a copy, as Ray Train does
            kept = self.root / f"checkpoint-{len(self.reports)}"
            shutil.copytree(checkpoint.path, kept)
        self.reports.append((dict(metrics), kept))

    def run(self, monkeypatch, spec: dict) -> dict | None:
        rank_zero = type("Context", (), {"get_world_rank": lambda self: 0})()
        monkeypatch.setattr(ray.train, "get_context", lambda: rank_zero)
        monkeypatch.setattr(ray.train, "get_checkpoint", lambda: self.checkpoint)
        monkeypatch.setattr(ray.train, "get_dataset_shard", self.shards.__getitem__)
        monkeypatch.setattr(ray.train, "report", self.report)
        monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))
        monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model: model)
        monkeypatch.setattr(runs, "EpochLogger", None)  # the workers never log to MLflow: importing it fails
        return worker_loop.train_loop_per_worker(spec)


@pytest.fixture
def spec_and_rows() -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(0)
    table = {f"f{i}": rng.normal(size=200) for i in range(4)}
    pre = Preprocessor(numeric=list(table)).fit(table)
    spec = worker_loop.LoopSpec(
        model=to_dict(ModelConfig(latent_dim=2, hidden_dims=(8,))), layout=to_dict(DataLayout(pre.layout_blocks())),
        objective=to_dict(ObjectiveConfig()), train=to_dict(TrainConfig(epochs=EPOCHS, batch_size=32, lr=1e-2)),
        score=to_dict(ScoreConfig()), preprocessor=pre.to_dict(), condition=None, nll_samples=4, progress=False,
    )  # fmt: skip
    return vars(spec), pre.transform(table)


def test_every_epoch_is_reported_with_a_checkpoint(monkeypatch, tmp_path, spec_and_rows):
    spec, x = spec_and_rows
    session = Session(tmp_path, x)
    outcome = session.run(monkeypatch, dict(spec))
    assert outcome == {"last_epoch": EPOCHS, "best_epoch": outcome["best_epoch"], "stopped_early": False,
                       "replica_divergence": 0.0}  # fmt: skip
    assert [metrics["epoch"] for metrics, _ in session.reports] == list(range(1, EPOCHS + 1))
    assert all(kept is not None and (kept / worker_loop.STATE_FILE).is_file() for _, kept in session.reports)
    assert all(np.isfinite(m["val_loss"]) and np.isfinite(m["val_nll"]) for m, _ in session.reports)


def test_a_restarted_run_goes_on_from_the_epoch_after_its_checkpoint(monkeypatch, tmp_path, spec_and_rows):
    spec, x = spec_and_rows
    first = Session(tmp_path / "first", x)
    first.run(monkeypatch, dict(spec))
    _, after_epoch_one = first.reports[0]
    restarted = Session(tmp_path / "restarted", x, ray.train.Checkpoint.from_directory(str(after_epoch_one)))
    outcome = restarted.run(monkeypatch, dict(spec))
    assert outcome["last_epoch"] == EPOCHS
    assert [metrics["epoch"] for metrics, _ in restarted.reports] == list(range(2, EPOCHS + 1))
    state = torch.load(restarted.reports[0][1] / worker_loop.STATE_FILE, weights_only=True)
    saved = torch.load(after_epoch_one / worker_loop.STATE_FILE, weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 2 * saved["step"]  # the optimiser steps go on counting


def test_an_early_stop_reports_the_last_epoch_that_ran(monkeypatch, tmp_path, spec_and_rows):
    spec, x = spec_and_rows
    train = {**spec["train"], "epochs": 10, "patience": 1, "min_delta": 1e9}  # no epoch after the first improves
    session = Session(tmp_path, x)
    outcome = session.run(monkeypatch, {**spec, "train": train})
    assert outcome["last_epoch"] == 2 and outcome["best_epoch"] == 1 and outcome["stopped_early"]
    assert len(session.reports) == 2


def test_epochs_inside_the_kl_warm_up_rank_last_among_the_checkpoints(monkeypatch, tmp_path, spec_and_rows):
    spec, x = spec_and_rows  # 160 training rows in batches of 32: 5 steps per epoch
    session = Session(tmp_path, x)
    session.run(monkeypatch, {**spec, "objective": {**spec["objective"], "kl_warmup_steps": 6}})
    scores = [metrics[worker_loop.CHECKPOINT_SCORE] for metrics, _ in session.reports]
    assert scores[0] == np.inf and scores[1:] == [m["val_loss"] for m, _ in session.reports[1:]]
    assert worker_loop.checkpoint_score(0.5, "max", warmed_up=False) == -np.inf


class InOrder:
    """A shard that yields its rows in order and counts the batches it gave."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.given = torch.tensor(x, dtype=torch.float32), 0

    def iter_torch_batches(self, batch_size, **_shuffle):
        for start in range(0, len(self.x), batch_size):
            self.given += 1
            yield {"x": self.x[start : start + batch_size]}


@pytest.mark.parametrize("budget_bytes", [0, 1 << 20], ids=["streamed", "kept in memory"])
def test_selection_metrics_score_only_the_first_selection_rows(spec_and_rows, budget_bytes):
    spec, x = spec_and_rows
    spec = worker_loop.LoopSpec(**{**spec, "selection_rows": 50})
    module = VAE(from_dict(ModelConfig, spec.model), from_dict(DataLayout, spec.layout))
    shard = ShardBatches(InOrder(x), budget_bytes)
    list(shard.batches(32))  # the epoch's validation pass, which keeps the shard when it fits
    shard.shard.given = 0
    torch.manual_seed(0)
    metrics = worker_loop.selection_metrics(module, shard, spec, 32, torch.device("cpu"))
    torch.manual_seed(0)  # the same importance samples, drawn for the same rows in the same batches
    first = torch.tensor(x[:50], dtype=torch.float32)
    nll = [
        score_rows(module, part, None, ScoreConfig(kind="nll", samples=4), 32).score
        for part in (first[:32], first[32:])
    ]
    assert metrics["val_nll"] == pytest.approx(float(np.concatenate(nll).mean()), rel=1e-6)
    # a streamed pass is read to its end (200 rows: 7 batches); the kept rows are not even looked at past row 50
    assert shard.shard.given == (7 if budget_bytes == 0 else 0)
