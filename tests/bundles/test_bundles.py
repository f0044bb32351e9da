"""The bundle harness: every folder under ``bundles/`` is verified, trained, evaluated, run and exported.

Nothing here names a bundle. A new bundle is covered as soon as it exists, provided it follows the layout in
``monai_ext.bundle.REQUIRED_FILES`` and defines the settings in ``monai_ext.bundle.HARNESS_SETTINGS`` (which the
harness shrinks to tiny values). Each bundle runs in a copy in a temporary folder, one process per run, exactly as a
user runs it (``python -m monai.bundle run ...``) on the built-in generated data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_ext.bundle import HARNESS_SETTINGS, REQUIRED_FILES, SCHEMA_PATH, verify_bundle_metadata

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").exists())

#: tiny settings for a smoke run; a bundle may add its own in ``configs/metadata.json`` under "smoke_test_overrides".
SMOKE = {
    "max_epochs": 1,
    "iterations_per_epoch": 2,
    "val_interval": 1,
    "batch_size": 2,
    "num_workers": 0,
    "cache_rate": 0.0,
    "patch_size": [32, 32, 32],
    "max_val_cases": 2,
    "amp": True,
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ids(p: Path) -> str:
    return p.name


def _targets(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                yield v
            yield from _targets(v)
    elif isinstance(node, list):
        for v in node:
            yield from _targets(v)


def _bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("models", "eval", "logs", "runs", "__pycache__"))
    return dst


def _smoke(bundle: Path) -> dict:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    return {**SMOKE, **meta.get("smoke_test_overrides", {})}


def _env() -> dict:
    """The environment of the bundle processes (also used by tests/robustness)."""
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")


def _run(args: list[str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-6000:]}"
    return out


def _bundle_args(bundle: Path, configs: list[str], overrides: dict, tmp_path: Path, name: str) -> list[str]:
    """Arguments of ``python`` for ``monai.bundle run`` of ``configs`` with ``overrides`` (in an args file)."""
    args_file = tmp_path / f"{name}_args.json"
    args_file.write_text(json.dumps({"bundle_root": str(bundle), **overrides}), encoding="utf-8")
    files = [str(bundle / "configs" / c) for c in configs]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    return [
        "-m", "monai.bundle", "run",
        "--config_file", config_arg,
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--logging_file", str(bundle / "configs" / "logging.conf"),
        "--args_file", str(args_file),
    ]  # fmt: skip


def _bundle_run(bundle: Path, configs: list[str], overrides: dict, tmp_path: Path, name: str) -> str:
    return _run(_bundle_args(bundle, configs, overrides, tmp_path, name), cwd=tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids)
def test_layout_and_metadata(bundle: Path):
    missing = [f for f in REQUIRED_FILES if not (bundle / f).exists()]
    assert not missing, f"{bundle.name} lacks {missing}"
    meta = verify_bundle_metadata(str(bundle))
    assert meta["version"] in meta["changelog"]
    assert os.path.exists(SCHEMA_PATH)
    train = json.loads((bundle / "configs" / "train.json").read_text(encoding="utf-8"))
    absent = [k for k in HARNESS_SETTINGS if k not in train]
    assert not absent, f"{bundle.name}/configs/train.json lacks the settings {absent}"
    for cfg in (bundle / "configs").glob("*.json"):
        short = [t for t in _targets(json.loads(cfg.read_text(encoding="utf-8"))) if "." not in t]
        assert not short, f"{cfg}: use fully dotted _target_ paths, not {short}"
    card = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    assert len(card) > 1500 and "python -m monai.bundle run" in card, "model card must give the recipe and commands"


@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids)
def test_check_properties(bundle: Path, tmp_path: Path):
    from monai.bundle import ConfigWorkflow

    copy = _bundle_copy(bundle, tmp_path)
    for workflow_type, configs in (("train", ["train.json"]), ("infer", ["inference.json"])):
        wf = ConfigWorkflow(
            config_file=[str(copy / "configs" / c) for c in configs],
            meta_file=str(copy / "configs" / "metadata.json"),
            logging_file=str(copy / "configs" / "logging.conf"),
            workflow_type=workflow_type,
            bundle_root=str(copy),
            **(_smoke(bundle) if workflow_type == "train" else {}),
        )
        if workflow_type == "train":
            wf.initialize()
            assert wf.check_properties() == [], f"{bundle.name} {workflow_type}: missing properties"
        else:
            # inference needs trained weights; only check that the required IDs exist in the config
            required = {n: p.get("id", n) for n, p in wf.properties.items() if p.get("required")}
            absent = [n for n, i in required.items() if i not in wf.parser]
            assert not absent, f"{bundle.name} inference config lacks {absent}"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids)
def test_train_resume_evaluate_infer_export(bundle: Path, tmp_path: Path):
    copy = _bundle_copy(bundle, tmp_path)
    smoke = _smoke(bundle)
    models = copy / "models"

    out = _bundle_run(copy, ["train.json"], smoke, tmp_path, "train")
    assert (models / "model.pt").exists(), f"training wrote no models/model.pt:\n{out[-3000:]}"
    assert (models / "checkpoint_epoch=1.pt").exists()
    assert list((copy / "logs").rglob("events.out.tfevents.*")), "no TensorBoard log"
    state = torch.load(models / "model.pt", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values()), "model.pt must be a tensor state dict"

    # resume: the same command with one more epoch continues from epoch 1 instead of starting over
    out = _bundle_run(copy, ["train.json"], {**smoke, "max_epochs": 2}, tmp_path, "resume")
    assert "resumed from" in out and (models / "checkpoint_epoch=2.pt").exists()
    ckpt = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 * smoke["iterations_per_epoch"], "resumed run did not continue"

    _bundle_run(copy, ["train.json", "evaluate.json"], smoke, tmp_path, "evaluate")
    assert list((copy / "eval").glob("*.csv")), "evaluation wrote no metrics CSV"

    infer_overrides = {k: v for k, v in smoke.items() if k in ("patch_size", "amp")}
    before = set((copy / "eval").rglob("*"))
    _bundle_run(copy, ["inference.json"], infer_overrides, tmp_path, "inference")
    written = [p for p in set((copy / "eval").rglob("*")) - before if p.is_file()]
    assert written, "inference wrote nothing under eval/"

    common = [
        "--meta_file", str(copy / "configs" / "metadata.json"),
        "--config_file", str(copy / "configs" / "inference.json"),
        "--bundle_root", str(copy),
    ]  # fmt: skip
    _run(["-m", "monai.bundle", "verify_net_in_out", "network_def", *common, "--n", "4"], cwd=tmp_path)
    ts = tmp_path / "model.ts"
    shape = [1, 1, *smoke["patch_size"]]
    _run(
        ["-m", "monai.bundle", "ckpt_export", "network_def", *common, "--filepath", str(ts),
         "--ckpt_file", str(models / "model.pt"), "--use_trace", "True", "--input_shape", json.dumps(shape)],
        cwd=tmp_path,
    )  # fmt: skip
    exported = torch.jit.load(str(ts))
    assert exported(torch.randn(shape)).shape[0] == 1


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("bundle", BUNDLES, ids=_ids)
def test_multi_gpu_config_under_torchrun(bundle: Path, tmp_path: Path):
    copy = _bundle_copy(bundle, tmp_path)
    args_file = tmp_path / "ddp_args.json"
    args_file.write_text(json.dumps({"bundle_root": str(copy), **_smoke(bundle)}), encoding="utf-8")
    configs = json.dumps([str(copy / "configs" / "train.json"), str(copy / "configs" / "multi_gpu_train.json")])
    out = _run(
        ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "monai.bundle", "run", "--config_file", configs,
         "--meta_file", str(copy / "configs" / "metadata.json"),
         "--logging_file", str(copy / "configs" / "logging.conf"), "--args_file", str(args_file)],
        cwd=tmp_path,
    )  # fmt: skip
    assert (copy / "models" / "checkpoint_epoch=1.pt").exists(), out[-3000:]
