"""The fine-tuning bundles start from generated checkpoints in the published formats, exactly as a user runs them
(``python -m monai.bundle run`` with ``--source`` and ``--pretrained_path``), and the transfer benchmark runs them.

The generic harness (test_bundles.py) covers train/resume/evaluate/inference/export/DDP of both bundles from scratch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from monai_ext.benchmark.transfer import BenchmarkArm, parse_arm, parse_setting, plan_runs, summarise
from monai_ext.networks.med3d import Med3DResNet
from monai_ext.networks.suprem_backbones import suprem_backbone
from monai_ext.weights.medicalnet import export_medicalnet_checkpoint
from tests.bundles.test_bundles import SMOKE, _bundle_copy, _bundle_run, _run

ROOT = Path(__file__).resolve().parents[2]
SEG = ROOT / "bundles" / "transfer_segmentation"
CLS = ROOT / "bundles" / "transfer_classification"
TINY = {**SMOKE, "max_epochs": 1, "iterations_per_epoch": 2, "val_interval": 1}


@pytest.mark.slow
def test_segmentation_from_medicalnet_checkpoint_with_frozen_encoder(tmp_path):
    encoder = Med3DResNet(depth=10)
    with torch.no_grad():  # distinctive BatchNorm statistics: a frozen encoder must keep them
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ckpt = export_medicalnet_checkpoint(encoder, tmp_path / "resnet_10.pth")
    copy = _bundle_copy(SEG, tmp_path)
    overrides = {**TINY, "source": "medicalnet-resnet10", "pretrained_path": str(ckpt), "freeze_encoder": True}
    out = _bundle_run(copy, ["train.json"], overrides, tmp_path, "train")
    assert "72 loaded" in out, out[-3000:]
    record = json.loads((copy / "models" / "initialisation.json").read_text(encoding="utf-8"))
    assert record["source"] == "medicalnet-resnet10" and record["counts"]["loaded"] == 72
    assert record["counts"]["missing"] == 0 and all(k.startswith("head.") for k in record["initialised"])
    spec = json.loads((copy / "models" / "network.json").read_text(encoding="utf-8"))
    assert spec["architecture"] == "med3d-resnet10" and spec["class_names"][0] == "background"
    trained = torch.load(copy / "models" / "checkpoint_epoch=1.pt", weights_only=True)["network"]
    for key, value in encoder.state_dict().items():  # frozen: weights and normalisation statistics unchanged
        assert torch.equal(trained["encoder." + key], value), key
    head = [k for k in trained if k.startswith("head.") and k.endswith("weight")]
    assert head, "the new head must exist"
    # inference from the fine-tuned bundle needs neither the dataset's labels nor the source file
    _bundle_run(copy, ["inference.json"], {"patch_size": SMOKE["patch_size"]}, tmp_path, "infer")
    assert list((copy / "eval").glob("*_seg.nii.gz"))


@pytest.mark.slow
def test_classification_from_suprem_checkpoint(tmp_path):
    net = suprem_backbone("segresnet", 32)
    path = tmp_path / "supervised_suprem_segresnet_2100.pth"
    torch.save({"net": {"module." + k: v for k, v in net.state_dict().items()}, "epoch": 2100}, path)
    copy = _bundle_copy(CLS, tmp_path)
    overrides = {**TINY, "patch_size": [32, 32, 32], "batch_size": 4, "max_val_cases": 6,
                 "source": "suprem-segresnet", "pretrained_path": str(path)}  # fmt: skip
    _bundle_run(copy, ["train.json"], overrides, tmp_path, "train")
    record = json.loads((copy / "models" / "initialisation.json").read_text(encoding="utf-8"))
    assert record["counts"]["missing"] == 0 and record["counts"]["loaded"] > 50
    assert record["initialised"] == ["fc.weight", "fc.bias"]
    assert any(k.startswith("up_layers") for k in record["unused_source_keys"])  # the decoder a classifier lacks
    _bundle_run(copy, ["inference.json"], {"patch_size": [32, 32, 32], "max_cases": 3}, tmp_path, "infer")
    lines = (copy / "eval" / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("image,predicted,predicted_name,prob_no_nodule") and len(lines) == 4


def test_wrong_checkpoint_fails_before_training(tmp_path):
    encoder = Med3DResNet(depth=18)
    ckpt = export_medicalnet_checkpoint(encoder, tmp_path / "resnet_18.pth")
    copy = _bundle_copy(CLS, tmp_path)
    overrides = {**TINY, "patch_size": [32, 32, 32], "source": "medicalnet-resnet10", "pretrained_path": str(ckpt)}
    with pytest.raises(AssertionError, match="depth|ResNet-18|shortcut"):
        _bundle_run(copy, ["train.json"], overrides, tmp_path, "train")
    assert not (copy / "models" / "model.pt").exists()


def test_arm_and_setting_parsing():
    assert parse_arm("scratch") == BenchmarkArm("scratch", "scratch")
    assert parse_arm("scratch@med3d-resnet18") == BenchmarkArm("scratch", "scratch", None, "med3d-resnet18")
    assert parse_arm("med3d=medicalnet-resnet10:/w/resnet_10.pth") == BenchmarkArm(
        "med3d", "medicalnet-resnet10", "/w/resnet_10.pth"
    )
    assert parse_setting("patch_size=[32,32,16]") == ("patch_size", [32, 32, 16])
    assert parse_setting("dataset_dir=/data/Task04") == ("dataset_dir", "/data/Task04")
    with pytest.raises(ValueError, match="scratch"):
        plan_runs([parse_arm("a=medicalnet-resnet10")], [1.0], [0])
    runs = plan_runs([parse_arm("scratch"), parse_arm("a=vdt-resnet18")], [0.25, 1.0], [0, 1])
    assert len(runs) == 8 and runs[0]["fraction"] == 1.0


def _history(values, step=10):
    return [{"iteration": float(i * step), "val_mean_dice": v} for i, v in enumerate(values)]


def test_summary_speedup_and_label_efficiency():
    arms = [BenchmarkArm("scratch", "scratch"), BenchmarkArm("pre", "medicalnet-resnet10")]
    histories = {}
    for seed, noise in ((0, 0.0), (1, 0.02)):
        histories[("scratch", 1.0, seed)] = _history([0.0, 0.2, 0.4, 0.6 + noise])
        histories[("pre", 1.0, seed)] = _history([0.3, 0.65, 0.7, 0.75 + noise])
        histories[("scratch", 0.25, seed)] = _history([0.0, 0.1, 0.2, 0.3 + noise])
        histories[("pre", 0.25, seed)] = _history([0.3, 0.5, 0.6, 0.62 + noise])
    s = summarise(histories, arms, "val_mean_dice", 30)
    pre_full = next(r for r in s["rows"] if r["arm"] == "pre" and r["fraction"] == 1.0)
    assert pre_full["final_mean"] == pytest.approx(0.76) and pre_full["final_std"] == pytest.approx(0.01)
    # scratch's best mean 0.61 at iteration 30; the pre-trained arm passes it at iteration 10: 3x
    assert pre_full["iterations_to_scratch_best"] == 10 and pre_full["speedup"] == pytest.approx(3.0)
    pre = next(r for r in s["arms"] if r["arm"] == "pre")
    assert pre["smallest_fraction_matching_scratch_full"] == 0.25  # 0.63 >= 0.61
    assert pre["gain_at_full"] == pytest.approx(0.15)
    scratch = next(r for r in s["arms"] if r["arm"] == "scratch")
    assert scratch["smallest_fraction_matching_scratch_full"] == 1.0 and math.isclose(scratch["speedup_at_full"], 1.0)


@pytest.mark.slow
def test_benchmark_command_end_to_end(tmp_path):
    encoder = Med3DResNet(depth=10)
    ckpt = export_medicalnet_checkpoint(encoder, tmp_path / "resnet_10.pth")
    out_dir = tmp_path / "bench"
    args = [
        "-m", "monai_ext.cli", "benchmark", "transfer", "--bundle", str(CLS),
        "--arm", "scratch", "--arm", f"medicalnet=medicalnet-resnet10:{ckpt}",
        "--fractions", "0.5", "1.0", "--seeds", "0", "--iterations", "2", "--val-every", "1",
        "--set", "patch_size=[32,32,32]", "--set", "batch_size=2", "--set", "num_workers=0",
        "--set", "cache_rate=0", "--set", "max_val_cases=4", "--output", str(out_dir),
    ]  # fmt: skip
    printed = _run(args, cwd=tmp_path)
    assert "[benchmark] 4/4" in printed and "finished" in printed
    for name in ("runs.csv", "summary.csv", "summary.md", "curves.png", "fractions.png"):
        assert (out_dir / name).stat().st_size > 0, name
    table = (out_dir / "summary.md").read_text(encoding="utf-8")
    assert "| medicalnet | medicalnet-resnet10 |" in table and "| scratch | scratch |" in table
    runs = (out_dir / "runs.csv").read_text(encoding="utf-8").splitlines()
    assert len(runs) == 1 + 4 * 3  # 4 runs x validations at 0, 1, 2
    # a second call finds every run finished and repeats nothing
    again = _run(args, cwd=tmp_path)
    assert again.count("done earlier") == 4
