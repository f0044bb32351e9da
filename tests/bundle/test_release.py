"""Tests of ``monai_ext.bundle.release`` and ``monai-ext release``.

The "trained" bundle is a copy of ``bundles/abdomenatlas_supervised_pretraining`` (configs, docs, LICENSE) whose
``models/network.json`` selects a small SegResNet (the cheapest real ``network_def`` of the repository's bundles): the
network is built from the bundle's own ``configs/inference.json`` through ``ConfigParser``, and its random weights and
figures are written by the real ``BestModelSaver``. Nothing is trained. The release is then loaded back with MONAI's
own API only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from ignite.engine import Engine

from monai_ext.bundle import verify_bundle_metadata
from monai_ext.bundle.release import (
    BundleReleaseError,
    build_bundle_network,
    bump_version,
    push_release_to_hf_hub,
    read_eval_metrics,
    release_bundle,
    resolve_spatial_shape,
)
from monai_ext.cli import main
from monai_ext.engines.checkpoint import BestModelSaver

SOURCE_BUNDLE = "abdomenatlas_supervised_pretraining"
#: the source bundle's version, and the one a release without ``version`` gives (the next patch version)
SOURCE_VERSION = json.loads(
    (Path(__file__).resolve().parents[2] / "bundles" / SOURCE_BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8")
)["version"]
NEXT_VERSION = bump_version(SOURCE_VERSION)
NETWORK_JSON = {
    "backbone": "segresnet",
    "backbone_kwargs": {"init_filters": 8, "blocks_down": [1, 1, 1, 1]},
    "classes": ["liver", "spleen"],
}
FIGURES = {"val_mean_dice": 0.7312, "val_loss": 0.4121}


def _make_trained_bundle(repo_root: Path, dest: Path, name: str = "tiny_atlas") -> tuple[Path, dict]:
    """A bundle folder as training leaves it: best weights and figures, plus checkpoints, logs and eval outputs."""
    bundle = dest / name
    src = repo_root / "bundles" / SOURCE_BUNDLE
    shutil.copytree(src, bundle, ignore=shutil.ignore_patterns("models", "logs", "eval", "runs", "__pycache__"))
    (bundle / "models").mkdir()
    (bundle / "models" / "network.json").write_text(json.dumps(NETWORK_JSON), encoding="utf-8")
    torch.manual_seed(0)
    network = build_bundle_network(bundle)  # the bundle's own network_def, through ConfigParser
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.metrics = dict(FIGURES, val_per_class=[0.7, 0.76])
    evaluator.state.epoch = 12
    BestModelSaver(network, str(bundle / "models" / "model.pt"), metric_name="val_mean_dice")(evaluator)
    # training leftovers that a release must not carry
    training_state = {"network": network.state_dict(), "epoch": torch.tensor(12)}
    torch.save(training_state, bundle / "models" / "checkpoint_epoch=12.pt")
    (bundle / "logs").mkdir()
    (bundle / "logs" / "events.out.tfevents.1").write_bytes(b"log")
    (bundle / "eval").mkdir()
    (bundle / "eval" / "metrics.csv").write_text("metric,value\nval_mean_dice,0.7312\n", encoding="utf-8")
    return bundle, {k: v.clone() for k, v in network.state_dict().items()}


@pytest.fixture(scope="module")
def released(repo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    bundle, state = _make_trained_bundle(repo_root, root / "work")
    release = release_bundle(bundle, root / "out")
    return {"bundle": bundle, "state": state, "release": release, "root": root}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_release_folder_holds_the_bundle_without_training_outputs(released):
    rel = released["release"]
    out = Path(rel.bundle_dir)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    for expected in (
        "LICENSE", "configs/metadata.json", "configs/inference.json", "configs/train.json", "docs/README.md",
        "large_files.yml", "models/model.pt", "models/model.ts", "models/model_metrics.json", "models/network.json",
    ):  # fmt: skip
        assert expected in files
    assert not [f for f in files if f.startswith(("logs/", "eval/")) or "checkpoint_epoch" in f]
    assert "models/checkpoint_epoch=12.pt" in rel.excluded and "logs/" in rel.excluded and "eval/" in rel.excluded
    assert Path(rel.zip_path) == out.parent / f"tiny_atlas_v{NEXT_VERSION}.zip"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    # the released model.pt is the trained file itself: a plain tensor state dict with the trained weights
    assert _sha256(out / "models" / "model.pt") == _sha256(released["bundle"] / "models" / "model.pt")
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert state.keys() == released["state"].keys()
    assert all(torch.equal(state[k], v) for k, v in released["state"].items())


def test_metadata_has_new_version_changelog_and_measured_figures(released):
    meta = verify_bundle_metadata(released["release"].bundle_dir)  # still valid offline
    source = json.loads((released["bundle"] / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert source["version"] == SOURCE_VERSION  # the source bundle is left as it was
    assert meta["version"] == NEXT_VERSION == released["release"].version
    assert list(meta["changelog"])[:2] == [NEXT_VERSION, SOURCE_VERSION]
    assert "val_mean_dice = 0.7312 (epoch 12)" in meta["changelog"][NEXT_VERSION]
    assert meta["eval_metrics"] == FIGURES  # lists (per-class figures) are left out
    assert meta["monai_version"].startswith("1.6")


def test_large_files_lists_checksums_that_monai_verifies(released, tmp_path):
    out = Path(released["release"].bundle_dir)
    entries = yaml.safe_load((out / "large_files.yml").read_text(encoding="utf-8"))["large_files"]
    assert [e["path"] for e in entries] == ["models/model.pt", "models/model.ts"]
    for entry in entries:
        assert set(entry) == {"path", "url", "hash_val", "hash_type"}
        assert entry["hash_type"] == "sha256" and entry["url"] == ""
        assert entry["hash_val"] == _sha256(out / entry["path"]) == released["release"].large_files[entry["path"]]
    from monai.apps.utils import HashCheckError
    from monai.bundle import download_large_files

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    download_large_files(bundle_path=str(copy))  # files present with the right hash: nothing to download
    with open(copy / "models" / "model.ts", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(HashCheckError):
        download_large_files(bundle_path=str(copy))


def test_zip_loads_with_monai_bundle_load(released, tmp_path, monkeypatch):
    from monai.apps.utils import extractall
    from monai.bundle import load

    rel = released["release"]
    with zipfile.ZipFile(rel.zip_path) as zf:
        assert {n.split("/")[0] for n in zf.namelist()} == {"tiny_atlas"}
    target = tmp_path / "downloads"
    extractall(rel.zip_path, str(target), has_base=True)
    monkeypatch.chdir(target / "tiny_atlas")  # the bundle's configs locate bundle_root from the working folder
    network = load(name="tiny_atlas", bundle_dir=str(target), source="github", workflow_type="inference", device="cpu")
    loaded = network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in released["state"].items())

    module, meta, _ = load(
        name="tiny_atlas", bundle_dir=str(target), source="github", load_ts_module=True, device="cpu"
    )
    assert meta["version"] == NEXT_VERSION
    image = meta["network_data_format"]["inputs"]["image"]
    shape = (2, image["num_channels"], *resolve_spatial_shape(image["spatial_shape"], n=2))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    network.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), network(x), rtol=1e-4, atol=1e-5)
    assert rel.input_shape == (1, 1, 8, 8, 8) and rel.torchscript_max_abs_diff < 1e-4


def test_push_to_hf_hub_dry_run_lists_files_offline(released):
    files = push_release_to_hf_hub(released["release"].bundle_dir, "someone/tiny_atlas", dry_run=True)
    for expected in ("README.md", "configs/metadata.json", "large_files.yml", "models/model.pt", "models/model.ts"):
        assert expected in files
    files_from_parent = push_release_to_hf_hub(Path(released["release"].bundle_dir).parent, "someone/x", dry_run=True)
    assert files_from_parent == files
    with pytest.raises(BundleReleaseError, match="user_or_org/repo_name"):
        push_release_to_hf_hub(released["release"].bundle_dir, "no-slash", dry_run=True)


def test_cli_release_with_version_notes_metrics_file_and_dry_run(repo_root, tmp_path, capsys):
    bundle, _ = _make_trained_bundle(repo_root, tmp_path / "work", name="cli_atlas")
    figures = tmp_path / "test_set.json"
    figures.write_text(json.dumps({"test_mean_dice": 0.69, "note": "held-out"}), encoding="utf-8")
    argv = [
        "release", str(bundle), "-o", str(tmp_path / "out"), "--version", "0.2.0", "--notes", "held-out test figures",
        "--eval-metrics", str(figures), "--no-torchscript", "--push-to-hf-hub", "someone/cli_atlas", "--dry-run",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"released cli_atlas {SOURCE_VERSION} -> 0.2.0" in out and "dry run: would upload" in out
    released_dir = tmp_path / "out" / "cli_atlas"
    meta = json.loads((released_dir / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["version"] == "0.2.0" and meta["eval_metrics"] == {"test_mean_dice": 0.69}
    assert meta["changelog"]["0.2.0"].startswith("held-out test figures; evaluation: test_mean_dice = 0.6900")
    assert not (released_dir / "models" / "model.ts").exists()
    assert [e["path"] for e in yaml.safe_load((released_dir / "large_files.yml").read_text(encoding="utf-8"))["large_files"]] == [
        "models/model.pt"
    ]
    assert (tmp_path / "out" / "cli_atlas_v0.2.0.zip").is_file()
    # the same version again is refused, and so is an older one
    assert main(argv[:2] + ["-o", str(tmp_path / "out2"), "--version", "0.1.0", "--no-torchscript"]) == 2
    assert "already in the changelog" in capsys.readouterr().err
    with pytest.raises(BundleReleaseError, match="already exists"):
        release_bundle(bundle, tmp_path / "out", version="0.2.0", torchscript=False)


def test_missing_weights_name_the_path_and_the_train_command(repo_root, tmp_path, capsys):
    bundle, _ = _make_trained_bundle(repo_root, tmp_path)
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError) as e:
        release_bundle(bundle, tmp_path / "out")
    assert str(bundle / "models" / "model.pt") in str(e.value)
    assert f"python -m monai.bundle run --config_file {bundle / 'configs' / 'train.json'}" in str(e.value)
    assert main(["release", str(bundle), "-o", str(tmp_path / "out")]) == 2
    assert "model.pt not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tiny_atlas").exists()


def test_weights_that_are_not_a_tensor_state_dict_are_refused(repo_root, tmp_path):
    bundle, _ = _make_trained_bundle(repo_root, tmp_path)
    torch.save(build_bundle_network(bundle), bundle / "models" / "model.pt")  # the whole module, pickled
    with pytest.raises(BundleReleaseError, match=r"weights_only=True\) refuses it"):
        release_bundle(bundle, tmp_path / "out")
    training_state = torch.load(bundle / "models" / "checkpoint_epoch=12.pt", weights_only=True)
    torch.save(training_state, bundle / "models" / "model.pt")
    with pytest.raises(BundleReleaseError, match="key_in_ckpt"):  # a training checkpoint: tensors, but nested
        release_bundle(bundle, tmp_path / "out")
    release = release_bundle(bundle, tmp_path / "out", key_in_ckpt="network", torchscript=False)
    assert torch.load(Path(release.bundle_dir) / "models" / "model.pt", weights_only=True).keys() == (
        build_bundle_network(bundle).state_dict().keys()
    )


def test_weights_of_another_architecture_name_the_mismatched_keys(repo_root, tmp_path):
    from monai.networks.nets import UNet

    bundle, _ = _make_trained_bundle(repo_root, tmp_path)
    other = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    torch.save(other.state_dict(), bundle / "models" / "model.pt")
    with pytest.raises(BundleReleaseError) as e:
        release_bundle(bundle, tmp_path / "out")
    message = str(e.value)
    assert "missing key(s)" in message and "convInit.conv.weight" in message
    assert "unexpected key(s)" in message and next(iter(other.state_dict())) in message
    # same architecture, other configuration (3 classes instead of 2): the shape mismatch is named
    (bundle / "models" / "network.json").write_text(json.dumps(dict(NETWORK_JSON, classes=["a", "b", "c"])), encoding="utf-8")
    torch.save(build_bundle_network(bundle).state_dict(), bundle / "models" / "model.pt")
    (bundle / "models" / "network.json").write_text(json.dumps(NETWORK_JSON), encoding="utf-8")
    with pytest.raises(BundleReleaseError, match=r"conv_final\.2\.conv\.weight \(3, 8, 1, 1, 1\) in the file"):
        release_bundle(bundle, tmp_path / "out")
    assert not (tmp_path / "out" / "tiny_atlas").exists()


def test_missing_figures_and_failed_torchscript_say_what_to_do(repo_root, tmp_path):
    bundle, _ = _make_trained_bundle(repo_root, tmp_path)
    (bundle / "models" / "model_metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="--eval-metrics"):
        release_bundle(bundle, tmp_path / "out")
    (bundle / "eval" / "metrics.csv").write_text("metric,value\nval_mean_dice,0.700000\n", encoding="utf-8")
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = 3  # the network takes one channel
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(BundleReleaseError, match="--no-torchscript") as e:
        release_bundle(bundle, tmp_path / "out", eval_metrics=bundle / "eval" / "metrics.csv")
    assert "TorchScript export" in str(e.value) and "[1, 3, 8, 8, 8]" in str(e.value)
    release = release_bundle(bundle, tmp_path / "out", eval_metrics=bundle / "eval" / "metrics.csv", torchscript=False)
    assert release.torchscript is None and release.eval_metrics == {"val_mean_dice": 0.7}


def test_output_inside_the_bundle_is_refused(repo_root, tmp_path):
    bundle, _ = _make_trained_bundle(repo_root, tmp_path)
    with pytest.raises(BundleReleaseError, match="inside the bundle"):
        release_bundle(bundle, bundle / "release")


def test_small_helpers():
    assert bump_version("0.1.9") == "0.1.10" and bump_version("1.2.3", "minor") == "1.3.0"
    assert bump_version("1.2.3", "major") == "2.0.0"
    with pytest.raises(BundleReleaseError, match="MAJOR.MINOR.PATCH"):
        bump_version("v1")
    assert resolve_spatial_shape(["16*n", "16*n", 8]) == (16, 16, 8)
    assert resolve_spatial_shape(["n", "32*n", "2**p", "*"], n=2, p=3, any_size=5) == (2, 64, 8, 5)
    with pytest.raises(BundleReleaseError, match="expression of n and p"):
        resolve_spatial_shape(["__import__('os')"])
    with pytest.raises(BundleReleaseError, match="expression of n and p"):
        resolve_spatial_shape(["np"])


def test_read_eval_metrics_formats(tmp_path):
    saver = tmp_path / "model_metrics.json"
    saver.write_text(json.dumps({"metric_name": "acc", "metrics": {"acc": 0.9, "cases": [1]}, "epoch": 3}), encoding="utf-8")
    assert read_eval_metrics(saver) == ({"acc": 0.9}, {"metric_name": "acc", "epoch": 3})
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"dice": "0.5", "ok": True}), encoding="utf-8")
    assert read_eval_metrics(flat)[0] == {"dice": 0.5}
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"note": "x"}), encoding="utf-8")
    with pytest.raises(BundleReleaseError, match="no numeric figure"):
        read_eval_metrics(empty)


def test_a_fine_tuning_starts_from_the_unpacked_release_by_path(released, tmp_path):
    """The `bundle` source of the fine-tuning bundles reads an unpacked release: architecture and constructor
    arguments from its models/model.pt and models/network.json, every backbone weight loaded."""
    from monai.apps.utils import extractall

    from monai_ext.networks.transfer import build_transfer_network
    from monai_ext.weights.sources import load_pretrained, source_architecture

    extractall(released["release"].zip_path, str(tmp_path), has_base=True)
    unpacked = tmp_path / "tiny_atlas"
    architecture, kwargs = source_architecture("bundle", unpacked)
    assert architecture == "suprem-segresnet" and kwargs["init_filters"] == 8
    for task in ("segmentation", "classification"):
        network = build_transfer_network(architecture, task, out_channels=3, **kwargs)
        report = load_pretrained(network, "bundle", unpacked)
        assert not report.missing and report.n_transferred > 20
        prefix = "encoder." if task == "classification" else ""
        key = "convInit.conv.weight"
        assert torch.equal(network.state_dict()[prefix + key], released["state"][key])
