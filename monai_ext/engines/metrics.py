"""Validation metrics for multi-domain co-training (Med3D, Chen et al. 2019, arXiv:1904.00625).

Each validation sample belongs to one dataset ("domain") with its own label set. ``PerDomainMeanDice`` scores every
sample on its own classes only and reports the mean Dice per dataset and over datasets (each dataset counts once,
however many volumes it has). In a distributed run where each rank validates its share of the volumes (a
``DistributedSampler``), the per-volume scores of all ranks are gathered before the means are taken, so every rank
reports the figures of the whole validation set.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import from_engine

__all__ = ["PerDomainMeanDice", "dice_per_class", "write_metrics_table", "write_case_table"]


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, classes: Sequence[int]) -> list[float]:
    """Dice of each class in ``classes`` between two index maps; NaN where the class is absent from ``label``."""
    pred, label = pred.reshape(-1), label.reshape(-1)
    out = []
    for c in classes:
        p, y = pred == c, label == c
        n_y = int(y.sum())
        if n_y == 0:
            out.append(math.nan)
            continue
        out.append(2.0 * float((p & y).sum()) / float(int(p.sum()) + n_y))
    return out


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


class PerDomainMeanDice(Metric):
    """Mean foreground Dice per dataset and overall, for index-map predictions of a multi-domain network.

    ``engine.state.output`` must give ``pred`` and ``label`` index maps (after ``AsDiscreted(argmax=True)``), and
    each batch item carries its dataset index under ``domain_key``. The value stored under the metric's name is the
    mean over datasets; ``<name>_<dataset>`` holds each dataset's mean (over its volumes, each the mean over its
    foreground classes present in the label).

    Args:
        domain_names: dataset names in the order of the domain indices.
        class_counts: number of classes (with background) of each dataset.
        domain_key: batch key of the domain index.
        output_transform: gives (preds, labels) from the engine output.
    """

    def __init__(
        self,
        domain_names: Sequence[str],
        class_counts: Sequence[int],
        domain_key: str = "domain",
        output_transform: Callable = from_engine(["pred", "label"]),
    ) -> None:
        self.domain_names = list(domain_names)
        self.class_counts = [int(c) for c in class_counts]
        if len(self.domain_names) != len(self.class_counts):
            raise ValueError("domain_names and class_counts must have the same length")
        self.domain_key = domain_key
        self._name = "mean_dice"
        super().__init__(output_transform=output_transform)

    @reinit__is_reduced
    def reset(self) -> None:
        self._scores: dict[int, list[float]] = defaultdict(list)
        self._domains_seen: list[int] = []  # the domain of each row of ``cases``
        self.cases: list[dict] = []  # one row per volume: case, dataset, mean Dice, Dice per class
        self._gathered = False

    def attach(self, engine: Engine, name: str, usage: Any = None) -> None:  # type: ignore[override]
        self._name = name
        super().attach(engine, name) if usage is None else super().attach(engine, name, usage)

    def iteration_completed(self, engine: Engine) -> None:
        preds, labels = self._output_transform(engine.state.output)
        domains = self._domains(engine.state.batch, len(preds))
        for pred, label, d in zip(preds, labels, domains):
            self.update((pred, label, d))
            meta = getattr(label, "meta", {}) or {}
            self.cases[-1]["case"] = str(meta.get("filename_or_obj", f"case_{len(self.cases)}"))

    def _domains(self, batch: Any, n: int) -> list[int]:
        if isinstance(batch, dict):
            values = batch[self.domain_key]
            values = values.tolist() if isinstance(values, torch.Tensor) else list(values)
        else:
            values = [b[self.domain_key] for b in batch]
        values = [int(v.item() if isinstance(v, torch.Tensor) else v) for v in values]
        if len(values) != n:
            raise ValueError(f"{len(values)} domain indices for {n} predictions")
        return values

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor, int]) -> None:
        pred, label, domain = output
        if not 0 <= domain < len(self.class_counts):
            raise ValueError(f"domain index {domain} out of range for datasets {self.domain_names}")
        pred = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
        label = label[0] if label.ndim == pred.ndim + 1 else label
        classes = range(1, self.class_counts[domain])
        per_class = dice_per_class(pred.detach().cpu(), label.detach().cpu(), classes)
        self._scores[domain].append(_nanmean(per_class))
        self._domains_seen.append(domain)
        self.cases.append(
            {"case": f"case_{len(self.cases) + 1}", "dataset": self.domain_names[domain], "mean_dice": _nanmean(per_class)}
            | {f"dice_class_{c}": v for c, v in zip(classes, per_class)}
        )

    def _gather(self) -> None:
        """Replace this rank's rows by those of all ranks (once per validation; a collective call, so every rank of
        the process group must compute the metric, as with MONAI's and ignite's metrics).

        The rows are put back in dataset order assuming the samplers' ``shuffle=False`` split (item ``i`` of rank
        ``r`` is volume ``i * world_size + r``, as in torch's and MONAI's ``DistributedSampler``), so the means are
        summed in the same order as in a single process.
        """
        if self._gathered:
            return
        self._gathered = True
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, list(zip(self._domains_seen, self.cases)))
        rows = sorted((i, rank, row) for rank, rows in enumerate(everyone) for i, row in enumerate(rows))
        self._scores = defaultdict(list)
        self._domains_seen, self.cases = [], []
        for _, _, (domain, case) in rows:
            self._scores[domain].append(case["mean_dice"])
            self._domains_seen.append(domain)
            self.cases.append(case)

    def compute(self) -> float:
        self._gather()
        per_domain = {d: _nanmean(v) for d, v in self._scores.items()}
        return _nanmean(list(per_domain.values())) if per_domain else math.nan

    def completed(self, engine: Engine, name: str) -> None:
        engine.state.metrics[name] = self.compute()
        for d, scores in sorted(self._scores.items()):
            engine.state.metrics[f"{name}_{self.domain_names[d]}"] = _nanmean(scores)


def write_metrics_table(metrics: dict, path: str) -> str:
    """Write ``{name: value}`` (e.g. an evaluator's ``state.metrics``) as a two-column CSV, sorted by name."""
    import csv
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        for name in sorted(metrics):
            value = metrics[name]
            value = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
            writer.writerow([name, f"{value:.6f}" if isinstance(value, float) else value])
    return path


def write_case_table(rows: Sequence[dict], path: str) -> str:
    """Write per-volume rows (e.g. ``PerDomainMeanDice.cases``) as CSV; columns are the union of the rows' keys."""
    import csv
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path
