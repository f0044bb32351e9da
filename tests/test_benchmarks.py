"""The benchmark scripts run end to end and report every figure (their numbers are not judged here: no timed tests)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_speed_reports_every_figure(tmp_path):
    out = tmp_path / "speed"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--bundles", "transfer_segmentation",
           "--steps", "2", "--rounds", "1", "--sw_repeats", "1", "--variants", "fp32", "bf16",
           "--set", "max_val_cases=1", "--output", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((out / "train_speed.json").read_text(encoding="utf-8"))
    assert report["failed"] == {}
    assert report["peaks_flops"]["bf16"] > 0 and report["peaks_flops"]["fp32"] > 0
    (r,) = report["bundles"]
    assert r["bundle"] == "transfer_segmentation" and r["network"] == "Med3DSegmenter"
    for key in ("trainer_over_bare", "data_wait_share", "bf16_over_fp32", "gflop_per_step", "sliding_window_speedup"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert set(r["steps_per_s"]) == {"trainer", "trainer_no_iteration_logs", "bare", "fp32", "bf16"}
    assert 0 <= r["data_wait_share"] < 1
    # one training step of a 3D ResNet-10 U-Net on 2 x 48^3 is tens of GFLOP, not zero (the FLOP counter saw it)
    assert 10 < r["gflop_per_step"] < 1000
    # the resumable checkpoint (ResNet-10 segmenter + AdamW: ~170 MB) is timed on its own, at the bundle's interval
    assert 50 < r["checkpoint_mb"] < 1000 and r["checkpoint_write_s"] > 0 and r["checkpoint_interval_s"] == 60
    assert 0 < r["checkpoint_share"] < 1
    table = (out / "train_speed.md").read_text(encoding="utf-8")
    assert "| transfer_segmentation | Med3DSegmenter |" in table and "sliding_window" not in table
