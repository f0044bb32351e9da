"""The Models Genesis 3D U-Net, with the attribute names of its published checkpoints.

The same network is the "U-Net" backbone of SuPreM (Li, Zhou et al., ICLR 2024, arXiv:2501.11253): its released
weights name their tensors ``down_tr64.ops.0.conv1.weight``, ``up_tr256.up_conv.weight``, ``out_tr.final_conv.weight``
and so on, so this module keeps exactly those names and shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act
from monai.networks.layers.utils import get_act_layer
from torch import nn

__all__ = [
    "GenesisUNet3D",
    "GenesisConvBlock",
    "GenesisDownLevel",
    "GenesisUpLevel",
    "GenesisOutputLevel",
    "BatchStatsBatchNorm3d",
]


class BatchStatsBatchNorm3d(nn.BatchNorm3d):
    """3D batch normalisation that may keep using the statistics of the current batch in evaluation mode.

    The Models Genesis U-Net normalises with batch statistics in training *and* evaluation (its running statistics
    are tracked but never used). With ``batch_stats_in_eval=True`` this layer reproduces that: in ``eval()`` the
    output is normalised with the mean and variance of the input batch, and the running statistics are left
    untouched (the original also updated them during inference, which changes nothing it computes). With
    ``batch_stats_in_eval=False`` it is a plain :class:`torch.nn.BatchNorm3d`.

    Args:
        num_features: number of channels.
        batch_stats_in_eval: normalise with batch statistics in evaluation mode too.
        kwargs: further arguments of :class:`torch.nn.BatchNorm3d` (``eps``, ``momentum``, ...).
    """

    def __init__(self, num_features: int, batch_stats_in_eval: bool = True, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.batch_stats_in_eval = batch_stats_in_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.batch_stats_in_eval:
            return super().forward(x)
        self._check_input_dim(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, batch_stats_in_eval={self.batch_stats_in_eval}"


def _activation(act: str | tuple, channels: int) -> nn.Module:
    """Build the activation; a PReLU gets one slope per channel, as in the original (``activation.weight``)."""
    name, args = (act, {}) if isinstance(act, str) else (act[0], dict(act[1]) if len(act) > 1 else {})
    if str(name).lower() == "prelu":
        args.setdefault("num_parameters", channels)
    return get_act_layer((name, args))


class GenesisConvBlock(nn.Module):
    """3x3x3 convolution (with bias) -> batch normalisation -> activation (``conv1``, ``bn1``, ``activation``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        act: activation name or ``(name, kwargs)`` (MONAI's ``Act`` factory).
        bn_batch_stats_in_eval: see :class:`BatchStatsBatchNorm3d`.
    """

    def __init__(
        self, in_channels: int, out_channels: int, act: str | tuple = "relu", bn_batch_stats_in_eval: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = BatchStatsBatchNorm3d(out_channels, batch_stats_in_eval=bn_batch_stats_in_eval)
        self.activation = _activation(act, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn1(self.conv1(x)))


class GenesisDownLevel(nn.Module):
    """One encoder level: two :class:`GenesisConvBlock` (``ops.0``, ``ops.1``), then an optional 2x max-pooling.

    Args:
        in_channels: input channels.
        mid_channels: output channels of the first convolution.
        out_channels: output channels of the second convolution (and of the level).
        pool: down-sample the output by 2 (all levels but the deepest).
        act: activation name or ``(name, kwargs)``.
        bn_batch_stats_in_eval: see :class:`BatchStatsBatchNorm3d`.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        pool: bool,
        act: str | tuple = "relu",
        bn_batch_stats_in_eval: bool = True,
    ) -> None:
        super().__init__()
        self.ops = nn.Sequential(
            GenesisConvBlock(in_channels, mid_channels, act, bn_batch_stats_in_eval),
            GenesisConvBlock(mid_channels, out_channels, act, bn_batch_stats_in_eval),
        )
        self.maxpool = nn.MaxPool3d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns:
        ``(pooled output, output before pooling)``; the second is the skip connection.
        """
        features = self.ops(x)
        return self.maxpool(features), features


class GenesisUpLevel(nn.Module):
    """One decoder level: ``up_conv`` ConvTranspose3d(k=2, s=2), concatenation with the skip, two conv blocks.

    Args:
        in_channels: channels of the deeper level; ``up_conv`` keeps this number of channels.
        skip_channels: channels of the skip connection.
        out_channels: output channels of both convolutions.
        act: activation name or ``(name, kwargs)``.
        bn_batch_stats_in_eval: see :class:`BatchStatsBatchNorm3d`.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        act: str | tuple = "relu",
        bn_batch_stats_in_eval: bool = True,
    ) -> None:
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_channels, in_channels, kernel_size=2, stride=2)
        self.ops = nn.Sequential(
            GenesisConvBlock(in_channels + skip_channels, out_channels, act, bn_batch_stats_in_eval),
            GenesisConvBlock(out_channels, out_channels, act, bn_batch_stats_in_eval),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.ops(torch.cat((self.up_conv(x), skip), dim=1))


class GenesisOutputLevel(nn.Module):
    """The 1x1x1 output convolution ``final_conv`` (logits; no sigmoid).

    Args:
        in_channels: input channels (64 in the U-Net).
        out_channels: number of output channels (classes).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.final_conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(x)


class GenesisUNet3D(nn.Module):
    """The 3D U-Net of Models Genesis, used as the U-Net backbone of SuPreM.

    Zhou et al., "Models Genesis: Generic Autodidactic Models for 3D Medical Image Analysis", MICCAI 2019 and
    Medical Image Analysis 2021 (arXiv:1908.06912); Li, Zhou et al., "How Well Do Supervised 3D Models Transfer to
    Medical Imaging Tasks?" (SuPreM), ICLR 2024 (arXiv:2501.11253).

    Encoder levels ``down_tr64`` (in -> 32 -> 64), ``down_tr128`` (64 -> 64 -> 128), ``down_tr256`` (128 -> 128 -> 256),
    ``down_tr512`` (256 -> 256 -> 512); each is two 3x3x3 convolutions with batch normalisation and activation,
    followed by 2x max-pooling in the first three. Decoder levels ``up_tr256``, ``up_tr128``, ``up_tr64``: a
    ConvTranspose3d(k=2, s=2) that keeps the channel count (512, 256, 128), concatenation with the skip and two
    convolutions (768 -> 256 -> 256, 384 -> 128 -> 128, 192 -> 64 -> 64). ``out_tr.final_conv`` is a 1x1x1
    convolution 64 -> ``out_channels`` returning logits. Every tensor name and shape equals the published
    checkpoints' (``down_tr64.ops.0.conv1.weight``, ``down_tr64.ops.0.bn1.running_var``, ``up_tr256.up_conv.weight``,
    ``out_tr.final_conv.weight``, ...). With ``act="relu"`` the network has 19,073,600 + 65 * ``out_channels``
    parameters: the published 19.08M holds for 22 to 175 output channels (e.g. 25 AbdomenAtlas classes: 19,075,225;
    32 SuPreM classes: 19,075,680).

    Spatial sizes must be divisible by 8. The original normalises with batch statistics even in evaluation mode;
    ``bn_batch_stats_in_eval=True`` (default) keeps that behaviour, so predictions depend on the batch (and a batch
    of one needs more than one voxel per channel at the deepest level, i.e. inputs of at least 16 voxels a side).
    Set it to ``False`` to use the running statistics in ``eval()`` like any other network (they were tracked
    during pre-training, but never used by the original, so check the outputs before relying on them).

    Args:
        in_channels: input channels (1 for CT).
        out_channels: output channels of ``out_tr.final_conv``.
        act: activation name or ``(name, kwargs)`` of MONAI's ``Act`` factory; the original offers "relu",
            "prelu" (one slope per channel) and "elu".
        bn_batch_stats_in_eval: normalise with batch statistics in evaluation mode too (the original behaviour).

    Raises:
        ValueError: ``act`` is not a known activation.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        act: str | tuple = "relu",
        bn_batch_stats_in_eval: bool = True,
    ) -> None:
        super().__init__()
        act_name = act if isinstance(act, str) else act[0]
        if str(act_name).upper() not in Act.names:
            raise ValueError(f"unknown activation {act_name!r}; use one of MONAI's Act names such as 'relu', 'prelu'.")
        kw = {"act": act, "bn_batch_stats_in_eval": bn_batch_stats_in_eval}
        self.down_tr64 = GenesisDownLevel(in_channels, 32, 64, pool=True, **kw)
        self.down_tr128 = GenesisDownLevel(64, 64, 128, pool=True, **kw)
        self.down_tr256 = GenesisDownLevel(128, 128, 256, pool=True, **kw)
        self.down_tr512 = GenesisDownLevel(256, 256, 512, pool=False, **kw)
        self.up_tr256 = GenesisUpLevel(512, 256, 256, **kw)
        self.up_tr128 = GenesisUpLevel(256, 128, 128, **kw)
        self.up_tr64 = GenesisUpLevel(128, 64, 64, **kw)
        self.out_tr = GenesisOutputLevel(64, out_channels)

    def set_bn_batch_stats_in_eval(self, value: bool) -> None:
        """Switch every batch normalisation between batch statistics and running statistics in ``eval()``."""
        for module in self.modules():
            if isinstance(module, BatchStatsBatchNorm3d):
                module.batch_stats_in_eval = value

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns:
        ``(deepest encoder features [B, 512, ...], last decoder features [B, 64, ...])``, the two feature maps
        SuPreM's pre-training heads read.
        """
        x, skip64 = self.down_tr64(x)
        x, skip128 = self.down_tr128(x)
        x, skip256 = self.down_tr256(x)
        _, deepest = self.down_tr512(x)
        x = self.up_tr256(deepest, skip256)
        x = self.up_tr128(x, skip128)
        return deepest, self.up_tr64(x, skip64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns:
        logits of shape ``[B, out_channels, *spatial]``.
        """
        return self.out_tr(self.forward_features(x)[1])
