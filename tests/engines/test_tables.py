"""Tests of monai_ext.engines.tables (per-class result tables)."""

import csv
import math

import pytest
import torch

from monai_ext.engines.tables import per_class_scores, write_per_class_table


def test_per_class_scores_ignores_undefined_cases_and_keeps_absent_classes_apart():
    details = torch.tensor([[0.8, math.nan, 0.2], [0.6, math.nan, math.nan]])
    rows = per_class_scores(details, ["liver", "bladder", "spleen"])
    assert [r["class"] for r in rows] == ["liver", "bladder", "spleen", "mean"]
    assert [r["index"] for r in rows] == [1, 2, 3, 0]
    assert rows[0]["dice"] == pytest.approx(0.7) and rows[0]["n_cases"] == 2
    assert math.isnan(rows[1]["dice"]) and rows[1]["n_cases"] == 0  # absent everywhere: no value, not 0
    assert rows[2]["dice"] == pytest.approx(0.2) and rows[2]["n_cases"] == 1
    assert rows[3]["dice"] == pytest.approx(0.45) and rows[3]["n_cases"] == 2  # mean of the defined class means


def test_per_class_scores_checks_the_class_count():
    with pytest.raises(ValueError, match="3 classes"):
        per_class_scores(torch.zeros(2, 4), ["a", "b", "c"])


def test_write_per_class_table(tmp_path):
    path = write_per_class_table([[1.0, math.nan]], ["aorta", "prostate"], str(tmp_path / "sub" / "t.csv"))
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"class": "aorta", "index": "1", "dice": "1.000000", "n_cases": "1"},
        {"class": "prostate", "index": "2", "dice": "", "n_cases": "0"},
        {"class": "mean", "index": "0", "dice": "1.000000", "n_cases": "1"},
    ]
