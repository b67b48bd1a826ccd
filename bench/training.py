"""Table 1: training throughput of the Ray Train pipeline (1 and 2 workers) against a plain single-process loop
on the same model, rows and batch size (rows of `11_donors.npz`); 1b: where a run's wall time goes; 1c: the demo's
sweep (`bench.trial_startup`).

Ray side: `pipelines.commands.train.run` on a running local Ray (start-up excluded); its workers log each epoch's
training-pass `rows_per_s` (all ranks' rows over the slowest rank's seconds) to MLflow, read back here.
Plain side: `vae.fit` over in-memory tensors. Both: the median over epochs after the first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.commands import train
from pipelines.runtime.parquet_input import SPLIT_BUCKETS, split_bucket
from pipelines.settings.yaml_configs import TrainPipelineConfig
from pipelines.tracking.runs import Tracker
from vae import VAE, DataLayout, ModelConfig, ObjectiveConfig, Preprocessor, TrainConfig, fit, from_dict

from . import trial_startup
from .context import Setup, feature_names, rows_table, steady, write_rows
from .tables import Table, num, target

ROWS, QUICK_ROWS = 100_000, 2_000
EPOCHS, QUICK_EPOCHS = 3, 2
BATCH_SIZES, QUICK_BATCH_SIZES = (256, 1024), (256,)  # rows per step (per worker on the Ray side)
LR = 1e-3
VALIDATION_FRACTION = 0.1
MODEL = {"latent_dim": 8, "hidden_dims": [64, 64]}
TARGET_RATIO = 0.9  # Ray Train with 1 worker against the plain loop with the same CPU share (1 thread)
TARGET_SCALING = 1.5  # 2 workers against 1
TARGET_WALL = 2.0  # a whole run against its epochs' training passes
PHASES = ("prepare_s", "train_s", "validation_s", "register_s")  # what `pipelines.commands.train` logs


@dataclass
class RayRun:
    """One `pipelines.commands.train.run`: its steady training-pass rate, the epochs that counts, its wall seconds,
    the seconds of its epochs' training passes and the phases it logged."""

    rate: float
    counted: int
    wall: float
    passes_s: float
    phases: dict[str, float]


def _split(frame, columns: list[str]) -> tuple[np.ndarray, np.ndarray, DataLayout]:
    """Encoded train (N, d) and validation rows, split by the pipeline's hash of `row_id` and standardised with
    training statistics as `pipelines.commands.train` does, and their layout."""
    in_validation = split_bucket(frame, ("row_id",), 0) < int(VALIDATION_FRACTION * SPLIT_BUCKETS)
    pre = Preprocessor(numeric=columns).fit(frame[~in_validation])
    layout = DataLayout(pre.layout_blocks())
    return pre.transform(frame[~in_validation]), pre.transform(frame[in_validation]), layout


def plain_run(train_x, val_x, layout: DataLayout, epochs: int, threads: int, setup: Setup, bf16: bool, batch: int):
    """Steady training-pass rows/s and epochs counted, of `vae.fit` with `threads` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = VAE(from_dict(ModelConfig, MODEL), layout)
        config = TrainConfig(epochs=epochs, batch_size=batch, lr=LR, patience=None, mixed_precision=bf16)
        history = fit(model, train_x, val_x, ObjectiveConfig(), config, device=setup.device, log=None).history
    finally:
        torch.set_num_threads(previous)
    return steady([h["rows_per_s"] for h in history])


def pipeline_run(
    path: str, columns: list[str], epochs: int, workers: int, setup: Setup, bf16: bool, batch: int
) -> RayRun:
    """`pipelines.commands.train.run`, timed, with what it logged to MLflow read back."""
    name = f"bench-train-{workers}w-{batch}{'-bf16' if bf16 else ''}"
    config = from_dict(TrainPipelineConfig, {
        "data": {"path": path, "numeric": columns, "key": ["row_id"], "validation_fraction": VALIDATION_FRACTION},
        "model": MODEL,
        "train": {"epochs": epochs, "batch_size": batch, "lr": LR, "patience": None, "mixed_precision": bf16},
        "scaling": {"num_workers": workers, "use_gpu": setup.cuda, "cpus_per_worker": 1.0},
        "run": {"name": name, "storage_path": str(setup.workdir / "runs"), "max_failures": 0},
        "tracking": {"tracking_uri": setup.tracking_uri, "experiment": "bench-training", "model_name": name},
    })  # fmt: skip
    started = time.perf_counter()
    outcome = train.run(config)
    wall = time.perf_counter() - started
    tracker = Tracker(config.tracking)
    tracker.run_id = outcome.run_id
    history = tracker.metric_history(["rows_per_s", "train_rows", *PHASES])
    rates = [value for _, value in history["rows_per_s"]]
    passes = sum(rows / rate for (_, rows), rate in zip(history["train_rows"], rates, strict=True))
    phases = {name: history[name][-1][1] for name in PHASES}
    return RayRun(*steady(rates), wall, passes, phases)


def _worker_counts(setup: Setup) -> tuple[int, ...]:
    """1 and 2 workers; 1 in quick mode (each run starts a worker group) or with a single GPU."""
    if setup.quick or (setup.cuda and torch.cuda.device_count() < 2):
        return (1,)
    return (1, 2)


@dataclass
class Inputs:
    """The table's rows as the pipeline reads them (a Parquet directory and its feature columns) and as the plain
    loop takes them (encoded train (N, d) and validation rows, split and standardised as the pipeline does)."""

    path: str
    columns: list[str]
    rows: int
    width: int
    train_x: np.ndarray
    val_x: np.ndarray
    layout: DataLayout


def inputs(setup: Setup) -> Inputs:
    """The first ROWS (QUICK_ROWS) rows of 11_donors.npz, written to the scratch directory."""
    rows = QUICK_ROWS if setup.quick else ROWS
    x, _ = setup.tabular("donors")
    frame = rows_table(x[:rows], rows)
    columns = feature_names(x.shape[1])
    path = str(write_rows(x[:rows], rows, setup.workdir / "training-rows", rows_per_file=50_000))
    return Inputs(path, columns, rows, x.shape[1], *_split(frame, columns))


def run(setup: Setup) -> list[Table]:
    epochs = QUICK_EPOCHS if setup.quick else EPOCHS
    data = inputs(setup)
    path, columns, train_x, val_x, layout = data.path, data.columns, data.train_x, data.val_x, data.layout

    table = Table(
        "Table 1. Training throughput: Ray Train pipeline vs a plain PyTorch loop",
        ["side", "batch", "workers x threads", "precision", "steady epochs", "train rows/s", "s / epoch",
         "vs plain (1 thread)", "target", "vs 1 worker", "target (2 workers)", "run wall s"],
    )  # fmt: skip
    phases = Table(
        "Table 1b. Where a training run's wall time goes (`pipelines.commands.train.run`, fp32)",
        ["run", "prepare s", "Ray Train s", "of which training passes s", "validation scoring s",
         "plots + registration s", "wall s", "wall / training passes", "target"],
    )  # fmt: skip
    for bf16 in (False, True) if setup.cuda else (False,):
        precision = "bf16" if bf16 else "fp32"
        for batch in QUICK_BATCH_SIZES if setup.quick else BATCH_SIZES:
            reference = None
            threads_tried = (1,) if setup.cuda or batch != BATCH_SIZES[0] else sorted({1, torch.get_num_threads()})
            for threads in threads_tried:
                rate, counted = plain_run(train_x, val_x, layout, epochs, threads, setup, bf16, batch)
                reference = reference or rate
                table.add("plain loop (vae.fit)", batch, f"1 x {threads}", precision, counted, num(rate, 0),
                          num(len(train_x) / rate), num(rate / reference), "", "", "", "")  # fmt: skip
            one_worker = None
            for workers in _worker_counts(setup):
                ray = pipeline_run(path, columns, epochs, workers, setup, bf16, batch)
                one_worker = one_worker or ray.rate
                ratio, scaling = ray.rate / reference, ray.rate / one_worker
                table.add("Ray Train (pipelines.commands.train)", batch, f"{workers} x 1", precision, ray.counted,
                          num(ray.rate, 0), num(len(train_x) / ray.rate), num(ratio),
                          target(ratio, TARGET_RATIO) if workers == 1 else "", num(scaling),
                          target(scaling, TARGET_SCALING) if workers == 2 else "", num(ray.wall, 1))  # fmt: skip
                if not bf16:
                    p = ray.phases
                    phases.add(f"{workers} worker(s), batch {batch}", num(p["prepare_s"], 1), num(p["train_s"], 1),
                               num(ray.passes_s, 1), num(p["validation_s"], 1),
                               num(p["register_s"] - p["validation_s"], 1), num(ray.wall, 1),
                               num(ray.wall / ray.passes_s, 1),
                               target(ray.wall / ray.passes_s, TARGET_WALL, at_least=False, digits=1))  # fmt: skip
    device = torch.cuda.get_device_name(setup.device) if setup.cuda else "CPU"
    table.notes += [
        f"{len(train_x):,} training rows ({data.rows:,} rows of 11_donors.npz, {VALIDATION_FRACTION:.0%} held out by "
        f"the pipeline's hash split), {data.width} features, VAE latent {MODEL['latent_dim']}, hidden "
        f"{MODEL['hidden_dims']}, `batch` rows per step per worker, Adam lr {LR}, {epochs} epochs, on {device}.",
        "rows/s: the training pass only (no validation, checkpoint or logging), median over the epochs after the "
        "first; s / epoch = training rows / rows/s. Ray start-up is excluded (Ray runs before the table starts); "
        "'run wall s' is the whole `pipelines.commands.train.run` (preprocessing with Ray Data, worker start, "
        "training, validation scoring, plots, model registration).",
        "Each Ray worker has 1 CPU, so Ray sets OMP_NUM_THREADS=1 and torch uses 1 thread: the ratio compares it "
        "with the plain loop on 1 thread at the same batch; the plain loop with every thread is shown for reference. "
        f"Targets: 1 worker >= {TARGET_RATIO}x the plain loop at each batch; 2 workers >= {TARGET_SCALING}x 1 worker.",
    ]
    phases.notes += [
        "From the metrics the run logs: prepare (input checks, Ray Data preparation and statistics, auto "
        "hyperparameters), Ray Train (the worker group's start, every epoch with its validation, checkpoint and "
        "MLflow logging, the end of the group), of which the epochs' training passes (training rows / rows/s, "
        "summed), validation scoring (a sample of validation rows by Ray Data actors, for the threshold and the "
        "drift reference), plots and the model logged and registered. Wall: measured around the call.",
        f"Target: the whole run at most {TARGET_WALL:g}x its epochs' training passes.",
    ]
    return [table, phases, trial_startup.run(setup)]
