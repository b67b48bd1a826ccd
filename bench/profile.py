"""Where a training epoch's time goes: py-spy samples of the Ray Train worker loop against the plain loop.

`python -m bench profile [--data-dir DIR] [--batch 256] [--epochs 6] [--workers 1,2] [--out DIR]`
(`--job score [--rows N]`: the scoring job instead, `bench.profile_scoring`)

Table 1's rows and model (`bench.training`). The plain loop (`vae.fit`, 1 torch thread) runs in this process
under `py-spy record --idle`; then, on a local Ray, `pipelines.commands.train.run` with 1 and 2 workers, each
rank's worker process recorded the same way from the moment it appears until it ends. Only the thread that trains
is counted (the stacks through `vae.training.fit` or `train_loop_per_worker`); `--idle` keeps the samples where
it waits (a rank waiting for the other in an all-reduce, a batch not yet read), so the shares are of wall time.
Each sample gets one category (`classify`: imports and Ray Data's split start wherever they happen, else the phase
of the loop, and inside a training pass the part of the step), and the table gives the seconds and the share of
each, with the training passes' rows/s beside.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from .tables import Table, num

RATE = 100  # samples per second
# (category, pattern) tables; a frame reads "qualified.name (path:line)". A sample is first looked up in ANYWHERE
# from its innermost frame out (an import inside a step counts as the import), then its phase in PHASES from the
# outermost frame in (a validation pass calls the same forward as a training step), and in a training pass, the part
# of the step in STEP from the innermost frame out.
ANYWHERE = (
    ("module imports on first use", r"<frozen importlib"),
    ("Ray Data split: start of a streamed pass", r"StreamSplitDataIterator\._get_dataset_tag"),
)
TRAINING = "training passes (steps)"
PHASES = (
    (TRAINING, r"^train_epoch \(vae/engine"),
    ("validation pass", r"^evaluate \(vae/engine"),
    ("selection metrics (val NLL)", r"(^|\.)selection_metrics \("),
    ("metrics across ranks", r"^(_global|_sum_over_ranks) \("),
    ("checkpoint + report", r"^WorkerRun\.report \("),
    ("worker setup (model, DDP, shards)", r"^WorkerRun\.(__init__|build|restore_checkpoint) \("),
    ("end of run (replica check)", r"^WorkerRun\.finish \("),
)
STEP = (
    ("drawing batches", r"ShardBatches\.|iter_torch_batches|^tensor_batches \(vae/"),
    ("backward (DDP: + gradient all-reduce)", r"(^|\.)backward \(torch/"),
    ("optimiser step + gradient clipping", r"\(torch/optim/|\(torch/nn/utils/clip_grad"),
    ("forward + loss", r"^_batch_loss \(vae/engine"),
    ("epoch sums", r"^_Totals\."),
)
TRAINING_THREAD = re.compile(r"^(fit \(vae/training|train_loop_per_worker \()")


def first_match(frames, table) -> str | None:
    """The name of the first (category, pattern) of `table` whose pattern matches a frame, frames in turn."""
    return next((name for frame in frames for name, pattern in table if re.search(pattern, frame)), None)


def classify(stack: list[str]) -> str:
    """The category of one sample: `stack` is its frames, outermost first."""
    inner = first_match(reversed(stack), ANYWHERE)
    if inner is not None:
        return inner
    phase = first_match(stack, PHASES) or "other"
    if phase != TRAINING:
        return phase
    return first_match(reversed(stack), STEP) or "other, in a training pass"


def read_samples(
    path: Path, thread: re.Pattern | str = TRAINING_THREAD, categorize: Callable[[list[str]], str | None] = classify
) -> collections.Counter:
    """Samples per category (`categorize`; None leaves a sample out) of the stacks with a frame matching `thread`,
    from a py-spy raw file (`frame;frame;... count` lines); the training thread and `classify` by default."""
    counts: collections.Counter = collections.Counter()
    if not path.is_file():
        return counts
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        category = categorize(frames) if any(re.search(thread, f) for f in frames) else None
        if category is not None:
            counts[category] += int(count)
    return counts


def py_spy() -> str | None:
    """The py-spy executable: this interpreter's environment's, else the one on PATH, else None."""
    return shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")


@contextlib.contextmanager
def recording_this_process(output: Path) -> Iterator[None]:
    """py-spy records this process into `output` while the block runs (attached before the block starts)."""
    spy = record(os.getpid(), output)
    time.sleep(1.0)  # py-spy attached before the block starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and ends
        spy.wait()


def record(pid: int, output: Path) -> subprocess.Popen:
    """py-spy recording process `pid` (all its threads, idle ones too) into `output` until it ends."""
    return subprocess.Popen(
        [py_spy(), "record", "--pid", str(pid), "--idle", "--nonblocking", "--rate", str(RATE), "--format", "raw",
         "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


class Recorder:
    """Records every process whose command line holds `marker` (a Ray Train worker's "RayTrainWorker") that appears
    while it runs (a thread polling the process table)."""

    def __init__(self, directory: Path, marker: str) -> None:
        self.directory = directory
        self.marker = marker
        self.spies: dict[int, subprocess.Popen] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.done.is_set():
            for process in psutil.process_iter(["pid", "cmdline"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                if self.marker in cmdline and process.info["pid"] not in self.spies:
                    pid = process.info["pid"]
                    self.spies[pid] = record(pid, self.directory / f"process-{pid}.txt")
            time.sleep(0.1)

    def __enter__(self) -> Recorder:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        for spy in self.spies.values():
            try:
                spy.wait(timeout=30)  # py-spy ends with its process and writes the file then
            except subprocess.TimeoutExpired:
                spy.terminate()
                spy.wait()

    def samples(self, *how) -> list[collections.Counter]:
        """Per process (in the order they appeared) its samples per category (`how`: read_samples' thread, ...)."""
        return [read_samples(self.directory / f"process-{pid}.txt", *how) for pid in self.spies]


def shares_table(title: str, rows: list[tuple[str, list[int]]], columns: dict[str, collections.Counter],
                 total: str) -> Table:  # fmt: skip
    """Seconds and share of the samples of each row (`rows`: label, samples per side of `columns`, in order;
    rows without samples left out), then the `total` row of every sample (`columns`: side -> samples per category)."""
    table = Table(title, ["category", *(f"{side} s" for side in columns), *(f"{side} %" for side in columns)])
    totals = [max(sum(c.values()), 1) for c in columns.values()]
    for label, values in rows:
        if any(values):
            table.add(label, *(num(v / RATE, 1) for v in values),
                      *(num(100 * v / t, 0) for v, t in zip(values, totals, strict=True)))  # fmt: skip
    table.add(total, *(num(sum(c.values()) / RATE, 1) for c in columns.values()), *("100" for _ in columns))
    return table


def profile_table(columns: dict[str, collections.Counter], rates: dict[str, float]) -> Table:
    """Seconds and share of each category per profiled side (`columns`: side -> samples per category)."""
    steps = [name for name, _ in STEP] + ["other, in a training pass"]
    order = [name for name, _ in ANYWHERE] + [TRAINING] + [f"- {step}" for step in steps]
    order += [name for name, _ in PHASES[1:]] + ["other"]
    rows = []
    for name in order:
        key = name.removeprefix("- ")
        values = [sum(c[s] for s in steps) if key == TRAINING else c[key] for c in columns.values()]
        rows.append((f"**{name}**" if key == TRAINING else name, values))
    table = shares_table("Where the training thread's time goes (py-spy, wall time: idle samples included)", rows,
                         columns, "**all samples of the training thread**")  # fmt: skip
    table.notes.append("training passes' rows/s (median of the epochs after the first): "
                       + ", ".join(f"{side} {num(rate, 0)}" for side, rate in rates.items()))  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    import torch

    from .__main__ import DEFAULT_DATA_DIR
    from .context import Setup

    parser = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=("train", "score"), default="train", help="the training run or scoring job")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="holds tabular/11_donors.npz")
    parser.add_argument("--batch", type=int, default=256, help="train: rows per step (per worker on the Ray side)")
    parser.add_argument("--epochs", type=int, default=6, help="train: epochs")
    parser.add_argument("--workers", default="1,2", help="train: Ray Train worker counts to profile")
    parser.add_argument("--rows", type=int, default=1_000_000, help="score: input rows")
    parser.add_argument("--out", type=Path, help="keep the raw py-spy files here")
    args = parser.parse_args(argv)
    if py_spy() is None:
        print("bench profile: error: py-spy is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="vae-profile-"))
    out = args.out or workdir / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    try:
        setup = Setup(args.data_dir.resolve(), False, torch.device("cpu"), workdir)
        if args.job == "score":
            from . import profile_scoring

            tables = profile_scoring.run(setup, args.rows, out)
        else:
            tables = [profile_training(setup, args, out)]
    finally:
        if args.out is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n" + "\n".join(table.markdown() for table in tables))
    return 0


def profile_training(setup, args: argparse.Namespace, out: Path) -> Table:
    """The plain loop in this process, then Ray Train runs of each `args.workers` count, each worker recorded."""
    from pipelines.runtime.cluster import ray_session
    from pipelines.tracking.scoped_env import quiet_artifact_transfers

    from .__main__ import LOCAL_RAY_CPUS
    from .training import inputs, pipeline_run, plain_run

    data = inputs(setup)
    columns: dict[str, collections.Counter] = {}
    rates: dict[str, float] = {}
    print(f"plain loop: {len(data.train_x):,} rows, batch {args.batch}, {args.epochs} epochs", flush=True)
    with recording_this_process(out / "plain.txt"):
        rates["plain"], _ = plain_run(data.train_x, data.val_x, data.layout, args.epochs, 1, setup, False, args.batch)
    columns["plain"] = read_samples(out / "plain.txt")
    with quiet_artifact_transfers(), ray_session(None, LOCAL_RAY_CPUS):
        for workers in [int(w) for w in args.workers.split(",")]:
            print(f"Ray Train, {workers} worker(s)", flush=True)
            with Recorder(out / f"ray-{workers}w", "RayTrainWorker") as recorder:
                run = pipeline_run(data.path, data.columns, args.epochs, workers, setup, False, args.batch)
            rates[f"{workers}w"] = run.rate
            for i, counts in enumerate(recorder.samples()):  # in the order the workers started, not by rank
                columns[f"{workers}w #{i + 1}" if workers > 1 else "1w"] = counts
    return profile_table(columns, rates)
