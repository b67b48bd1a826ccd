"""The benchmark package's own logic: its YAML settings, target verdicts and the RESULTS.md merge."""

from pathlib import Path

import pytest

from bench.__main__ import parse_tables, write_results
from bench.detection import SETTINGS_FILE, load_settings
from bench.tables import Table, mean_std, target
from vae import ConfigError


def test_detection_settings_load_for_every_published_data_set():
    settings = load_settings()
    assert set(settings) == {"thyroid", "cardio", "mammography", "shuttle"}
    assert all(s.train.patience is not None and s.model.latent_dim >= 2 for s in settings.values())
    assert SETTINGS_FILE.read_text().startswith("# python -m bench")


def test_detection_settings_name_an_unknown_data_set_or_key(tmp_path: Path):
    wrong = tmp_path / "d.yaml"
    wrong.write_text("iris:\n  model: {latent_dim: 2}\n  train: {}\n")
    with pytest.raises(ConfigError, match="iris"):
        load_settings(wrong)
    wrong.write_text("cardio:\n  model: {latent: 2}\n  train: {}\n")
    with pytest.raises(ConfigError, match="latent"):
        load_settings(wrong)


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
