"""Per-class result tables from the per-case scores that MONAI's metric handlers keep.

MONAI's ``MeanDice`` handler (``save_details=True``) stores one score per (case, class) in
``engine.state.metric_details[name]``, NaN where the class is absent from the case's label (``ignore_empty``). The
reduction ``"mean_batch"`` turns an all-NaN class into 0, which reads as a failure; these helpers keep such a class
apart (no value, 0 cases) and count the cases behind every mean.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence

import torch

__all__ = ["per_class_scores", "write_per_class_table"]


def per_class_scores(
    details: torch.Tensor | Sequence[Sequence[float]], classes: Sequence[str], metric: str = "dice"
) -> list[dict]:
    """One row per class (mean over the cases where the score is defined) plus a final ``mean`` row.

    Args:
        details: scores ``[cases, classes]`` (NaN where undefined), e.g.
            ``evaluator.state.metric_details["val_mean_dice"]``.
        classes: class names, one per column.
        metric: name of the score column.

    Returns:
        rows ``{"class", "index", metric, "n_cases"}``; ``index`` counts from 1 (the index-map value of the class);
        the score is NaN for a class present in no case. The last row (``class`` = "mean", ``index`` = 0) averages
        the defined per-class means (each class counts once) and gives the number of classes behind it.

    Raises:
        ValueError: ``details`` is not 2D or its number of columns differs from ``len(classes)``.
    """
    scores = torch.as_tensor(details, dtype=torch.float64).detach().cpu()
    if scores.ndim == 1 and scores.numel() == len(classes):
        scores = scores[None]
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(
            f"expected scores [cases, {len(classes)} classes], got shape {tuple(scores.shape)}; pass the classes the "
            "network was trained with and a metric computed per class (MeanDice with save_details=True)."
        )
    rows = []
    for c, name in enumerate(classes):
        column = scores[:, c]
        defined = column[~torch.isnan(column)]
        value = float(defined.mean()) if defined.numel() else math.nan
        rows.append({"class": name, "index": c + 1, metric: value, "n_cases": int(defined.numel())})
    means = [r[metric] for r in rows if not math.isnan(r[metric])]
    overall = sum(means) / len(means) if means else math.nan
    rows.append({"class": "mean", "index": 0, metric: overall, "n_cases": len(means)})
    return rows


def write_per_class_table(
    details: torch.Tensor | Sequence[Sequence[float]], classes: Sequence[str], path: str, metric: str = "dice"
) -> str:
    """Write :func:`per_class_scores` as CSV (scores with 6 decimals, empty where undefined).

    Args:
        details: scores ``[cases, classes]``, see :func:`per_class_scores`.
        classes: class names, one per column.
        path: the CSV file (parent folders are created).
        metric: name of the score column.

    Returns:
        ``path``.
    """
    rows = per_class_scores(details, classes, metric)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "index", metric, "n_cases"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, metric: "" if math.isnan(row[metric]) else f"{row[metric]:.6f}"})
    return path
