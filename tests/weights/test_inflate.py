"""Tests of monai_ext.weights.inflate (kernel rules, state-dict conversion with coverage) and of the 2D ImageNet
weight table and file lookup of monai_ext.weights.imagenet2d."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from monai.networks.utils import copy_model_state
from torch import nn

from monai_ext.weights.imagenet2d import (
    DEFAULT_IMAGENET_2D_WEIGHTS,
    IMAGENET_2D_WEIGHTS,
    WEIGHTS_DIR_ENV,
    find_2d_weights,
    get_2d_weights_info,
    read_2d_state_dict,
)
from monai_ext.weights.inflate import (
    adapt_input_channels,
    describe_input_channel_rule,
    expand_2d_network_to_3d,
    inflate_conv_weight,
    inflate_module,
    inflate_state_dict,
    inflation_filter,
)
from monai_ext.weights.report import WeightTransferError


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-default running statistics and affine parameters, so that copying the buffers is tested."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(17)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


class TinyNet(nn.Module):
    """Stem conv + BN, depthwise conv, transposed conv, pooled linear head: a dimension-generic test network."""

    def __init__(self, spatial_dims: int, in_channels: int = 3, width: int = 8, classes: int = 4, depth: int = 3):
        super().__init__()
        kernel = 3 if spatial_dims == 2 else (depth, 3, 3)
        padding = 1 if spatial_dims == 2 else (depth // 2, 1, 1)
        self.stem = Conv[Conv.CONV, spatial_dims](in_channels, width, kernel, padding=padding, bias=False)
        self.bn = Norm[Norm.BATCH, spatial_dims](width)
        self.dw = Conv[Conv.CONV, spatial_dims](width, width, kernel, padding=padding, groups=width)
        up_kernel = 2 if spatial_dims == 2 else (1, 2, 2)
        self.up = Conv[Conv.CONVTRANS, spatial_dims](width, width, up_kernel, stride=up_kernel)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = self.up(torch.relu(self.dw(torch.relu(self.bn(self.stem(x))))))
        return self.head(x.flatten(2).mean(-1))


# ----------------------------------------------------------------------------------------------------------------
# kernel rules


def test_average_splits_the_kernel_evenly_over_depth():
    w = torch.randn(4, 3, 3, 3)
    out = inflate_conv_weight(w, (4, 3, 5, 3, 3), "average")
    assert out.shape == (4, 3, 5, 3, 3)
    for d in range(5):
        torch.testing.assert_close(out[:, :, d], w / 5)
    torch.testing.assert_close(out.sum(2), w)


@pytest.mark.parametrize("kd, middle", [(3, 1), (5, 2), (4, 2), (1, 0)])
def test_center_puts_the_kernel_in_the_middle_slice(kd, middle):
    w = torch.randn(2, 2, 3, 3)
    out = inflate_conv_weight(w, (2, 2, kd, 3, 3), "center")
    torch.testing.assert_close(out[:, :, middle], w)
    others = [d for d in range(kd) if d != middle]
    assert torch.count_nonzero(out[:, :, others]) == 0


def test_repeat_and_2_5d():
    w = torch.randn(2, 3, 3, 3)
    repeated = inflate_conv_weight(w, (2, 3, 3, 3, 3), "repeat")
    for d in range(3):
        torch.testing.assert_close(repeated[:, :, d], w)
    torch.testing.assert_close(inflate_conv_weight(w, (2, 3, 1, 3, 3), "2.5d"), w.unsqueeze(2))
    with pytest.raises(ValueError, match=r"2.5d.*\(2, 3, 3, 3, 3\)"):
        inflate_conv_weight(w, (2, 3, 3, 3, 3), "2.5d")


def test_anisotropic_target_takes_depth_from_the_target():
    w = torch.randn(8, 4, 3, 3)
    for mode in ("average", "center", "repeat", "2.5d"):
        torch.testing.assert_close(inflate_conv_weight(w, (8, 4, 1, 3, 3), mode), w.unsqueeze(2))


def test_incompatible_shapes_name_both_shapes():
    w = torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"\(4, 3, 3, 3\) to \(4, 2, 3, 3, 3\)"):
        inflate_conv_weight(w, (4, 2, 3, 3, 3), "average")
    with pytest.raises(ValueError, match=r"\(4, 3, 3, 3\) to \(4, 3, 3, 5, 5\)"):
        inflate_conv_weight(w, (4, 3, 3, 5, 5), "center")
    with pytest.raises(ValueError, match="unknown inflation mode"):
        inflate_conv_weight(w, (4, 3, 3, 3, 3), "acs")


def test_center_inflated_depthwise_and_transposed_layers_act_slice_by_slice():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 9, 9)  # B, C, D, H, W
    slices = x.permute(0, 2, 1, 3, 4).reshape(10, 6, 9, 9)
    dw2 = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    dw3 = nn.Conv3d(6, 6, 3, padding=1, groups=6)
    dw3.weight.data = inflate_conv_weight(dw2.weight.data, dw3.weight.shape, "center")
    dw3.bias.data = dw2.bias.data.clone()
    expected = dw2(slices).reshape(2, 5, 6, 9, 9).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(dw3(x), expected, atol=1e-5, rtol=1e-5)

    up2 = nn.ConvTranspose2d(6, 4, 2, stride=2)  # weight I x O x k x k
    up3 = nn.ConvTranspose3d(6, 4, (3, 2, 2), stride=(1, 2, 2), padding=(1, 0, 0))
    up3.weight.data = inflate_conv_weight(up2.weight.data, up3.weight.shape, "center")
    up3.bias.data = up2.bias.data.clone()
    expected = up2(slices).reshape(2, 5, 4, 18, 18).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(up3(x), expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# input channels


def test_sum_rgb_gives_the_rgb_response_to_a_grey_image():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3)
    grey = torch.randn(1, 1, 12, 12)
    w1 = adapt_input_channels(w, 1)
    assert w1.shape == (8, 1, 3, 3)
    torch.testing.assert_close(F.conv2d(grey, w1), F.conv2d(grey.expand(1, 3, 12, 12), w), atol=1e-5, rtol=1e-5)


def test_tiled_channels_are_scaled_by_three_over_c():
    w = torch.randn(8, 3, 3, 3, 3)  # a 3D kernel works the same way
    w4 = adapt_input_channels(w, 4)
    assert w4.shape == (8, 4, 3, 3, 3)
    torch.testing.assert_close(w4[:, :3], w * 0.75)
    torch.testing.assert_close(w4[:, 3], w[:, 0] * 0.75)
    w7 = adapt_input_channels(w, 7)
    torch.testing.assert_close(w7[:, 6], w[:, 0] * 3 / 7)


def test_other_channel_rules():
    w = torch.randn(8, 3, 3, 3)
    assert adapt_input_channels(w, 3) is w
    assert adapt_input_channels(w, 1, "init") is None
    assert adapt_input_channels(w, 4, "sum_or_init") is None
    torch.testing.assert_close(adapt_input_channels(w, 1, "sum_or_init"), w.sum(1, keepdim=True))
    assert describe_input_channel_rule(3, 1, "sum_rgb") == "input channels 3->1 (sum RGB)"
    assert "tiled" in describe_input_channel_rule(3, 4, "sum_rgb")
    with pytest.raises(ValueError, match="unknown input-channel rule"):
        adapt_input_channels(w, 1, "mean")
    with pytest.raises(ValueError, match="O x I"):
        adapt_input_channels(torch.randn(3), 1)


# ----------------------------------------------------------------------------------------------------------------
# state dicts


def test_every_entry_is_copied_or_inflated_and_the_values_arrive():
    torch.manual_seed(0)
    net2 = randomise_batchnorm(TinyNet(2))
    net3 = TinyNet(3)
    state3, report = inflate_state_dict(net2.state_dict(), net3, mode="average", source="tiny")
    assert set(state3) == set(net3.state_dict())
    assert not report.missing and not report.initialised and not report.unexpected
    assert set(report.adapted) == {"stem.weight", "dw.weight", "up.weight"}
    assert report.adapted["stem.weight"] == "inflated 2D->3D (average)"
    assert {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "head.weight", "dw.bias"} <= set(
        report.loaded
    )
    torch.testing.assert_close(state3["bn.running_var"], net2.bn.running_var)
    assert int(state3["bn.num_batches_tracked"]) == 17
    torch.testing.assert_close(state3["dw.weight"], inflate_conv_weight(net2.dw.weight, (8, 1, 3, 3, 3), "average"))
    net3.load_state_dict(state3)  # strict: the state is complete


def test_first_conv_channels_are_adapted_and_reported():
    net2 = TinyNet(2, in_channels=3)
    net3 = TinyNet(3, in_channels=1)
    state3, report = inflate_state_dict(net2.state_dict(), net3, first_conv="stem")
    assert report.adapted["stem.weight"] == "inflated 2D->3D (average); input channels 3->1 (sum RGB)"
    expected = inflate_conv_weight(net2.stem.weight.sum(1, keepdim=True), (8, 1, 3, 3, 3), "average")
    torch.testing.assert_close(state3["stem.weight"], expected)

    initial = net3.stem.weight.detach().clone()
    state3, report = inflate_state_dict(net2.state_dict(), net3, first_conv="stem.weight", in_channels_rule="init")
    assert report.initialised == ["stem.weight"] and "stem.weight" not in report.adapted
    assert report.unexpected == ["stem.weight"]  # the pre-trained stem was not used
    torch.testing.assert_close(state3["stem.weight"], initial)


def test_channel_mismatch_without_first_conv_names_the_key():
    with pytest.raises(WeightTransferError, match=r"stem.weight: source \(8, 3, 3, 3\) vs target \(8, 1, 3, 3, 3\)"):
        inflate_state_dict(TinyNet(2, in_channels=3).state_dict(), TinyNet(3, in_channels=1))


def test_new_head_must_be_declared():
    net2, net3 = TinyNet(2, classes=4), TinyNet(3, classes=5)
    with pytest.raises(WeightTransferError, match=r"head.weight: source \(4, 8\) vs target \(5, 8\)"):
        inflate_state_dict(net2.state_dict(), net3)
    _, report = inflate_state_dict(net2.state_dict(), net3, new_layers=("head.",))
    assert report.initialised == ["head.weight", "head.bias"]
    assert set(report.unexpected) == {"head.weight", "head.bias"}


def test_undeclared_target_entries_fail_and_are_named():
    net2 = TinyNet(2)
    net3 = TinyNet(3)
    net3.extra = nn.Conv3d(8, 8, 1)
    with pytest.raises(WeightTransferError, match=r"2 entries of the target.*extra.weight, extra.bias"):
        inflate_state_dict(net2.state_dict(), net3)
    _, report = inflate_state_dict(net2.state_dict(), net3, new_layers=("extra",))
    assert report.initialised == ["extra.weight", "extra.bias"]


def test_unused_source_entries_fail_unless_dropped():
    net2 = TinyNet(2)
    net2.classifier = nn.Linear(4, 10)
    with pytest.raises(WeightTransferError, match=r"no place in the target: classifier.weight, classifier.bias"):
        inflate_state_dict(net2.state_dict(), TinyNet(3))
    _, report = inflate_state_dict(net2.state_dict(), TinyNet(3), drop_source=("classifier.",))
    assert report.unexpected == ["classifier.weight", "classifier.bias"]


def test_key_map_renames_and_drops():
    net2 = TinyNet(2)
    source = {("backbone." + k if not k.startswith("head") else "fc." + k[5:]): v for k, v in net2.state_dict().items()}
    source["aux.weight"] = torch.zeros(1)
    key_map = {"backbone.": "", "fc.": "head.", "aux.": None}
    state3, report = inflate_state_dict(source, TinyNet(3), key_map=key_map)
    torch.testing.assert_close(state3["head.weight"], net2.head.weight)
    assert report.unexpected == ["aux.weight"]  # dropped on purpose by the key map: allowed
    _, report = inflate_state_dict(
        source,
        TinyNet(3),
        key_map=lambda k: None if k == "aux.weight" else k.replace("backbone.", "").replace("fc.", "head."),
    )
    assert not report.missing

    with pytest.raises(WeightTransferError, match="both map to target key"):
        inflate_state_dict(net2.state_dict(), TinyNet(3), key_map=lambda k: "head.bias" if k.startswith("head") else k)


def test_a_map_that_drops_a_layer_is_caught():
    with pytest.raises(WeightTransferError, match=r"got no value.*dw.weight, dw.bias"):
        inflate_state_dict(TinyNet(2).state_dict(), TinyNet(3), key_map={"dw.": None})


def test_nothing_matching_fails():
    with pytest.raises(WeightTransferError, match="got no value"):
        inflate_state_dict(TinyNet(2).state_dict(), TinyNet(3), key_map=lambda k: "module." + k)


def test_inflation_filter_works_with_copy_model_state():
    torch.manual_seed(0)
    net2 = randomise_batchnorm(TinyNet(2))
    net3 = TinyNet(3, in_channels=1)
    _, changed, unchanged = copy_model_state(
        net3, net2, filter_func=inflation_filter("center", net3, first_conv="stem"), inplace=True
    )
    assert unchanged == []
    torch.testing.assert_close(net3.bn.running_mean, net2.bn.running_mean)
    expected = inflate_conv_weight(net2.stem.weight.sum(1, keepdim=True), (8, 1, 3, 3, 3), "center")
    torch.testing.assert_close(net3.stem.weight, expected)

    head5 = TinyNet(3, classes=5)
    with pytest.raises(WeightTransferError, match="'head.weight'"):
        copy_model_state(head5, net2, filter_func=inflation_filter("center", head5))
    _, _, unchanged = copy_model_state(head5, net2, filter_func=inflation_filter("center", head5, new_layers=("head",)))
    assert unchanged == ["head.bias", "head.weight"]


def test_inflate_module_and_expansion_of_twins():
    torch.manual_seed(0)
    net2 = randomise_batchnorm(TinyNet(2)).eval()
    net3 = TinyNet(3).eval()
    report = expand_2d_network_to_3d(net2, net3)
    assert report.n_transferred == len(net3.state_dict())
    x = torch.randn(2, 3, 12, 12)
    volume = x.unsqueeze(2).expand(2, 3, 4, 12, 12)  # centre rule: every slice gives the 2D answer
    with torch.no_grad():
        y3 = net3.stem(volume)
        y2 = net2.stem(x)
    torch.testing.assert_close(y3, y2.unsqueeze(2).expand_as(y3), atol=1e-5, rtol=1e-5)

    report = inflate_module(net2, TinyNet(3), mode="repeat")
    assert report.adapted["up.weight"] == "inflated 2D->3D (repeat)"
    with pytest.raises(WeightTransferError, match="cannot map"):
        expand_2d_network_to_3d(net2, TinyNet(3, width=16))


# ----------------------------------------------------------------------------------------------------------------
# 2D ImageNet weight table and file lookup (monai_ext.weights.imagenet2d)


def test_weight_table_names_real_urls():
    assert IMAGENET_2D_WEIGHTS["resnet18.tv_in1k"].url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert get_2d_weights_info("resnet50").filename == "resnet50-11ad3fa6.pth"
    assert get_2d_weights_info("resnet50.tv_in1k").filename == "resnet50-0676ba61.pth"
    assert get_2d_weights_info("resnet152").sha256_prefix == "f82ba261"
    assert get_2d_weights_info("efficientnet-b0").hf_hub_id == "timm/efficientnet_b0.ra_in1k"
    assert get_2d_weights_info("efficientnet-b4").first_conv == "conv_stem"
    for name in DEFAULT_IMAGENET_2D_WEIGHTS.values():
        info = IMAGENET_2D_WEIGHTS[name]
        assert info.url.startswith("https://") and info.filename.endswith(".pth")
        assert info.sha256_prefix is None or info.sha256_prefix in info.filename
    with pytest.raises(KeyError, match="known"):
        get_2d_weights_info("resnet200")


@pytest.fixture
def empty_lookup(tmp_path, monkeypatch):
    """No weights anywhere: an empty torch hub folder and no MONAI_EXT_WEIGHTS."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    return tmp_path


def test_missing_weights_name_the_url_and_the_path(empty_lookup):
    expected_path = empty_lookup / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as err:
        find_2d_weights("resnet18")
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in str(err.value)
    assert str(expected_path) in str(err.value)


def test_lookup_order_and_hash_check(empty_lookup, monkeypatch):
    state = {"conv1.weight": torch.ones(2, 3, 1, 1)}
    hub_file = empty_lookup / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    hub_file.parent.mkdir(parents=True)
    torch.save(state, hub_file)
    with pytest.raises(WeightTransferError, match="sha256"):
        find_2d_weights("resnet18")  # not the published file
    assert find_2d_weights("resnet18", check_hash=False) == hub_file

    env_dir = empty_lookup / "weights"
    env_dir.mkdir()
    torch.save(state, env_dir / "resnet18-f37072fd.pth")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(env_dir))
    assert find_2d_weights("resnet18", check_hash=False) == env_dir / "resnet18-f37072fd.pth"

    digest = hashlib.sha256((env_dir / "resnet18-f37072fd.pth").read_bytes()).hexdigest()
    entry = dataclasses.replace(IMAGENET_2D_WEIGHTS["resnet18.tv_in1k"], sha256_prefix=digest[:8])
    monkeypatch.setitem(IMAGENET_2D_WEIGHTS, "resnet18.tv_in1k", entry)
    assert find_2d_weights("resnet18") == env_dir / "resnet18-f37072fd.pth"

    explicit = empty_lookup / "my_resnet18.pt"
    torch.save(state, explicit)
    assert find_2d_weights("resnet18", path=explicit) == explicit
    assert find_2d_weights("resnet18", path=env_dir) == env_dir / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        find_2d_weights("resnet18", path=empty_lookup)


def test_read_unwraps_training_checkpoints(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module.conv1.weight": torch.ones(1)}, "epoch": 3}, path)
    assert list(read_2d_state_dict(path)) == ["conv1.weight"]
    with pytest.raises(FileNotFoundError):
        read_2d_state_dict(tmp_path / "nope.pth")
