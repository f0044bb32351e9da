"""Tests for monai_ext.networks.med3d: architecture facts of the published MedicalNet encoders and the two layouts."""

from __future__ import annotations

import pytest
import torch
from monai.networks import nets

from monai_ext.networks.med3d import (
    MED3D_ARCHITECTURES,
    Med3DBasicBlock,
    Med3DBottleneck,
    Med3DResNet,
    ZeroPadShortcut,
    med3d_resnet,
    med3d_resnet10,
    med3d_resnet18,
    med3d_resnet34,
    med3d_resnet50,
    med3d_resnet101,
    med3d_resnet152,
    med3d_resnet200,
)

# depth -> (encoder parameters in millions, state-dict length), as published by MedicalNet.
PUBLISHED = {
    10: (14.36, 72),
    18: (32.99, 102),
    34: (63.30, 198),
    50: (46.16, 318),
    101: (85.20, 624),
    152: (117.36, 930),
    200: (126.56, 1218),
}


def _meta(depth: int, **kwargs) -> Med3DResNet:
    with torch.device("meta"):
        return med3d_resnet(depth, **kwargs)


@pytest.mark.parametrize("depth", sorted(PUBLISHED))
def test_parameter_count_and_entries_match_published(depth):
    model = _meta(depth)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(n_params, 2) == pytest.approx(PUBLISHED[depth][0], abs=0.01)
    assert len(model.state_dict()) == PUBLISHED[depth][1]


@pytest.mark.parametrize("depth", sorted(PUBLISHED))
def test_keys_and_shapes_equal_monai_resnet(depth):
    block, layers, shortcut = MED3D_ARCHITECTURES[depth]
    with torch.device("meta"):
        reference = getattr(nets, f"resnet{depth}")(
            n_input_channels=1, conv1_t_stride=2, shortcut_type=shortcut, bias_downsample=False, feed_forward=False
        )
    ours = {k: tuple(v.shape) for k, v in _meta(depth).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == theirs


def test_published_key_names_depth10_and_18():
    sd10 = _meta(10).state_dict()
    assert tuple(sd10["conv1.weight"].shape) == (64, 1, 7, 7, 7)
    assert tuple(sd10["layer1.0.conv1.weight"].shape) == (64, 64, 3, 3, 3)
    assert tuple(sd10["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1, 1)
    assert "layer2.0.downsample.1.running_var" in sd10
    assert "layer2.0.downsample.0.bias" not in sd10
    assert "bn1.num_batches_tracked" in sd10
    sd18 = _meta(18).state_dict()
    assert not any("downsample" in k for k in sd18)


def test_layer_strides_dilations_and_stem():
    model = _meta(50)
    assert model.conv1.kernel_size == (7, 7, 7) and model.conv1.stride == (2, 2, 2)
    assert model.conv1.padding == (3, 3, 3) and model.conv1.bias is None
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    assert model.layer2[0].conv2.stride == (2, 2, 2)
    assert model.layer3[0].conv2.stride == (1, 1, 1) and model.layer3[0].conv2.dilation == (2, 2, 2)
    assert model.layer4[2].conv2.dilation == (4, 4, 4) and model.layer4[2].conv2.padding == (4, 4, 4)
    assert model.layer4[0].conv1.dilation == (1, 1, 1)  # bottlenecks dilate conv2 only
    basic = _meta(34)
    assert isinstance(basic.layer3[5], Med3DBasicBlock)
    assert basic.layer3[5].conv1.dilation == (2, 2, 2) and basic.layer3[5].conv2.dilation == (2, 2, 2)
    assert isinstance(model.layer1[0], Med3DBottleneck)


def test_forward_dilated_output_stride_8():
    model = med3d_resnet10().eval()
    x = torch.randn(1, 1, 32, 24, 16)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
    assert out.shape == (1, 512, 4, 3, 2)
    assert model.output_stride == (8, 8, 8)
    assert [f.shape[1] for f in feats] == list(model.feature_channels) == [64, 64, 128, 256, 512]
    assert [tuple(f.shape[2:]) for f in feats] == [(16, 12, 8), (8, 6, 4), (4, 3, 2), (4, 3, 2), (4, 3, 2)]
    assert torch.equal(feats[-1], out)


def test_forward_not_dilated_output_stride_32():
    model = med3d_resnet10(dilated=False).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 1, 64, 64, 32))
    assert [tuple(f.shape[2:]) for f in feats] == [(32, 32, 16), (16, 16, 8), (8, 8, 4), (4, 4, 2), (2, 2, 1)]
    assert model.output_stride == (32, 32, 32)
    assert model.layer3[0].conv1.dilation == (1, 1, 1)


def test_bottleneck_forward_channels():
    model = med3d_resnet50().eval()
    assert model.out_channels == 2048 and model.feature_channels == (64, 256, 512, 1024, 2048)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2048, 2, 2, 2)


@pytest.mark.parametrize("depth_size", [1, 3, 5])
def test_stride_depth_false_keeps_any_depth(depth_size):
    model = med3d_resnet18(stride_depth=False).eval()
    assert model.conv1.stride == (1, 2, 2) and model.maxpool.stride == (1, 2, 2)
    assert model.layer2[0].conv1.stride == (1, 2, 2)
    with torch.no_grad():
        out = model(torch.randn(2, 1, depth_size, 32, 32))
    assert out.shape == (2, 512, depth_size, 4, 4)
    assert model.output_stride == (1, 8, 8)


def test_stride_depth_false_not_dilated():
    model = med3d_resnet10(stride_depth=False, dilated=False).eval()
    assert all(s.stride == (1, 2, 2) for s in (model.layer2[0].conv1, model.layer3[0].conv1, model.layer4[0].conv1))
    with torch.no_grad():
        assert model(torch.randn(1, 1, 3, 64, 64)).shape == (1, 512, 3, 2, 2)


def test_not_dilated_matches_monai_resnet_numerically():
    """With dilated=False the network is MONAI's ResNet: same weights give the same (pooled) features."""
    for depth in (10, 18):
        _, layers, shortcut = MED3D_ARCHITECTURES[depth]
        torch.manual_seed(0)
        ours = med3d_resnet(depth, dilated=False).eval()
        reference = getattr(nets, f"resnet{depth}")(
            n_input_channels=1, conv1_t_stride=2, shortcut_type=shortcut, bias_downsample=False, feed_forward=False
        ).eval()
        reference.load_state_dict(ours.state_dict(), strict=True)
        x = torch.randn(1, 1, 32, 32, 32)
        with torch.no_grad():
            expected = reference(x)
            got = ours(x).mean(dim=(2, 3, 4))
        assert torch.allclose(got, expected, atol=1e-5)


def test_zero_pad_shortcut_values_and_gradient():
    shortcut = ZeroPadShortcut(out_channels=6, stride=2)
    x = torch.randn(1, 4, 4, 4, 4, requires_grad=True)
    y = shortcut(x)
    assert y.shape == (1, 6, 2, 2, 2)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2, ::2])
    assert torch.count_nonzero(y[:, 4:]) == 0
    y.sum().backward()
    expected = torch.zeros_like(x)
    expected[:, :, ::2, ::2, ::2] = 1.0
    assert torch.equal(x.grad, expected)  # the shortcut is part of the graph (MedicalNet/MONAI use .data)


def test_shortcut_a_gradient_reaches_input_through_shortcut():
    """In a type-A block with zeroed residual branch, the input still gets gradient through the shortcut."""
    model = med3d_resnet18()
    block = model.layer2[0]
    assert isinstance(block.downsample, ZeroPadShortcut)
    torch.nn.init.zeros_(block.bn2.weight)  # residual branch outputs 0: only the shortcut carries x
    x = torch.rand(1, 64, 4, 4, 4, requires_grad=True)
    block(x).sum().backward()
    assert x.grad is not None and x.grad[:, :, ::2, ::2, ::2].abs().sum() > 0


def test_shortcut_override_and_validation():
    assert len(_meta(18, shortcut_type="B").state_dict()) > PUBLISHED[18][1]
    assert not any("downsample" in k for k in _meta(10, shortcut_type="A").state_dict())
    with pytest.raises(ValueError, match="depth"):
        Med3DResNet(depth=11)
    with pytest.raises(ValueError, match="shortcut"):
        Med3DResNet(depth=10, shortcut_type="C")
    with pytest.raises(ValueError, match="spatial_dims=3"):
        Med3DResNet(depth=10, spatial_dims=2, stride_depth=False)


def test_in_channels_and_2d():
    model = med3d_resnet10(in_channels=4).eval()
    assert model.conv1.weight.shape[1] == 4
    with torch.no_grad():
        assert model(torch.randn(1, 4, 16, 16, 16)).shape == (1, 512, 2, 2, 2)
    flat = med3d_resnet10(spatial_dims=2).eval()
    with torch.no_grad():
        assert flat(torch.randn(1, 1, 32, 32)).shape == (1, 512, 4, 4)


def test_constructor_helpers():
    helpers = {
        10: med3d_resnet10,
        18: med3d_resnet18,
        34: med3d_resnet34,
        50: med3d_resnet50,
        101: med3d_resnet101,
        152: med3d_resnet152,
        200: med3d_resnet200,
    }
    for depth, helper in helpers.items():
        with torch.device("meta"):
            model = helper(dilated=False)
        assert model.depth == depth and model.dilated is False
        assert model.shortcut_type == MED3D_ARCHITECTURES[depth][2]
        assert model.out_channels == (512 if depth < 50 else 2048)
