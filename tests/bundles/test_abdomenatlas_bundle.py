"""Tests of the bundle ``abdomenatlas_supervised_pretraining`` beyond the generic harness (``test_bundles.py``).

One tiny training run per SuPreM backbone (U-Net, SegResNet, Swin UNETR) checks that each builds, trains, validates
and exports weights that load back through ``monai_ext.weights.suprem``; a run on AbdomenAtlas-1.0-like data with
missing masks checks ``partial_labels``, the per-class evaluation table and the per-class inference files. Every run
is ``python -m monai.bundle run`` in a subprocess on a copy of the bundle, as a user runs it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from monai_ext.data.abdomenatlas_classes import ABDOMENATLAS_1_0_CLASSES, ABDOMENATLAS_CLASSES
from monai_ext.data.builtin import builtin_dataset_dir
from monai_ext.data.datalists import DatalistError
from monai_ext.networks.suprem_backbones import SUPREM_HEAD_KEYS, suprem_backbone
from monai_ext.weights.suprem import load_suprem_checkpoint

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "abdomenatlas_supervised_pretraining"

#: tiny settings: one iteration of one 32^3 patch, one validation case, sliding windows without overlap
TINY = {
    "max_epochs": 1,
    "iterations_per_epoch": 1,
    "val_interval": 1,
    "batch_size": 1,
    "num_workers": 0,
    "cache_rate": 0.0,
    "patch_size": [32, 32, 32],
    "max_val_cases": 1,
    "amp": True,
    "sw_overlap": 0.0,
}
#: the smallest widths each backbone allows (the U-Net has fixed widths)
SMALL = {"unet": {}, "segresnet": {"init_filters": 8}, "swinunetr": {"feature_size": 12}}
#: Swin UNETR reduces the patch 32 times; its instance norm needs more than one voxel there when training
PATCH = {"unet": [32, 32, 32], "segresnet": [32, 32, 32], "swinunetr": [64, 32, 32]}
#: classes whose masks the partial-label dataset lacks in its last case (the validation case)
DROPPED = ("pancreas", "stomach")


def _copy_bundle(tmp_path: Path) -> Path:
    dst = tmp_path / BUNDLE.name
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("models", "eval", "logs", "__pycache__"))
    return dst


def _run_bundle(bundle: Path, configs: list[str], overrides: dict, tmp_path: Path, name: str) -> str:
    args_file = tmp_path / f"{name}_args.json"
    args_file.write_text(json.dumps({"bundle_root": str(bundle), **overrides}), encoding="utf-8")
    files = [str(bundle / "configs" / c) for c in configs]
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", files[0] if len(files) == 1 else json.dumps(files),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--logging_file", str(bundle / "configs" / "logging.conf"),
        "--args_file", str(args_file),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} failed:\n{out[-6000:]}"
    return out


def _partial_dataset(root: Path, n_cases: int = 3) -> Path:
    """AbdomenAtlas-1.0-like copy of the first built-in cases: 9 masks each, the last case without ``DROPPED``."""
    source = Path(builtin_dataset_dir("abdomenatlas"))
    for i, case in enumerate(sorted(source.glob("BDMAP_*"))[:n_cases]):
        (root / case.name / "segmentations").mkdir(parents=True)
        os.symlink(case / "ct.nii.gz", root / case.name / "ct.nii.gz")
        for name in ABDOMENATLAS_1_0_CLASSES:
            if i == n_cases - 1 and name in DROPPED:
                continue
            os.symlink(case / "segmentations" / f"{name}.nii.gz", root / case.name / "segmentations" / f"{name}.nii.gz")
    return root


def _parser(overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def test_missing_masks_are_refused_unless_partial_labels(tmp_path: Path):
    data = _partial_dataset(tmp_path / "atlas")
    classes = list(ABDOMENATLAS_1_0_CLASSES)
    with pytest.raises(RuntimeError) as failure:  # the config parser wraps the datalist's error
        _parser({"dataset_dir": str(data), "classes": classes}).get_parsed_content("datalist")
    assert isinstance(failure.value.__cause__, DatalistError) and "pancreas" in str(failure.value.__cause__)
    parser = _parser({"dataset_dir": str(data), "classes": classes, "partial_labels": True})
    last = parser.get_parsed_content("datalist")[-1]
    label = parser.get_parsed_content("validate#preprocessing")(dict(last))["label"]
    assert label.shape[0] == len(classes)
    for c, name in enumerate(classes):
        values = set(torch.unique(label[c]).tolist())
        assert values == {-1} if name in DROPPED else values <= {0, 1}, f"channel {name}: {values}"


def test_training_patches_are_multi_hot_and_mostly_centred_on_organs():
    parser = _parser({"patch_size": [32, 32, 32]})
    item = parser.get_parsed_content("split")[0][0]
    volume = Compose(parser.get_parsed_content("deterministic_transforms"))(dict(item))
    sample = Compose(parser.get_parsed_content("train#random_transforms"))
    with_organ = 0
    for seed in range(6):
        sample.set_random_state(seed)
        patch = sample(dict(volume))[0]
        assert "foreground" not in patch, "the derived sampling key must not reach the batch"
        assert patch["image"].shape == (1, 32, 32, 32)
        assert patch["label"].shape == (len(ABDOMENATLAS_CLASSES), 32, 32, 32)
        assert set(torch.unique(patch["label"]).tolist()) <= {0, 1}
        with_organ += int(patch["label"].any())
    assert with_organ >= 3, "pos:neg 2:1 sampling should centre most patches on an organ"


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["unet", "segresnet", "swinunetr"])
def test_backbone_trains_and_exports_suprem_format(backbone: str, tmp_path: Path):
    bundle = _copy_bundle(tmp_path)
    overrides = {**TINY, "backbone": backbone, "backbone_kwargs": SMALL[backbone], "patch_size": PATCH[backbone]}
    out = _run_bundle(bundle, ["train.json"], overrides, tmp_path, f"train_{backbone}")
    models = bundle / "models"
    assert "val_mean_dice" in out and (models / "model.pt").exists(), out[-3000:]

    saved = json.loads((models / "network.json").read_text(encoding="utf-8"))
    assert saved == {"backbone": backbone, "backbone_kwargs": SMALL[backbone], "classes": list(ABDOMENATLAS_CLASSES)}
    state = torch.load(models / "model.pt", weights_only=True)
    head = SUPREM_HEAD_KEYS[backbone] + ".weight"
    assert state[head].shape[:2] == (len(ABDOMENATLAS_CLASSES), state[head].shape[1])

    # the SuPreM-format export loads back (strictly) into a fresh backbone with the trained weights
    net = suprem_backbone(backbone, len(ABDOMENATLAS_CLASSES), **SMALL[backbone])
    report = load_suprem_checkpoint(models / f"suprem_{backbone}.pth", net, backbone)
    assert not report.missing and not report.shape_mismatch
    fresh = net.state_dict()
    body = [k for k in state if not k.startswith(SUPREM_HEAD_KEYS[backbone] + ".")]
    assert body and all(torch.equal(fresh[k], state[k]) for k in body)


@pytest.mark.slow
def test_partial_labels_train_evaluate_and_infer_per_class(tmp_path: Path):
    data = _partial_dataset(tmp_path / "atlas")
    bundle = _copy_bundle(tmp_path)
    classes = list(ABDOMENATLAS_1_0_CLASSES)
    settings = {
        **TINY,
        "dataset_dir": str(data),
        "classes": classes,
        "partial_labels": True,
        "val_fraction": 0.34,
        "backbone_kwargs": SMALL["segresnet"],
    }
    _run_bundle(bundle, ["train.json"], settings, tmp_path, "train")
    _run_bundle(bundle, ["train.json", "evaluate.json"], settings, tmp_path, "evaluate")
    with open(bundle / "eval" / "per_class_dice.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == [*classes, "mean"]
    assert all(r["dice"] == "" or 0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    # the validation case lacks the DROPPED masks: unknown, so not scored (no value, 0 cases) rather than Dice 0
    unscored = {r["class"] for r in rows if r["n_cases"] == "0"}
    assert unscored == set(DROPPED) and all(r["dice"] == "" for r in rows if r["class"] in DROPPED)

    ct = data / "BDMAP_00000001" / "ct.nii.gz"
    infer = {"patch_size": [32, 32, 32], "amp": True, "sw_overlap": 0.0, "image_files": [str(ct)]}
    _run_bundle(bundle, ["inference.json"], infer, tmp_path, "inference")
    folder = bundle / "eval" / "BDMAP_00000001"
    expected = sorted([f"{c}.nii.gz" for c in classes] + ["combined_labels.nii.gz"])
    assert sorted(p.name for p in folder.iterdir()) == expected
    reference = nib.load(ct)
    combined = nib.load(folder / "combined_labels.nii.gz")
    assert combined.shape == reference.shape and np.allclose(combined.affine, reference.affine, atol=1e-4)
    assert int(np.asarray(combined.dataobj).max()) <= len(classes)
