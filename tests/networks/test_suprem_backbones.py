"""Tests of monai_ext.networks.suprem_backbones."""

import pytest
import torch
from monai.networks.nets import SegResNet, SwinUNETR

from monai_ext.networks.genesis_unet import GenesisUNet3D
from monai_ext.networks.suprem_backbones import SUPREM_BACKBONES, SUPREM_HEAD_KEYS, suprem_backbone


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, expected_type", [("unet", GenesisUNet3D), ("segresnet", SegResNet)])
def test_published_parameter_counts_meta(name, expected_type):
    published = {"unet": 19.08, "segresnet": 4.70}[name]
    for out_channels in (25, 32):  # AbdomenAtlas 1.1 classes, SuPreM checkpoint classes
        with torch.device("meta"):
            model = suprem_backbone(name, out_channels=out_channels)
        assert isinstance(model, expected_type)
        assert round(_n_params(model) / 1e6, 2) == published


def test_exact_counts_per_class():
    # 19,073,600 + 65 C ; 4,700,880 + 17 C
    with torch.device("meta"):
        assert _n_params(suprem_backbone("unet", 32)) == 19_073_600 + 65 * 32
        assert _n_params(suprem_backbone("segresnet", 32)) == 4_700_880 + 17 * 32


def test_swinunetr_published_count():
    # SwinUNETR cannot be built on the meta device (it calls .item() in its constructor); one CPU build is ~1 s
    model = suprem_backbone("swinunetr", out_channels=32)
    assert isinstance(model, SwinUNETR)
    assert _n_params(model) == 62_186_610 + 49 * 32
    assert round(_n_params(model) / 1e6, 2) == 62.19


@pytest.mark.parametrize("name", SUPREM_BACKBONES)
def test_head_key_is_the_final_1x1_conv(name):
    kwargs = {"feature_size": 12} if name == "swinunetr" else {}
    model = suprem_backbone(name, out_channels=5, **kwargs)
    head = model.get_submodule(SUPREM_HEAD_KEYS[name])
    assert isinstance(head, torch.nn.Conv3d)
    assert head.kernel_size == (1, 1, 1) and head.out_channels == 5
    assert f"{SUPREM_HEAD_KEYS[name]}.weight" in model.state_dict()


def test_forward_segresnet():
    with torch.no_grad():
        assert suprem_backbone("SegResNet", 3)(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_forward_small_swinunetr():
    pytest.importorskip("einops", reason="MONAI's SwinUNETR.forward needs einops")
    with torch.no_grad():
        out = suprem_backbone("swin_unetr", 3, feature_size=12).eval()(torch.randn(1, 1, 64, 64, 64))
    assert out.shape == (1, 3, 64, 64, 64)  # 64 is the smallest size: its bottleneck InstanceNorm needs 2+ voxels


def test_overrides_and_unknown_name():
    with torch.device("meta"):
        model = suprem_backbone("unet", 2, bn_batch_stats_in_eval=False)
    assert model.down_tr64.ops[0].bn1.batch_stats_in_eval is False
    with pytest.raises(ValueError, match="unknown SuPreM backbone 'vnet'"):
        suprem_backbone("vnet", 2)
