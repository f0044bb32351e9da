"""A 3D convolution whose weight gradient is one matrix product on the CPU where oneDNN's is slow.

oneDNN (torch 2.13) has AMX kernels for the forward pass and the input gradient of a 3D convolution, but its weight
gradient falls back to a generic im2col + GEMM path that does not use AMX when the convolution is dilated, and is slow
when the volume is only a few voxels wide (deep layers of a small patch). Both are common here: Med3D's ResNets dilate
``layer3``/``layer4`` by 2 and 4 (Chen et al. 2019), and at a 48^3 patch those layers see 6^3 voxels; an inflated
ResNet-34 sees 16x2x2 voxels in its last stage at a 16x64x64 patch. On this project's 2-core AMX CPU the weight
gradients of the two 512-channel dilated convolutions of a ResNet-10 took 40% of a bf16 training step, and bf16
trained barely faster than fp32.

:class:`MatmulGradConv3d` is an ``nn.Conv3d`` (same parameters, same state-dict keys, same outputs) that, when it
trains on the CPU in bf16 with at least :data:`MIN_CHANNELS` input channels on a small or dilated volume (see
:func:`uses_matmul_weight_grad`), computes the weight gradient itself: the input windows are gathered channels-last
(one copy, the channels innermost) and multiplied with the output gradient in one ``matmul``, which runs on AMX; the
product is written straight into an fp32 gradient (no separate cast). Forward and input gradient stay oneDNN's.
Everywhere else (GPU, fp32, thin or large layers, inference, frozen weights) it is a plain ``nn.Conv3d``.
``benchmarks/train_speed.py`` measures the effect on every bundle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MatmulGradConv3d", "conv3d_weight_grad", "uses_matmul_weight_grad", "MIN_CHANNELS"]

#: input channels from which the matrix-product weight gradient can be used (see :func:`uses_matmul_weight_grad`)
MIN_CHANNELS = 128


def uses_matmul_weight_grad(in_channels: int, volume: Sequence[int], dilated: bool) -> bool:
    """Whether the matrix-product weight gradient beats oneDNN's for a 3x3x3 bf16 convolution of this shape.

    Measured on a 2-core AMX CPU, batch 2, against oneDNN's gradient plus its cast to fp32: from 256 input channels
    1.1-1.8x faster up to 1024 voxels (8^3, 16x8x8, 16x2x2), 0.5-0.75x at 12^3; dilated 1.4-1.8x up to 12^3 (and 16^3
    at 512 channels), 1.0x at 16^3 with 256; 128 channels 1.1-1.3x up to 256 voxels (6^3, 16x4x4), 0.85x at 8^3,
    dilated 2.1x at 12^3 and 0.7x from 16^3.
    """
    voxels = math.prod(volume)
    if in_channels < MIN_CHANNELS:
        return False
    if dilated:
        return voxels <= 12**3
    return voxels <= (1024 if in_channels >= 256 else 256)


def conv3d_weight_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    out_dtype: torch.dtype | None = None,
    max_columns_bytes: int = 256 * 2**20,
) -> torch.Tensor:
    """The gradient of a 3D convolution's weight (``groups=1``): the output gradient (``O x B*voxels``) times the
    input voxel each kernel tap saw at each output voxel (``B*voxels x taps*C``, channels innermost), one matrix
    product per block of channels.

    Args:
        out_dtype: dtype of the returned gradient (default: that of ``x``), e.g. fp32 for an fp32 weight trained
            under bf16 autocast: the product is written into it directly.
        max_columns_bytes: the gathered input windows are built for as many input channels at a time as fit.

    Returns:
        a tensor shaped like the weight, ``O x C x kD x kH x kW``.
    """
    batch, channels, *volume = x.shape
    out_channels, out_size = grad_out.shape[1], grad_out.shape[2:]
    # B, D, H, W, C, zero-padded: one copy, after which every gathered window row is a run of C contiguous values
    padded = x.new_zeros(batch, *(n + 2 * p for n, p in zip(volume, padding)), channels)
    padded[:, padding[0] : padding[0] + volume[0], padding[1] : padding[1] + volume[1],
           padding[2] : padding[2] + volume[2]] = x.permute(0, 2, 3, 4, 1)  # fmt: skip
    s_b, s_d, s_h, s_w, s_c = padded.stride()
    # B, oD, oH, oW, kD, kH, kW, C: the input voxel seen by each kernel tap at each output voxel (a view, no copy)
    windows = padded.as_strided(
        (batch, *out_size, *kernel_size, channels),
        (s_b, s_d * stride[0], s_h * stride[1], s_w * stride[2], s_d * dilation[0], s_h * dilation[1], s_w * dilation[2], s_c),
    )  # fmt: skip
    grad_rows = grad_out.transpose(0, 1).reshape(out_channels, -1)  # O x B*voxels
    taps, voxels = math.prod(kernel_size), grad_rows.shape[1]
    grad = torch.empty(out_channels, channels, *kernel_size, dtype=out_dtype or x.dtype, device=x.device)
    step = max(1, min(channels, max_columns_bytes // max(1, taps * voxels * x.element_size())))
    for c in range(0, channels, step):
        n = min(step, channels - c)
        part = grad_rows @ windows[..., c : c + n].reshape(voxels, taps * n)  # O x (taps * n)
        grad[:, c : c + n].copy_(part.view(out_channels, *kernel_size, n).permute(0, 4, 1, 2, 3))
    return grad


class _MatmulGradConv3dFunction(torch.autograd.Function):
    """``F.conv3d`` in ``dtype`` (forward and input gradient); weight gradient by :func:`conv3d_weight_grad`, returned
    in the weight's own dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, dtype):
        x_c, weight_c = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x_c, weight_c)
        ctx.geometry = (stride, padding, dilation)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return F.conv3d(x_c, weight_c, None if bias is None else bias.to(dtype), stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        x_dtype, weight_dtype, bias_dtype = ctx.dtypes
        grad_out = grad_out.to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, dilation, False, [0, 0, 0], 1, [True, False, False]
            )[0].to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = conv3d_weight_grad(x, grad_out, weight.shape[2:], stride, padding, dilation, weight_dtype)
        if bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3, 4), dtype=bias_dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


class MatmulGradConv3d(nn.Conv3d):
    """``nn.Conv3d`` with a faster weight gradient when training in bf16 on the CPU where oneDNN's is slow (see the
    module docs).

    Takes the arguments of ``nn.Conv3d``; its parameters and outputs are those of ``nn.Conv3d``.
    """

    def _uses_matmul_weight_grad(self, x: torch.Tensor) -> bool:
        if torch.jit.is_tracing() or x.device.type != "cpu" or not (torch.is_grad_enabled() and self.weight.requires_grad):
            return False  # an export trace records nn.Conv3d's graph
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return False
        if not uses_matmul_weight_grad(self.in_channels, x.shape[2:], max(self.dilation) > 1):
            return False
        return self._compute_dtype(x) == torch.bfloat16

    @staticmethod
    def _compute_dtype(x: torch.Tensor) -> torch.dtype:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._uses_matmul_weight_grad(x):
            return super().forward(x)
        dtype = self._compute_dtype(x)  # the cast autocast would make, done inside: the fp32 gradient comes out
        with torch.autocast("cpu", enabled=False):
            return _MatmulGradConv3dFunction.apply(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, dtype
            )
