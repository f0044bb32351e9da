"""Tests of the 2D segmentation option of ``vdt_natural_image_pretraining`` (``configs/train_segmentation.json``).

The generic harness (``test_bundles.py``) runs the bundle's classification configs; here the segmentation overlay is
parsed (network, loss, a transformed sample) and then run as a user runs it (``python -m monai.bundle run`` in a
subprocess, on a copy of the bundle, with the harness's tiny settings): train, resume, evaluate, and load the
exported encoder into a 3D network that strides along depth, at depth 32.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss

from monai_ext.networks.med3d import Med3DResNet
from monai_ext.networks.vdt import VDTSegmenter, vdt_segmenter
from monai_ext.weights.vdt import load_vdt_checkpoint, read_vdt_state_dict
from tests.bundles.test_bundles import _bundle_copy, _bundle_run, _smoke, _targets

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "vdt_natural_image_pretraining"
TRAIN = ["train.json", "train_segmentation.json"]
CLASSES = ["background", "disc", "square", "triangle"]


def test_segmentation_overlay_parses(tmp_path: Path):
    for name in ("train_segmentation.json", "evaluate_segmentation.json"):
        short = [t for t in _targets(json.loads((BUNDLE / "configs" / name).read_text(encoding="utf-8"))) if "." not in t]
        assert not short, f"{name}: use fully dotted _target_ paths, not {short}"
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in TRAIN])
    parser["bundle_root"] = str(tmp_path)
    assert parser.get_parsed_content("class_names") == CLASSES
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, VDTSegmenter) and network.num_classes == 4 and not network.encoder.stride_depth
    assert isinstance(parser.get_parsed_content("loss"), DiceCELoss)
    train, val = parser.get_parsed_content("train_datalist"), parser.get_parsed_content("val_datalist")
    assert len(train) == 96 and len(val) == 24 and not {i["case"] for i in train} & {i["case"] for i in val}
    depth, size = parser.get_parsed_content("volume_depth"), parser.get_parsed_content("image_size")
    for key, items in (("train#preprocessing", train), ("validate#preprocessing", val)):
        sample = parser.get_parsed_content(key)(items[0])
        image, label = sample["image"], sample["label"]
        assert image.shape == label.shape == (1, depth, *size), key
        assert image.dtype == torch.float32 and label.dtype == torch.int64
        assert set(torch.unique(label).tolist()) <= {0, 1, 2, 3}
        assert all(torch.equal(label[0, 0], label[0, d]) for d in range(depth)), "the mask is on every slice"
    logits = network(image[None])
    assert logits.shape == (1, 4, depth, *size)


@pytest.mark.slow
def test_segmentation_train_resume_evaluate_and_transfer(tmp_path: Path):
    copy = _bundle_copy(BUNDLE, tmp_path)
    smoke = _smoke(BUNDLE)
    models = copy / "models"

    out = _bundle_run(copy, TRAIN, smoke, tmp_path, "train")
    for name in ("model.pt", "checkpoint_epoch=1.pt", "encoder_medicalnet.pth", "model_metrics.json"):
        assert (models / name).exists(), f"training wrote no models/{name}:\n{out[-3000:]}"
    assert json.loads((models / "classes.json").read_text(encoding="utf-8")) == CLASSES
    assert json.loads((models / "model_metrics.json").read_text(encoding="utf-8"))["metric_name"] == "val_mean_dice"
    state = torch.load(models / "model.pt", weights_only=True)
    assert any(k.startswith("decoder.") for k in state) and state["decoder.classifier.weight"].shape[0] == 4

    out = _bundle_run(copy, TRAIN, {**smoke, "max_epochs": 2}, tmp_path, "resume")
    assert "resumed from" in out and (models / "checkpoint_epoch=2.pt").exists()
    ckpt = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 * smoke["iterations_per_epoch"], "resumed run did not continue"

    _bundle_run(copy, [*TRAIN, "evaluate_segmentation.json"], smoke, tmp_path, "evaluate")
    with open(copy / "eval" / "metrics.csv", encoding="utf-8") as f:
        metrics = {row["metric"]: float(row["value"]) for row in csv.DictReader(f)}
    assert set(metrics) == {"val_mean_dice"} and 0.0 <= metrics["val_mean_dice"] <= 1.0
    with open(copy / "eval" / "per_class_dice.csv", encoding="utf-8") as f:
        assert [row["class"] for row in csv.DictReader(f)] == [*CLASSES[1:], "mean"]

    # the exported encoder fine-tunes at depth 32 with depth striding on
    exported, _ = read_vdt_state_dict(models / "encoder_medicalnet.pth")
    best = torch.load(models / "model.pt", weights_only=True)
    assert all(torch.equal(v, best["encoder." + k]) for k, v in exported.items()), "export is not the best model"
    target = vdt_segmenter(depth=10, num_classes=3, in_channels=1, stride_depth=True)
    report = load_vdt_checkpoint(models / "encoder_medicalnet.pth", target)
    encoder_keys = [k for k in target.state_dict() if k.startswith("encoder.")]
    assert len(report.loaded) == len(encoder_keys) > 0, report.summary()
    assert not report.missing and not report.shape_mismatch and not report.adapted, report.summary()
    assert report.initialised and all(k.startswith("decoder.") for k in report.initialised), report.summary()
    weights = target.state_dict()
    assert all(torch.equal(weights["encoder." + k], v) for k, v in exported.items()), "weights stayed random"
    target.eval()
    with torch.no_grad():
        assert target(torch.randn(1, 1, 32, 64, 64)).shape == (1, 3, 32, 64, 64)
    # and into a bare encoder with two input channels: the 1-channel stem is adapted, not left random
    encoder = Med3DResNet(depth=10, in_channels=2, dilated=False, stride_depth=True)
    report = load_vdt_checkpoint(models / "encoder_medicalnet.pth", encoder)
    assert list(report.adapted) == ["conv1.weight"] and len(report.loaded) > 0 and not report.missing
    with torch.no_grad():
        features = encoder.eval()(torch.randn(1, 2, 32, 64, 64))
    assert features.shape[2] < 32, "depth striding is on"
