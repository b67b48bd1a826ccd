"""Where a scoring job's time goes: py-spy samples of the Ray Data scoring actors against the plain loop, and the
CPU seconds of each kind of process in the job's tree.

`python -m bench profile --job score [--data-dir DIR] [--rows 1000000] [--out DIR]`

Table 2's model, rows and job (`bench.scoring`): the plain loop runs in this process under `py-spy record --idle`;
then `pipelines.commands.score.run` on a local Ray, each scoring actor's process recorded from the moment it
appears until it ends. Only the thread that scores is counted (the plain loop's main thread; an actor's main thread,
which runs its tasks and waits in Ray's task loop between them); `--idle` keeps the waiting, so the shares are of
wall time. Beside it, every process under this one is polled for its CPU time while the job runs and summed by kind
(driver, scoring actors, Ray Data's read and write tasks, Ray's own processes), which says who used the two cores.
"""

from __future__ import annotations

import collections
import os
import re
import time
from pathlib import Path

import psutil

from .profile import Recorder, first_match, read_samples, recording_this_process, shares_table
from .sampling import Sampler
from .tables import Table, num

# An actor's main thread runs Ray's task loop and hands each batch to a thread of its own that calls ScoreActor
# (Ray Data's single-threaded wrapper of a callable class), waiting on it meanwhile: the two are counted as one
# thread, the main thread's samples while the batch thread works left out.
ACTOR_THREADS = r"^Worker\.main_loop \(|^_WorkItem\.run \("
HANDED_OVER = r"_SingleThreadedWrapper\.__call__ \("
PLAIN_THREAD = r"^plain_loop \("
WAITING = "waiting for a batch (Ray's task loop)"
# (category, pattern) from a sample's innermost frame out; the first that matches names the sample.
CATEGORIES = (
    ("module imports", r"<frozen importlib"),
    ("unpickling the model and arguments", r"\(ray/_private/serialization\.py|\(pickle\.py"),
    ("the model's scores (Detector.score_rows)", r"^Detector\.score_rows \("),
    ("quarantine checks", r"^quarantine_reasons \("),
    ("top features", r"^top_features \("),
    ("scored rows as Arrow columns", r"^(ScoreActor\.|_conform \()"),
    ("writing Parquet", r"write_table \("),
    ("reading Parquet", r"(to_batches|pyarrow/parquet|pyarrow/dataset)"),
    ("Arrow to pandas", r"to_pandas"),
    ("Ray Data around the batch", r"\(ray/data/"),
    (WAITING, r"^Worker\.main_loop \("),
)
ACTOR_MARK = "ScoreActor"  # in a scoring actor's process title: ray::MapWorker(MapBatches(ScoreActor))
KINDS = ("this driver", "scoring actors", "Ray Data read and write tasks", "Ray's own processes")


def classify(stack: list[str]) -> str | None:
    """The category of one sample (`stack`: its frames, outermost first); None for an actor's main thread waiting
    on the thread it handed a batch to."""
    if any(re.search(HANDED_OVER, frame) for frame in stack):
        return None
    return first_match(reversed(stack), CATEGORIES) or "other"


def process_kind(cmdline: str, pid: int, driver: int) -> str:
    """Which of KINDS a process of the job's tree is, from its command line."""
    if pid == driver:
        return KINDS[0]
    if ACTOR_MARK in cmdline:
        return KINDS[1]
    if cmdline.startswith("ray::"):
        return KINDS[2]
    return KINDS[3]


class CpuByKind(Sampler):
    """The CPU seconds each kind of process under this one used while it runs: every process polled every 0.2 s,
    its last reading kept (so a process that ends keeps what it used), minus what it had used at the start."""

    def __init__(self) -> None:
        super().__init__(interval_s=0.2)
        self.driver = os.getpid()
        self.start: dict[int, float] | None = None
        self.last: dict[int, tuple[str, float]] = {}

    def sample(self) -> None:
        me = psutil.Process(self.driver)
        readings = {}
        for process in [me, *me.children(recursive=True)]:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    cmdline = " ".join(process.cmdline())
                readings[process.pid] = (process_kind(cmdline, process.pid, self.driver), times.user + times.system)
            except psutil.Error:
                continue
        if self.start is None:
            self.start = {pid: seconds for pid, (_, seconds) in readings.items()}
        self.last.update(readings)

    def seconds(self) -> dict[str, float]:
        used = collections.Counter({kind: 0.0 for kind in KINDS})
        for pid, (kind, seconds) in self.last.items():
            used[kind] += seconds - self.start.get(pid, 0.0)
        return dict(used)


def profile_table(columns: dict[str, collections.Counter]) -> Table:
    """Seconds and share of each category per profiled side (`columns`: side -> samples per category)."""
    rows = [(name, [c[name] for c in columns.values()]) for name in [name for name, _ in CATEGORIES] + ["other"]]
    return shares_table("Where the scoring thread's time goes (py-spy, wall time: idle samples included)", rows,
                        columns, "**all samples of the scoring thread**")  # fmt: skip


def cpu_table(used: dict[str, float], wall: float, cores: int) -> Table:
    table = Table("CPU seconds by process during the Ray job", ["process", "CPU s", "share of the job's CPU"])
    total = max(sum(used.values()), 1e-9)
    for kind, seconds in used.items():
        table.add(kind, num(seconds, 1), f"{100 * seconds / total:.0f} %")
    table.add("**all**", num(total, 1), f"{num(total / (wall * cores) * 100, 0)} % of {cores} cores x {num(wall, 1)} s")
    return table


def run(setup, rows: int, out: Path) -> list[Table]:
    """Profile the plain loop and the Ray job on `rows` rows of table 2's input; the raw py-spy files go to `out`."""
    from pipelines.runtime.cluster import ray_session
    from pipelines.tracking.scoped_env import quiet_artifact_transfers

    from .__main__ import LOCAL_RAY_CPUS
    from .context import feature_names, write_rows
    from .scoring import MODEL_ROWS, ROWS_PER_FILE, _ray_job, plain_loop, register_detector

    x, y = setup.tabular("donors")
    columns = feature_names(x.shape[1])
    detector = register_detector(setup, x, y, columns, MODEL_ROWS)
    input_dir = write_rows(x, rows, setup.workdir / "score-in", ROWS_PER_FILE)
    print(f"plain loop: {rows:,} rows", flush=True)
    with recording_this_process(out / "plain.txt"):
        started = time.perf_counter()
        plain_loop(input_dir, setup.workdir / "plain.parquet", detector)
        plain_s = time.perf_counter() - started
    sides = {"plain": read_samples(out / "plain.txt", PLAIN_THREAD, classify)}
    with quiet_artifact_transfers(), ray_session(None, LOCAL_RAY_CPUS):
        _ray_job(setup, input_dir, setup.workdir / "warm-up")  # Ray's worker pool as a nightly job finds it
        print(f"Ray Data job: {rows:,} rows", flush=True)
        with Recorder(out / "ray", ACTOR_MARK) as recorder, CpuByKind() as cpu:
            started = time.perf_counter()
            _ray_job(setup, input_dir, setup.workdir / "ray")
            ray_s = time.perf_counter() - started
    actors = [counts for counts in recorder.samples(ACTOR_THREADS, classify) if counts]  # the warm-up's leave none
    sides.update({f"actor #{i + 1}": counts for i, counts in enumerate(actors)})
    table = profile_table(sides)
    table.notes.append(f"{rows:,} rows: plain loop {num(plain_s, 1)} s, Ray job {num(ray_s, 1)} s (plain / Ray = "
                       f"{num(plain_s / ray_s)}); a warm-up job ran before the profiled one")  # fmt: skip
    return [table, cpu_table(cpu.seconds(), ray_s, psutil.cpu_count())]
