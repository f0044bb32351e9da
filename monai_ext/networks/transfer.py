"""Networks for fine-tuning a pre-trained start: segmentation networks per architecture, and a classifier on any encoder.

Chen, Ma, Zheng, "Med3D", arXiv:1904.00625 (2019) fine-tune their encoder with a new segmentation head and, most
requested by MedicalNet users, for classification with global pooling and a linear layer; Li, Zhou et al., "SuPreM",
ICLR 2024 fine-tune the whole backbone with a new final convolution; Messaoudi et al., MedIA 2023 fine-tune a U-Net
whose encoder carries inflated 2D weights.

Every architecture is named by a string (:data:`TRANSFER_ARCHITECTURES`) and built by
:func:`build_transfer_network` for ``task="segmentation"`` or ``"classification"``. The state-dict keys of the
encoders are those of the published checkpoints, so the loaders of :mod:`monai_ext.weights` fill them:

============================  ===================================  ===========================================
architecture                  segmentation network                 classification network (``encoder`` + ``fc``)
============================  ===================================  ===========================================
``med3d-resnet<10..200>``     :class:`Med3DSegmenter` (MedicalNet  :class:`EncoderClassifier` on
                              head, logits upsampled)              :class:`Med3DResNet`
``suprem-unet``               :class:`GenesisUNet3D`               :class:`GenesisEncoder`
``suprem-segresnet``          MONAI ``SegResNet``                  :class:`SegResNetEncoder`
``suprem-swinunetr``          MONAI ``SwinUNETR``                  :class:`SwinUNETREncoder`
``inflated-resnet<18..152>``  :class:`InflatedFlexUNet`            the inflated encoder (last feature map)
``inflated-efficientnet-b<k>``
============================  ===================================  ===========================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.layers import Pool
from torch import nn

from monai_ext.networks.genesis_unet import GenesisUNet3D
from monai_ext.networks.inflated import INFLATED_BACKBONES, InflatedFlexUNet
from monai_ext.networks.inflated import _check_input_size as _check_inflated_input_size
from monai_ext.networks.med3d import MED3D_ARCHITECTURES, Med3DResNet
from monai_ext.networks.multidomain import Med3DSegmenter
from monai_ext.networks.suprem_backbones import SUPREM_BACKBONES, suprem_backbone

__all__ = [
    "TRANSFER_TASKS",
    "TRANSFER_ARCHITECTURES",
    "EncoderClassifier",
    "SegResNetEncoder",
    "SwinUNETREncoder",
    "GenesisEncoder",
    "build_transfer_network",
    "build_network_from_spec",
    "new_layer_prefixes",
    "check_patch_size",
]

TRANSFER_TASKS: tuple[str, ...] = ("segmentation", "classification")

TRANSFER_ARCHITECTURES: tuple[str, ...] = (
    *(f"med3d-resnet{d}" for d in sorted(MED3D_ARCHITECTURES)),
    *(f"suprem-{b}" for b in SUPREM_BACKBONES),
    *INFLATED_BACKBONES,
)
"""Names accepted by :func:`build_transfer_network`."""


class EncoderClassifier(nn.Module):
    """Global average pooling and a linear layer on a 3D encoder: the classification network of transfer learning.

    Chen, Ma, Zheng, "Med3D", arXiv:1904.00625 (2019), Sec. 4.3: the pre-trained encoder, global pooling and a new
    fully connected layer (LIDC nodule classification). State-dict keys are ``encoder.*`` (the encoder's own, i.e. the
    published checkpoint's) and ``fc.weight``/``fc.bias``.

    Args:
        encoder: a module whose forward returns a feature map ``(B, C, *spatial)`` or a sequence of them (the last,
            deepest one is pooled, as for FlexibleUNet encoders).
        num_classes: outputs of ``fc``.
        feature_channels: ``C``; read from ``encoder.out_channels`` when None.
        dropout: dropout probability before ``fc`` (0 disables it).
        spatial_dims: spatial dimensions of the feature map.

    Raises:
        ValueError: ``num_classes < 1`` or no way to know ``feature_channels``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        feature_channels: int | None = None,
        dropout: float = 0.0,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        if feature_channels is None:
            channels = getattr(encoder, "out_channels", None)
            if isinstance(channels, Sequence):
                channels = channels[-1]
            if not isinstance(channels, int):
                raise ValueError(f"{type(encoder).__name__} has no integer `out_channels`: pass feature_channels.")
            feature_channels = channels
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.feature_channels = int(feature_channels)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.feature_channels, self.num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, feature_channels)``."""
        features = self.encoder(x)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        return torch.flatten(self.pool(features), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.fc(self.dropout(self.forward_features(x)))


class SegResNetEncoder(nn.Module):
    """The encoder half of MONAI's ``SegResNet`` (``convInit``, ``down_layers``), with SegResNet's key names.

    Myronenko, "3D MRI brain tumor segmentation using autoencoder regularization", BrainLes 2018; SuPreM's SegResNet
    backbone (Li, Zhou et al., ICLR 2024). ``forward`` returns the deepest feature map.

    Args:
        in_channels: input channels.
        init_filters: as in SegResNet (16 for SuPreM).
        blocks_down: as in SegResNet ((1, 2, 2, 4) for SuPreM).
        kwargs: other SegResNet arguments.
    """

    def __init__(
        self, in_channels: int = 1, init_filters: int = 16, blocks_down: Sequence[int] = (1, 2, 2, 4), **kwargs
    ) -> None:
        super().__init__()
        full = suprem_backbone("segresnet", 1, in_channels, init_filters=init_filters, blocks_down=blocks_down, **kwargs)
        self.convInit = full.convInit
        self.down_layers = full.down_layers
        self.out_channels = init_filters * 2 ** (len(blocks_down) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convInit(x)
        for down in self.down_layers:
            x = down(x)
        return x


class SwinUNETREncoder(nn.Module):
    """The Swin transformer and bottleneck block of MONAI's ``SwinUNETR`` (``swinViT``, ``encoder10``).

    Hatamizadeh et al., "Swin UNETR", BrainLes 2021; SuPreM's Swin UNETR backbone (Li, Zhou et al., ICLR 2024).
    ``forward`` returns ``encoder10`` of the deepest stage, ``16 * feature_size`` channels.

    Args:
        in_channels: input channels.
        feature_size: as in SwinUNETR (48 for SuPreM).
        kwargs: other SwinUNETR arguments.
    """

    def __init__(self, in_channels: int = 1, feature_size: int = 48, **kwargs) -> None:
        super().__init__()
        full = suprem_backbone("swinunetr", 1, in_channels, feature_size=feature_size, **kwargs)
        self.swinViT = full.swinViT
        self.encoder10 = full.encoder10
        self.normalize = full.normalize
        self.out_channels = 16 * feature_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder10(self.swinViT(x, self.normalize)[4])


class GenesisEncoder(nn.Module):
    """The encoder half of the Models Genesis U-Net (``down_tr64`` ... ``down_tr512``), with its key names.

    Zhou et al., "Models Genesis", MedIA 2021 (arXiv:1908.06912); SuPreM's U-Net backbone. ``forward`` returns the
    deepest map (512 channels).

    Args:
        in_channels: input channels.
        kwargs: other :class:`GenesisUNet3D` arguments.
    """

    def __init__(self, in_channels: int = 1, **kwargs) -> None:
        super().__init__()
        full = GenesisUNet3D(in_channels=in_channels, out_channels=1, **kwargs)
        self.down_tr64 = full.down_tr64
        self.down_tr128 = full.down_tr128
        self.down_tr256 = full.down_tr256
        self.down_tr512 = full.down_tr512
        self.out_channels = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.down_tr64(x)
        x, _ = self.down_tr128(x)
        x, _ = self.down_tr256(x)
        return self.down_tr512(x)[1]


def _check(architecture: str, task: str) -> None:
    if task not in TRANSFER_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TRANSFER_TASKS}.")
    if architecture not in TRANSFER_ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(TRANSFER_ARCHITECTURES)}.")


def build_transfer_network(
    architecture: str,
    task: str,
    out_channels: int,
    in_channels: int = 1,
    dropout: float = 0.0,
    **kwargs,
) -> nn.Module:
    """Build the fine-tuning network of an architecture, randomly initialised (weights come from a source loader).

    Args:
        architecture: one of :data:`TRANSFER_ARCHITECTURES`.
        task: ``"segmentation"`` (logits ``B x out_channels x *spatial``) or ``"classification"`` (``B x
            out_channels``).
        out_channels: classes (background included for segmentation).
        in_channels: input channels; a pre-trained single-channel stem is adapted by the loader.
        dropout: dropout before the classifier (classification only).
        kwargs: constructor overrides (e.g. ``shortcut_type="B"`` for a Med3D ResNet, ``feature_size=12`` for a
            small Swin UNETR, ``decoder_channels`` for an inflated U-Net, ``stride_depth=False``).

    Returns:
        The network. Its new layers are named by :func:`new_layer_prefixes`.

    Raises:
        ValueError: unknown architecture or task.
    """
    _check(architecture, task)
    if architecture.startswith("med3d-resnet"):
        encoder = Med3DResNet(depth=int(architecture[len("med3d-resnet") :]), in_channels=in_channels, **kwargs)
        if task == "segmentation":
            return Med3DSegmenter(encoder, out_channels)
        return EncoderClassifier(encoder, out_channels, dropout=dropout)
    if architecture.startswith("suprem-"):
        backbone = architecture[len("suprem-") :]
        if task == "segmentation":
            return suprem_backbone(backbone, out_channels, in_channels, **kwargs)
        encoder_type = {"unet": GenesisEncoder, "segresnet": SegResNetEncoder, "swinunetr": SwinUNETREncoder}[backbone]
        return EncoderClassifier(encoder_type(in_channels=in_channels, **kwargs), out_channels, dropout=dropout)
    if task == "segmentation":
        return InflatedFlexUNet(in_channels, out_channels, architecture, spatial_dims=3, **kwargs)
    encoder_type, params, feature_channels = INFLATED_BACKBONES[architecture]
    encoder = encoder_type(model_name=params["model_name"], spatial_dims=3, in_channels=in_channels, **kwargs)
    return EncoderClassifier(encoder, out_channels, feature_channels=feature_channels[-1], dropout=dropout)


def build_network_from_spec(spec: dict) -> nn.Module:
    """Build the network a fine-tuning bundle describes in its ``models/network.json``.

    Args:
        spec: ``{"architecture", "task", "in_channels", "class_names", "kwargs"}`` (as written by
            :func:`monai_ext.engines.finetune.save_network_spec`).

    Returns:
        The network (random weights; load ``models/model.pt`` into it).
    """
    return build_transfer_network(
        spec["architecture"],
        spec["task"],
        out_channels=len(spec["class_names"]),
        in_channels=int(spec.get("in_channels", 1)),
        dropout=float(spec.get("dropout", 0.0)),
        **dict(spec.get("kwargs") or {}),
    )


def new_layer_prefixes(architecture: str, task: str) -> tuple[str, ...]:
    """State-dict prefixes of the layers a fine-tuning adds (the head): they start from scratch, get the larger
    learning rate and stay trainable when the encoder is frozen.

    Args:
        architecture: one of :data:`TRANSFER_ARCHITECTURES`.
        task: one of :data:`TRANSFER_TASKS`.

    Returns:
        For classification ``("fc.",)``; for segmentation the decoder parts that no pre-trained checkpoint of that
        architecture carries: the MedicalNet head ``head.``, SuPreM's final 1x1 convolution, the inflated U-Net's
        decoder and segmentation head.
    """
    _check(architecture, task)
    if task == "classification":
        return ("fc.",)
    if architecture.startswith("med3d-resnet"):
        return ("head.",)
    if architecture.startswith("suprem-"):
        return {"unet": ("out_tr.final_conv.",), "segresnet": ("conv_final.2.conv.",), "swinunetr": ("out.conv.conv.",)}[
            architecture[len("suprem-") :]
        ]
    return ("decoder.", "segmentation_head.")


def check_patch_size(network: nn.Module | Mapping[str, Any], patch_size: Sequence[int]) -> None:
    """Fail before training or inference starts when a network cannot take ``patch_size`` windows.

    The inflated U-Net (``imagenet-*`` sources) needs sides that are multiples of 32 (see
    :meth:`monai_ext.networks.inflated.InflatedFlexUNet.check_input_size`); other networks are not checked here. The
    fine-tuning bundles call this on their network spec when they start, so a bad ``patch_size`` fails at once, not
    after caching the data (and without building the network, which would draw from the seeded random state).

    Args:
        network: the network (a ``DistributedDataParallel`` wrapper is looked through), or its spec
            (``{"architecture", "task", "kwargs"}``, as :func:`build_network_from_spec` takes).
        patch_size: the spatial size of the training patches and sliding windows.

    Raises:
        ValueError: the network cannot take inputs of that size (the message gives valid sizes).
    """
    size = tuple(int(s) for s in patch_size)
    if isinstance(network, Mapping):
        architecture = network.get("architecture")
        if network.get("task") == "segmentation" and architecture in INFLATED_BACKBONES:
            kwargs = dict(network.get("kwargs") or {})
            _check_inflated_input_size(architecture, size, 3, bool(kwargs.get("stride_depth", True)))
        return
    network = getattr(network, "module", network)
    check = getattr(network, "check_input_size", None)
    if check is not None:
        check(size)
