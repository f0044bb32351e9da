"""Loss for multi-domain co-training: each sample is scored only on its own dataset's classes.

Med3D co-trains one encoder on several datasets with one decoder branch per dataset; a sample's loss involves only
its own branch (Chen, Ma, Zheng 2019, arXiv:1904.00625). :class:`~monai_ext.networks.multidomain.MultiDomainSegmenter`
returns every sample's logits in one tensor padded with ``PAD_LOGIT``; this loss reads the padding back as a mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_ext.networks.multidomain import PAD_LOGIT

__all__ = ["BranchMaskedDiceCELoss"]


class BranchMaskedDiceCELoss(_Loss):
    """Softmax Dice + cross-entropy on padded multi-branch logits, each sample scored on its own classes only.

    Chen, Ma, Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis", arXiv:1904.00625, 2019 (one branch,
    and one loss, per dataset); the Dice + CE combination follows MONAI's ``DiceCELoss``.

    The input holds logits ``(B, C_max, *spatial)`` in which the channels a sample's branch does not predict are
    constant :data:`~monai_ext.networks.multidomain.PAD_LOGIT` (valid channel = not entirely equal to ``PAD_LOGIT``).

    - Cross-entropy over all channels, averaged over all voxels: padded channels have softmax probability 0, so this
      equals the cross-entropy over each sample's own classes.
    - Soft Dice per sample and channel, ``1 - (2 * |P . G| + smooth) / (|P| + |G| + smooth)``, averaged over that
      sample's own valid channels (channel 0 excluded unless ``include_background``), then over the samples.

    On a batch of one domain (no padding) this equals ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True,
    include_background=include_background, lambda_dice=..., lambda_ce=..., smooth_nr=smooth, smooth_dr=smooth)``.
    On a mixed batch of equally sized samples it equals the mean of the per-sample losses on unpadded logits.

    Args:
        include_background: score channel 0 in the Dice term.
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        smooth: added to the Dice numerator and denominator.
    """

    def __init__(
        self,
        include_background: bool = False,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice} and {lambda_ce}.")
        self.include_background = include_background
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.smooth = float(smooth)

    @staticmethod
    def valid_channels(input: torch.Tensor) -> torch.Tensor:
        """Boolean ``(B, C)``: True where a sample's channel is predicted by its branch (not all ``PAD_LOGIT``)."""
        return (input.detach() != PAD_LOGIT).flatten(2).any(dim=-1)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            input: padded logits ``(B, C_max, *spatial)``.
            target: index labels ``(B, 1, *spatial)`` (integer or integral float values).

        Returns:
            the scalar loss.

        Raises:
            ValueError: shapes do not match, or a label names a channel that the sample's branch does not predict
                (a label from another dataset, or a wrong domain index).
        """
        if input.dim() != target.dim() or target.shape[1] != 1:
            raise ValueError(
                f"expected logits (B, C, *spatial) and index labels (B, 1, *spatial), got {tuple(input.shape)} and "
                f"{tuple(target.shape)}."
            )
        if target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(f"labels {tuple(target.shape)} do not match logits {tuple(input.shape)}.")
        n_channels = input.shape[1]
        labels = target[:, 0].long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= n_channels):
            raise ValueError(f"label values must be in [0, {n_channels - 1}], got [{labels.min()}, {labels.max()}].")

        valid = self.valid_channels(input)
        one_hot = F.one_hot(labels, n_channels).movedim(-1, 1).to(input.dtype)
        present = one_hot.detach().flatten(2).any(dim=-1)
        stray = present & ~valid
        if stray.any():
            sample, channel = (int(v) for v in stray.nonzero()[0])
            raise ValueError(
                f"sample {sample} has label {channel} but its branch predicts only channels "
                f"{valid[sample].nonzero().flatten().tolist()}: check the sample's domain index and label map."
            )

        ce = F.cross_entropy(input, labels)

        probs = torch.softmax(input, dim=1)
        intersection = (probs * one_hot).flatten(2).sum(-1)
        denominator = probs.flatten(2).sum(-1) + one_hot.flatten(2).sum(-1)
        dice = 1.0 - (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        scored = valid.clone()
        if not self.include_background:
            scored[:, 0] = False
        n_scored = scored.sum(dim=1)
        per_sample = (dice * scored).sum(dim=1) / n_scored.clamp(min=1)
        has_channels = n_scored > 0
        dice_loss = per_sample[has_channels].mean() if has_channels.any() else dice.sum() * 0.0

        return self.lambda_dice * dice_loss + self.lambda_ce * ce
