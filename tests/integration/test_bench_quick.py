"""`python -m bench --quick` end to end on tiny data (so the benchmark code cannot rot): every table has its
rows and only finite numbers. Full mode is `make bench`, not part of the tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bench.context import TABULAR
from pipelines.sample_data.datasets import load_thyroid
from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Every file the benchmarks read, small: the bundled thyroid rows under each tabular name, and 8x8 digits
    (scikit-learn's real images) scaled to 28x28 as `mnist.npz`."""
    root = tmp_path_factory.mktemp("bench-data")
    (root / "tabular").mkdir()
    table, labels = load_thyroid()
    x = np.column_stack(list(table.values()))
    for name in TABULAR.values():
        np.savez(root / "tabular" / name, X=x, y=labels)
    digits = load_digits()
    images = np.pad(np.kron(digits.images, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2))) * (255 / 16)
    images = images.astype(np.uint8)
    np.savez(root / "mnist.npz", x_train=images[:1500], y_train=digits.target[:1500], x_test=images[1500:],
             y_test=digits.target[1500:])  # fmt: skip
    return root


def run_bench(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """title (without its number) -> rows of cells, header row first."""
    tables: dict[str, list[list[str]]] = {}
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        title, *lines = block.splitlines()
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
        tables[title.split(". ", 1)[0]] = [r for r in rows if not set("".join(r)) <= {"-"}]
    return tables


@pytest.mark.timeout(900)  # 240 s alone on a slow 2-core machine, over 410 s inside the suite there
def test_quick_bench_prints_every_table_with_finite_numbers(tiny_data, tmp_path):
    results = tmp_path / "RESULTS.md"
    done = run_bench("--quick", "--data-dir", str(tiny_data), "--results", str(results), "--device", "cpu",
                     timeout=890)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\x1b[" not in done.stdout + done.stderr  # Ray's worker-line prefix uncoloured off a terminal
    assert " INFO mlflow" not in done.stdout + done.stderr  # MLflow's INFO lines are not the benchmark's
    text = results.read_text()
    assert "machine:" in text and "quick mode" in text
    tables = markdown_tables(text)
    first_cells = {title: [row[0] for row in rows[1:]] for title, rows in tables.items()}
    assert set(first_cells["Table 1"][:-1]) == {"plain loop (vae.fit)"}  # 1 thread, and every thread if more
    assert first_cells["Table 1"][-1] == "Ray Train (pipelines.commands.train)"  # quick mode: 1 worker
    assert first_cells["Table 2"] == ["1,000", "10,000"]
    assert [cell.split(" ", 1)[0] for cell in first_cells["Table 2b"]] == ["Ray", "marginal", "fixed", "time(10,000)",
                                                                           "driver", "tree"]  # fmt: skip
    sets = ["38_thyroid", "6_cardio", "23_mammography", "32_shuttle", "**mean over 4 sets**"]
    assert first_cells["Table 3"] == first_cells["Table 3b"] == sets
    assert tables["Table 3"][0][1:] == ["vae", "knn", "iforest", "pca", "reference_vae", "best baseline"]
    assert first_cells["Table 4"] == ["VAE (ELBO)", "IWAE k=1", "IWAE k=5", "IWAE k=50"]
    assert first_cells["Table 5"] == ["1", "100"]
    for title, rows in tables.items():
        for row in rows[1:]:
            numbers = [float(n.replace(",", "")) for cell in row for n in re.findall(r"-?[\d,]*\d\.\d+", cell)]
            assert numbers and all(np.isfinite(numbers)), (title, row)
            assert not any(word in cell.lower() for cell in row for word in ("nan", "inf")), (title, row)
    ray_one_worker = tables["Table 1"][-1]
    assert re.search(r"(met|MISSED)", ray_one_worker[8]), ray_one_worker
    assert first_cells["Table 1b"] == ["1 worker(s), batch 256"]
    assert re.search(r"(met|MISSED)", tables["Table 1b"][-1][-1])
    sweep = tables["Table 1c"]  # quick mode: 1 trial of 2 epochs, then the sweep's and tune.run's wall time
    assert sweep[1][1] == "auto" and sweep[1][3] == "2"
    assert first_cells["Table 1c"][1:] == ["**sweep (Tune's fit)**", "**whole tune.run**"]
    assert re.search(r"≤ 60: (met|MISSED)", sweep[2][-1])


def test_a_missing_data_dir_is_one_line_and_exit_1(tmp_path):
    done = run_bench("--data-dir", str(tmp_path / "absent"), timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "absent" in done.stderr and "--data-dir" in done.stderr


def test_an_unknown_table_is_a_usage_error(tmp_path):
    done = run_bench("--tables", "6", "--data-dir", str(tmp_path), timeout=60)
    assert done.returncode == 2 and "1,2,3,4,5" in done.stderr
