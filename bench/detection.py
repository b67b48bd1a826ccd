"""The detection harness: the project's label-free default against four baselines on every `*.npz` of a directory.

`python -m bench detection --data DIR [--seeds 0,1,2,3,4] [--csv OUT.csv] [--methods vae,knn,...] [--jobs 2]`
`python -m bench detection --from-csv OUT.csv` prints the same tables again from a run's rows, without training.

Each file holds `X` (N, d) and `y` (N,), 1 = anomaly. Per seed s (semi-supervised protocol): shuffle the normal rows
with `numpy.random.default_rng(s)`, train on the first half, test on the other half plus every anomaly. The
baselines see features standardised with training-half statistics; the project's default (`vae.AnomalyDetector`,
no per-set settings) sees the raw features and does its own preprocessing. Prints a progress line per set and a
markdown table (AUROC mean ± std over seeds per set and method, the mean over sets, the per-set best baseline);
writes `dataset,seed,method,auroc,average_precision` rows to the CSV. Under each table: `vae` minus each baseline
with its 95 % interval over seeds (`bench.intervals`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .baselines import BASELINES
from .intervals import describe, paired_differences
from .tables import Table, mean_std

PROJECT = "vae"
METHODS = (PROJECT, *BASELINES)
QUICK_STEPS = 300  # quick mode's budget for the two VAEs (the full one is the default's 3000 steps)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices: half of the normal rows
    test: np.ndarray  # the other normal rows, then every anomaly


def protocol_split(y: np.ndarray, seed: int) -> Split:
    """The issue's exact split: shuffle the normal rows with default_rng(seed), train on the first half."""
    rng = np.random.default_rng(seed)
    normal = np.where(y == 0)[0]
    rng.shuffle(normal)
    half = len(normal) // 2
    return Split(train=normal[:half], test=np.concatenate([normal[half:], np.where(y == 1)[0]]))


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides scaled with the training rows' mean and std (1 for constant columns)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def project_scores(train: np.ndarray, test: np.ndarray, seed: int, steps: int | None = None) -> np.ndarray:
    """The project's default on raw features: `AnomalyDetector(seed=seed)` fitted on the training rows; `steps`
    replaces its budget of optimiser steps (quick mode), None keeps it."""
    from vae import AnomalyDetector
    from vae.auto import BATCH, epochs_for

    overrides = None if steps is None else {"train.epochs": epochs_for(len(train), min(BATCH, len(train)), steps)}
    return AnomalyDetector(seed=seed, device="cpu", overrides=overrides).fit(train).score_samples(test)


def ranked_finite(scores: np.ndarray, what: str) -> np.ndarray:
    """Scores (N,) with non-finite entries (a diverged fit) ranked as the most anomalous, said on stderr."""
    bad = ~np.isfinite(scores)
    if not bad.any():
        return scores
    print(f"warning: {what}: {bad.sum()} non-finite scores, ranked as the most anomalous", file=sys.stderr)
    top = scores[~bad].max() if (~bad).any() else 0.0
    return np.where(bad, top + 1.0, scores)


def evaluate_split(task: tuple[str, Path, int, tuple[str, ...], int | None]) -> list[dict]:
    """One (data set, seed): every method's AUROC and average precision, as CSV rows (the two VAEs with a budget
    of `steps` optimiser steps when it is not None)."""
    import torch

    torch.set_num_threads(1)
    name, path, seed, methods, steps = task
    with np.load(path, allow_pickle=False) as data:
        x, y = data["X"].astype(np.float64), data["y"].astype(np.int64)
    split = protocol_split(y, seed)
    scaled = standardise(x[split.train], x[split.test])
    labels = y[split.test]
    rows = []
    for method in methods:
        if method == PROJECT:
            scores = project_scores(x[split.train], x[split.test], seed, steps)
        elif method == "reference_vae" and steps is not None:
            scores = BASELINES[method](*scaled, seed, steps=steps)
        else:
            scores = BASELINES[method](*scaled, seed)
        scores = ranked_finite(scores, f"{name} seed {seed} {method}")
        rows.append({"dataset": name, "seed": seed, "method": method,
                     "auroc": 100 * roc_auc_score(labels, scores),
                     "average_precision": 100 * average_precision_score(labels, scores)})  # fmt: skip
    return rows


def results_table(rows: list[dict], methods: tuple[str, ...], seeds: int, metric: str = "auroc",
                  title: str = "Detection AUROC (%)") -> Table:  # fmt: skip
    """`metric` mean ± std per set and method; the mean over sets; the per-set best of the baselines."""
    baselines = [m for m in methods if m != PROJECT]
    columns = ["data set", *methods] + (["best baseline"] if baselines else [])
    table = Table(f"{title}, mean ± std over {seeds} seeds", columns)
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    means: dict[str, list[float]] = {m: [] for m in [*methods, "best baseline"]}
    for name in sets:
        per = {m: [r[metric] for r in rows if r["dataset"] == name and r["method"] == m] for m in methods}
        for m in methods:
            means[m].append(float(np.mean(per[m])))
        cells = [mean_std(per[m]) for m in methods]
        if baselines:
            best = max(baselines, key=lambda m: np.mean(per[m]))
            means["best baseline"].append(float(np.mean(per[best])))
            cells.append(f"{np.mean(per[best]):.2f} ({best})")
        table.add(name, *cells)
    overall = [f"**{np.mean(means[m]):.2f}**" for m in methods]
    table.add(f"**mean over {len(sets)} sets**", *overall,
              *([f"**{np.mean(means['best baseline']):.2f}**"] if baselines else []))  # fmt: skip
    if PROJECT in methods and "knn" in methods:
        behind = [s for s, v, k in zip(sets, means[PROJECT], means["knn"], strict=True) if v < k - 3]
        table.notes.append(f"sets where `vae` is more than 3 points below KNN: {', '.join(behind) or 'none'}")
    if PROJECT in methods and baselines:
        gaps = "; ".join(f"{m} {describe(_versus(rows, metric, m))}" for m in baselines)
        table.notes.append(f"`vae` minus each baseline, mean over sets [95 % interval over seeds]: {gaps}")
    return table


def _versus(rows: list[dict], metric: str, baseline: str) -> dict[str, list[float]]:
    """Per set, `vae`'s `metric` minus `baseline`'s on each seed both were scored on."""
    return paired_differences(rows, lambda r: r["method"] == PROJECT, lambda r: r["method"] == baseline, metric)


def tables(rows: list[dict], methods: tuple[str, ...], seeds: int, number: int | None = None) -> list[Table]:
    """The AUROC table and the average-precision table of the same rows (numbered as table `number`)."""
    auroc, precision = ("Detection AUROC (%)", "Average precision (%)")
    if number is not None:
        auroc, precision = f"Table {number}. {auroc}", f"Table {number}b. {precision}"
    return [results_table(rows, methods, seeds, "auroc", auroc),
            results_table(rows, methods, seeds, "average_precision", precision)]  # fmt: skip


def sort_key(path: Path) -> tuple[int, str]:
    """ADBench files by their number prefix ("4_breastw" before "10_cover")."""
    number = path.name.split("_")[0]
    return (int(number), path.name) if number.isdigit() else (1 << 30, path.name)


def evaluate_files(
    files: list[Path], seeds: list[int], methods: tuple[str, ...], jobs: int, steps: int | None = None
) -> list[dict]:
    """Every (file, seed) split in `jobs` processes; a progress line per finished set; the CSV rows."""
    tasks = [(p.stem, p, s, methods, steps) for p in files for s in seeds]
    rows: list[dict] = []
    done: dict[str, int] = {}
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for result in pool.imap(evaluate_split, tasks):
            rows += result
            name = result[0]["dataset"]
            done[name] = done.get(name, 0) + 1
            if done[name] == len(seeds):
                means = {m: np.mean([r["auroc"] for r in rows if r["dataset"] == name and r["method"] == m])
                         for m in methods}  # fmt: skip
                summary = ", ".join(f"{m} {v:.1f}" for m, v in means.items())
                print(f"[{len(done)}/{len(files)}] {name}: AUROC {summary}", flush=True)
    return rows


def run(setup) -> list[Table]:
    """Table 3 of `python -m bench`: the harness on the four accuracy sets under `tabular/` (quick: one seed and
    QUICK_STEPS for the VAEs)."""
    from .context import TABULAR

    files = [setup.data_dir / "tabular" / TABULAR[name] for name in ("thyroid", "cardio", "mammography", "shuttle")]
    seeds = [0] if setup.quick else list(range(5))
    steps = QUICK_STEPS if setup.quick else None
    return tables(evaluate_files(files, seeds, METHODS, jobs=2, steps=steps), METHODS, len(seeds), number=3)


def write_csv(rows: list[dict], path: Path) -> None:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["dataset", "seed", "method", "auroc", "average_precision"])
        writer.writeheader()
        writer.writerows({**r, "auroc": f"{r['auroc']:.4f}", "average_precision": f"{r['average_precision']:.4f}"}
                         for r in rows)  # fmt: skip


def read_csv(path: Path) -> list[dict]:
    """The rows `write_csv` wrote, typed as `evaluate_split` returns them."""
    import csv

    with path.open(newline="") as f:
        return [{**r, "seed": int(r["seed"]), "auroc": float(r["auroc"]),
                 "average_precision": float(r["average_precision"])} for r in csv.DictReader(f)]  # fmt: skip


def rows_from_csv(path: Path, read: Callable[[Path], list[dict]], command: str) -> list[dict] | None:
    """`read(path)`'s rows, or None after one line on stderr when the file cannot be read or holds no row."""
    try:
        rows = read(path)
    except (OSError, KeyError, ValueError) as err:
        print(f"{command}: error: {path}: {err}", file=sys.stderr)
        return None
    if not rows:
        print(f"{command}: error: {path} holds no rows", file=sys.stderr)
        return None
    return rows


def _method_list(text: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(METHODS))
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"methods must be a comma-separated subset of {','.join(METHODS)}")
    return chosen


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench detection", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a directory of ADBench *.npz files (X, y)")
    source.add_argument("--from-csv", type=Path, help="print the tables of an earlier run's --csv rows")
    parser.add_argument("--seeds", type=_seed_list, default=[0, 1, 2, 3, 4])
    parser.add_argument("--csv", type=Path, help="write dataset,seed,method,auroc,average_precision rows here")
    parser.add_argument("--methods", type=_method_list, default=METHODS, help=f"default: {','.join(METHODS)}")
    parser.add_argument("--jobs", type=int, default=2, help="splits evaluated at once (one process each)")
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        rows = rows_from_csv(args.from_csv, read_csv, "bench detection")
        if rows is None:
            return 1
        methods = tuple(m for m in METHODS if any(r["method"] == m for r in rows))
        seeds = len({r["seed"] for r in rows})
        print("\n".join(t.markdown() for t in tables(rows, methods, seeds)))
        return 0
    if not args.data.is_dir():
        print(f"bench detection: error: {args.data} is not a directory", file=sys.stderr)
        return 1
    files = sorted(args.data.glob("*.npz"), key=sort_key)
    if not files:
        print(f"bench detection: error: no *.npz files in {args.data}", file=sys.stderr)
        return 1
    rows = evaluate_files(files, args.seeds, args.methods, args.jobs)
    print("\n" + "\n".join(t.markdown() for t in tables(rows, args.methods, len(args.seeds))))
    if args.csv is not None:
        write_csv(rows, args.csv)
        print(f"rows written to {args.csv}")
    return 0
