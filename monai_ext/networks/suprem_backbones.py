"""The three backbones of SuPreM, built from one setting.

Li, Zhou et al., "How Well Do Supervised 3D Models Transfer to Medical Imaging Tasks?", ICLR 2024
(arXiv:2501.11253; reference code MrGiovanni/SuPreM). The released checkpoints were trained with:

- "unet": :class:`~monai_ext.networks.genesis_unet.GenesisUNet3D`; 19.08M parameters; final conv ``out_tr.final_conv``.
- "segresnet": ``SegResNet(blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=16)``; 4.70M parameters;
  final conv ``conv_final.2.conv``.
- "swinunetr": ``SwinUNETR(feature_size=48, use_v2=False, downsample="merging")``; 62.19M parameters; final conv
  ``out.conv.conv``.

The parameter counts are those of one input channel. SegResNet (4,700,880 + 17 C) and Swin UNETR
(62,186,610 + 49 C) round to the published figures for any usual number of classes C; the U-Net
(19,073,600 + 65 C) rounds to 19.08M for 22 to 175 classes (25 or 32 in SuPreM) and to 19.07M below.
"""

from __future__ import annotations

from monai.networks.nets import SegResNet, SwinUNETR
from torch import nn

from monai_ext.networks.genesis_unet import GenesisUNet3D

__all__ = ["SUPREM_BACKBONES", "SUPREM_HEAD_KEYS", "suprem_backbone"]

SUPREM_BACKBONES: tuple[str, ...] = ("unet", "segresnet", "swinunetr")

SUPREM_HEAD_KEYS: dict[str, str] = {
    "unet": "out_tr.final_conv",
    "segresnet": "conv_final.2.conv",
    "swinunetr": "out.conv.conv",
}
"""Module name of the final 1x1 convolution of each backbone (the only layer a fine-tuning re-initialises)."""


def suprem_backbone(name: str, out_channels: int, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build a SuPreM backbone with the configuration of the released checkpoints.

    Args:
        name: "unet", "segresnet" or "swinunetr" (case-insensitive; "swin_unetr" is accepted).
        out_channels: number of output channels of the final 1x1 convolution.
        in_channels: number of input channels (1 for the released checkpoints).
        kwargs: overrides of the constructor arguments (e.g. ``feature_size=12`` for a small Swin UNETR in a test,
            ``bn_batch_stats_in_eval=False`` for the U-Net); they replace the published values.

    Returns:
        the network, randomly initialised.

    Raises:
        ValueError: ``name`` is not one of :data:`SUPREM_BACKBONES`.
    """
    key = name.lower().replace("_", "")
    if key == "unet":
        return GenesisUNet3D(in_channels=in_channels, out_channels=out_channels, **kwargs)
    if key == "segresnet":
        args = {"blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1), "init_filters": 16, **kwargs}
        return SegResNet(in_channels=in_channels, out_channels=out_channels, **args)
    if key == "swinunetr":
        args = {"feature_size": 48, "use_v2": False, "downsample": "merging", **kwargs}
        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, **args)
    raise ValueError(f"unknown SuPreM backbone {name!r}; choose one of {', '.join(SUPREM_BACKBONES)}.")
