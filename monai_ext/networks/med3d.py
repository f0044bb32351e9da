"""Med3D / MedicalNet 3D ResNet encoders.

The encoders of `Med3D: Transfer Learning for 3D Medical Image Analysis <https://arxiv.org/abs/1904.00625>`_
(Chen, Ma, Zheng 2019; reference code Tencent/MedicalNet, MIT licence): 3D ResNets with a 7^3 stride-2 stem and,
by default, dilated ``layer3``/``layer4`` (output stride 8). Attribute names follow the published checkpoints, so
``state_dict()`` keys equal the released ``resnet_{depth}.pth`` keys once their ``module.`` prefix is stripped
(see :mod:`monai_ext.weights.medicalnet`).

Two switches cover the other layouts this project needs:

- ``dilated=False``: the standard output-stride-32 ResNet (stride 2 in ``layer2..4``, no dilation), the layout of
  MONAI's ``monai.networks.nets.resnet*`` and of U-Net style decoders.
- ``stride_depth=False``: every stride becomes ``(1, 2, 2)`` (stem conv, max-pool, stages), so the first spatial axis
  (depth) is never downsampled, as in the Variable Dimension Transform pre-training (depth-3 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

from .matmul_grad_conv import MatmulGradConv3d

__all__ = [
    "MED3D_ARCHITECTURES",
    "Med3DBasicBlock",
    "Med3DBottleneck",
    "ZeroPadShortcut",
    "Med3DResNet",
    "med3d_resnet",
    "med3d_resnet10",
    "med3d_resnet18",
    "med3d_resnet34",
    "med3d_resnet50",
    "med3d_resnet101",
    "med3d_resnet152",
    "med3d_resnet200",
]

#: depth -> (block type, blocks per stage, shortcut type of the published checkpoint).
MED3D_ARCHITECTURES: dict[int, tuple[str, tuple[int, int, int, int], str]] = {
    10: ("basic", (1, 1, 1, 1), "B"),
    18: ("basic", (2, 2, 2, 2), "A"),
    34: ("basic", (3, 4, 6, 3), "A"),
    50: ("bottleneck", (3, 4, 6, 3), "B"),
    101: ("bottleneck", (3, 4, 23, 3), "B"),
    152: ("bottleneck", (3, 8, 36, 3), "B"),
    200: ("bottleneck", (3, 24, 36, 3), "B"),
}

_STAGE_CHANNELS = (64, 128, 256, 512)
_STEM_CHANNELS = 64

StrideType = int | tuple[int, ...]


def _conv_type(spatial_dims: int) -> type[nn.Module]:
    """The 3x3x3 convolution of a block: :class:`MatmulGradConv3d` (an ``nn.Conv3d`` that trains faster in bf16 on the
    CPU where oneDNN's weight gradient is slow: dilated or narrow stages) in 3D, MONAI's factory convolution in 2D."""
    return MatmulGradConv3d if spatial_dims == 3 else Conv[Conv.CONV, spatial_dims]


class ZeroPadShortcut(nn.Module):
    """Parameter-free residual shortcut ("type A"): subsample by ``stride`` and zero-pad the new channels.

    Subsampling is an average pooling with kernel 1 (i.e. taking every ``stride``-th voxel), as in MedicalNet.
    Unlike MedicalNet and MONAI's ``ResNet``, which concatenate ``out.data`` and so cut the gradient through the
    shortcut, this implementation keeps the shortcut in the autograd graph: the identity path carries gradients as
    in the original ResNet. The module has no parameters or buffers, so checkpoints are unaffected and the weights
    of the published type-A networks (ResNet-18/34) load unchanged; only training dynamics differ, deliberately.

    Args:
        out_channels: channels after padding (at least the input channel count).
        stride: subsampling factor, an int or one value per spatial axis.
        spatial_dims: number of spatial dimensions.
    """

    def __init__(self, out_channels: int, stride: StrideType = 1, spatial_dims: int = 3) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride
        self.pool = Pool[Pool.AVG, spatial_dims](kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(x)
        extra = self.out_channels - out.shape[1]
        if extra < 0:
            raise ValueError(f"ZeroPadShortcut cannot shrink {out.shape[1]} channels to {self.out_channels}.")
        # F.pad lists (before, after) pairs from the last axis backwards: spatial axes untouched, channels padded.
        return F.pad(out, [0, 0] * (out.dim() - 2) + [0, extra])


class Med3DBasicBlock(nn.Module):
    """Residual block with two 3x3x3 convolutions, both dilated by the stage's dilation (MedicalNet ``BasicBlock``).

    Args:
        in_channels: input channels.
        channels: output channels of both convolutions.
        stride: stride of the first convolution.
        dilation: dilation (and padding) of both convolutions.
        downsample: shortcut module applied to the input when shapes change, or None for identity.
        spatial_dims: number of spatial dimensions.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: StrideType = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        conv_type = _conv_type(spatial_dims)
        norm_type = Norm[Norm.BATCH, spatial_dims]
        self.conv1 = conv_type(
            in_channels, channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = norm_type(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv_type(channels, channels, kernel_size=3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_type(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Med3DBottleneck(nn.Module):
    """Bottleneck block 1x1x1 -> 3x3x3 -> 1x1x1 (x4 channels); only the 3x3x3 conv is strided and dilated.

    Args:
        in_channels: input channels.
        channels: bottleneck width; the block outputs ``4 * channels``.
        stride: stride of the 3x3x3 convolution.
        dilation: dilation (and padding) of the 3x3x3 convolution.
        downsample: shortcut module applied to the input when shapes change, or None for identity.
        spatial_dims: number of spatial dimensions.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: StrideType = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        conv_type = Conv[Conv.CONV, spatial_dims]
        norm_type = Norm[Norm.BATCH, spatial_dims]
        self.conv1 = conv_type(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = norm_type(channels)
        self.conv2 = _conv_type(spatial_dims)(
            channels, channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = norm_type(channels)
        self.conv3 = conv_type(channels, channels * self.expansion, kernel_size=1, bias=False)
        self.bn3 = norm_type(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class Med3DResNet(nn.Module):
    """Med3D / MedicalNet 3D ResNet encoder (dilated, output stride 8 by default).

    Chen, Ma, Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis", arXiv:1904.00625, 2019.

    Stem: ``conv1`` (7^3, stride 2, padding 3, no bias) -> ``bn1`` -> ReLU -> ``maxpool`` (3, stride 2, padding 1);
    then ``layer1..layer4`` with 64, 128, 256, 512 base channels (x4 for bottlenecks), strides 1, 2, 1, 1 and
    dilations 1, 1, 2, 4. Shortcut "A" is parameter-free (:class:`ZeroPadShortcut`), shortcut "B" is
    ``downsample.0`` (1x1x1 conv, no bias) + ``downsample.1`` (BatchNorm), as in the published checkpoints.
    Weights are initialised as in MedicalNet (Kaiming normal, fan-out, for convolutions; BatchNorm 1 / 0).

    Args:
        depth: 10, 18, 34, 50, 101, 152 or 200 (see ``MED3D_ARCHITECTURES``).
        in_channels: input channels (MedicalNet: 1).
        spatial_dims: number of spatial dimensions (3; 2 and 1 build the same network with 2D/1D layers).
        shortcut_type: "A" or "B"; None picks the published one for ``depth`` (A for 18/34, B otherwise).
        dilated: True for MedicalNet's layout (output stride 8); False for the standard output-stride-32 layout
            (stride 2 in ``layer2..4``, no dilation).
        stride_depth: False makes every stride ``(1, 2, 2)`` so the first spatial axis (depth) keeps its size;
            only for ``spatial_dims=3``.

    Attributes:
        out_channels: channels of the last feature map (512 for basic blocks, 2048 for bottlenecks).
        feature_channels: channels of the maps returned by :meth:`forward_features`.
        output_stride: total downsampling factor of the last feature map along each spatial axis.

    Raises:
        ValueError: unknown depth or shortcut type, or ``stride_depth=False`` with ``spatial_dims != 3``.
    """

    def __init__(
        self,
        depth: int = 10,
        in_channels: int = 1,
        spatial_dims: int = 3,
        shortcut_type: str | None = None,
        dilated: bool = True,
        stride_depth: bool = True,
    ) -> None:
        super().__init__()
        if depth not in MED3D_ARCHITECTURES:
            raise ValueError(f"Med3DResNet depth must be one of {sorted(MED3D_ARCHITECTURES)}, got {depth}.")
        block_type, layers, published_shortcut = MED3D_ARCHITECTURES[depth]
        shortcut_type = (shortcut_type or published_shortcut).upper()
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}.")
        if not stride_depth and spatial_dims != 3:
            raise ValueError("stride_depth=False keeps the depth axis of 3D inputs; use it with spatial_dims=3.")

        self.depth = depth
        self.block_type = block_type
        self.layers = layers
        self.shortcut_type = shortcut_type
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.dilated = dilated
        self.stride_depth = stride_depth

        block: type[Med3DBasicBlock] | type[Med3DBottleneck] = (
            Med3DBasicBlock if block_type == "basic" else Med3DBottleneck
        )
        stage_strides = (1, 2, 1, 1) if dilated else (1, 2, 2, 2)
        stage_dilations = (1, 1, 2, 4) if dilated else (1, 1, 1, 1)

        conv_type = Conv[Conv.CONV, spatial_dims]
        self.conv1 = conv_type(
            in_channels, _STEM_CHANNELS, kernel_size=7, stride=self._stride(2), padding=3, bias=False
        )
        self.bn1 = Norm[Norm.BATCH, spatial_dims](_STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=self._stride(2), padding=1)

        self._next_in_channels = _STEM_CHANNELS
        self.layer1 = self._make_stage(block, _STAGE_CHANNELS[0], layers[0], stage_strides[0], stage_dilations[0])
        self.layer2 = self._make_stage(block, _STAGE_CHANNELS[1], layers[1], stage_strides[1], stage_dilations[1])
        self.layer3 = self._make_stage(block, _STAGE_CHANNELS[2], layers[2], stage_strides[2], stage_dilations[2])
        self.layer4 = self._make_stage(block, _STAGE_CHANNELS[3], layers[3], stage_strides[3], stage_dilations[3])
        del self._next_in_channels

        self.feature_channels: tuple[int, ...] = (_STEM_CHANNELS,) + tuple(
            c * block.expansion for c in _STAGE_CHANNELS
        )
        self.out_channels: int = self.feature_channels[-1]
        in_plane_stride = 8 if dilated else 32
        self.output_stride: tuple[int, ...] = tuple(
            1 if (axis == 0 and not stride_depth) else in_plane_stride for axis in range(spatial_dims)
        )
        self._init_weights()

    def _stride(self, stride: int) -> StrideType:
        """A stride of ``stride`` along every axis, or ``(1, stride, stride)`` when depth is not downsampled."""
        if stride == 1 or self.stride_depth:
            return stride
        return (1,) + (stride,) * (self.spatial_dims - 1)

    def _make_stage(
        self,
        block: type[Med3DBasicBlock] | type[Med3DBottleneck],
        channels: int,
        n_blocks: int,
        stride: int,
        dilation: int,
    ) -> nn.Sequential:
        out_channels = channels * block.expansion
        stride_value = self._stride(stride)
        downsample: nn.Module | None = None
        if stride != 1 or self._next_in_channels != out_channels:
            if self.shortcut_type == "A":
                downsample = ZeroPadShortcut(out_channels, stride=stride_value, spatial_dims=self.spatial_dims)
            else:
                downsample = nn.Sequential(
                    Conv[Conv.CONV, self.spatial_dims](
                        self._next_in_channels, out_channels, kernel_size=1, stride=stride_value, bias=False
                    ),
                    Norm[Norm.BATCH, self.spatial_dims](out_channels),
                )
        blocks = [
            block(
                self._next_in_channels,
                channels,
                stride=stride_value,
                dilation=dilation,
                downsample=downsample,
                spatial_dims=self.spatial_dims,
            )
        ]
        self._next_in_channels = out_channels
        for _ in range(1, n_blocks):
            blocks.append(block(out_channels, channels, dilation=dilation, spatial_dims=self.spatial_dims))
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps for decoders.

        Args:
            x: input of shape ``(B, in_channels, *spatial)``.

        Returns:
            five maps: the stem output (after ReLU, before max-pooling) and the outputs of ``layer1..layer4``,
            with ``feature_channels`` channels.
        """
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last feature map, ``(B, out_channels, *spatial / output_stride)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, shortcut_type={self.shortcut_type!r}, dilated={self.dilated}, "
            f"stride_depth={self.stride_depth}"
        )


def med3d_resnet(depth: int, **kwargs) -> Med3DResNet:
    """Build a :class:`Med3DResNet` of the given depth; ``kwargs`` go to its constructor."""
    return Med3DResNet(depth=depth, **kwargs)


def med3d_resnet10(**kwargs) -> Med3DResNet:
    """MedicalNet 3D ResNet-10 (basic blocks [1, 1, 1, 1], shortcut B, 14.36M parameters)."""
    return Med3DResNet(depth=10, **kwargs)


def med3d_resnet18(**kwargs) -> Med3DResNet:
    """MedicalNet 3D ResNet-18 (basic blocks [2, 2, 2, 2], shortcut A, 32.99M parameters)."""
    return Med3DResNet(depth=18, **kwargs)


def med3d_resnet34(**kwargs) -> Med3DResNet:
    """MedicalNet 3D ResNet-34 (basic blocks [3, 4, 6, 3], shortcut A, 63.30M parameters)."""
    return Med3DResNet(depth=34, **kwargs)


def med3d_resnet50(**kwargs) -> Med3DResNet:
    """MedicalNet 3D ResNet-50 (bottlenecks [3, 4, 6, 3], shortcut B, 46.16M parameters)."""
    return Med3DResNet(depth=50, **kwargs)


def med3d_resnet101(**kwargs) -> Med3DResNet:
    """MedicalNet 3D ResNet-101 (bottlenecks [3, 4, 23, 3], shortcut B, 85.20M parameters)."""
    return Med3DResNet(depth=101, **kwargs)


def med3d_resnet152(**kwargs) -> Med3DResNet:
    """MedicalNet 3D ResNet-152 (bottlenecks [3, 8, 36, 3], shortcut B, 117.36M parameters)."""
    return Med3DResNet(depth=152, **kwargs)


def med3d_resnet200(**kwargs) -> Med3DResNet:
    """MedicalNet 3D ResNet-200 (bottlenecks [3, 24, 36, 3], shortcut B, 126.56M parameters)."""
    return Med3DResNet(depth=200, **kwargs)
