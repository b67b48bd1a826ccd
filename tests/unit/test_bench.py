"""The benchmark package's own logic: the detection protocol's split and tables, target verdicts, the RESULTS.md
merge."""

from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import parse_tables, write_results
from bench.baselines import knn
from bench.detection import PROJECT, main, protocol_split, read_csv, results_table, sort_key, write_csv
from bench.intervals import seed_interval
from bench.tables import Table, mean_std, target


def test_protocol_split_is_the_published_recipe():
    y = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    split = protocol_split(y, seed=3)
    normal = np.where(y == 0)[0]
    np.random.default_rng(3).shuffle(normal)
    assert split.train.tolist() == normal[:4].tolist()
    assert split.test.tolist() == [*normal[4:].tolist(), 1, 4]
    assert not set(split.train) & set(split.test)


def test_knn_is_the_distance_to_the_fifth_neighbour_in_either_algorithm():
    rng = np.random.default_rng(0)
    for d in (3, 20):  # a k-d tree, then blocks of brute-force distances
        train, test = rng.normal(size=(200, d)), rng.normal(size=(30, d))
        exact = np.sort(np.linalg.norm(test[:, None] - train[None], axis=-1), axis=1)[:, 4]
        np.testing.assert_allclose(knn(train, test, 0), exact, rtol=1e-4)


def test_results_table_means_best_baseline_and_knn_gap():
    rows = [{"dataset": s, "seed": seed, "method": m, "auroc": a, "average_precision": 0.0}
            for s, scores in (("a", {PROJECT: 90, "knn": 80, "pca": 85}), ("b", {PROJECT: 70, "knn": 75, "pca": 60}))
            for seed in (0, 1) for m, a in scores.items()]  # fmt: skip
    table = results_table(rows, (PROJECT, "knn", "pca"), seeds=2)
    assert [r[0] for r in table.rows] == ["a", "b", "**mean over 2 sets**"]
    assert table.rows[0][-1] == "85.00 (pca)" and table.rows[1][-1] == "75.00 (knn)"
    assert table.rows[2][1:] == ["**80.00**", "**77.50**", "**72.50**", "**80.00**"]
    assert table.notes == [
        "sets where `vae` is more than 3 points below KNN: b",
        # the same AUROC on both seeds: the intervals have no width
        "`vae` minus each baseline, mean over sets [95 % interval over seeds]: knn +2.50 [+2.50, +2.50]; "
        "pca +7.50 [+7.50, +7.50]",
    ]
    assert sorted([Path("10_cover.npz"), Path("4_breastw.npz")], key=sort_key)[0].name == "4_breastw.npz"


def test_targets_and_spread():
    assert target(0.93, 0.9) == "≥ 0.90: met"
    assert target(12.0, 11.0, at_least=False) == "≤ 11.00: MISSED"
    assert mean_std([1.0, 3.0]) == "2.00 ± 1.00"
    with pytest.raises(ValueError, match="2 cells"):
        Table("t", ["a", "b"]).add("only one")


def test_results_keep_the_tables_that_did_not_run(tmp_path: Path):
    path = tmp_path / "RESULTS.md"
    write_results(path, {1: "table one, first run\n", 3: "table three\n"})
    path.write_text(path.read_text() + "<!-- bench:notes -->\n## Reading the results\n")
    write_results(path, {1: "table one, second run\n"})
    text = path.read_text()
    assert "second run" in text and "first run" not in text and "table three" in text
    assert text.index("table one") < text.index("table three") < text.index("## Reading the results")


def test_table_lists_are_checked():
    assert parse_tables("3,1") == [1, 3]
    with pytest.raises(Exception, match="1,2,3,4"):
        parse_tables("0,5")


def test_seed_interval_resamples_each_sets_seeds():
    # two seeds 0 and 2: a draw's mean is 0, 1 or 2 with chances 1/4, 1/2, 1/4, so the central 95 % spans 0 to 2
    assert seed_interval({"a": [0.0, 2.0]}) == (1.0, 0.0, 2.0)
    # a second set that never varies halves the spread of the mean over sets
    assert seed_interval({"a": [0.0, 2.0], "b": [3.0, 3.0]}) == (2.0, 1.5, 2.5)
    mean, low, high = seed_interval({"a": [0.0, 2.0] * 10})  # more seeds, the same spread: a narrower interval
    assert mean == 1.0 and 0.4 < low < 1.0 < high < 1.6
    with pytest.raises(ValueError, match="at least one seed"):
        seed_interval({"a": []})


def test_the_tables_are_printed_again_from_a_runs_csv(tmp_path: Path, capsys):
    rows = [{"dataset": "a", "seed": seed, "method": m, "auroc": 90.0 - seed - (m == "knn"),
             "average_precision": 50.0} for seed in (0, 1) for m in (PROJECT, "knn")]  # fmt: skip
    path = tmp_path / "rows.csv"
    write_csv(rows, path)
    assert read_csv(path) == rows
    assert main(["--from-csv", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "| a | 89.50 ± 0.50 | 88.50 ± 0.50 | 88.50 (knn) |" in printed and "knn +1.00 [+1.00, +1.00]" in printed
    (tmp_path / "empty.csv").write_text("dataset,seed,method,auroc,average_precision\n")
    assert main(["--from-csv", str(tmp_path / "empty.csv")]) == 1
    assert "holds no rows" in capsys.readouterr().err
