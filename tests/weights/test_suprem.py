"""Tests of monai_ext.weights.suprem with files in the exact format of the released SuPreM checkpoints."""

import pytest
import torch

from monai_ext.data.abdomenatlas_classes import ABDOMENATLAS_CLASSES, SUPREM_CLASSES_32
from monai_ext.networks.suprem_backbones import SUPREM_HEAD_KEYS, suprem_backbone
from monai_ext.weights.report import WeightTransferError
from monai_ext.weights.suprem import (
    detect_suprem_backbone,
    export_monai_state_dict,
    export_suprem_checkpoint,
    load_suprem_checkpoint,
    read_suprem_checkpoint,
    strip_suprem_prefixes,
)

SMALL = {"unet": {}, "segresnet": {}, "swinunetr": {"feature_size": 12}}  # feature_size does not matter here


class NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse."""


def _heads(backbone: str) -> dict[str, torch.Tensor]:
    """Universal Model pre-training heads, stored next to the backbone in the U-Net and Swin UNETR files."""
    if backbone == "segresnet":
        return {}
    feat, deep = (64, 512) if backbone == "unet" else (12, 192)
    return {
        "module.precls_conv.0.weight": torch.randn(feat),
        "module.precls_conv.0.bias": torch.randn(feat),
        "module.precls_conv.2.weight": torch.randn(8, feat, 1, 1, 1),
        "module.precls_conv.2.bias": torch.randn(8),
        "module.GAP.0.weight": torch.randn(deep),
        "module.GAP.0.bias": torch.randn(deep),
        "module.GAP.3.weight": torch.randn(256, deep, 1, 1, 1),
        "module.GAP.3.bias": torch.randn(256),
        "module.controller.weight": torch.randn(153, 512, 1, 1, 1),
        "module.controller.bias": torch.randn(153),
        "module.text_to_vision.weight": torch.randn(256, 512),
        "module.text_to_vision.bias": torch.randn(256),
        "module.organ_embedding": torch.randn(32, 512),
    }


def _checkpoint(backbone: str, with_head: bool = True, seed: int = 0) -> tuple[dict, dict[str, torch.Tensor]]:
    """A released-format checkpoint of a random ``backbone`` with 32 outputs, and its plain state dict."""
    torch.manual_seed(seed)
    source = suprem_backbone(backbone, out_channels=32, **SMALL[backbone])
    plain = {k: v.clone() for k, v in source.state_dict().items()}
    prefix = "module." if backbone == "segresnet" else "module.backbone."
    net = {prefix + k: v for k, v in plain.items() if with_head or not k.startswith(SUPREM_HEAD_KEYS[backbone])}
    net.update(_heads(backbone))
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-3}]}
    return {"net": net, "optimizer": optimizer, "scheduler": {"last_epoch": 5, "base_lrs": [1e-3]}, "epoch": 5}, plain


@pytest.mark.parametrize("backbone", ["unet", "segresnet", "swinunetr"])
def test_load_released_format(tmp_path, backbone):
    checkpoint, plain = _checkpoint(backbone)
    path = tmp_path / f"supervised_suprem_{backbone}_2100.pth"
    torch.save(checkpoint, path)
    torch.manual_seed(1)
    target = suprem_backbone(backbone, out_channels=7, **SMALL[backbone])
    head = SUPREM_HEAD_KEYS[backbone]
    with torch.no_grad():
        target.get_submodule(head).weight.zero_()

    report = load_suprem_checkpoint(path, target, backbone)

    state = target.state_dict()
    head_keys = [f"{head}.weight", f"{head}.bias"]
    for key, value in state.items():
        if key not in head_keys:
            assert torch.equal(value, plain[key]), key  # values arrive
    assert sorted(report.initialised) == sorted(head_keys)
    assert state[f"{head}.weight"].shape[0] == 7 and state[f"{head}.weight"].abs().sum() > 0  # re-initialised
    assert not report.missing and not report.shape_mismatch and not report.adapted
    assert len(report.loaded) == len(state) - 2
    dropped = set(report.unexpected)
    assert set(_heads(backbone)) <= dropped  # pre-training heads reported as unused
    assert set(head_keys) <= dropped  # the checkpoint's own 32-class head too
    assert len(dropped) == len(_heads(backbone)) + 2


def test_backbone_detection_and_prefix_stripping():
    checkpoint, plain = _checkpoint("unet", with_head=False)
    stripped, heads = strip_suprem_prefixes(checkpoint["net"])
    assert set(stripped) == set(plain) - {"out_tr.final_conv.weight", "out_tr.final_conv.bias"}
    assert "module.organ_embedding" in heads and len(heads) == 13
    assert detect_suprem_backbone(stripped) == "unet"
    seg, _ = _checkpoint("segresnet")
    stripped, heads = strip_suprem_prefixes(seg["net"])
    assert "convInit.conv.weight" in stripped and "conv_final.2.conv.weight" in stripped and heads == []
    assert detect_suprem_backbone(stripped) == "segresnet"


def test_unet_file_without_final_conv_loads(tmp_path):
    # the Universal Model's U-Net has no out_tr: nothing to drop, the new head is initialised
    checkpoint, plain = _checkpoint("unet", with_head=False)
    target = suprem_backbone("unet", out_channels=3)
    report = load_suprem_checkpoint(checkpoint, target, "unet")
    assert report.initialised == ["out_tr.final_conv.weight", "out_tr.final_conv.bias"]
    assert torch.equal(target.state_dict()["up_tr64.ops.1.bn1.running_var"], plain["up_tr64.ops.1.bn1.running_var"])
    with pytest.raises(WeightTransferError, match="no 'out_tr.final_conv.weight'"):
        load_suprem_checkpoint(checkpoint, suprem_backbone("unet", 25), "unet", head_classes=ABDOMENATLAS_CLASSES)


def test_wrong_backbone_fails_naming_what_it_is():
    checkpoint, _ = _checkpoint("segresnet")
    with torch.device("meta"):
        unet = suprem_backbone("unet", 2)
    with pytest.raises(WeightTransferError, match=r"SuPreM segresnet checkpoint.*backbone='unet'"):
        load_suprem_checkpoint(checkpoint, unet, "unet")
    encoder = {"module.conv1.weight": torch.zeros(64, 1, 7, 7, 7), "module.layer1.0.conv1.weight": torch.zeros(64)}
    medicalnet_like = {"state_dict": encoder}
    with pytest.raises(WeightTransferError, match="3D ResNet encoder"):
        load_suprem_checkpoint(medicalnet_like, unet, "unet")
    with pytest.raises(ValueError, match="unknown SuPreM backbone"):
        load_suprem_checkpoint(checkpoint, unet, "vnet")


def test_other_configuration_fails_on_shapes():
    checkpoint, _ = _checkpoint("swinunetr")  # feature_size 12
    target = suprem_backbone("swinunetr", 2, feature_size=24)
    before = target.state_dict()["swinViT.patch_embed.proj.weight"].clone()
    with pytest.raises(WeightTransferError, match="shape mismatch"):
        load_suprem_checkpoint(checkpoint, target, "swinunetr")
    assert torch.equal(target.state_dict()["swinViT.patch_embed.proj.weight"], before)  # nothing was changed


def test_unknown_extra_tensors_are_strict():
    checkpoint, _ = _checkpoint("segresnet")
    checkpoint["net"]["module.extra_block.weight"] = torch.zeros(3)
    target = suprem_backbone("segresnet", 2)
    with pytest.raises(WeightTransferError, match="extra_block.weight"):
        load_suprem_checkpoint(checkpoint, target, "segresnet")
    report = load_suprem_checkpoint(checkpoint, target, "segresnet", strict=False)
    assert "extra_block.weight" in report.unexpected


def test_pickled_objects_are_refused_unless_allowed(tmp_path):
    checkpoint, _ = _checkpoint("segresnet")
    checkpoint["scheduler"] = {"state": NotATensor()}
    path = tmp_path / "pickled.pth"
    torch.save(checkpoint, path)
    target = suprem_backbone("segresnet", 2)
    with pytest.raises(WeightTransferError, match="allow_pickle=True"):
        load_suprem_checkpoint(path, target, "segresnet")
    assert load_suprem_checkpoint(path, target, "segresnet", allow_pickle=True).n_transferred > 0
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_suprem_checkpoint(tmp_path / "absent.pth")


def test_reuse_head_remapped_to_abdomenatlas_order():
    checkpoint, plain = _checkpoint("segresnet")
    target = suprem_backbone("segresnet", len(ABDOMENATLAS_CLASSES))
    report = load_suprem_checkpoint(checkpoint, target, "segresnet", head_classes=ABDOMENATLAS_CLASSES)
    weight = target.state_dict()["conv_final.2.conv.weight"]
    for row, name in enumerate(ABDOMENATLAS_CLASSES):
        assert torch.equal(weight[row], plain["conv_final.2.conv.weight"][SUPREM_CLASSES_32.index(name)]), name
    assert set(report.adapted) == {"conv_final.2.conv.weight", "conv_final.2.conv.bias"} and not report.initialised
    # a class the checkpoint lacks keeps a fresh row
    target = suprem_backbone("segresnet", 2)
    load_suprem_checkpoint(checkpoint, target, "segresnet", head_classes=("liver", "brain"))
    bias = target.state_dict()["conv_final.2.conv.bias"]
    assert bias[0] == plain["conv_final.2.conv.bias"][SUPREM_CLASSES_32.index("liver")]
    with pytest.raises(WeightTransferError, match="head_classes lists 25"):
        target = suprem_backbone("segresnet", 3)
        load_suprem_checkpoint(checkpoint, target, "segresnet", head_classes=ABDOMENATLAS_CLASSES)


@pytest.mark.parametrize("backbone", ["segresnet", "swinunetr"])
def test_export_round_trip(tmp_path, backbone):
    torch.manual_seed(3)
    model = suprem_backbone(backbone, 4, **SMALL[backbone])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = export_suprem_checkpoint(model, backbone, tmp_path / "out" / "model.pth", optimizer=optimizer, epoch=7)
    stored = torch.load(path, weights_only=True)
    assert set(stored) == {"net", "optimizer", "scheduler", "epoch"} and stored["epoch"] == 7
    prefix = "module." if backbone == "segresnet" else "module.backbone."
    assert all(k.startswith(prefix) for k in stored["net"])
    assert len(stored["net"]) == len(model.state_dict())
    fresh = suprem_backbone(backbone, 4, **SMALL[backbone])
    first_four = SUPREM_CLASSES_32[:4]  # keep the exported head: same classes, same order
    load_suprem_checkpoint(path, fresh, backbone, head_classes=first_four, checkpoint_classes=first_four)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key

    plain_path = export_monai_state_dict(model, tmp_path / "models" / "model.pt")
    plain = torch.load(plain_path, weights_only=True)
    assert set(plain) == set(model.state_dict())
    again = suprem_backbone(backbone, 4, **SMALL[backbone])
    again.load_state_dict(plain, strict=True)
    # a plain state dict (no prefixes) is also accepted by the loader
    assert load_suprem_checkpoint(plain, again, backbone).n_transferred == len(plain) - 2
