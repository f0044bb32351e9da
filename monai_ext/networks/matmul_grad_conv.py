"""A 3D convolution whose weight gradient is one matrix product on the CPU where oneDNN's is slow.

oneDNN (torch 2.13) has AMX kernels for the forward pass and the input gradient of a 3D convolution, but its weight
gradient falls back to a generic im2col + GEMM path that does not use AMX when the convolution is dilated, and is slow
when the volume is only a few voxels wide (deep layers of a small patch). Both are common here: Med3D's ResNets dilate
``layer3``/``layer4`` by 2 and 4 (Chen et al. 2019), and at a 48^3 patch those layers see 6^3 voxels; an inflated
ResNet-34 sees 16x2x2 voxels in its last stage at a 16x64x64 patch. On this project's 2-core AMX CPU the weight
gradients of the two 512-channel dilated convolutions of a ResNet-10 took 40% of a bf16 training step, and bf16
trained barely faster than fp32.

:class:`MatmulGradConv3d` is an ``nn.Conv3d`` (same parameters, same state-dict keys, same outputs) that, when it
trains on the CPU in bf16 with at least :data:`MIN_CHANNELS` input channels and is dilated or sees a volume at most
:data:`MAX_NARROW_EXTENT` voxels wide along some axis, computes the weight gradient itself: the input windows are
gathered channel-first (one copy) and multiplied with the output gradient in one ``matmul``, which runs on AMX.
Forward and input gradient stay oneDNN's. Everywhere else (GPU, fp32, thin or wide layers, inference, frozen
weights) it is a plain ``nn.Conv3d``. ``benchmarks/train_speed.py`` measures the effect on every bundle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MatmulGradConv3d", "conv3d_weight_grad", "MIN_CHANNELS", "MAX_NARROW_EXTENT"]

#: input channels from which the matrix-product weight gradient is used. Measured on a 2-core AMX CPU in bf16, batch
#: 2, 3^3 kernels, against oneDNN's: dilated, 256-512 channels at 3x8x8 to 16^3 voxels 1.3-7x faster, 128 channels at
#: 24^3 1.6x slower; not dilated, 512 channels at 16x2x2 3.9x, 3^3 2.0x, 4^3 1.8x, 256 channels at 16x4x4 1.6x faster,
#: 256 channels at 6^3 and 8^3 1.1-1.2x slower
MIN_CHANNELS = 256

#: an undilated convolution uses the matrix-product weight gradient when its input is at most this many voxels wide
#: along some axis (see :data:`MIN_CHANNELS`)
MAX_NARROW_EXTENT = 4


def conv3d_weight_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    max_columns_bytes: int = 256 * 2**20,
) -> torch.Tensor:
    """The gradient of a 3D convolution's weight (``groups=1``): the output gradient (``O x B*voxels``) times the
    input voxel each kernel tap saw at each output voxel (``B*voxels x C*taps``), one matrix product.

    Args:
        max_columns_bytes: the gathered input windows are built for as many input channels at a time as fit.

    Returns:
        a tensor shaped like the weight, ``O x C x kD x kH x kW``, in the dtype of the inputs.
    """
    batch, channels = x.shape[:2]
    out_channels, out_size = grad_out.shape[1], grad_out.shape[2:]
    padded = F.pad(x, [p for pad in reversed(padding) for p in (pad, pad)])
    s_b, s_c, s_d, s_h, s_w = padded.stride()
    # C, kD, kH, kW, B, oD, oH, oW: the input voxel seen by each kernel tap at each output voxel (a view, no copy)
    windows = padded.as_strided(
        (batch, channels, *kernel_size, *out_size),
        (s_b, s_c, s_d * dilation[0], s_h * dilation[1], s_w * dilation[2], s_d * stride[0], s_h * stride[1], s_w * stride[2]),
    ).permute(1, 2, 3, 4, 0, 5, 6, 7)  # fmt: skip
    grad_rows = grad_out.transpose(0, 1).reshape(out_channels, -1)  # O x B*voxels
    taps, voxels = kernel_size[0] * kernel_size[1] * kernel_size[2], grad_rows.shape[1]
    step = max(1, min(channels, max_columns_bytes // max(1, taps * voxels * x.element_size())))
    parts = [
        grad_rows @ windows[c : c + step].reshape(-1, voxels).t()  # copy with W innermost, then O x (step*taps)
        for c in range(0, channels, step)
    ]
    grad = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return grad.reshape(out_channels, channels, *kernel_size)


class _MatmulGradConv3dFunction(torch.autograd.Function):
    """``F.conv3d`` forward and input gradient; weight gradient by :func:`conv3d_weight_grad`."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv3d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, stride, padding, dilation, False, [0, 0, 0], 1, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = conv3d_weight_grad(x, grad_out, weight.shape[2:], stride, padding, dilation)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None, None, None


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
        if self.in_channels < MIN_CHANNELS:
            return False
        if max(self.dilation) == 1 and min(x.shape[2:]) > MAX_NARROW_EXTENT:
            return False
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        return dtype == torch.bfloat16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._uses_matmul_weight_grad(x):
            return super().forward(x)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):  # cast as autocast would; the casts' backward returns fp32 gradients
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast("cpu", enabled=False):
            return _MatmulGradConv3dFunction.apply(x, weight, bias, self.stride, self.padding, self.dilation)
