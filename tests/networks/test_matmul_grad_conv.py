"""MatmulGradConv3d is nn.Conv3d with another weight gradient: same outputs and gradients, used only where it is faster."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_ext.networks.inflated import InflatedFlexUNet
from monai_ext.networks.matmul_grad_conv import (
    MIN_CHANNELS,
    MatmulGradConv3d,
    _MatmulGradConv3dFunction,
    conv3d_weight_grad,
    uses_matmul_weight_grad,
)
from monai_ext.networks.med3d import med3d_resnet10, med3d_resnet50


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, size",
    [
        ((3, 3, 3), (1, 1, 1), (4, 4, 4), (4, 4, 4), (6, 6, 6)),  # Med3D layer4 at a 48^3 input
        ((3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2), (3, 8, 8)),  # VDT's depth-3 volumes
        ((3, 3, 3), (2, 1, 2), (1, 2, 3), (1, 2, 3), (7, 9, 8)),  # anything else conv3d accepts
        ((1, 3, 2), (1, 1, 1), (0, 1, 0), (1, 1, 2), (5, 4, 6)),
    ],
)
def test_weight_grad_equals_torch_in_double(kernel, stride, padding, dilation, size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, *size, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, *kernel, generator=g, dtype=torch.float64)
    grad_out = torch.randn_like(F.conv3d(x, w, None, stride, padding, dilation))
    expected = torch.ops.aten.convolution_backward(
        grad_out, x, w, None, stride, padding, dilation, False, [0, 0, 0], 1, [False, True, False]
    )[1]
    torch.testing.assert_close(conv3d_weight_grad(x, grad_out, kernel, stride, padding, dilation), expected)
    # built a few input channels at a time when the gathered windows would exceed the limit: same result
    chunked = conv3d_weight_grad(x, grad_out, kernel, stride, padding, dilation, max_columns_bytes=1)
    torch.testing.assert_close(chunked, expected)


def test_weight_grad_of_bf16_inputs_written_into_fp32():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 5, 5, 5, generator=g).bfloat16()
    grad_out = torch.randn(2, 3, 5, 5, 5, generator=g).bfloat16()
    geometry = ((3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2))
    fp32 = conv3d_weight_grad(x, grad_out, *geometry, out_dtype=torch.float32)
    assert fp32.dtype == torch.float32 and fp32.shape == (3, 6, 3, 3, 3)
    torch.testing.assert_close(fp32, conv3d_weight_grad(x, grad_out, *geometry).float())
    expected = conv3d_weight_grad(x.double(), grad_out.double(), *geometry).float()
    torch.testing.assert_close(fp32, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


def test_function_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: _MatmulGradConv3dFunction.apply(x, w, b, (1, 1, 1), (2, 2, 2), (2, 2, 2), torch.float64),
        (x, w, b),
    )


def _pair(channels: int, dilation: int = 4, bias: bool = False) -> tuple[torch.nn.Conv3d, MatmulGradConv3d]:
    torch.manual_seed(0)
    plain = torch.nn.Conv3d(channels, 8, 3, padding=dilation, dilation=dilation, bias=bias)
    fast = MatmulGradConv3d(channels, 8, 3, padding=dilation, dilation=dilation, bias=bias)
    fast.load_state_dict(plain.state_dict())  # same parameters, same keys
    return plain, fast


@pytest.mark.parametrize("bias", [False, True])
def test_bf16_training_matches_nn_conv3d(bias):
    plain, fast = _pair(MIN_CHANNELS, bias=bias)
    x = torch.randn(2, MIN_CHANNELS, 6, 6, 6)
    grads = []
    for conv in (plain, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(xi)
        assert y.dtype == torch.bfloat16
        y.float().square().mean().backward()
        grads.append((y.float(), xi.grad, conv.weight.grad, conv.bias.grad if bias else None))
    assert fast._uses_matmul_weight_grad(x.requires_grad_()) is False  # no autocast here: fp32 stays nn.Conv3d's
    (y0, gx0, gw0, gb0), (y1, gx1, gw1, gb1) = grads
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(gx1, gx0)
    assert gw1.dtype == torch.float32  # the parameter's gradient, as autocast gives it
    # both are bf16 products with fp32 accumulation in another order: equal to bf16 precision
    torch.testing.assert_close(gw1, gw0, rtol=2e-2, atol=2e-2 * gw0.abs().max().item())
    if bias:
        torch.testing.assert_close(gb1, gb0, rtol=2e-2, atol=1e-3)


def test_weight_grad_is_computed_by_matmul_only_where_it_is_faster(monkeypatch):
    calls = []
    real = conv3d_weight_grad

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr("monai_ext.networks.matmul_grad_conv.conv3d_weight_grad", counting)

    def train_step(conv, channels, bf16=True, frozen=False, size=4):
        conv.weight.requires_grad_(not frozen)
        x = torch.randn(1, channels, size, size, size, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x).float().sum().backward()

    _, wide = _pair(MIN_CHANNELS)
    train_step(wide, MIN_CHANNELS)
    assert len(calls) == 1
    train_step(wide, MIN_CHANNELS, bf16=False)  # fp32: oneDNN's gradient
    train_step(wide, MIN_CHANNELS, frozen=True)  # no weight gradient wanted
    _, thin = _pair(MIN_CHANNELS // 2)
    train_step(thin, MIN_CHANNELS // 2)  # few channels: oneDNN was faster
    undilated = MatmulGradConv3d(MIN_CHANNELS, 8, 3, padding=1)
    train_step(undilated, MIN_CHANNELS, size=8)  # undilated, 128 channels on 8^3: oneDNN was faster
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # inference
        wide(torch.randn(1, MIN_CHANNELS, 4, 4, 4))
    assert len(calls) == 1
    train_step(undilated, MIN_CHANNELS, size=6)  # undilated but small: oneDNN's is slow there
    assert len(calls) == 2


@pytest.mark.parametrize(
    "channels, volume, dilated, expected",
    [
        (512, (6, 6, 6), True, True), (256, (6, 6, 6), True, True),  # Med3D layer4/layer3 at a 48^3 patch
        (512, (12, 12, 12), True, True), (256, (16, 16, 16), True, False),  # larger patches
        (512, (16, 2, 2), False, True), (256, (16, 4, 4), False, True), (128, (16, 8, 8), False, False),  # inflated
        (256, (12, 12, 12), False, False), (128, (6, 6, 6), False, True), (128, (12, 12, 12), True, True),
        (64, (4, 4, 4), True, False),
    ],
)  # fmt: skip
def test_the_rule_follows_the_measurements(channels, volume, dilated, expected):
    assert uses_matmul_weight_grad(channels, volume, dilated) is expected


def test_3d_networks_use_it_and_keep_their_keys():
    for net in (med3d_resnet10(), med3d_resnet50(), med3d_resnet10(dilated=False)):
        convs = {n for n, m in net.named_modules() if isinstance(m, MatmulGradConv3d)}
        kernels = {n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3)}
        assert convs == kernels  # the 3x3x3 convolutions of the blocks; the 7^3 stem and 1^3 shortcuts stay nn.Conv3d
    assert "layer4.0.conv2.weight" in med3d_resnet10().state_dict()
    assert not any(isinstance(m, MatmulGradConv3d) for m in med3d_resnet10(spatial_dims=2).modules())
    unet = InflatedFlexUNet(backbone="inflated-resnet18", in_channels=1, out_channels=2, pretrained=False)
    assert any(isinstance(m, MatmulGradConv3d) for m in unet.encoder.modules())
