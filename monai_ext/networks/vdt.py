"""Variable Dimension Transform (VDT) networks: a 3D ResNet pre-trained on 2D natural images made volumes.

Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform" (arXiv:2201.01426, Neurocomputing 2023; code
urmagicsmine/CSPR). An RGB image becomes a depth-3 one-channel volume (:mod:`monai_ext.transforms.variable_dimension`)
and a 3D ResNet is trained on ImageNet-style classification with **no striding along depth** (stride ``(1, 2, 2)`` in
the stem, the max-pool and the stages), 3D global average pooling and a linear head. The same 3D kernels are then
fine-tuned at any depth with depth striding on (:mod:`monai_ext.weights.vdt`).

The encoder is :class:`~monai_ext.networks.med3d.Med3DResNet` (``dilated=False``: output stride 32 in-plane;
``stride_depth=False``), so its ``encoder.*`` entries have MedicalNet's names and export to MedicalNet's checkpoint
format unchanged. Two task networks share it:

- :class:`VDTClassifier`: global average pooling + ``fc`` (the published pre-training network);
- :class:`VDTSegmenter`: a light feature-pyramid decoder on the five encoder maps, for pre-training on 2D
  segmentation data turned into volumes (not part of the published code: this project's addition).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

from monai_ext.networks.med3d import Med3DResNet

__all__ = [
    "ShallowInputSafeConv3d",
    "make_stem_shallow_input_safe",
    "VDTClassifier",
    "VDTSegmenter",
    "vdt_resnet",
    "vdt_segmenter",
]

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _spatial_dims(encoder: nn.Module) -> int:
    return int(getattr(encoder, "spatial_dims", 3))


class ShallowInputSafeConv3d(nn.Conv3d):
    """A ``Conv3d`` that computes in float32 under autocast when the input is smaller than the kernel along an axis.

    On CPU, PyTorch 2.13's oneDNN bf16 ``conv3d`` returns NaN weight gradients when the input depth is below the kernel
    depth (measured here: depths 3-6 under a 7^3 kernel with padding 3, in almost every trial), which is exactly the
    VDT pre-training case (depth-3 volumes through the 7^3 stem). Only such shallow inputs leave autocast; deeper
    inputs (fine-tuning at depth 32) keep bf16. Parameters and state-dict keys are those of ``nn.Conv3d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = any(int(s) < int(k) for s, k in zip(x.shape[2:], self.kernel_size))
        if shallow and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def make_stem_shallow_input_safe(encoder: nn.Module) -> nn.Module:
    """Swap ``encoder.conv1`` (a plain ``nn.Conv3d``) for a :class:`ShallowInputSafeConv3d` sharing its parameters.

    State-dict keys and values are unchanged; other encoders are returned untouched.

    Returns:
        ``encoder`` (modified in place).
    """
    stem = getattr(encoder, "conv1", None)
    if type(stem) is nn.Conv3d:
        safe = ShallowInputSafeConv3d(
            stem.in_channels,
            stem.out_channels,
            kernel_size=stem.kernel_size,
            stride=stem.stride,
            padding=stem.padding,
            dilation=stem.dilation,
            groups=stem.groups,
            bias=stem.bias is not None,
            padding_mode=stem.padding_mode,
            device=stem.weight.device,
            dtype=stem.weight.dtype,
        )
        safe.weight = stem.weight
        if stem.bias is not None:
            safe.bias = stem.bias
        encoder.conv1 = safe
    return encoder


class VDTClassifier(nn.Module):
    """A 3D encoder with global average pooling and a linear classifier (the VDT pre-training network).

    Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform", arXiv:2201.01426 (Neurocomputing 2023).

    Any input depth works: the pooling is global, so the network pre-trained on depth-3 volumes also classifies
    depth-32 volumes. State-dict keys are ``encoder.*`` (MedicalNet names) and ``fc.weight``/``fc.bias``. The
    encoder's stem is made safe for inputs shallower than its kernel under bf16 autocast
    (:func:`make_stem_shallow_input_safe`).

    Args:
        encoder: a :class:`~monai_ext.networks.med3d.Med3DResNet` (or any module with ``out_channels`` whose forward
            returns a ``(B, out_channels, *spatial)`` map).
        num_classes: number of classes (outputs of ``fc``).
        dropout: dropout probability before ``fc`` (0 disables it).

    Raises:
        ValueError: ``num_classes < 1`` or an encoder without ``out_channels``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        if not hasattr(encoder, "out_channels"):
            raise ValueError(f"{type(encoder).__name__} has no `out_channels`: pass a Med3DResNet encoder.")
        self.encoder = make_stem_shallow_input_safe(encoder)
        self.num_classes = int(num_classes)
        self.pool = Pool[Pool.ADAPTIVEAVG, _spatial_dims(encoder)](1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(int(encoder.out_channels), self.num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, encoder.out_channels)``."""
        return torch.flatten(self.pool(self.encoder(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of an input ``(B, in_channels, D, H, W)`` of any size."""
        return self.fc(self.dropout(self.forward_features(x)))


class VDTSegmenter(nn.Module):
    """A 3D encoder with a light feature-pyramid decoder, for pre-training on 2D segmentation data made volumes.

    Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform", arXiv:2201.01426 (Neurocomputing 2023), pre-train 3D
    networks on 2D segmentation data as well; this decoder is this project's own (the published one is not used).

    Each of the five maps of :meth:`Med3DResNet.forward_features` (stem, ``layer1..4``) is projected to
    ``decoder_channels`` by a 1x1x1 convolution (``decoder.lateral.<i>``); from the coarsest map down, each is
    upsampled (linear) to the next finer map and added; a 3x3x3 convolution + BatchNorm + ReLU (``decoder.fuse``) and
    a 1x1x1 convolution (``decoder.classifier``) give logits at the stem's resolution, upsampled to the input size. The
    decoder has about 0.2M parameters for ``decoder_channels=64`` on ResNet-10/18, so nearly all learning is in the
    encoder, which is what is transferred. The encoder's stem is made safe for shallow inputs under bf16 autocast
    (:func:`make_stem_shallow_input_safe`).

    Args:
        encoder: a :class:`~monai_ext.networks.med3d.Med3DResNet` (needs ``forward_features``/``feature_channels``).
        num_classes: output channels (classes, background included).
        decoder_channels: width of the decoder.

    Raises:
        ValueError: ``num_classes < 1`` or an encoder without ``forward_features``/``feature_channels``.
    """

    def __init__(self, encoder: Med3DResNet, num_classes: int, decoder_channels: int = 64) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        if not (hasattr(encoder, "forward_features") and hasattr(encoder, "feature_channels")):
            raise ValueError(
                f"{type(encoder).__name__} has no forward_features/feature_channels: pass a Med3DResNet encoder."
            )
        dims = _spatial_dims(encoder)
        conv_type = Conv[Conv.CONV, dims]
        self.encoder = make_stem_shallow_input_safe(encoder)
        self.num_classes = int(num_classes)
        self.decoder = nn.Module()
        self.decoder.lateral = nn.ModuleList(
            conv_type(int(c), decoder_channels, kernel_size=1) for c in encoder.feature_channels
        )
        self.decoder.fuse = nn.Sequential(
            conv_type(decoder_channels, decoder_channels, kernel_size=3, padding=1, bias=False),
            Norm[Norm.BATCH, dims](decoder_channels),
            nn.ReLU(inplace=True),
        )
        self.decoder.classifier = conv_type(decoder_channels, self.num_classes, kernel_size=1)
        self._mode = _INTERPOLATION[dims]
        for module in self.decoder.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *x.shape[2:])``."""
        features = self.encoder.forward_features(x)
        lateral = self.decoder.lateral
        y = lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            finer = lateral[i](features[i])
            y = finer + F.interpolate(y, size=finer.shape[2:], mode=self._mode, align_corners=False)
        y = self.decoder.classifier(self.decoder.fuse(y))
        return F.interpolate(y, size=x.shape[2:], mode=self._mode, align_corners=False)


def vdt_resnet(
    depth: int = 18,
    num_classes: int = 1000,
    in_channels: int = 1,
    stride_depth: bool = False,
    shortcut_type: str | None = None,
    dropout: float = 0.0,
) -> VDTClassifier:
    """The VDT 3D ResNet classifier: ``Med3DResNet(dilated=False, stride_depth=False)`` + pooling + ``fc``.

    Published configuration: ``depth=18``, 1000 classes (ImageNet), one input channel, no depth striding.

    Args:
        depth: ResNet depth (10, 18, 34, 50, 101, 152, 200).
        num_classes: classes of the linear head.
        in_channels: input channels (1 for VDT volumes).
        stride_depth: stride along depth too (False for pre-training on depth-3 volumes).
        shortcut_type: "A" or "B"; None takes MedicalNet's (A for 18/34, B otherwise), so the exported encoder has
            the layout of MedicalNet's published file of that depth.
        dropout: dropout before ``fc``.
    """
    encoder = Med3DResNet(
        depth=depth,
        in_channels=in_channels,
        shortcut_type=shortcut_type,
        dilated=False,
        stride_depth=stride_depth,
    )
    return VDTClassifier(encoder, num_classes=num_classes, dropout=dropout)


def vdt_segmenter(
    depth: int = 18,
    num_classes: int = 2,
    in_channels: int = 1,
    stride_depth: bool = False,
    shortcut_type: str | None = None,
    decoder_channels: int = 64,
) -> VDTSegmenter:
    """A :class:`VDTSegmenter` on ``Med3DResNet(dilated=False, stride_depth=stride_depth)``.

    Args:
        depth: ResNet depth.
        num_classes: output channels (classes, background included).
        in_channels: input channels.
        stride_depth: stride along depth too (False for depth-3 volumes).
        shortcut_type: "A" or "B"; None takes MedicalNet's.
        decoder_channels: width of the decoder.
    """
    encoder = Med3DResNet(
        depth=depth,
        in_channels=in_channels,
        shortcut_type=shortcut_type,
        dilated=False,
        stride_depth=stride_depth,
    )
    return VDTSegmenter(encoder, num_classes=num_classes, decoder_channels=decoder_channels)
