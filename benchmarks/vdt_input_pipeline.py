"""Is VDT pre-training limited by the input pipeline or by the network? Measure both on this machine.

The Variable Dimension Transform (Zhang et al., arXiv:2201.01426) pre-trains a 3D network on 2D natural images, so
every sample costs a JPEG decode, a crop and resize, and the VDT transforms, and the network is cheap per sample (depth
3). This script builds the **bundle's own** training DataLoader and network from
``bundles/vdt_natural_image_pretraining/configs/train.json`` (no cache: every image is decoded each time) and measures

- the input pipeline alone, in images/s, with 0, 1 and 2 DataLoader workers (0 workers also with the main process
  limited to one torch thread, as a worker is);
- the network alone: training steps/s (forward under the bundle's bf16 autocast inferer, loss, backward, optimiser
  step) on one batch of the same size, and the images/s this means;
- both together (the training loop: every step waits for the next batch), with the same worker counts;

then prints a table and says which side limits and by how much. On a small machine the workers and the training step
share the same cores, which is what the end-to-end rows show.

Usage (from the repository root)::

    python benchmarks/vdt_input_pipeline.py                                   # built-in natural-image set
    python benchmarks/vdt_input_pipeline.py --dataset_dir /data/hymenoptera_data
    python benchmarks/vdt_input_pipeline.py --patch_size 3 96 96 --batch_size 32 --workers 0 2 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["BUNDLE", "bundle_parser", "measure_pipeline", "measure_network", "measure_end_to_end", "main"]

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vdt_natural_image_pretraining"


def bundle_parser(overrides: dict):
    """A ``ConfigParser`` on the bundle's ``train.json`` with ``overrides`` applied (a fresh one per setting)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLE)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _iterate(loader, n_batches: int) -> tuple[float, int, dict]:
    """Time ``n_batches`` batches after a first (warm-up) batch; return seconds, images, and the first batch."""
    iterator = iter(loader)
    first = next(iterator)
    start, images = time.perf_counter(), 0
    for _ in range(n_batches):
        batch = next(iterator)
        images += int(batch["image"].shape[0])
    return time.perf_counter() - start, images, first


def measure_pipeline(overrides: dict, workers: int, n_batches: int) -> tuple[float, dict]:
    """Images/s of the bundle's training DataLoader with ``workers`` workers (no network), and one batch."""
    parser = bundle_parser({**overrides, "num_workers": workers})
    loader = parser.get_parsed_content("train#dataloader")
    seconds, images, first = _iterate(loader, n_batches)
    return images / seconds, first


def _train_step(network, loss, optimizer, inferer, batch, device) -> None:
    images, labels = batch["image"].to(device), batch["label"].to(device)
    optimizer.zero_grad(set_to_none=True)
    value = loss(inferer(images, network), labels)
    value.backward()
    optimizer.step()


def _training_objects(overrides: dict):
    parser = bundle_parser(overrides)
    network = parser.get_parsed_content("network")
    network.train()
    return (
        parser,
        network,
        parser.get_parsed_content("loss"),
        parser.get_parsed_content("optimizer"),
        parser.get_parsed_content("train#inferer"),
        parser.get_parsed_content("device"),
    )


def measure_network(overrides: dict, batch: dict, n_steps: int) -> float:
    """Training steps/s of the bundle's network, loss, optimiser and (bf16) inferer on one fixed batch."""
    _, network, loss, optimizer, inferer, device = _training_objects(overrides)
    _train_step(network, loss, optimizer, inferer, batch, device)  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(n_steps):
        start = time.perf_counter()
        _train_step(network, loss, optimizer, inferer, batch, device)
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def measure_end_to_end(overrides: dict, workers: int, n_steps: int) -> float:
    """Images/s of the training loop: DataLoader with ``workers`` workers feeding training steps."""
    parser, network, loss, optimizer, inferer, device = _training_objects({**overrides, "num_workers": workers})
    iterator = iter(parser.get_parsed_content("train#dataloader"))
    _train_step(network, loss, optimizer, inferer, next(iterator), device)  # warm-up
    start, images = time.perf_counter(), 0
    for _ in range(n_steps):
        batch = next(iterator)
        _train_step(network, loss, optimizer, inferer, batch, device)
        images += int(batch["image"].shape[0])
    return images / (time.perf_counter() - start)


def _dataset_summary(overrides: dict) -> str:
    from PIL import Image

    parser = bundle_parser(overrides)
    items = parser.get_parsed_content("train_datalist")
    sizes = []
    for item in items[:: max(1, len(items) // 50)]:
        with Image.open(item["image"]) as im:
            sizes.append(im.size)
    widths, heights = sorted(w for w, _ in sizes), sorted(h for _, h in sizes)
    return (
        f"{parser.get_parsed_content('dataset_dir')}: {len(items)} training images, "
        f"{parser.get_parsed_content('num_classes')} classes, median size {widths[len(widths) // 2]} x "
        f"{heights[len(heights) // 2]} px"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurements and print the table; returns the process exit code."""
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--dataset_dir", default=None, help="ImageNet-layout folder (default: the built-in set)")
    args.add_argument("--patch_size", type=int, nargs=3, default=None, help="depth and image size, e.g. 3 64 64")
    args.add_argument("--batch_size", type=int, default=None, help="default: the bundle's")
    args.add_argument("--depth", type=int, default=None, help="ResNet depth (default: the bundle's)")
    args.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args.add_argument("--batches", type=int, default=8, help="timed batches per pipeline measurement")
    args.add_argument("--steps", type=int, default=5, help="timed training steps per network measurement")
    args.add_argument("--no_end_to_end", action="store_true", help="skip the combined measurement")
    opts = args.parse_args(argv)

    overrides: dict = {"cache_rate": 0.0, "iterations_per_epoch": 10_000, "amp": True}
    if opts.dataset_dir:
        overrides["dataset_dir"] = os.path.abspath(opts.dataset_dir)
    for key in ("patch_size", "batch_size", "depth"):
        if getattr(opts, key) is not None:
            overrides[key] = getattr(opts, key)
    probe = bundle_parser(overrides)
    batch_size = int(probe.get_parsed_content("batch_size"))
    patch = list(probe.get_parsed_content("patch_size"))
    print(f"dataset   {_dataset_summary(overrides)}")
    print(
        f"setting   ResNet-{probe.get_parsed_content('depth')}, input {patch} (depth, size), batch {batch_size}, "
        f"bf16 autocast, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPU cores, no cache"
    )

    rows: list[tuple[str, str, float, float]] = []
    pipeline: dict[int, float] = {}
    batch = None
    for workers in opts.workers:
        rate, first = measure_pipeline(overrides, workers, opts.batches)
        pipeline[workers] = rate
        batch = batch or first
        rows.append(("input pipeline (decode + resize + VDT)", str(workers), rate, 1000 * batch_size / rate))
        if workers == 0 and torch.get_num_threads() > 1:
            # DataLoader workers run single-threaded; the main process uses every torch thread for small ops
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                single, _ = measure_pipeline(overrides, 0, opts.batches)
            finally:
                torch.set_num_threads(threads)
            rows.append(("input pipeline, main process at 1 torch thread", "0", single, 1000 * batch_size / single))
    steps = measure_network(overrides, batch, opts.steps)
    network_rate = steps * batch_size
    rows.append((f"network train step (bf16), {steps:.2f} steps/s", "-", network_rate, 1000 / steps))
    end_to_end: dict[int, float] = {}
    if not opts.no_end_to_end:
        for workers in opts.workers:
            rate = measure_end_to_end(overrides, workers, opts.steps)
            end_to_end[workers] = rate
            rows.append(("end to end (training loop)", str(workers), rate, 1000 * batch_size / rate))

    print()
    print("| stage | workers | images/s | ms per batch |")
    print("|---|---|---|---|")
    for stage, workers, rate, ms in rows:
        print(f"| {stage} | {workers} | {rate:.1f} | {ms:.0f} |")
    print()
    for workers, rate in pipeline.items():
        if rate < network_rate:
            verdict = f"the input pipeline limits: it delivers {network_rate / rate:.1f}x fewer images than the network"
        else:
            verdict = f"the network limits: the pipeline delivers {rate / network_rate:.1f}x more images than it needs"
        print(f"{workers} worker(s): {verdict}")
    if end_to_end:
        best = max(end_to_end, key=end_to_end.get)
        print(
            f"training loop: best with {best} worker(s), {end_to_end[best]:.1f} images/s = "
            f"{end_to_end[best] / network_rate:.0%} of the network alone (workers share the CPU cores with the step)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
