"""Does the label-free sweep pick a better model than the default? The shipped `tune.yaml` grid, replayed per split.

`python -m bench sweep --data DIR [--seeds 0] [--config pipelines/configs/tune.yaml] [--csv OUT.csv] [--jobs 2]`
`python -m bench sweep --from-csv OUT.csv` prints the summary again from a run's rows, without training.

For every `*.npz` in DIR and seed, on the detection harness's split (`bench.detection.protocol_split`), this does
what `make tune` does with the config's grid, in-process and without Ray: hold out `data.validation_fraction` of
the training rows, train one model per grid point on all the rest with the default's other settings (`vae.auto`;
the held-out rows calibrate, so the estimator holds out nothing more; from `vae.estimator.CALIBRATION_ROWS` training
rows on, the default holds out 10 % itself, the same rows for the same seed, so with the shipped fraction of 0.1 the
default point there trains on the default's rows),
select a point by the importance-sampled NLL (`tune.nll_samples` samples) of the held-out rows as `make tune` does
(`vae.selection.choose_over_reference` on the held-out rows that repeat no training row: the default point, the
config's own values, unless another point's per-row NLL is significantly lower), and score the test rows with it.
Also reported: what the lowest mean NLL would have selected, and label-free stand-ins for detection, the AUROC of
each point's scores separating the held-out rows from synthetic anomalies made of them (`synthetic_anomalies`), and
an ensemble of the grid's distinct models that needs no selection (`ensemble_scores`). Next to it, the default
(`AnomalyDetector`) fitted on all the training rows (which trains on them all below 1000 rows). Prints a table
per set (default, default point, sweep-selected and the best grid point in hindsight, mean AUROC over seeds) and
writes one CSV row per (set, seed, candidate):
`dataset,seed,candidate,val_nll,val_marginals,val_half_swapped,auroc,selected,reference`.
With `--rows DIR` each split's per-row numbers go to `DIR/<set>-<seed>.npz` (`points`: the P candidate labels;
`val_nll`, `val_score`: (P, n_val) importance-sampled NLL and the default score of the held-out rows;
`val_unseen`: (n_val,) True for a held-out row that repeats no training row;
`<kind>_score`: (P, m) the default score of each kind of synthetic anomalies; `test_score`: (P, T) the default
score of the test rows, `test_labels`: (T,)), to study other selection rules.
Grid points that resolve to the same settings (`latent_dim: auto` equal to a listed size) are trained once.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics import roc_auc_score

from pipelines.settings.dotted_yaml import get_dotted
from vae.selection import choose_over_reference, row_hashes

from .detection import _seed_list, protocol_split, rows_from_csv, sort_key
from .intervals import describe, paired_differences
from .tables import Table

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "tune.yaml"
DEFAULT = "default"
ENSEMBLE = "ensemble"
SYNTHETIC_ROWS = 500


@dataclasses.dataclass(frozen=True)
class Sweep:
    grid: dict[str, tuple[Any, ...]]  # dotted config key -> values, crossed
    validation_fraction: float
    nll_samples: int
    reference: dict[str, Any]  # the config's own value of each swept key: the default point

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]


def read_sweep(path: Path) -> Sweep:
    """The grid axes, validation share and NLL samples of a tune config (only `grid` axes can be replayed)."""
    config = yaml.safe_load(path.read_text())
    grid: dict[str, tuple[Any, ...]] = {}
    for section, fields in config["tune"]["space"].items():
        for name, axis in fields.items():
            if set(axis) != {"grid"}:
                raise ValueError(f"{path}: tune.space.{section}.{name}: only grid axes can be replayed, got {axis}")
            grid[f"{section}.{name}"] = tuple(axis["grid"])
    reference = {key: get_dotted(config, key) for key in grid}
    return Sweep(grid, float(config["data"].get("validation_fraction", 0.1)), int(config["tune"]["nll_samples"]),
                 reference)  # fmt: skip


def label(point: dict[str, Any]) -> str:
    return " ".join(f"{key.split('.')[-1]}={value}" for key, value in point.items())


def validation_nll(estimator, rows: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """(N,) importance-sampled NLL (nats) of each of `rows` (N, F) under the estimator's model; the sweep's metric
    is their mean."""
    from vae import Detector, ScoreConfig
    from vae.columns import as_columns

    fitted = estimator.detector
    nll = Detector(fitted.model, fitted.preprocessor, ScoreConfig(kind="nll", samples=samples))
    return nll.score(as_columns(rows), seed=seed)[0]


def synthetic_anomalies(rows: np.ndarray, seed: int, count: int) -> dict[str, np.ndarray]:
    """Label-free stand-ins for anomalies, (count, F) each, made from held-out normal rows (N, F):
    `marginals`: every column drawn independently from its held-out values (the joint structure destroyed);
    `half_swapped`: a held-out row with a random half of its features taken from another held-out row."""
    rng = np.random.default_rng(seed + 7919)
    n, f = rows.shape
    marginals = np.stack([rows[rng.integers(0, n, count), j] for j in range(f)], axis=1)
    base, donor = rows[rng.integers(0, n, count)], rows[rng.integers(0, n, count)]
    swap = rng.random((count, f)).argsort(axis=1) < max(1, f // 2)
    return {"marginals": marginals, "half_swapped": np.where(swap, donor, base)}


def synthetic_aurocs(normal: np.ndarray, synthetic: dict[str, np.ndarray]) -> dict[str, float]:
    """`val_<kind>`: AUROC (%) of one model's scores separating the held-out normal rows (N,) from each kind of
    synthetic anomalies (M,)."""
    return {f"val_{kind}": 100 * roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(made))], np.r_[normal, made])
            for kind, made in synthetic.items()}  # fmt: skip


def ensemble_scores(test_scores: np.ndarray, val_scores: np.ndarray) -> np.ndarray:
    """(M,) the mean over P models of each one's scores of M rows (`test_scores`: (P, M)), each centred by the
    median and scaled by the interquartile range of its scores of the same N held-out rows (`val_scores`: (P, N)):
    an ensemble of the grid, which needs no selection."""
    q1, median, q3 = np.percentile(val_scores, [25, 50, 75], axis=1, keepdims=True)
    return np.mean((test_scores - median) / np.maximum(q3 - q1, np.finfo(float).tiny), axis=0)


def resolved(point: dict[str, Any], n_features: int) -> tuple:
    """The settings a grid point trains with: `latent_dim: auto` replaced by the default's size for F features."""
    from vae.auto import latent_size

    return tuple(sorted((k, latent_size(n_features) if k == "model.latent_dim" and v == "auto" else v)
                        for k, v in point.items()))  # fmt: skip


def evaluate_split(task: tuple[str, Path, int, Sweep, Path | None]) -> list[dict]:
    """One (data set, seed): the default's AUROC, and each grid point's validation NLL and AUROC."""
    import torch

    from vae import AnomalyDetector

    torch.set_num_threads(1)
    name, path, seed, sweep, rows_dir = task
    with np.load(path, allow_pickle=False) as data:
        x, y = data["X"].astype(np.float64), data["y"].astype(np.int64)
    split = protocol_split(y, seed)
    train, test, labels = x[split.train], x[split.test], y[split.test]
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, round(sweep.validation_fraction * len(train)))
    fit_rows, val_rows = train[order[n_val:]], train[order[:n_val]]
    val_unseen = ~np.isin(row_hashes(val_rows), row_hashes(fit_rows))

    synthetic = synthetic_anomalies(val_rows, seed, max(len(val_rows), SYNTHETIC_ROWS))
    default = AnomalyDetector(seed=seed, device="cpu").fit(train)
    rows = [{"dataset": name, "seed": seed, "candidate": DEFAULT, "val_nll": float("nan"),
             **{f"val_{kind}": float("nan") for kind in synthetic},
             "auroc": 100 * roc_auc_score(labels, default.score_samples(test)), "selected": False}]  # fmt: skip
    per_row: dict[str, list[np.ndarray]] = {}
    fitted: dict[tuple, dict[str, Any]] = {}  # resolved settings -> the numbers of the point trained with them
    for point in sweep.points():
        key = resolved(point, x.shape[1])
        if key not in fitted:
            model = AnomalyDetector(overrides=point, seed=seed, device="cpu").fit(fit_rows, calibration=val_rows)
            fitted[key] = {"val_nll": validation_nll(model, val_rows, sweep.nll_samples, seed),
                           "val_score": model.score_samples(val_rows),
                           **{f"{kind}_score": model.score_samples(made) for kind, made in synthetic.items()},
                           "test_score": model.score_samples(test)}  # fmt: skip
            fitted[key]["auroc"] = 100 * roc_auc_score(labels, fitted[key]["test_score"])
        numbers = fitted[key]
        for array, values in numbers.items():
            if array != "auroc":
                per_row.setdefault(array, []).append(values)
        rows.append({"dataset": name, "seed": seed, "candidate": label(point),
                     "val_nll": float(np.mean(numbers["val_nll"])),
                     **synthetic_aurocs(numbers["val_score"], {k: numbers[f"{k}_score"] for k in synthetic}),
                     "auroc": numbers["auroc"], "selected": False})  # fmt: skip
    if rows_dir is not None:
        np.savez(rows_dir / f"{name}-{seed}.npz", points=np.array([label(p) for p in sweep.points()]),
                 test_labels=labels, val_unseen=val_unseen,
                 **{array: np.stack(values) for array, values in per_row.items()})  # fmt: skip
    nll = np.stack(per_row["val_nll"])
    reference = sweep.points().index(sweep.reference) if sweep.reference in sweep.points() else None
    if reference is not None:  # as `make tune` selects (vae.selection); no unseen row: no evidence to move
        chosen = choose_over_reference(nll[:, val_unseen], reference).index if val_unseen.any() else reference
    else:
        chosen = int(np.argmin(np.where(np.isfinite(nll).all(axis=1), nll.mean(axis=1), np.inf)))
    rows[1 + chosen]["selected"] = True
    for row, point in zip(rows[1:], sweep.points(), strict=True):
        row["reference"] = point == sweep.reference
    rows[0]["reference"] = False
    members = list(fitted.values())  # each distinct model once
    ensemble = ensemble_scores(
        np.stack([m["test_score"] for m in members]), np.stack([m["val_score"] for m in members])
    )
    rows.append({**rows[0], "candidate": ENSEMBLE, "auroc": 100 * roc_auc_score(labels, ensemble)})
    return rows


def summary_table(rows: list[dict], seeds: int) -> Table:
    """Per set: the mean AUROC of the default (on all the training rows), of the default point (the sweep's rows),
    of the selected model and of the best grid point, and what was selected."""
    table = Table(f"Sweep-selected model vs the default, AUROC (%), mean over {seeds} seed(s)",
                  ["data set", "default", "default point (sweep's rows)", "sweep-selected",
                   "best grid point (hindsight)", "selected"])  # fmt: skip
    means: dict[str, list[float]] = {"default": [], "reference": [], "selected": [], "best": [], "ensemble": []}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        values = {key: float(np.mean([r["auroc"] for r in mine if r[key]]) if any(r[key] for r in mine) else np.nan)
                  for key in ("reference", "selected")}  # fmt: skip
        for key, candidate in (("default", DEFAULT), ("ensemble", ENSEMBLE)):
            scored = [r["auroc"] for r in mine if r["candidate"] == candidate]
            values[key] = float(np.mean(scored)) if scored else np.nan
        points = sorted({r["candidate"] for r in mine} - {DEFAULT, ENSEMBLE})
        values["best"] = max(float(np.mean([r["auroc"] for r in mine if r["candidate"] == p])) for p in points)
        for key, value in values.items():
            means[key].append(value)
        picks = ", ".join(sorted({r["candidate"] for r in mine if r["selected"]}))
        table.add(name, *(f"{values[k]:.2f}" for k in ("default", "reference", "selected", "best")), picks)
    average = {key: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for key, v in means.items()}
    table.add(f"**mean over {len(means['default'])} sets**",
              *(f"**{average[k]:.2f}**" for k in ("default", "reference", "selected", "best")), "")  # fmt: skip
    selected = paired_differences(rows, lambda r: r["selected"], lambda r: r["candidate"] == DEFAULT)
    same_rows = paired_differences(rows, lambda r: r["selected"], lambda r: r["reference"])
    note = f"sweep-selected minus default [95 % interval over seeds]: {describe(selected)} AUROC points on average"
    if same_rows:  # the grid holds the default point
        note += f"; minus the default point on the sweep's rows: {describe(same_rows)}"
    table.notes.append(note)
    if np.isfinite(average["ensemble"]):
        gain = average["ensemble"] - average["default"]
        table.notes.append(f"ensemble of the grid's distinct models (scores scaled by their held-out rows' median "
                           f"and IQR, averaged) minus default: {gain:+.2f}")  # fmt: skip
    lowest = np.mean(_selected_by(rows, "val_nll", highest=False))
    table.notes.append(f"selected by the lowest mean val_nll minus default: {lowest - average['default']:+.2f}")
    for kind in [k for k in rows[0] if k.startswith("val_") and k != "val_nll"]:
        chosen = _selected_by(rows, kind)
        table.notes.append(f"selected by the highest {kind} (AUROC against synthetic anomalies) minus default: "
                           f"{np.mean(chosen) - average['default']:+.2f}")  # fmt: skip
    return table


def _selected_by(rows: list[dict], column: str, highest: bool = True) -> list[float]:
    """Per set, the mean test AUROC over seeds of the grid point with the highest (lowest) `column` in each split."""
    per_set: dict[str, list[float]] = {}
    for name, seed in dict.fromkeys((r["dataset"], r["seed"]) for r in rows):
        grid = [r for r in rows if (r["dataset"], r["seed"]) == (name, seed) and np.isfinite(r[column])]
        if grid:
            pick = (max if highest else min)(grid, key=lambda r: r[column])
            per_set.setdefault(name, []).append(pick["auroc"])
    return [float(np.mean(v)) for v in per_set.values()]


def write_csv(rows: list[dict], path: Path) -> None:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows)


def read_csv(path: Path) -> list[dict]:
    """The rows `write_csv` wrote, typed as `evaluate_split` returns them."""
    import csv

    flags = {"True": True, "False": False}
    with path.open(newline="") as f:
        return [{key: value if key in ("dataset", "candidate") else int(value) if key == "seed"
                 else flags[value] if key in ("selected", "reference") else float(value)
                 for key, value in r.items()} for r in csv.DictReader(f)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a directory of ADBench *.npz files (X, y)")
    source.add_argument("--from-csv", type=Path, help="print the summary of an earlier run's --csv rows")
    parser.add_argument("--seeds", type=_seed_list, default=[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the tune config whose grid is replayed")
    parser.add_argument("--csv", type=Path, help="write dataset,seed,candidate,val_nll,auroc,selected rows here")
    parser.add_argument("--jobs", type=int, default=2, help="splits evaluated at once (one process each)")
    parser.add_argument("--rows", type=Path, help="per-row numbers to DIR/<set>-<seed>.npz")
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        rows = rows_from_csv(args.from_csv, read_csv, "bench sweep")
        if rows is None:
            return 1
        print(summary_table(rows, len({r["seed"] for r in rows})).markdown())
        return 0
    files = sorted(args.data.glob("*.npz"), key=sort_key) if args.data.is_dir() else []
    if not files:
        print(f"bench sweep: error: no *.npz files in {args.data}", file=sys.stderr)
        return 1
    try:
        sweep = read_sweep(args.config)
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as err:
        print(f"bench sweep: error: {args.config}: {err}", file=sys.stderr)
        return 1
    print(f"grid of {len(sweep.points())} points from {args.config}: {sweep.grid}", flush=True)
    if args.rows is not None:
        args.rows.mkdir(parents=True, exist_ok=True)
    tasks = [(p.stem, p, s, sweep, args.rows) for p in files for s in args.seeds]
    rows: list[dict] = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for done, result in enumerate(pool.imap(evaluate_split, tasks), 1):
            rows += result
            picked = next((r for r in result if r["selected"]), None)
            print(f"[{done}/{len(tasks)}] {result[0]['dataset']} seed {result[0]['seed']}: default "
                  f"{result[0]['auroc']:.1f}, selected {picked['candidate'] if picked else '-'} "
                  f"{picked['auroc'] if picked else float('nan'):.1f}", flush=True)  # fmt: skip
            if args.csv is not None:
                write_csv(rows, args.csv)  # rewritten after every split: a long run keeps what it finished
    print("\n" + summary_table(rows, len(args.seeds)).markdown())
    if args.csv is not None:
        print(f"rows written to {args.csv}")
    return 0
