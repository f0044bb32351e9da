"""Encoders that carry 2D ImageNet weights in 3D, and a U-Net whose treatment of the depth axis is configurable.

The encoders reproduce torchvision's ResNet and timm's EfficientNet layouts with exactly their state-dict key names, so
a torchvision/timm checkpoint loads without renaming; built with ``spatial_dims=3`` their kernels get a depth axis and
the 2D weights are inflated (see :mod:`monai_ext.weights.inflate`). Importing this module registers them as
:class:`monai.networks.nets.FlexibleUNet` backbones (``"inflated-resnet18"`` ... ``"inflated-resnet152"``,
``"inflated-efficientnet-b0"`` ... ``"inflated-efficientnet-b4"``)::

    import monai_ext.networks.inflated  # registers the backbones
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=1, out_channels=3, backbone="inflated-resnet50", pretrained=True, spatial_dims=3)
    print(net.encoder.weights_report.summary())  # proof that the ImageNet weights arrived

Slice-wise equivalence. A 3D twin inflated with ``"center"`` (or ``"2.5d"`` with depth-1 kernels) equals the 2D network
applied slice by slice only if nothing else acts along depth. What breaks it: strides along depth (a strided stem or
stage skips slices), pooling windows along depth (max-pool), the squeeze of squeeze-and-excitation averaged over the
whole volume, and decoder upsampling along depth. ``stride_depth=False`` removes all four (strides and windows become
``(1, k, k)``, SE squeezes each slice, :class:`InflatedFlexUNet` upsamples by ``(1, 2, 2)``); ``depth_kernels=False``
makes every kernel ``(1, k, k)`` (a 2.5D network).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import torch
from monai.networks.blocks.encoder import BaseEncoder
from monai.networks.layers.factories import Conv, Norm, Pool
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE, SegmentationHead, UNetDecoder
from torch import nn

from monai_ext.networks.matmul_grad_conv import MatmulGradConv3d
from monai_ext.weights.imagenet2d import DEFAULT_IMAGENET_2D_WEIGHTS, load_2d_weights_into_3d
from monai_ext.weights.report import LoadReport

__all__ = [
    "DepthPolicy",
    "InflatableBasicBlock",
    "InflatableBottleneck",
    "InflatableSqueezeExcite",
    "InflatableDepthwiseSeparable",
    "InflatableInvertedResidual",
    "InflatedResNetEncoder",
    "InflatedEfficientNetEncoder",
    "InflatedFlexUNet",
    "RESNET_LAYOUTS",
    "EFFICIENTNET_SCALING",
    "INFLATED_BACKBONES",
    "round_efficientnet_channels",
]

RESNET_LAYOUTS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
"""torchvision ResNet depths: block type and number of blocks of ``layer1..4``."""

EFFICIENTNET_SCALING: dict[str, tuple[float, float]] = {
    "efficientnet-b0": (1.0, 1.0),
    "efficientnet-b1": (1.0, 1.1),
    "efficientnet-b2": (1.1, 1.2),
    "efficientnet-b3": (1.2, 1.4),
    "efficientnet-b4": (1.4, 1.8),
}
"""EfficientNet compound scaling: (width multiplier, depth multiplier) of B0..B4."""

# EfficientNet-B0 stages: (block, repeats, kernel, stride, expansion, output channels). "ds": depthwise separable,
# "ir": inverted residual; every block has squeeze-and-excitation with ratio 1/4 of the block's input channels.
_EFFICIENTNET_B0_STAGES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
# stages whose outputs are the encoder features (output strides 2, 4, 8, 16, 32)
_EFFICIENTNET_FEATURE_STAGES = (0, 1, 2, 4, 6)

_BACKBONE_PREFIX = "inflated-"


@dataclass(frozen=True)
class DepthPolicy:
    """How a network built for 2D weights treats the depth axis (dim 2 of a 3D input ``B x C x D x H x W``).

    Args:
        spatial_dims: 2 or 3. With 2 the other options have no effect.
        stride_depth: stride and pool along depth as along height and width. ``False`` gives strides ``(1, s, s)``,
            pooling windows ``(1, k, k)`` and a per-slice squeeze in squeeze-and-excitation: the depth resolution is
            kept and nothing but the convolution kernels mixes slices.
        depth_kernels: kernels ``(k, k, k)``; ``False`` gives ``(1, k, k)`` (a 2.5D network).

    Raises:
        ValueError: ``spatial_dims`` is not 2 or 3.
    """

    spatial_dims: int = 3
    stride_depth: bool = True
    depth_kernels: bool = True

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}.")

    def kernel(self, k: int) -> int | tuple[int, int, int]:
        """Kernel size for an in-plane size ``k``."""
        return k if self.spatial_dims == 2 else ((k if self.depth_kernels else 1), k, k)

    def stride(self, s: int) -> int | tuple[int, int, int]:
        """Stride for an in-plane stride ``s``."""
        return s if self.spatial_dims == 2 else ((s if self.stride_depth else 1), s, s)

    def conv(
        self, in_channels: int, out_channels: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False
    ) -> nn.Module:
        """A convolution with symmetric padding ``k // 2`` (torchvision's and timm's padding for these networks)."""
        kernel = self.kernel(k)
        padding = kernel // 2 if isinstance(kernel, int) else tuple(x // 2 for x in kernel)
        # in 3D an nn.Conv3d whose bf16 weight gradient is faster on the CPU in the narrow deep stages
        conv_type = MatmulGradConv3d if self.spatial_dims == 3 else Conv[Conv.CONV, 2]
        return conv_type(
            in_channels, out_channels, kernel, stride=self.stride(stride), padding=padding, groups=groups, bias=bias
        )

    def norm(self, channels: int) -> nn.Module:
        """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1), as in torchvision and timm."""
        return Norm[Norm.BATCH, self.spatial_dims](channels)

    def max_pool(self, k: int, stride: int) -> nn.Module:
        """Max-pooling with padding ``k // 2``; its window along depth is 1 when ``stride_depth`` is False."""
        if self.spatial_dims == 2:
            return Pool[Pool.MAX, 2](k, stride=stride, padding=k // 2)
        kd = k if self.stride_depth else 1
        return Pool[Pool.MAX, 3]((kd, k, k), stride=self.stride(stride), padding=(kd // 2, k // 2, k // 2))

    def squeeze_dims(self) -> tuple[int, ...]:
        """The dimensions squeeze-and-excitation averages over (the depth axis only if ``stride_depth``)."""
        first = 3 if self.spatial_dims == 3 and not self.stride_depth else 2
        return tuple(range(first, 2 + self.spatial_dims))


def _init_conv_and_norm(module: nn.Module) -> None:
    """He initialisation (fan out) for convolutions, identity for BatchNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _shortcut(in_planes: int, out_planes: int, stride: int, policy: DepthPolicy) -> nn.Sequential | None:
    """torchvision's projection shortcut (1x1 conv without bias + BatchNorm), used on a stride or width change."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(policy.conv(in_planes, out_planes, 1, stride), policy.norm(out_planes))


class InflatableBasicBlock(nn.Module):
    """ResNet basic block with torchvision's key names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0/1``).

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. The shortcut is a 1x1 convolution without
    bias plus BatchNorm on a stride or width change (torchvision's layout, MedicalNet's shortcut B), never the
    parameter-free shortcut A of MONAI's resnet18/34.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: in-plane stride of ``conv1`` and of the shortcut.
        policy: treatment of the depth axis.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, policy: DepthPolicy) -> None:
        super().__init__()
        self.conv1 = policy.conv(in_planes, planes, 3, stride)
        self.bn1 = policy.norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = policy.conv(planes, planes, 3)
        self.bn2 = policy.norm(planes)
        self.downsample = _shortcut(in_planes, planes, stride, policy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class InflatableBottleneck(nn.Module):
    """ResNet bottleneck block (stride on the 3x3 convolution, "ResNet v1.5") with torchvision's key names.

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.

    Args:
        in_planes: input channels.
        planes: bottleneck width; the output has ``4 * planes`` channels.
        stride: in-plane stride of ``conv2`` and of the shortcut.
        policy: treatment of the depth axis.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, policy: DepthPolicy) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = policy.conv(in_planes, planes, 1)
        self.bn1 = policy.norm(planes)
        self.conv2 = policy.conv(planes, planes, 3, stride)
        self.bn2 = policy.norm(planes)
        self.conv3 = policy.conv(planes, out_planes, 1)
        self.bn3 = policy.norm(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, out_planes, stride, policy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _strip_backbone_prefix(model_name: str) -> str:
    return model_name[len(_BACKBONE_PREFIX) :] if model_name.startswith(_BACKBONE_PREFIX) else model_name


class _InflatedEncoder(nn.Module, BaseEncoder):
    """Shared pre-trained weight handling of the inflated encoders.

    Subclasses set ``first_conv`` (target key of the stem convolution), ``pretrained_head_prefixes`` (keys of the 2D
    classifier that the encoder does not have) and, in ``__init__``, ``imagenet_weights`` (name of the default entry
    of :data:`monai_ext.weights.imagenet2d.IMAGENET_2D_WEIGHTS`).
    """

    first_conv: str = ""
    pretrained_head_prefixes: tuple[str, ...] = ()
    imagenet_weights: str = ""
    weights_report: LoadReport | None = None

    def load_imagenet_weights(
        self,
        weights: str | PathLike | dict[str, torch.Tensor] | None = None,
        mode: str = "average",
        in_channels_rule: str = "sum_rgb",
        download: bool = False,
    ) -> LoadReport:
        """Load 2D ImageNet weights, inflated to this encoder's dimension, and keep the report in ``weights_report``.

        Args:
            weights: a checkpoint path, a 2D state dict, or ``None`` for the default ImageNet weights of this
                architecture (found as described in :func:`monai_ext.weights.imagenet2d.find_2d_weights`).
            mode: kernel rule, one of :data:`monai_ext.weights.inflate.INFLATION_MODES`.
            in_channels_rule: rule for the stem, one of :data:`monai_ext.weights.inflate.INPUT_CHANNEL_RULES`.
            download: fetch the default weights from their URL when they are not found locally.

        Returns:
            The :class:`LoadReport` (every encoder entry loaded or inflated).

        Raises:
            FileNotFoundError: the default weights are not available locally and ``download`` is False.
            WeightTransferError: the weights do not fit this encoder.
        """
        self.weights_report = load_2d_weights_into_3d(
            self, weights, mode=mode, in_channels_rule=in_channels_rule, download=download
        )
        return self.weights_report

    def _load_if_pretrained(self, pretrained: bool | str | PathLike, inflation: str) -> None:
        if pretrained is False or pretrained is None:
            return
        self.load_imagenet_weights(None if pretrained is True else pretrained, mode=inflation)


class InflatedResNetEncoder(_InflatedEncoder):
    """ResNet encoder (torchvision layout and key names) for 2D or 3D inputs, made to carry 2D ImageNet weights.

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; 2D->3D inflation after Carreira & Zisserman,
    "Quo Vadis, Action Recognition?", CVPR 2017, and Messaoudi et al., "Cross-dimensional transfer learning in medical
    image segmentation with deep learning", MedIA 2023.

    Stem ``conv1`` 7x7 stride 2 + ``bn1`` + ReLU + 3x3 max-pool stride 2, then ``layer1..4`` with strides 1, 2, 2, 2
    (output stride 32). The keys are torchvision's (``conv1.weight``, ``bn1.*``, ``layerX.Y.conv1/bn1/...``,
    ``layerX.0.downsample.0/1.*``); the classifier ``fc`` is not built. ``forward`` returns the five feature maps
    (stem, layer1..4) that :class:`monai.networks.nets.FlexibleUNet` expects.

    Args:
        model_name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"resnet152"`` (an
            ``"inflated-"`` prefix is accepted).
        pretrained: ``True`` for the default torchvision ImageNet weights, a checkpoint path, or ``False``.
        spatial_dims: 2 (the weights copy as they are) or 3 (they are inflated).
        in_channels: input channels; the stem of the pre-trained weights is adapted (sum of RGB kernels for 1).
        stride_depth: see :class:`DepthPolicy`.
        depth_kernels: see :class:`DepthPolicy`.
        inflation: kernel rule used when ``pretrained``, one of :data:`monai_ext.weights.inflate.INFLATION_MODES`.

    Raises:
        ValueError: unknown ``model_name`` or ``spatial_dims``.
        FileNotFoundError: ``pretrained=True`` and the weights are not available locally (the message names the URL
            and where to put the file).
        WeightTransferError: the weights do not fit.
    """

    first_conv = "conv1"
    pretrained_head_prefixes = ("fc.",)

    def __init__(
        self,
        model_name: str = "resnet50",
        pretrained: bool | str | PathLike = False,
        spatial_dims: int = 3,
        in_channels: int = 3,
        stride_depth: bool = True,
        depth_kernels: bool = True,
        inflation: str = "average",
    ) -> None:
        super().__init__()
        architecture = _strip_backbone_prefix(model_name)
        if architecture not in RESNET_LAYOUTS:
            raise ValueError(f"unknown ResNet {model_name!r}; choose one of {list(RESNET_LAYOUTS)}.")
        self.architecture = architecture
        self.imagenet_weights = DEFAULT_IMAGENET_2D_WEIGHTS[architecture]
        policy = DepthPolicy(spatial_dims, stride_depth, depth_kernels)
        block_kind, repeats = RESNET_LAYOUTS[architecture]
        block: type[InflatableBasicBlock | InflatableBottleneck] = (
            InflatableBasicBlock if block_kind == "basic" else InflatableBottleneck
        )

        self.conv1 = policy.conv(in_channels, 64, 7, stride=2)
        self.bn1 = policy.norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = policy.max_pool(3, stride=2)
        in_planes = 64
        for index, (planes, n_blocks, stride) in enumerate(
            zip((64, 128, 256, 512), repeats, (1, 2, 2, 2), strict=True)
        ):
            blocks = []
            for i in range(n_blocks):
                blocks.append(block(in_planes, planes, stride if i == 0 else 1, policy))
                in_planes = planes * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        _init_conv_and_norm(self)
        self._load_if_pretrained(pretrained, inflation)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the stem output (stride 2) and the outputs of ``layer1..4`` (strides 4, 8, 16, 32)."""
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Constructor arguments of each registered backbone."""
        return [
            {"model_name": name, "pretrained": True, "spatial_dims": 3, "in_channels": 3} for name in RESNET_LAYOUTS
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the five feature maps of each registered backbone."""
        return [
            (64, 64, 128, 256, 512) if kind == "basic" else (64, 256, 512, 1024, 2048)
            for kind, _ in RESNET_LAYOUTS.values()
        ]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Every backbone returns five feature maps."""
        return [5] * len(RESNET_LAYOUTS)

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """Registered names: ``"inflated-resnet18"`` ... ``"inflated-resnet152"``."""
        return [f"{_BACKBONE_PREFIX}{name}" for name in RESNET_LAYOUTS]


def round_efficientnet_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round it to a multiple of ``divisor`` (EfficientNet's rule).

    The result is the nearest multiple of ``divisor`` (at least ``divisor``), raised by one ``divisor`` when rounding
    down would lose more than 10% of the scaled value.

    Args:
        channels: the B0 channel count.
        width: the width multiplier.
        divisor: channel granularity.

    Returns:
        The scaled channel count.
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class InflatableSqueezeExcite(nn.Module):
    """Squeeze-and-excitation with timm's EfficientNet key names (``conv_reduce``, ``conv_expand``).

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018. The squeeze averages over the dimensions given by the
    policy (each slice separately when ``stride_depth`` is False), then 1x1 convolutions with SiLU and a sigmoid gate.

    Args:
        channels: channels of the gated tensor.
        reduced_channels: channels of the bottleneck.
        policy: treatment of the depth axis.
    """

    def __init__(self, channels: int, reduced_channels: int, policy: DepthPolicy) -> None:
        super().__init__()
        self.squeeze_dims = policy.squeeze_dims()
        self.conv_reduce = policy.conv(channels, reduced_channels, 1, bias=True)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = policy.conv(reduced_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(self.squeeze_dims, keepdim=True)
        scale = self.conv_expand(self.act1(self.conv_reduce(scale)))
        return x * torch.sigmoid(scale)


class InflatableDepthwiseSeparable(nn.Module):
    """EfficientNet's first-stage block with timm's key names: ``conv_dw``, ``bn1``, ``se.*``, ``conv_pw``, ``bn2``.

    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019.

    Args:
        in_channels: input channels.
        out_channels: output channels (residual connection when equal to ``in_channels`` and ``stride`` is 1).
        kernel_size: in-plane kernel size of the depthwise convolution.
        stride: in-plane stride of the depthwise convolution.
        policy: treatment of the depth axis.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, policy: DepthPolicy):
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_dw = policy.conv(in_channels, in_channels, kernel_size, stride, groups=in_channels)
        self.bn1 = policy.norm(in_channels)
        self.act = nn.SiLU(inplace=True)
        self.se = InflatableSqueezeExcite(in_channels, max(1, in_channels // 4), policy)
        self.conv_pw = policy.conv(in_channels, out_channels, 1)
        self.bn2 = policy.norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.act(self.bn1(self.conv_dw(x))))
        out = self.bn2(self.conv_pw(out))
        return out + x if self.has_skip else out


class InflatableInvertedResidual(nn.Module):
    """EfficientNet's MBConv block with timm's key names: ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se.*``,
    ``conv_pwl``, ``bn3``.

    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018; Tan & Le, EfficientNet,
    ICML 2019.

    Args:
        in_channels: input channels.
        out_channels: output channels (residual connection when equal to ``in_channels`` and ``stride`` is 1).
        kernel_size: in-plane kernel size of the depthwise convolution.
        stride: in-plane stride of the depthwise convolution.
        expansion: width of the expanded representation relative to ``in_channels``.
        policy: treatment of the depth axis.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int, policy: DepthPolicy
    ) -> None:
        super().__init__()
        mid_channels = in_channels * expansion
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_pw = policy.conv(in_channels, mid_channels, 1)
        self.bn1 = policy.norm(mid_channels)
        self.conv_dw = policy.conv(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels)
        self.bn2 = policy.norm(mid_channels)
        self.act = nn.SiLU(inplace=True)
        self.se = InflatableSqueezeExcite(mid_channels, max(1, in_channels // 4), policy)
        self.conv_pwl = policy.conv(mid_channels, out_channels, 1)
        self.bn3 = policy.norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv_pw(x)))
        out = self.se(self.act(self.bn2(self.conv_dw(out))))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


class InflatedEfficientNetEncoder(_InflatedEncoder):
    """EfficientNet-B0..B4 encoder (timm's ``efficientnet_b*`` layout and key names), 2D or 3D.

    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019; 2D->3D transfer
    after Messaoudi et al., MedIA 2023 (their code used EfficientNet-B0/B4).

    ``conv_stem`` (3x3, stride 2) + ``bn1`` + SiLU, then seven stages ``blocks.0..6`` (B0 repeats 1, 2, 2, 3, 3, 4, 1,
    scaled by the depth multiplier and rounded up; channels scaled by the width multiplier), symmetric padding and
    BatchNorm eps 1e-5 as timm's (non ``tf_``) models. The head ``conv_head``/``bn2`` and the ``classifier`` are not
    built. ``forward`` returns the outputs of stages 0, 1, 2, 4 and 6 (strides 2, 4, 8, 16, 32), the layout of MONAI's
    ``EfficientNetEncoder``.

    Args:
        model_name: ``"efficientnet-b0"`` ... ``"efficientnet-b4"`` (an ``"inflated-"`` prefix is accepted).
        pretrained: ``True`` for the default timm ImageNet weights, a checkpoint path, or ``False``.
        spatial_dims: 2 (the weights copy as they are) or 3 (they are inflated).
        in_channels: input channels; the stem of the pre-trained weights is adapted (sum of RGB kernels for 1).
        stride_depth: see :class:`DepthPolicy` (also decides whether SE squeezes over depth).
        depth_kernels: see :class:`DepthPolicy`.
        inflation: kernel rule used when ``pretrained``, one of :data:`monai_ext.weights.inflate.INFLATION_MODES`.

    Raises:
        ValueError: unknown ``model_name`` or ``spatial_dims``.
        FileNotFoundError: ``pretrained=True`` and the weights are not available locally.
        WeightTransferError: the weights do not fit.
    """

    first_conv = "conv_stem"
    pretrained_head_prefixes = ("conv_head.", "bn2.", "classifier.")

    def __init__(
        self,
        model_name: str = "efficientnet-b0",
        pretrained: bool | str | PathLike = False,
        spatial_dims: int = 3,
        in_channels: int = 3,
        stride_depth: bool = True,
        depth_kernels: bool = True,
        inflation: str = "average",
    ) -> None:
        super().__init__()
        architecture = _strip_backbone_prefix(model_name)
        if architecture not in EFFICIENTNET_SCALING:
            raise ValueError(f"unknown EfficientNet {model_name!r}; choose one of {list(EFFICIENTNET_SCALING)}.")
        self.architecture = architecture
        self.imagenet_weights = DEFAULT_IMAGENET_2D_WEIGHTS[architecture]
        width, depth = EFFICIENTNET_SCALING[architecture]
        policy = DepthPolicy(spatial_dims, stride_depth, depth_kernels)

        stem_channels = round_efficientnet_channels(32, width)
        self.conv_stem = policy.conv(in_channels, stem_channels, 3, stride=2)
        self.bn1 = policy.norm(stem_channels)
        self.act = nn.SiLU(inplace=True)
        stages = []
        channels = stem_channels
        for kind, repeats, kernel_size, stride, expansion, out_channels in _EFFICIENTNET_B0_STAGES:
            out_channels = round_efficientnet_channels(out_channels, width)
            blocks: list[nn.Module] = []
            for i in range(math.ceil(repeats * depth)):
                block_stride = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(
                        InflatableDepthwiseSeparable(channels, out_channels, kernel_size, block_stride, policy)
                    )
                else:
                    blocks.append(
                        InflatableInvertedResidual(channels, out_channels, kernel_size, block_stride, expansion, policy)
                    )
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        _init_conv_and_norm(self)
        self._load_if_pretrained(pretrained, inflation)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the outputs of stages 0, 1, 2, 4 and 6 (strides 2, 4, 8, 16, 32)."""
        x = self.act(self.bn1(self.conv_stem(x)))
        features = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in _EFFICIENTNET_FEATURE_STAGES:
                features.append(x)
        return features

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Constructor arguments of each registered backbone."""
        return [
            {"model_name": name, "pretrained": True, "spatial_dims": 3, "in_channels": 3}
            for name in EFFICIENTNET_SCALING
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the five feature maps of each registered backbone."""
        return [
            tuple(
                round_efficientnet_channels(_EFFICIENTNET_B0_STAGES[i][5], width) for i in _EFFICIENTNET_FEATURE_STAGES
            )
            for width, _ in EFFICIENTNET_SCALING.values()
        ]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Every backbone returns five feature maps."""
        return [5] * len(EFFICIENTNET_SCALING)

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """Registered names: ``"inflated-efficientnet-b0"`` ... ``"inflated-efficientnet-b4"``."""
        return [f"{_BACKBONE_PREFIX}{name}" for name in EFFICIENTNET_SCALING]


def _inflated_backbones() -> dict[str, tuple[type[_InflatedEncoder], dict[str, Any], tuple[int, ...]]]:
    table = {}
    for encoder_type in (InflatedResNetEncoder, InflatedEfficientNetEncoder):
        for name, params, channels in zip(
            encoder_type.get_encoder_names(),
            encoder_type.get_encoder_parameters(),
            encoder_type.num_channels_per_output(),
            strict=True,
        ):
            table[name] = (encoder_type, params, channels)
    return table


INFLATED_BACKBONES = _inflated_backbones()
"""Backbone name -> (encoder class, constructor arguments, feature channels)."""


def _upsample_in_plane(decoder: nn.Module) -> None:
    """Make every upsampling of a MONAI ``UNetDecoder`` act in-plane only (scale ``(1, 2, 2)``)."""
    for module in list(decoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Upsample):
                child.scale_factor = (1.0, 2.0, 2.0)
            elif isinstance(child, nn.ConvTranspose3d):
                in_plane = nn.ConvTranspose3d(
                    child.in_channels, child.out_channels, (1, 2, 2), stride=(1, 2, 2), bias=child.bias is not None
                )
                module.add_module(name, in_plane)


def _flatten_depth_kernels(module: nn.Module) -> None:
    """Replace every 3D convolution whose kernel has depth > 1 by a fresh one with kernel ``(1, kh, kw)``."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv3d) and child.kernel_size[0] > 1:
            flat = nn.Conv3d(
                child.in_channels,
                child.out_channels,
                (1, *child.kernel_size[1:]),
                stride=child.stride,
                padding=(0, *child.padding[1:]),
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                padding_mode=child.padding_mode,
            )
            module.add_module(name, flat)
        else:
            _flatten_depth_kernels(child)


class InflatedFlexUNet(nn.Module):
    """U-Net with MONAI FlexibleUNet's layout and key names over an inflated backbone, with control of the depth axis.

    Ronneberger et al., "U-Net", MICCAI 2015; dimensional transfer after Messaoudi et al., MedIA 2023.

    With ``stride_depth=True`` and ``depth_kernels=True`` this is :class:`monai.networks.nets.FlexibleUNet` with an
    ``"inflated-*"`` backbone. With ``stride_depth=False`` nothing resamples or pools along depth: the encoder keeps the
    depth resolution (see :class:`DepthPolicy`) and the decoder upsamples by ``(1, 2, 2)``; ``depth_kernels=False``
    (which needs ``stride_depth=False``) also makes every kernel ``(1, k, k)``. The state-dict keys (``encoder.*``,
    ``decoder.*``, ``segmentation_head.*``) are those of a FlexibleUNet built with the same arguments, so a 2D
    FlexibleUNet trained slice by slice expands into this 3D twin with
    :func:`monai_ext.weights.inflate.expand_2d_network_to_3d`; with ``"center"`` (or ``"2.5d"``) and
    ``stride_depth=False`` the twin reproduces the slice-wise 2D output exactly at initialisation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        backbone: a name of :data:`INFLATED_BACKBONES`, e.g. ``"inflated-resnet18"``.
        pretrained: ``True`` for the ImageNet weights of the backbone, a checkpoint path, or ``False``.
        spatial_dims: 2 or 3.
        stride_depth: see :class:`DepthPolicy`; also decides whether the decoder upsamples along depth.
        depth_kernels: see :class:`DepthPolicy`; ``False`` also flattens the decoder and head kernels (fresh
            initialisation at construction).
        inflation: kernel rule for the pre-trained encoder weights.
        decoder_channels: as in FlexibleUNet.
        norm: decoder normalisation, as in FlexibleUNet.
        act: decoder activation, as in FlexibleUNet.
        dropout: as in FlexibleUNet.
        decoder_bias: as in FlexibleUNet.
        upsample: ``"nontrainable"`` or ``"deconv"`` (``"pixelshuffle"`` only with ``stride_depth=True``).
        pre_conv: as in FlexibleUNet.
        interp_mode: as in FlexibleUNet.
        is_pad: as in FlexibleUNet.

    Raises:
        ValueError: unknown backbone, ``depth_kernels=False`` with ``stride_depth=True``, or ``"pixelshuffle"`` with
            ``stride_depth=False``; in ``forward``, an input whose spatial sides are not multiples of
            :attr:`size_divisor` (see :meth:`check_input_size`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        backbone: str,
        pretrained: bool | str | PathLike = False,
        spatial_dims: int = 3,
        stride_depth: bool = True,
        depth_kernels: bool = True,
        inflation: str = "average",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.1}),
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float | tuple = 0.0,
        decoder_bias: bool = False,
        upsample: str = "nontrainable",
        pre_conv: str = "default",
        interp_mode: str = "nearest",
        is_pad: bool = True,
    ) -> None:
        super().__init__()
        if backbone not in INFLATED_BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(INFLATED_BACKBONES)}.")
        in_plane_only = spatial_dims == 3 and not stride_depth
        if spatial_dims == 3 and not depth_kernels and stride_depth:
            raise ValueError(
                "depth_kernels=False (a 2.5D network) needs stride_depth=False: depth-1 kernels with a depth stride "
                "would drop slices."
            )
        if in_plane_only and upsample == "pixelshuffle":
            raise ValueError("upsample='pixelshuffle' always upsamples depth; use 'nontrainable' or 'deconv'.")
        encoder_type, params, feature_channels = INFLATED_BACKBONES[backbone]
        self.backbone = backbone
        self.spatial_dims = spatial_dims
        self.stride_depth = stride_depth
        self.encoder = encoder_type(
            model_name=params["model_name"],
            pretrained=pretrained,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            stride_depth=stride_depth,
            depth_kernels=depth_kernels,
            inflation=inflation,
        )
        decoder_channels = tuple(decoder_channels)[: len(feature_channels)]
        self.skip_connect = len(feature_channels) - 1
        self.decoder = UNetDecoder(
            spatial_dims=spatial_dims,
            encoder_channels=(in_channels, *feature_channels),
            decoder_channels=decoder_channels,
            act=act,
            norm=norm,
            dropout=dropout,
            bias=decoder_bias,
            upsample=upsample,
            pre_conv=pre_conv,
            interp_mode=interp_mode,
            align_corners=None,
            is_pad=is_pad,
        )
        self.segmentation_head = SegmentationHead(
            spatial_dims=spatial_dims, in_channels=decoder_channels[-1], out_channels=out_channels, kernel_size=3
        )
        if in_plane_only:
            _upsample_in_plane(self.decoder)
        if spatial_dims == 3 and not depth_kernels:
            _flatten_depth_kernels(self.decoder)
            _flatten_depth_kernels(self.segmentation_head)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        """What each spatial side of an input must be a multiple of: ``2 ** levels`` (32) in plane, and along depth
        too unless ``stride_depth=False`` (then 1). Other sizes leave the decoder's skip connections misaligned."""
        return _size_divisor(self.backbone, self.spatial_dims, self.stride_depth)

    @torch.jit.unused
    def check_input_size(self, spatial_shape: Sequence[int]) -> None:
        """Refuse a spatial input shape (a patch or sliding-window size) the network cannot take, naming valid ones.

        Raises:
            ValueError: a side is not a multiple of :attr:`size_divisor` (the message gives the nearest valid sizes).
        """
        _check_input_size(self.backbone, spatial_shape, self.spatial_dims, self.stride_depth)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Encoder, decoder with skip connections, segmentation head: ``B x C_in x ...`` -> ``B x C_out x ...``."""
        if not (torch.jit.is_scripting() or torch.jit.is_tracing()):
            self.check_input_size(inputs.shape[2:])
        features = self.encoder(inputs)
        return self.segmentation_head(self.decoder(features, self.skip_connect))


def _size_divisor(backbone: str, spatial_dims: int = 3, stride_depth: bool = True) -> tuple[int, ...]:
    """Per spatial axis, what an input side of the U-Net on ``backbone`` must be a multiple of (see
    :attr:`InflatedFlexUNet.size_divisor`): every encoder level halves the in-plane size."""
    divisor = 2 ** len(INFLATED_BACKBONES[backbone][2])
    if spatial_dims == 2:
        return (divisor, divisor)
    return ((divisor if stride_depth else 1), divisor, divisor)


def _check_input_size(
    backbone: str, spatial_shape: Sequence[int], spatial_dims: int = 3, stride_depth: bool = True
) -> None:
    """Raise a ValueError naming valid sizes when the U-Net on ``backbone`` cannot take ``spatial_shape``."""
    shape = tuple(int(s) for s in spatial_shape)
    divisor = _size_divisor(backbone, spatial_dims, stride_depth)
    if len(shape) != len(divisor) or all(s % d == 0 for s, d in zip(shape, divisor)):
        return
    down = [max(d, s // d * d) for s, d in zip(shape, divisor)]
    up = [-(-s // d) * d for s, d in zip(shape, divisor)]
    valid = " or ".join(dict.fromkeys(str(list(v)) for v in (down, up)))
    sides = f"every side must be a multiple of {divisor[-1]}"
    if divisor[0] == 1 and len(divisor) == 3:
        sides = f"height and width must be multiples of {divisor[-1]} (depth is not strided: any size)"
    raise ValueError(
        f"the inflated U-Net ({backbone}) cannot take inputs of spatial size {list(shape)}: it halves the resolution "
        f"{len(INFLATED_BACKBONES[backbone][2])} times, so {sides}; otherwise its skip connections do not line up "
        f"('Sizes of tensors must match'). Use a patch size of such multiples, e.g. {valid} (bundles: "
        f'--patch_size "[{",".join(map(str, up))}]").'
    )


FLEXUNET_BACKBONE.register_class(InflatedResNetEncoder)
FLEXUNET_BACKBONE.register_class(InflatedEfficientNetEncoder)
