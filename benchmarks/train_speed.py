"""How fast does each bundle train on this machine, and what does the framework cost? One run, side by side.

For every bundle's **default** network, batch, patch and precision (its ``configs/train.json``), this script measures

1. **framework overhead**: the bundle's own trainer (MONAI ``SupervisedTrainer`` with all the bundle's handlers:
   learning-rate schedule, stats, TensorBoard, checkpoints) against a bare PyTorch loop running the same network,
   optimiser, loss, inferer and precision on the same batches already in memory. Epochs of the two alternate, so a
   slower or faster phase of the machine hits both; the trainer's is an epoch in the middle of a run. Target:
   trainer / bare >= 0.95. The resumable checkpoint, which the bundles write at most once a minute, is timed on its
   own, with its share of the training time at that interval.
2. **data wait**: the share of each training step spent waiting for the next batch with the bundle's default data
   settings (``CacheDataset`` caching the deterministic pre-processing, DataLoader workers), measured on ignite's
   ``GET_BATCH_STARTED``/``GET_BATCH_COMPLETED`` events of the real trainer after a warm-up epoch. Target: < 5%.
3. **precision**: the bare loop under bf16 autocast against fp32 (target on a CPU with AMX: >= 2x for the 3D
   networks). On a GPU (``--device cuda``) also fp16 autocast with a gradient scaler, bf16 with channels-last memory
   and bf16 with ``torch.compile``. ``--quality BUNDLE`` additionally trains that bundle end to end with ``amp`` on
   and off (same seeds, same steps) and compares the final validation scores.
4. **achieved FLOP/s**: the model FLOPs of one training step (``torch.utils.flop_counter``: forward + backward)
   times the measured steps/s, against this machine's bf16 (and fp32) matrix-multiply peak measured at start.
5. **sliding-window inference**: volumes/s of the bundle's validation inferer (its ``sw_batch_size`` and bf16
   autocast) against MONAI's ``SlidingWindowInferer`` defaults (``sw_batch_size=1``, fp32) with the same ROI and
   overlap, on a validation volume of the bundle's data, network in eval mode. Bundles that infer on the whole
   volume (classification) say so.

Everything runs on the built-in generated data (nothing is downloaded); pre-trained starts are replaced by a
random initialisation (same network, same speed). Results are printed as tables and written to
``<output>/train_speed.json`` and ``<output>/train_speed.md``.

Usage (from the repository root)::

    python benchmarks/train_speed.py                                        # all bundles, CPU
    python benchmarks/train_speed.py --bundles transfer_segmentation --quality transfer_segmentation
    python benchmarks/train_speed.py --device cuda --variants fp32 bf16 fp16 bf16-cl bf16-compile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = ROOT / "bundles"
if str(ROOT) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(ROOT))

#: settings that keep a bundle's network and speed but need no pre-trained file (a random start of the same network)
BENCH_OVERRIDES: dict[str, dict[str, Any]] = {
    # the default start, med3d-bundle, is the Med3D bundle's ResNet-10 encoder
    "transfer_segmentation": {"source": "scratch", "architecture": "med3d-resnet10"},
    "transfer_classification": {"source": "scratch", "architecture": "med3d-resnet10"},
    "crossdim_2d_to_3d_segmentation": {"init": "scratch", "auto_stage_one": False},
}

#: precision/layout variants of the bare loop: (autocast dtype, gradient scaler, channels-last, torch.compile)
VARIANTS: dict[str, tuple[torch.dtype | None, bool, bool, bool]] = {
    "fp32": (None, False, False, False),
    "bf16": (torch.bfloat16, False, False, False),
    "fp16": (torch.float16, True, False, False),
    "bf16-cl": (torch.bfloat16, False, True, False),
    "bf16-compile": (torch.bfloat16, False, False, True),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------------------
# machine peak
# ---------------------------------------------------------------------------------------------------------------
def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """FLOP/s of a large square matrix product in ``dtype`` (the best of repeated timings)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * n**3 / best


# ---------------------------------------------------------------------------------------------------------------
# a bundle, parsed with its defaults
# ---------------------------------------------------------------------------------------------------------------
class BundleUnderTest:
    """A bundle's ``train.json`` parsed with its default settings, in a temporary copy (outputs go there)."""

    def __init__(self, name: str, device: torch.device, workdir: Path, extra: dict[str, Any]):
        from monai.bundle import ConfigParser

        self.name = name
        self.root = workdir / name
        shutil.copytree(BUNDLES_DIR / name, self.root, ignore=shutil.ignore_patterns("models", "eval", "logs"))
        self.parser = ConfigParser()
        self.parser.read_config(str(self.root / "configs" / "train.json"))
        # validation is left out of the training timings (its inference is measured on its own, item 5)
        settings = {"bundle_root": str(self.root), "resume": False, "device": f"$torch.device('{device}')",
                    "val_interval": 10**6}  # fmt: skip
        if "val_at_start" in self.parser:
            settings["val_at_start"] = False
        settings.update(BENCH_OVERRIDES.get(name, {}))
        settings.update(extra)
        for key, value in settings.items():
            self.parser[key] = value
        self.parser.parse()
        self.device = device
        self.defaults = {k: self.parser.get_parsed_content(k) for k in ("batch_size", "patch_size", "amp", "num_workers", "cache_rate")}
        self.iterations_per_epoch = int(self.parser.get_parsed_content("iterations_per_epoch"))

    def get(self, key: str) -> Any:
        return self.parser.get_parsed_content(key)


def prepare(trainer: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
    """The trainer's own batch preparation, in the shape ``SupervisedTrainer._iteration`` unpacks it."""
    out = trainer.prepare_batch(batch, trainer.state.device, trainer.non_blocking)
    if len(out) == 2:
        return out[0], out[1], (), {}
    return out


def move_batch(batch: Any, device: torch.device) -> Any:
    """A copy of a batch on ``device`` (a copy also on the CPU: a batch from a worker lives in shared memory, and
    holding hundreds of them runs out of file descriptors)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, copy=True)
    if isinstance(batch, dict):
        return {k: move_batch(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_batch(v, device) for v in batch)
    return batch


# ---------------------------------------------------------------------------------------------------------------
# 2. data wait, on the real trainer with the default DataLoader
# ---------------------------------------------------------------------------------------------------------------
def measure_data_wait(trainer: Any, epochs: int) -> dict[str, float]:
    """Run the trainer for 1 warm-up + ``epochs`` epochs; time spent in ``next(loader)`` against the epoch time."""
    from ignite.engine import Events

    rec = {"wait": 0.0, "epoch": 0.0, "steps": 0}
    marks: dict[str, float] = {}
    device = trainer.state.device

    def get_started(_):
        marks["get"] = time.perf_counter()

    def get_completed(engine):
        if engine.state.epoch > 1:
            rec["wait"] += time.perf_counter() - marks["get"]

    def epoch_started(_):
        marks["epoch"] = time.perf_counter()

    def epoch_completed(engine):
        sync(device)
        if engine.state.epoch > 1:
            rec["epoch"] += time.perf_counter() - marks["epoch"]
            rec["steps"] += engine.state.epoch_length

    handles = [
        trainer.add_event_handler(Events.GET_BATCH_STARTED, get_started),
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, get_completed),
        trainer.add_event_handler(Events.EPOCH_STARTED, epoch_started),
        trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_completed),
    ]
    trainer.state.max_epochs = 1 + epochs
    trainer.run()
    for h in handles:
        h.remove()
    return {
        "data_wait_share": rec["wait"] / rec["epoch"],
        "loader_steps_per_s": rec["steps"] / rec["epoch"],
        "measured_steps": rec["steps"],
    }


# ---------------------------------------------------------------------------------------------------------------
# 1. and 3. trainer against the bare loop, and precision variants of the bare loop
# ---------------------------------------------------------------------------------------------------------------
def trainer_epoch(trainer: Any, batches: list) -> float:
    """An epoch of the bundle's trainer over in-memory batches in the middle of a run: the second of three (the run
    stops after it), timed from its EPOCH_STARTED to the last handler of its EPOCH_COMPLETED. It carries what such an
    epoch of a real run carries: its per-epoch handlers and, when the bundle checkpoints every epoch, its checkpoint
    (the bundles save at most every ``checkpoint_interval_s``, so this one is skipped) and the background write of
    the first epoch's; the first and last epochs' checkpoints and per-run set-up are left out."""
    from ignite.engine import Events

    marks: dict[str, float] = {}

    def started(engine):
        if engine.state.epoch == 2:
            marks["t0"] = time.perf_counter()

    def completed(engine):
        if engine.state.epoch == 2:
            sync(trainer.state.device)
            marks["t1"] = time.perf_counter()
            engine.terminate()

    h0 = trainer.add_event_handler(Events.EPOCH_STARTED, started)
    h1 = trainer.add_event_handler(Events.EPOCH_COMPLETED, completed)
    trainer.data_loader = batches
    trainer.state.epoch_length = len(batches)
    trainer.state.max_epochs = 3
    trainer.state.epoch = 0
    trainer.state.iteration = 0
    trainer.run()
    h0.remove()
    h1.remove()
    return marks["t1"] - marks["t0"]


def iteration_log_handlers(trainer: Any) -> list[Callable]:
    """The per-iteration handlers of MONAI's StatsHandler/TensorBoardStatsHandler (each reads the loss with
    ``.item()``, which on a GPU waits for the step to finish)."""
    from ignite.engine import Events
    from monai.handlers import StatsHandler, TensorBoardStatsHandler

    return [
        h for h, *_ in trainer._event_handlers.get(Events.ITERATION_COMPLETED, [])
        if isinstance(getattr(h, "__self__", None), (StatsHandler, TensorBoardStatsHandler))
    ]  # fmt: skip


def trainer_epoch_without_iteration_logs(trainer: Any, batches: list) -> float:
    """``trainer_epoch`` with the per-iteration loss logging detached (epoch logs stay)."""
    from ignite.engine import Events

    handlers = iteration_log_handlers(trainer)
    for h in handlers:
        trainer.remove_event_handler(h, Events.ITERATION_COMPLETED)
    try:
        return trainer_epoch(trainer, batches)
    finally:
        for h in handlers:
            trainer.add_event_handler(Events.ITERATION_COMPLETED, h)


class BareLoop:
    """The training step of ``SupervisedTrainer`` written out in plain PyTorch, for one precision variant."""

    def __init__(self, trainer: Any, inferer: Any, scheduler: Any, variant: str = "bundle"):
        self.trainer, self.scheduler = trainer, scheduler
        self.network, self.optimizer, self.loss_fn = trainer.network, trainer.optimizer, trainer.loss_function
        self.variant = variant
        if variant == "bundle":  # exactly what the trainer runs: the bundle's inferer and precision
            self.forward_inferer, self.dtype, self.scaler, self.channels_last = inferer, None, None, False
        else:
            dtype, scaler, self.channels_last, compiled = VARIANTS[variant]
            self.dtype = dtype
            self.forward_inferer = getattr(inferer, "inferer", inferer)  # the inferer inside the autocast wrapper
            self.scaler = torch.amp.GradScaler(trainer.state.device.type) if scaler else None
            if compiled:
                self.network = torch.compile(self.network)
        self.device_type = trainer.state.device.type

    def step(self, batch: Any) -> None:
        inputs, targets, args, kwargs = prepare(self.trainer, batch)
        if self.channels_last and inputs.ndim == 5:
            inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
        self.network.train()
        self.optimizer.zero_grad(set_to_none=self.trainer.optim_set_to_none)
        ctx = torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with ctx:
            preds = self.forward_inferer(inputs, self.network, *args, **kwargs)
        loss = self.loss_fn(_to_float(preds), targets).mean()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def epoch(self, batches: list) -> float:
        if self.channels_last:  # weights in channels-last for this loop only (outside the timing)
            self.network.to(memory_format=torch.channels_last_3d)
        sync(self.trainer.state.device)
        t0 = time.perf_counter()
        for batch in batches:
            self.step(batch)
        sync(self.trainer.state.device)
        elapsed = time.perf_counter() - t0
        if self.channels_last:
            self.network.to(memory_format=torch.contiguous_format)
        return elapsed


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out.float()
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    return out


def model_flops(loop: BareLoop, batch: Any) -> float:
    """FLOPs of one forward + backward pass of the network (matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs, targets, args, kwargs = prepare(loop.trainer, batch)
    inferer = getattr(loop.forward_inferer, "inferer", loop.forward_inferer)
    with FlopCounterMode(display=False) as counter:
        preds = inferer(inputs, loop.network, *args, **kwargs)
        loop.loss_fn(_to_float(preds), targets).mean().backward()
    loop.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure_checkpoint(bundle: BundleUnderTest, trainer: Any, repeats: int = 3) -> dict[str, Any]:
    """Seconds to write the bundle's resumable checkpoint once (synchronously), and its share of the time between two
    saves at the bundle's ``checkpoint_interval_s`` (the cost the trainer column leaves out)."""
    from monai_ext.engines.checkpoint import ResumableCheckpoint, _state_dicts, save_atomic

    savers = [h for h in bundle.get("train#handlers") if isinstance(h, ResumableCheckpoint)]
    if not savers:
        return {}
    objects = dict(savers[0].objects, trainer=trainer)
    path = bundle.root / "checkpoint_timing.pt"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        save_atomic(_state_dicts(objects), str(path))
        times.append(time.perf_counter() - t0)
    size = path.stat().st_size
    path.unlink()
    interval = float(savers[0].min_interval_s)
    out = {"checkpoint_mb": size / 2**20, "checkpoint_write_s": statistics.median(times), "checkpoint_interval_s": interval}
    if interval > 0:
        out["checkpoint_share"] = out["checkpoint_write_s"] / (interval + out["checkpoint_write_s"])
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5. sliding-window inference
# ---------------------------------------------------------------------------------------------------------------
def measure_sliding_window(bundle: BundleUnderTest, repeats: int) -> dict[str, Any]:
    from monai.inferers import SlidingWindowInferer

    inferer = bundle.get("validate#inferer")
    inner = getattr(inferer, "inferer", inferer)
    if not isinstance(inner, SlidingWindowInferer):
        return {"sliding_window": "n/a: the bundle infers on the whole input"}
    evaluator = bundle.get("validate#evaluator")
    batch = next(iter(evaluator.data_loader))  # one validation volume, prepared as the evaluator prepares it
    image, _, args, kwargs = prepare(evaluator, move_batch(batch, bundle.device))
    image = image[:1]
    network = bundle.get("network")
    network.eval()
    default = SlidingWindowInferer(roi_size=inner.roi_size, overlap=inner.overlap)  # MONAI's defaults otherwise

    def run(inf: Callable) -> float:
        with torch.no_grad():
            inf(image, network, *args, **kwargs)  # warm-up
            sync(bundle.device)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                inf(image, network, *args, **kwargs)
                sync(bundle.device)
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_default, t_bundle = run(default), run(inferer)
    network.train()
    return {
        "volume_shape": list(image.shape[2:]),
        "roi": list(inner.roi_size),
        "sw_batch_size": inner.sw_batch_size,
        "overlap": inner.overlap,
        "volumes_per_s_monai_default": 1 / t_default,
        "volumes_per_s_bundle": 1 / t_bundle,
        "sliding_window_speedup": t_default / t_bundle,
    }


# ---------------------------------------------------------------------------------------------------------------
# one bundle
# ---------------------------------------------------------------------------------------------------------------
def benchmark_bundle(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    device = torch.device(args.device)
    extra = dict(args.set)
    if args.steps:
        extra["iterations_per_epoch"] = args.steps
    t0 = time.perf_counter()
    bundle = BundleUnderTest(name, device, workdir, extra)
    trainer = bundle.get("train#trainer")  # builds the dataset: CacheDataset caches the deterministic part here
    scheduler = bundle.get("lr_scheduler") if "lr_scheduler" in bundle.parser else None
    inferer = bundle.get("train#inferer")
    res: dict[str, Any] = {
        "bundle": name,
        "network": type(bundle.get("network")).__name__,
        **{k: v for k, v in bundle.defaults.items()},
        "steps_per_epoch": bundle.iterations_per_epoch,
        "setup_s": time.perf_counter() - t0,
    }
    log(f"{name}: {res['network']}, batch {res['batch_size']}, patch {res['patch_size']}, amp {res['amp']}, "
        f"set-up (data cached) {res['setup_s']:.1f}s")  # fmt: skip

    res.update(measure_data_wait(trainer, args.data_epochs))
    log(f"{name}: data wait {100 * res['data_wait_share']:.1f}% of the step time ({res['loader_steps_per_s']:.2f} steps/s)")

    batches = []
    for batch in trainer.data_loader:
        batches.append(move_batch(batch, device))
        if len(batches) == bundle.iterations_per_epoch:
            break
    bundle_loop = BareLoop(trainer, inferer, scheduler, "bundle")
    variants = [v for v in args.variants if v != "bundle"]
    loops = {v: BareLoop(trainer, inferer, scheduler, v) for v in variants}
    for v, loop in list(loops.items()):  # compile and warm up outside the timings
        t = time.perf_counter()
        try:
            loop.epoch(batches[:2])
        except Exception as e:  # a variant this machine or network cannot run is reported, not fatal
            res.setdefault("failed_variants", {})[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            log(f"{name}: variant {v} failed: {res['failed_variants'][v]}")
            del loops[v]
            continue
        if loop.variant.endswith("compile"):
            res["compile_s"] = time.perf_counter() - t
    variants = list(loops)
    times: dict[str, list[float]] = {"trainer": [], "trainer_no_iteration_logs": [], "bare": [],
                                     **{v: [] for v in variants}}  # fmt: skip
    trainer_epoch(trainer, batches[:2])  # warm-up of the trainer path
    bundle_loop.epoch(batches[:2])
    for r in range(args.rounds):
        times["trainer"].append(trainer_epoch(trainer, batches))
        times["trainer_no_iteration_logs"].append(trainer_epoch_without_iteration_logs(trainer, batches))
        times["bare"].append(bundle_loop.epoch(batches))
        for v, loop in loops.items():
            times[v].append(loop.epoch(batches))
        log(f"{name}: round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {len(batches) / t[-1]:.2f} steps/s" for k, t in times.items()))  # fmt: skip
    sps = {k: len(batches) / statistics.median(t) for k, t in times.items()}
    res["steps_per_s"] = sps
    res["trainer_over_bare"] = sps["trainer"] / sps["bare"]
    res["trainer_no_iteration_logs_over_bare"] = sps["trainer_no_iteration_logs"] / sps["bare"]
    if "fp32" in sps:
        for v in variants:
            res[f"{v}_over_fp32"] = sps[v] / sps["fp32"]

    res.update(measure_checkpoint(bundle, trainer))
    if "checkpoint_write_s" in res:
        log(f"{name}: checkpoint {res['checkpoint_mb']:.0f} MB written in {res['checkpoint_write_s']:.2f}s")
    flops = model_flops(bundle_loop, batches[0])
    res["gflop_per_step"] = flops / 1e9
    res["achieved_tflops"] = {k: flops * s / 1e12 for k, s in sps.items()}

    res.update(measure_sliding_window(bundle, args.sw_repeats))
    if "sliding_window_speedup" in res:
        log(f"{name}: sliding window {res['volumes_per_s_bundle']:.3f} volumes/s (bundle) against "
            f"{res['volumes_per_s_monai_default']:.3f} (MONAI defaults) on {res['volume_shape']}")  # fmt: skip
    return res


# ---------------------------------------------------------------------------------------------------------------
# 3b. validation score with and without mixed precision, end to end
# ---------------------------------------------------------------------------------------------------------------
def quality_run(name: str, amp: bool, seed: int, workdir: Path, extra: dict[str, Any]) -> float:
    root = workdir / f"quality_{name}_amp{int(amp)}_seed{seed}"
    shutil.copytree(BUNDLES_DIR / name, root, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    settings = {"bundle_root": str(root), "amp": amp, "seed": seed, "resume": False,
                **BENCH_OVERRIDES.get(name, {}), **extra}  # fmt: skip
    args_file = root / "bench_args.json"
    args_file.write_text(json.dumps(settings), encoding="utf-8")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs" / "train.json"),
           "--meta_file", str(root / "configs" / "metadata.json"), "--args_file", str(args_file)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} (amp={amp}, seed={seed}) failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    history = root / "eval" / "val_history.csv"
    if history.exists():
        rows = list(csv.DictReader(history.open(encoding="utf-8")))
        score = float(rows[-1][list(rows[-1])[2]])  # the key metric, last validation (= after the same steps)
    else:
        score = float(json.loads((root / "models" / "model_metrics.json").read_text(encoding="utf-8"))["metrics"].popitem()[1])
    log(f"quality {name}: amp={amp} seed={seed}: final validation score {score:.4f} in {time.perf_counter() - t0:.0f}s")
    return score


def measure_quality(name: str, seeds: int, workdir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    scores = {amp: [quality_run(name, amp, s, workdir, extra) for s in range(seeds)] for amp in (True, False)}
    out = {"bundle": name, "seeds": seeds, "bf16": scores[True], "fp32": scores[False]}
    for amp, key in ((True, "bf16"), (False, "fp32")):
        out[f"{key}_mean"] = statistics.mean(scores[amp])
        out[f"{key}_sd"] = statistics.stdev(scores[amp]) if seeds > 1 else 0.0
    return out


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------
def markdown(results: list[dict[str, Any]], peaks: dict[str, float], quality: list[dict], args) -> str:
    dev = args.device
    lines = [
        f"Measured by `python benchmarks/train_speed.py {' '.join(sys.argv[1:])}` on {describe_machine(dev)}.",
        f"Matrix-multiply peak measured in the same run: bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s, "
        f"fp32 {peaks['fp32'] / 1e12:.2f} TFLOP/s.",
        "",
        "| bundle | network | batch x patch | bundle trainer steps/s | bare loop steps/s | trainer / bare "
        "| same, no per-iteration loss log | data wait | "
        + " | ".join(f"{v} steps/s" for v in args.variants)
        + " | bf16 / fp32 | GFLOP/step | achieved TFLOP/s (trainer) | of bf16 peak |",
        "|---" * (12 + len(args.variants)) + "|",
    ]
    for r in results:
        sps = r["steps_per_s"]
        patch = "x".join(str(p) for p in r["patch_size"])
        ach = r["achieved_tflops"]["trainer"]
        lines.append(
            f"| {r['bundle']} | {r['network']} | {r['batch_size']} x {patch} | {sps['trainer']:.2f} | {sps['bare']:.2f} "
            f"| **{r['trainer_over_bare']:.3f}** | {r['trainer_no_iteration_logs_over_bare']:.3f} "
            f"| **{100 * r['data_wait_share']:.1f}%** ({r['num_workers']} workers) | "
            + " | ".join(f"{sps[v]:.2f}" if v in sps else "failed" for v in args.variants)
            + f" | **{r.get('bf16_over_fp32', float('nan')):.2f}x** | {r['gflop_per_step']:.1f} | {ach:.3f} "
            f"| {100 * ach * 1e12 / peaks['bf16']:.1f}% |"
        )
    lines += ["", "| bundle | checkpoint MB | write s | saved at most every | share of training time |",
              "|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        if "checkpoint_write_s" in r:
            every = f"{r['checkpoint_interval_s']:.0f} s" if r["checkpoint_interval_s"] > 0 else "epoch"
            share = f"{100 * r['checkpoint_share']:.1f}%" if "checkpoint_share" in r else "see trainer / bare"
            lines.append(f"| {r['bundle']} | {r['checkpoint_mb']:.0f} | {r['checkpoint_write_s']:.2f} | {every} | {share} |")
    lines += ["", "| bundle | volume | ROI, overlap | MONAI defaults (sw_batch_size 1, fp32) volumes/s | "
              "bundle inferer volumes/s | speed-up |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        if "sliding_window_speedup" in r:
            lines.append(
                f"| {r['bundle']} | {'x'.join(map(str, r['volume_shape']))} | {'x'.join(map(str, r['roi']))}, "
                f"{r['overlap']} | {r['volumes_per_s_monai_default']:.3f} | {r['volumes_per_s_bundle']:.3f} "
                f"(sw_batch_size {r['sw_batch_size']}, bf16) | **{r['sliding_window_speedup']:.2f}x** |"
            )
        else:
            lines.append(f"| {r['bundle']} | {r['sliding_window']} | | | | |")
    if quality:
        lines += ["", "| bundle | seeds | final validation score, bf16 | fp32 |", "|---|---|---|---|"]
        for q in quality:
            lines.append(f"| {q['bundle']} | {q['seeds']} | {q['bf16_mean']:.4f} ± {q['bf16_sd']:.4f} "
                         f"({', '.join(f'{s:.4f}' for s in q['bf16'])}) | {q['fp32_mean']:.4f} ± {q['fp32_sd']:.4f} "
                         f"({', '.join(f'{s:.4f}' for s in q['fp32'])}) |")  # fmt: skip
    return "\n".join(lines) + "\n"


def describe_machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()} with {torch.get_num_threads()} threads (torch {torch.__version__})"


def parse_set(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    default_bundles = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs" / "train.json").exists())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundles", nargs="+", default=default_bundles, choices=default_bundles)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="bare-loop precision variants (default: fp32 bf16 on CPU; all on CUDA)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="timed epochs of each path (median reported)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: the bundle's iterations_per_epoch)")
    p.add_argument("--data_epochs", type=int, default=1, help="epochs timed for the data wait, after one warm-up")
    p.add_argument("--sw_repeats", type=int, default=3)
    p.add_argument("--quality", nargs="*", default=[], help="bundles to train end to end with amp on and off")
    p.add_argument("--quality_seeds", type=int, default=2)
    p.add_argument("--set", nargs="*", type=parse_set, default=[], metavar="KEY=VALUE",
                   help="extra bundle settings for every bundle (JSON values), e.g. max_val_cases=2")  # fmt: skip
    p.add_argument("--output", default="benchmark_results/train_speed")
    args = p.parse_args(argv)
    if args.variants is None:
        args.variants = ["fp32", "bf16"] if args.device == "cpu" else list(VARIANTS)
    os.environ.setdefault("MONAI_EXT_DATA_CACHE", str(ROOT / ".cache" / "data"))
    device = torch.device(args.device)
    log(f"machine: {describe_machine(args.device)}")
    peaks = {"bf16": matmul_peak(device, torch.bfloat16), "fp32": matmul_peak(device, torch.float32)}
    log(f"matmul peak: bf16 {peaks['bf16'] / 1e12:.2f} TFLOP/s, fp32 {peaks['fp32'] / 1e12:.2f} TFLOP/s")
    results, quality, failed = [], [], {}
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        for name in args.bundles:
            torch.manual_seed(0)
            try:
                results.append(benchmark_bundle(name, args, Path(tmp)))
            except Exception as e:  # one broken bundle must not cost the figures of the others
                log(f"{name}: FAILED: {type(e).__name__}: {e}")
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        for name in args.quality:
            quality.append(measure_quality(name, args.quality_seeds, Path(tmp), dict(args.set)))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": describe_machine(args.device), "argv": sys.argv[1:], "peaks_flops": peaks,
              "bundles": results, "quality": quality, "failed": failed}  # fmt: skip
    (out / "train_speed.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    table = markdown(results, peaks, quality, args)
    (out / "train_speed.md").write_text(table, encoding="utf-8")
    print("\n" + table)
    log(f"written {out / 'train_speed.json'} and {out / 'train_speed.md'}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    return report


if __name__ == "__main__":
    main()
