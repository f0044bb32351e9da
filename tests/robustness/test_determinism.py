"""The same seed gives the same training on CPU: a bundle trained twice, each time in a new process, validates with
the same figures and ends with the same weights; another seed ends elsewhere (so the comparison is not vacuous).

``transfer_segmentation`` runs with tiny settings on its built-in data; every source of randomness of the bundle is
derived from ``seed``: ``monai.utils.set_determinism`` (network initialisation, random transforms) in ``initialize``,
and the generator of the training sampler. Validation runs before training and after each epoch, so
``eval/val_history.csv`` has three rows to compare. The three trainings run at the same time, in separate processes
(which also shows that the results do not depend on what else the machine is doing).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundles.test_bundles import ROOT, _bundle_args, _bundle_copy, _env, _smoke

BUNDLE = ROOT / "bundles" / "transfer_segmentation"
SETTINGS = {**_smoke(BUNDLE), "max_epochs": 2, "iterations_per_epoch": 2, "val_interval": 1, "val_at_start": True}


def _train_concurrently(tmp_path: Path, seeds: dict[str, int]) -> dict[str, dict]:
    """Train one copy of the bundle per name with its seed, all at once (separate processes), and read back what each
    wrote: the validation history, the best model's figures, the last checkpoint's network and the best model."""
    runs = {}
    try:
        for name, seed in seeds.items():
            copy = _bundle_copy(BUNDLE, tmp_path / name)
            args = _bundle_args(copy, ["train.json"], {**SETTINGS, "seed": seed}, tmp_path / name, "train")
            with open(tmp_path / name / "train.log", "w", encoding="utf-8") as log:  # a file, not a pipe nobody reads yet
                proc = subprocess.Popen(
                    [sys.executable, *args], cwd=tmp_path / name, env=dict(_env(), OMP_NUM_THREADS="1"),
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            runs[name] = (copy, proc)
        for name, (copy, proc) in runs.items():
            proc.wait(timeout=900)
            out = (tmp_path / name / "train.log").read_text(encoding="utf-8")
            assert proc.returncode == 0, f"run {name} failed:\n{out[-6000:]}"
    finally:
        for _, proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = {}
    for name, (copy, _) in runs.items():
        with open(copy / "eval" / "val_history.csv", newline="", encoding="utf-8") as f:
            history = list(csv.DictReader(f))
        results[name] = {
            "history": history,
            "best": json.loads((copy / "models" / "model_metrics.json").read_text(encoding="utf-8")),
            "network": torch.load(copy / "models" / "checkpoint_epoch=2.pt", weights_only=True)["network"],
            "best_model": torch.load(copy / "models" / "model.pt", weights_only=True),
        }
    return results


def _differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.slow
def test_same_seed_same_metrics_and_weights_other_seed_other_weights(tmp_path: Path):
    runs = _train_concurrently(tmp_path, {"first": 0, "second": 0, "other_seed": 1})
    first, second, other = runs["first"], runs["second"], runs["other_seed"]
    assert len(first["history"]) == 3 and "val_mean_dice" in first["history"][0]
    assert first["history"] == second["history"]  # the CSV text: every digit written
    assert first["best"] == second["best"]
    assert not _differences(first["network"], second["network"]), "same seed, different weights"
    assert not _differences(first["best_model"], second["best_model"])

    changed = _differences(first["network"], other["network"])
    weights = [k for k, v in first["network"].items() if v.is_floating_point() and "num_batches" not in k]
    assert set(weights) <= set(changed), f"seed 1 left {sorted(set(weights) - set(changed))} as seed 0 did"
