"""Fine-tuning a pre-trained start: loading with a report at training start, encoder freezing, per-layer learning rates.

The recipe is MedicalNet's (Chen, Ma, Zheng, "Med3D", arXiv:1904.00625, 2019; Tencent/MedicalNet ``train.py``):
the pre-trained encoder is loaded, a new head is added, the new layers learn with a larger rate (x100 there), and the
encoder may be frozen. As in TorchIO / segmentation_models_pytorch, freezing an encoder also freezes its
normalisation statistics: frozen BatchNorm layers stay in evaluation mode even while the network trains.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from os import PathLike
from types import MethodType

from ignite.engine import Engine, Events
from torch import nn

from monai_ext.engines.checkpoint import is_main_process, unwrap_model, write_json_atomic
from monai_ext.weights.report import LoadReport
from monai_ext.weights.sources import NO_SOURCE, load_pretrained

__all__ = [
    "freeze_except",
    "trainable_parameter_groups",
    "report_record",
    "LoadPretrainedWeights",
    "ValidationHistoryWriter",
    "save_network_spec",
    "ClassProbabilityWriter",
    "load_network_spec",
    "read_validation_history",
]

logger = logging.getLogger(__name__)

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
          nn.LayerNorm)  # fmt: skip


def _always_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_except(network: nn.Module, trainable_prefixes: Sequence[str], freeze: bool = True) -> nn.Module:
    """Freeze every parameter outside ``trainable_prefixes``, and keep the frozen normalisation layers in eval mode.

    A frozen BatchNorm keeps normalising with its pre-trained running statistics (and stops updating them) even when
    the trainer calls ``network.train()`` every iteration.

    Args:
        network: the network; modified in place and returned.
        trainable_prefixes: state-dict prefixes of the layers that keep learning (the new head).
        freeze: ``False`` returns the network unchanged (convenient from configs).

    Returns:
        ``network``.

    Raises:
        ValueError: ``freeze`` and no parameter matches ``trainable_prefixes`` (nothing would learn).
    """
    if not freeze:
        return network
    prefixes = tuple(trainable_prefixes)
    n_trainable = 0
    for name, parameter in network.named_parameters():
        keep = name.startswith(prefixes)
        parameter.requires_grad_(keep)
        n_trainable += parameter.numel() if keep else 0
    if n_trainable == 0:
        raise ValueError(f"no parameter starts with {prefixes}: freezing would leave nothing to train.")
    n_frozen_norms = 0
    for name, module in network.named_modules():
        if isinstance(module, _NORMS) and name and not (name + ".").startswith(prefixes):
            module.train = MethodType(_always_eval, module)
            module.eval()
            n_frozen_norms += 1
    logger.info(f"encoder frozen: {n_trainable} parameters train ({', '.join(prefixes)}); {n_frozen_norms} "
                "normalisation layers keep their pre-trained statistics")  # fmt: skip
    return network


def trainable_parameter_groups(
    network: nn.Module, new_prefixes: Sequence[str], lr: float, new_lr_multiplier: float = 1.0
) -> list[dict]:
    """Optimiser parameter groups: pre-trained layers at ``lr``, new layers at ``lr * new_lr_multiplier``.

    Frozen parameters (``requires_grad`` False) are left out.

    Args:
        network: the network.
        new_prefixes: state-dict prefixes of the new layers.
        lr: learning rate of the pre-trained layers.
        new_lr_multiplier: factor for the new layers (MedicalNet: 100).

    Returns:
        One or two groups (``{"params": [...], "lr": ..., "name": ...}``), without empty ones.
    """
    prefixes = tuple(new_prefixes)
    pretrained, new = [], []
    for name, parameter in unwrap_model(network).named_parameters():
        if parameter.requires_grad:
            (new if name.startswith(prefixes) else pretrained).append(parameter)
    groups = [
        {"params": pretrained, "lr": lr, "name": "pretrained"},
        {"params": new, "lr": lr * new_lr_multiplier, "name": "new"},
    ]
    return [g for g in groups if g["params"]]


def report_record(report: LoadReport | None, source: str, path: str | None = None) -> dict:
    """A JSON-serialisable summary of a load report (counts and keys), for ``models/initialisation.json``."""
    if report is None:
        return {"source": source, "pretrained": False, "note": "random initialisation (no pre-trained weights)"}
    return {
        "source": source,
        "pretrained": True,
        "file": path or report.source,
        "counts": {
            "loaded": len(report.loaded),
            "adapted": len(report.adapted),
            "initialised": len(report.initialised),
            "missing": len(report.missing),
            "unused_source_keys": len(report.unexpected),
        },
        "adapted": report.adapted,
        "initialised": report.initialised,
        "missing": report.missing,
        "unused_source_keys": report.unexpected,
    }


class LoadPretrainedWeights:
    """Trainer handler: load the chosen pre-trained source when training starts, and record what was loaded.

    Runs on ``Events.STARTED``; attach it after :class:`monai_ext.engines.checkpoint.ResumableCheckpoint`: a resumed
    run (iteration > 0) keeps its checkpoint's weights. Every process loads the same file, so DDP replicas agree.
    The report is logged and written (main process) to ``record_path``.

    Args:
        network: the trained network (may be wrapped in DDP).
        source: a name of :data:`monai_ext.weights.sources.PRETRAINED_SOURCES`, or ``"scratch"`` (nothing loaded).
        pretrained_path: the checkpoint file or folder (``None``: the default places).
        record_path: JSON file for the report (``None``: not written).
        download: allow downloading a published file.
        inflation: 2D->3D kernel rule for ImageNet sources.
    """

    def __init__(
        self,
        network: nn.Module,
        source: str,
        pretrained_path: str | PathLike | None = None,
        record_path: str | PathLike | None = None,
        download: bool = False,
        inflation: str = "average",
    ) -> None:
        self.network = network
        self.source = source
        self.pretrained_path = pretrained_path
        self.record_path = record_path
        self.download = download
        self.inflation = inflation
        self.report: LoadReport | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration > 0:
            logger.info(f"resumed at iteration {engine.state.iteration}: keeping the checkpoint's weights")
            return
        if self.source == NO_SOURCE:
            logger.info("source 'scratch': training from random initialisation")
        else:
            self.report = load_pretrained(  # logs its report
                unwrap_model(self.network), self.source, self.pretrained_path, self.download, self.inflation
            )
        if self.record_path and is_main_process():
            write_json_atomic(report_record(self.report, self.source), self.record_path)



class ValidationHistoryWriter:
    """Evaluator handler: append every validation's metrics, with the trainer's iteration, to a CSV file.

    The learning curves of the transfer benchmark are read from this file (:func:`read_validation_history`). The
    evaluator runs with the trainer's epoch (``ValidationHandler``), so the iteration is ``epoch *
    iterations_per_epoch``; a validation before training (``exec_at_start``) is iteration 0. A resumed run appends.
    Only the main process writes.

    Args:
        path: the CSV file (columns ``epoch``, ``iteration`` and one per metric).
        iterations_per_epoch: trainer iterations per epoch.
    """

    def __init__(self, path: str | PathLike, iterations_per_epoch: int) -> None:
        self.path = str(path)
        self.iterations_per_epoch = int(iterations_per_epoch)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        row = {"epoch": engine.state.epoch, "iteration": engine.state.epoch * self.iterations_per_epoch}
        row.update({k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))})
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        new_file = not os.path.exists(self.path)
        if not new_file:
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            if header != list(row):
                new_file = True  # other metrics than the file's: start it again
        with open(self.path, "w" if new_file else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)


def read_validation_history(path: str | PathLike) -> list[dict[str, float]]:
    """Rows of a :class:`ValidationHistoryWriter` file, numbers as floats, sorted by iteration (last row wins)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return sorted({int(r["iteration"]): r for r in rows}.values(), key=lambda r: r["iteration"])


NETWORK_SPEC_FILE = "network.json"


def save_network_spec(spec: dict, ckpt_dir: str | PathLike) -> dict:
    """Write ``<ckpt_dir>/network.json``: what network ``models/model.pt`` belongs to (architecture, task, classes,
    constructor arguments, pre-trained source), so inference and sharing need neither the dataset nor the source file.

    Returns:
        ``spec``.
    """
    if is_main_process():
        write_json_atomic(spec, os.path.join(ckpt_dir, NETWORK_SPEC_FILE))
    return spec


def load_network_spec(ckpt_dir: str | PathLike) -> dict:
    """Read ``<ckpt_dir>/network.json`` (see :func:`save_network_spec`).

    Raises:
        FileNotFoundError: the file is missing (the message says to train the bundle first).
    """
    path = os.path.join(ckpt_dir, NETWORK_SPEC_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: it is written when the bundle trains and describes the network of models/model.pt. "
            "Train the bundle first (configs/train.json), or copy network.json along with model.pt."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class ClassProbabilityWriter:
    """Evaluator handler: write one CSV row per image with the predicted class and every class probability.

    Columns: ``image``, ``predicted``, ``predicted_name``, ``prob_<class name>`` ...; the file is written
    atomically when the evaluator finishes (main process only).

    Args:
        path: the CSV file.
        class_names: class names in index order.
        pred_key: output key of the probabilities (after a softmax in the postprocessing).
        image_key: batch key whose metadata gives the file name.
    """

    def __init__(self, path: str | PathLike, class_names: Sequence[str], pred_key: str = "pred",
                 image_key: str = "image") -> None:  # fmt: skip
        self.path = str(path)
        self.class_names = [str(c) for c in class_names]
        self.pred_key = pred_key
        self.image_key = image_key
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            probs = item[self.pred_key].detach().float().cpu().flatten()
            image = item.get(self.image_key)
            meta = getattr(image, "meta", {}) or {}
            name = str(meta.get("filename_or_obj", len(self.rows)))
            best = int(probs.argmax())
            row = {"image": name, "predicted": best, "predicted_name": self.class_names[best]}
            row.update({f"prob_{c}": round(float(p), 6) for c, p in zip(self.class_names, probs)})
            self.rows.append(row)

    def _write(self, engine: Engine) -> None:
        if not is_main_process() or not self.rows:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(f"{self.path}.tmp", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(f"{self.path}.tmp", self.path)
        engine.logger.info(f"wrote {len(self.rows)} class probabilities to {self.path}")
