"""`python -m bench [--quick] [--tables 1,2,3,4,5] [--data-dir DIR] [--results bench/RESULTS.md] [--device auto]`

Prints the benchmark tables as markdown; with --results, writes them (and the machine they ran on) into that
file, replacing the sections of the tables that ran and keeping the others. Tables 1, 2 and 5 share a local Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_DIR.parent / "shared" / "data"
TABLES = {1: "training", 2: "scoring", 3: "detection", 4: "density", 5: "serving"}
NOTES = "<!-- bench:notes -->"
SECTION = re.compile(r"^<!-- bench:table (\d) -->$", re.MULTILINE)
RAY_TABLES = (1, 2, 5)  # share one local Ray, started before and stopped after them (outside every measurement)
LOCAL_RAY_CPUS = 4  # logical CPUs: more than the workers take, so Ray Data can read (see DESIGN.md)


def parse_tables(text: str) -> list[int]:
    try:
        chosen = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        chosen = []
    if not chosen or not set(chosen) <= set(TABLES):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of 1,2,3,4,5, got {text!r}")
    return chosen


def machine_description(device) -> str:
    import psutil
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM{gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}; "
            f"load average at start {load}")  # fmt: skip


def write_results(path: Path, sections: dict[int, str]) -> None:
    """Replace the sections of the tables that ran, keep the others and the hand-written reading of the results
    (from the line `<!-- bench:notes -->` on), write atomically."""
    kept: dict[int, str] = {}
    notes = ""
    if path.is_file():
        text, marker, rest = path.read_text().partition(NOTES)
        notes = marker + rest
        parts = SECTION.split(text)
        kept = {int(number): body for number, body in zip(parts[1::2], parts[2::2], strict=True)}
    kept.update({n: "\n" + body for n, body in sections.items()})
    header = ("# Benchmark results\n\nWritten by `make bench` (`python -m bench --results bench/RESULTS.md`); each "
              "table keeps the machine and date of its latest full run.\n\n")  # fmt: skip
    text = header + "".join(f"<!-- bench:table {n} -->{kept[n].rstrip()}\n\n" for n in sorted(kept)) + notes
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text.rstrip() + "\n")
    tmp.replace(path)


def _run_table(module, setup, mode: str, machine: str) -> str:
    """Run one table module and print its markdown; returns the section kept in the results file."""
    started = time.perf_counter()
    result = module.run(setup)
    tables = result if isinstance(result, list) else [result]
    text = "\n".join(t.markdown() for t in tables)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{text}\n_{mode} mode, {stamp}, {time.perf_counter() - started:.0f} s; machine: {machine}_\n"
    print(f"\n{section}", flush=True)
    return section


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["detection"]:
        from .detection import main as detection_main

        return detection_main(argv[1:])
    if argv[:1] == ["profile"]:
        from .profile import main as profile_main

        return profile_main(argv[1:])
    if argv[:1] == ["sweep"]:
        from .sweep import main as sweep_main

        return sweep_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and schedules (the test runs this)")
    parser.add_argument("--tables", type=parse_tables, default=sorted(TABLES), help="e.g. 1,2 (default: all)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="tabular/*.npz and mnist.npz")
    parser.add_argument("--results", type=Path, help="markdown file to keep the tables in (e.g. bench/RESULTS.md)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"bench: error: data directory {args.data_dir} not found; pass --data-dir (it holds tabular/*.npz "
              "and mnist.npz)", file=sys.stderr)  # fmt: skip
        return 1
    import torch

    from pipelines.runtime.cluster import ray_session
    from pipelines.runtime.parquet_checks import DataError
    from pipelines.tracking.runs import TrackingError
    from pipelines.tracking.scoped_env import quiet_artifact_transfers, quiet_mlflow_info

    from . import density, detection, scoring, serving, training
    from .context import Setup

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench: error: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 1
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    modules = {1: training, 2: scoring, 3: detection, 4: density, 5: serving}
    machine = machine_description(device)
    mode = "quick" if args.quick else "full"
    print(f"benchmarks ({mode} mode), tables {args.tables}, data {args.data_dir}\nmachine: {machine}\n", flush=True)
    sections: dict[int, str] = {}
    workdir = Path(tempfile.mkdtemp(prefix="vae-bench-"))
    try:
        setup = Setup(args.data_dir.resolve(), args.quick, device, workdir)
        with_ray = [n for n in args.tables if n in RAY_TABLES]
        with quiet_artifact_transfers(), quiet_mlflow_info():  # MLflow's INFO lines are not the tables'
            with ray_session(None, LOCAL_RAY_CPUS) if with_ray else contextlib.nullcontext():
                for number in with_ray:
                    sections[number] = _run_table(modules[number], setup, mode, machine)
            for number in (n for n in args.tables if n not in RAY_TABLES):
                sections[number] = _run_table(modules[number], setup, mode, machine)
    except (FileNotFoundError, DataError, TrackingError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.results is not None:
        write_results(args.results, sections)
        print(f"tables written to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
