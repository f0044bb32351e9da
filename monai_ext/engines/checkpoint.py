"""Checkpoints that survive interruption.

``ResumableCheckpoint`` writes the whole training state (network, optimiser, scheduler, trainer counters) atomically
every few epochs (in a background thread while training goes on, as Lightning's ``AsyncCheckpointIO``, where a core
is free for it) and, when the same run starts again, resumes from the newest one. ``BestModelSaver`` keeps the
bundle's ``models/model.pt`` (a plain tensor state dict, the Model Zoo convention) and the figures it was chosen by.
Both write to a temporary file and rename it, so a kill during a write leaves the previous file intact (the partial
temporary file is deleted when the next run starts), and both only write on rank 0 of a distributed run.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
import re
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from monai_ext.data.datalists import write_text_atomic

__all__ = [
    "save_atomic",
    "remove_stale_temporaries",
    "wait_for_checkpoint_writes",
    "write_json_atomic",
    "ResumableCheckpoint",
    "BestModelSaver",
    "unwrap_model",
    "is_main_process",
]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel/DataParallel/torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _temporary_path(path: str) -> str:
    """``.<name>.tmp<pid>`` next to ``path``: hidden, never matched by ``<name>`` globs, and tied to its writer."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp{os.getpid()}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but belongs to someone else (or cannot tell): leave its file alone
        return True
    return True


def remove_stale_temporaries(path_pattern: str) -> list[str]:
    """Delete the temporary files that :func:`save_atomic` left behind for ``path_pattern`` (a glob of final paths,
    e.g. ``<dir>/checkpoint_epoch=*.pt``) when its process was killed during a write.

    A temporary file is ``.<name>.tmp<pid>`` next to the final file; it is removed when process ``pid`` no longer
    runs (a write in progress in a live process is left alone). The final files are never touched.

    Returns:
        the removed paths.
    """
    folder, name = os.path.split(os.path.abspath(path_pattern))
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{name}.tmp*")):
        pid = tmp.rsplit(".tmp", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or not _process_alive(int(pid)):
            try:
                os.remove(tmp)
            except FileNotFoundError:
                continue
            removed.append(tmp)
            logger.warning(f"removed {tmp}, the partial file of a write that was interrupted")
    return removed


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path`` (atomic on POSIX).

    A process killed during the write leaves ``path`` as it was (the previous version, or absent) and a temporary
    ``.<name>.tmp<pid>`` that :func:`remove_stale_temporaries` deletes later (``ResumableCheckpoint`` and
    ``BestModelSaver`` do so when a run starts).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temporary_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_writer: ThreadPoolExecutor | None = None


def _background_writer() -> ThreadPoolExecutor:
    """The process's one checkpoint-writing thread: writes run one at a time, in the order they were submitted.
    Its thread is joined when Python exits, so a write in flight when training fails still completes."""
    global _writer
    if _writer is None:
        _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monai_ext-checkpoint-writer")
    return _writer


def wait_for_checkpoint_writes() -> None:
    """Return when every checkpoint write submitted so far in this process is on disk (or has failed)."""
    if _writer is not None:
        _writer.submit(lambda: None).result()  # one thread, first in first out: runs after every earlier write


def _snapshot(obj: Any) -> Any:
    """A copy of a state dict that training can no longer change: tensors copied to the CPU, the rest deep-copied."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, _snapshot(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def write_json_atomic(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON through :func:`monai_ext.data.datalists.write_text_atomic` (temporary file, then
    rename): a reader never sees half a file, and a failed write leaves the previous file as it was."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


#: attributes of learning-rate schedulers that hold the schedule's length (MONAI's WarmupCosineSchedule, this
#: package's LinearWarmupCosineLR, torch's CosineAnnealingLR / LinearLR / PolynomialLR / OneCycleLR)
_SCHEDULE_LENGTH_KEYS = ("t_total", "warmup_steps", "max_steps", "T_max", "total_iters", "total_steps")


def _schedule_lengths(obj: Any) -> dict[str, Any]:
    """The schedule-length attributes of a learning-rate scheduler (empty for anything else)."""
    if not isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
        return {}
    return {k: getattr(obj, k) for k in _SCHEDULE_LENGTH_KEYS if hasattr(obj, k)}


def _restore_schedule_lengths(name: str, scheduler: Any, configured: dict[str, Any]) -> None:
    """Put the configured schedule lengths back on a restored scheduler and set the optimiser's current rates from
    the closed form at the restored step (LambdaLR-style schedulers; others continue from the saved rates)."""
    saved = _schedule_lengths(scheduler)
    for key, value in configured.items():
        setattr(scheduler, key, value)
    changes = ", ".join(f"{k} {saved[k]} -> {v}" for k, v in configured.items() if saved[k] != v)
    closed_form = getattr(scheduler, "_get_closed_form_lr", None)
    if closed_form is None and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        closed_form = scheduler.get_lr  # base_lr * lambda(last_epoch)
    if closed_form is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rates = list(closed_form())
        for group, lr in zip(scheduler.optimizer.param_groups, rates):
            group["lr"] = lr
        scheduler._last_lr = rates
    logger.info(f"{name}: schedule extended as configured now ({changes}); resuming at step {scheduler.last_epoch}")


def _state_dicts(objects: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            obj = unwrap_model(obj)
        out[name] = obj.state_dict()
    return out


class ResumableCheckpoint:
    """Save the training state every ``save_every_epochs`` epochs and resume from the newest checkpoint.

    Files are ``<save_dir>/checkpoint_epoch=<N>.pt`` holding ``{name: state_dict}`` for every object in ``objects``
    plus the engine it is attached to, under ``"trainer"`` (its epoch and iteration counters). On ``Events.STARTED`` the
    newest file is loaded when ``resume`` is True; the trainer's ``max_epochs`` is kept from the configuration so that
    a resumed run can be extended. Temporary files left by a run killed while it wrote a checkpoint are deleted then
    (they never count as checkpoints).

    Writing in the background (``background=True``; ``"auto"``, the default, does so when the network is on a GPU or
    the machine has a core that torch's threads leave free) copies the state to CPU memory at the end of the epoch and
    writes it from a background thread while the next epoch trains: a write then costs the copy (0.1 s for 170 MB)
    instead of the write (0.2-0.5 s). On a CPU whose cores all train, the writer competes with the training threads
    and saves nothing, so it writes before training goes on. A failed write stops training at the next save or at the
    end of the run with the error. The cost: a process killed in the fraction of a second while a checkpoint is
    still being written resumes from the one before it, so it can lose one more epoch.

    ``min_interval_s`` bounds what checkpoints cost when epochs are short: an epoch that ends less than that many
    seconds after this run's previous save is not saved (the first epoch of a run and the last are always saved). A
    kill then loses at most that long plus the epoch it was in.

    Args:
        save_dir: folder of the checkpoints.
        objects: ``{"network": ..., "optimizer": ..., "lr_scheduler": ...}``; the engine is added on ``attach``.
        save_every_epochs: interval in epochs; the final epoch is always saved.
        n_saved: how many checkpoint files to keep.
        resume: resume from the newest checkpoint in ``save_dir`` when one exists.
        background: write in a background thread (the state is copied first); False writes before returning;
            ``"auto"`` writes in the background when the network is on a GPU or a CPU core is free.
        min_interval_s: the shortest time between two saves of a run, in seconds (0: every ``save_every_epochs``).
    """

    pattern = re.compile(r"checkpoint_epoch=(\d+)\.pt$")

    def __init__(
        self,
        save_dir: str,
        objects: Mapping[str, Any],
        save_every_epochs: int = 1,
        n_saved: int = 2,
        resume: bool = True,
        background: bool | str = "auto",
        min_interval_s: float = 0.0,
    ) -> None:
        self.save_dir = save_dir
        self.objects = dict(objects)
        self.save_every_epochs = max(int(save_every_epochs), 1)
        self.n_saved = max(int(n_saved), 1)
        self.resume = _as_bool(resume)
        self.background = background if str(background).strip().lower() == "auto" else _as_bool(background)
        self.min_interval_s = float(min_interval_s)
        self._pending: Future | None = None
        self._last_save: float | None = None  # time.monotonic() of this run's previous save

    def attach(self, engine: Engine) -> None:
        self.objects.setdefault("trainer", engine)
        engine.add_event_handler(Events.STARTED, self.load_latest)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        engine.add_event_handler(Events.COMPLETED, self.wait)

    def checkpoints(self) -> list[str]:
        """Checkpoint files of ``save_dir``, oldest first."""
        files = [f for f in glob.glob(os.path.join(self.save_dir, "checkpoint_epoch=*.pt")) if self.pattern.search(f)]
        return sorted(files, key=lambda f: int(self.pattern.search(f).group(1)))

    def load_latest(self, engine: Engine) -> None:
        wait_for_checkpoint_writes()  # a write of an earlier run in this process counts
        self._last_save = None  # the first epoch of every run is saved
        if is_main_process():  # the partial files of a run killed while it wrote a checkpoint
            remove_stale_temporaries(os.path.join(self.save_dir, "checkpoint_epoch=*.pt"))
        files = self.checkpoints() if self.resume else []
        if not files:
            return
        path = files[-1]
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt file: say so, do not silently start over
            raise RuntimeError(
                f"cannot read the checkpoint {path} to resume from ({e}). Delete it to resume from the previous one, "
                f"or pass resume=False (--resume false) to start a new run."
            ) from e
        to_load = {}
        for name, obj in self.objects.items():
            if name not in checkpoint:
                raise RuntimeError(f"checkpoint {path} has no '{name}' entry (has {sorted(checkpoint)}).")
            to_load[name] = unwrap_model(obj) if isinstance(obj, torch.nn.Module) else obj
        max_epochs = engine.state.max_epochs
        lengths = {name: _schedule_lengths(obj) for name, obj in to_load.items()}
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=checkpoint)
        except (RuntimeError, ValueError, KeyError) as e:  # e.g. another network or optimiser than the saved run's
            raise RuntimeError(
                f"the checkpoint {path} does not fit this run ({e}). It was written by a run with other settings "
                f"(network, its size or classes, optimiser): resume with that run's settings, or start a new run "
                f"with resume=False (--resume false) or another ckpt_dir."
            ) from e
        for name, configured in lengths.items():  # a longer run keeps its configured schedule, not the saved one
            if configured != _schedule_lengths(to_load[name]):
                _restore_schedule_lengths(name, to_load[name], configured)
        if max_epochs is not None:
            engine.state.max_epochs = max(max_epochs, engine.state.epoch)
        logger.info(f"resumed from {path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")

    def save(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        last = engine.state.max_epochs is not None and epoch >= engine.state.max_epochs
        if not is_main_process() or (epoch % self.save_every_epochs and not last):
            return
        now = time.monotonic()
        if not last and self._last_save is not None and now - self._last_save < self.min_interval_s:
            return
        self.wait()  # one write at a time; a failed write stops training here
        self._last_save = now
        path = os.path.join(self.save_dir, f"checkpoint_epoch={epoch}.pt")
        state = _state_dicts(self.objects)
        if self._in_background():
            self._pending = _background_writer().submit(self._write, _snapshot(state), path)
        else:
            self._write(state, path)

    def _in_background(self) -> bool:
        if self.background != "auto":
            return bool(self.background)
        network_devices = {
            p.device.type for obj in self.objects.values() if isinstance(obj, torch.nn.Module) for p in obj.parameters()
        }
        return bool(network_devices - {"cpu"}) or (os.cpu_count() or 1) > torch.get_num_threads()

    def _write(self, state: dict[str, Any], path: str) -> None:
        save_atomic(state, path)
        for old in self.checkpoints()[: -self.n_saved]:
            os.remove(old)
        logger.info(f"saved training state to {path}")

    def wait(self, engine: Engine | None = None) -> None:
        """Return when this checkpointer's last write is on disk; raise its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except Exception as e:
                raise RuntimeError(
                    f"writing a training checkpoint to {self.save_dir} failed ({type(e).__name__}: {e}); the previous "
                    f"checkpoint there is intact. Free disk space or fix the folder's permissions, then run the same "
                    f"command again to resume."
                ) from e


class BestModelSaver:
    """Keep the network weights with the best validation metric as a plain state dict, plus a JSON of its figures.

    Attach to the evaluator. After each validation the value of ``metric_name`` in ``engine.state.metrics`` is
    compared with the best so far (read back from ``<model_path>.json`` on start, so resuming keeps the best); when
    it improves, the (unwrapped) network's state dict is written atomically to ``model_path`` and every metric of
    that validation to ``<model_path without .pt>_metrics.json``.

    Args:
        network: the trained network.
        model_path: usually ``@bundle_root + '/models/model.pt'``.
        metric_name: the metric to select by (higher is better unless ``mode="min"``).
        trainer: optional; its epoch/iteration are recorded with the figures.
        mode: "max" or "min".
    """

    def __init__(
        self,
        network: torch.nn.Module,
        model_path: str,
        metric_name: str,
        trainer: Engine | None = None,
        mode: str = "max",
    ) -> None:
        self.network = network
        self.model_path = model_path
        self.metrics_path = os.path.splitext(model_path)[0] + "_metrics.json"
        self.metric_name = metric_name
        self.trainer = trainer
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.mode = mode
        self.best: float | None = None
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path, encoding="utf-8") as f:
                self.best = json.load(f).get("metrics", {}).get(metric_name)

    def attach(self, engine: Engine) -> None:
        if is_main_process():  # the partial file of a run killed while it wrote the model
            remove_stale_temporaries(self.model_path)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.metric_name not in engine.state.metrics:
            raise KeyError(f"metric '{self.metric_name}' not computed; have {sorted(engine.state.metrics)}")
        value = float(engine.state.metrics[self.metric_name])
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if not better or not is_main_process():
            return
        self.best = value
        save_atomic(unwrap_model(self.network).state_dict(), self.model_path)
        record = {
            "metric_name": self.metric_name,
            "metrics": {k: _as_number(v) for k, v in engine.state.metrics.items()},
        }
        if self.trainer is not None:
            record.update(epoch=self.trainer.state.epoch, iteration=self.trainer.state.iteration)
        else:  # an evaluator run by ValidationHandler carries the trainer's epoch
            record.update(epoch=engine.state.epoch)
        write_json_atomic(record, self.metrics_path)
        logger.info(f"new best {self.metric_name} = {value:.4f}: saved {self.model_path}")


def _as_bool(value: Any) -> bool:
    """A flag that the bundle CLI may hand over as the string "false"/"true"."""
    return value if isinstance(value, bool) else str(value).strip().lower() not in ("false", "0", "no", "off")


def _as_number(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
