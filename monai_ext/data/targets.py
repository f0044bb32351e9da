"""The target task of a fine-tuning: any folder the datalist builders read, split once, and subsampled by label fraction.

Transfer-learning claims are about annotation cost (Zhang et al., VDT, arXiv:2201.01426: up to 60% fewer labels for
the same result; Li, Zhou et al., SuPreM, ICLR 2024: few-shot fine-tuning), so a target is built with a fixed
validation split (``split_seed``) and a training subset of ``label_fraction`` of the remaining cases. Subsets are
nested: for one ``subset_seed`` the 10% subset is part of the 25% subset, which is part of the 50% subset.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.datalists import DatalistError, build_datalist, split_datalist

__all__ = ["label_fraction_subset", "fine_tuning_target"]


def label_fraction_subset(items: list[dict], fraction: float, seed: int = 0) -> list[dict]:
    """A seeded subset of ``ceil(fraction * len(items))`` entries (at least one), nested across fractions.

    Args:
        items: the training entries.
        fraction: in (0, 1].
        seed: the permutation's seed; the same seed gives nested subsets for growing fractions.

    Returns:
        The subset, in the original order.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}.")
    n = max(1, math.ceil(float(fraction) * len(items) - 1e-9))
    order = np.random.default_rng(seed).permutation(len(items))[:n]
    return [items[i] for i in sorted(order)]


def _class_names(dataset_dir: Path, report_labels: dict, items: list[dict]) -> list[str]:
    if report_labels:
        return [report_labels[k] for k in sorted(report_labels)]
    classes_json = (dataset_dir if dataset_dir.is_dir() else dataset_dir.parent) / "classes.json"
    if classes_json.is_file():
        names = json.loads(classes_json.read_text(encoding="utf-8"))
        names = {int(k): v for k, v in names.items()} if isinstance(names, dict) else dict(enumerate(names))
        return [names[k] for k in sorted(names)]
    values = sorted({int(it["label"]) for it in items if isinstance(it.get("label"), (int, np.integer))})
    if values:
        return [f"class_{v}" for v in range(max(values) + 1)]
    raise DatalistError(
        f"{dataset_dir}: no class names found (no labels in dataset.json, no classes.json): give them with "
        "--class_names \"['background', 'organ']\"."
    )


def fine_tuning_target(
    dataset_dir: str | os.PathLike,
    layout: str = "auto",
    val_fraction: float = 0.2,
    split_seed: int = 0,
    label_fraction: float = 1.0,
    subset_seed: int = 0,
    class_names: list[str] | None = None,
    max_val_cases: int | None = None,
) -> dict[str, Any]:
    """Datalists and classes of a fine-tuning target.

    Args:
        dataset_dir: a folder in any layout of :func:`monai_ext.data.datalists.build_datalist` (Decathlon, nnU-Net
            raw, AbdomenAtlas, image folders, a CSV of images and class labels).
        layout: ``"auto"`` or a layout name.
        val_fraction: fraction of cases held out for validation (the same for every label fraction and seed).
        split_seed: seed of the validation split.
        label_fraction: fraction of the remaining cases used for training.
        subset_seed: seed of the training subset.
        class_names: class names in index order (background first for segmentation); read from the dataset when
            None.
        max_val_cases: keep only the first validation cases (faster validation), None for all.

    Returns:
        ``{"training", "validation", "class_names", "num_classes", "layout", "n_available"}``.

    Raises:
        DatalistError: the folder cannot be read, or has problems (each named with its file).
        ValueError: a bad fraction.
    """
    items, report = build_datalist(dataset_dir, layout=layout)
    if report.errors:
        raise DatalistError(report.summary())
    if not items:
        raise DatalistError(f"{dataset_dir}: no usable entries (layout {report.layout}).")
    train, val = split_datalist(items, val_fraction, split_seed)
    names = list(class_names) if class_names else _class_names(Path(dataset_dir), report.labels, items)
    return {
        "training": label_fraction_subset(train, label_fraction, subset_seed),
        "validation": val[:max_val_cases] if max_val_cases else val,
        "class_names": names,
        "num_classes": len(names),
        "layout": report.layout,
        "n_available": len(train),
    }
