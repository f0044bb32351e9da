"""Segmentation heads on Med3D encoders and the multi-domain (one branch per dataset) co-training network.

Med3D pre-trains one shared 3D ResNet encoder on several segmentation datasets at once (3DSeg-8), with one decoder
branch per dataset; each sample is decoded, and scored, only by the branch of the dataset it comes from. The branches
are thrown away after pre-training and the encoder is transferred (Chen, Ma, Zheng 2019, arXiv:1904.00625).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm

from monai_ext.networks.med3d import Med3DResNet

__all__ = ["PAD_LOGIT", "MedicalNetSegHead", "Med3DSegmenter", "MultiDomainSegmenter"]

#: Logit given to the channels a sample's own branch does not predict (softmax probability exactly 0 in float32).
PAD_LOGIT: float = -1e4

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _upsample_to(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linearly interpolate ``logits`` to the spatial ``size`` (align_corners=False)."""
    mode = _INTERPOLATION[logits.dim() - 2]
    return F.interpolate(logits, size=size, mode=mode, align_corners=False)


def _init_head(module: nn.Module) -> None:
    """MedicalNet's initialisation: Kaiming normal (fan-out) convolutions, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MedicalNetSegHead(nn.Sequential):
    """MedicalNet's segmentation head ``conv_seg``.

    Chen, Ma, Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis", arXiv:1904.00625, 2019.

    ``ConvTranspose(in_channels, 32, k=2, s=2)`` -> BN -> ReLU -> ``Conv(32, 32, k=3, p=1, no bias)`` -> BN -> ReLU ->
    ``Conv(32, n_classes, k=1, no bias)``. The module indices (0..6) equal those of MedicalNet's ``conv_seg``. On a
    dilated encoder (output stride 8) the output is 1/4 of the input size.

    Args:
        in_channels: channels of the encoder's last feature map.
        n_classes: output channels (classes, background included).
        spatial_dims: number of spatial dimensions.
        up_stride: kernel and stride of the transposed convolution; ``(1, 2, 2)`` keeps the depth axis, matching an
            encoder built with ``stride_depth=False``.
        mid_channels: width of the head (MedicalNet: 32).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        spatial_dims: int = 3,
        up_stride: int | Sequence[int] = 2,
        mid_channels: int = 32,
    ) -> None:
        up_stride = up_stride if isinstance(up_stride, int) else tuple(up_stride)
        conv_type = Conv[Conv.CONV, spatial_dims]
        norm_type = Norm[Norm.BATCH, spatial_dims]
        super().__init__(
            Conv[Conv.CONVTRANS, spatial_dims](in_channels, mid_channels, kernel_size=up_stride, stride=up_stride),
            norm_type(mid_channels),
            nn.ReLU(inplace=True),
            conv_type(mid_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            norm_type(mid_channels),
            nn.ReLU(inplace=True),
            conv_type(mid_channels, n_classes, kernel_size=1, bias=False),
        )
        self.n_classes = n_classes
        _init_head(self)


def _head_for(encoder: Med3DResNet, n_classes: int, head_type: str) -> nn.Module:
    """Build one decoder branch of ``head_type`` ("medicalnet" or "conv1x1") for ``encoder``."""
    if head_type == "medicalnet":
        up_stride = 2 if encoder.stride_depth else (1,) + (2,) * (encoder.spatial_dims - 1)
        return MedicalNetSegHead(encoder.out_channels, n_classes, encoder.spatial_dims, up_stride=up_stride)
    if head_type == "conv1x1":
        head = Conv[Conv.CONV, encoder.spatial_dims](encoder.out_channels, n_classes, kernel_size=1)
        _init_head(head)
        return head
    raise ValueError(f"head_type must be 'medicalnet' or 'conv1x1', got {head_type!r}.")


class Med3DSegmenter(nn.Module):
    """Single-task MedicalNet segmentation network: a Med3D encoder, the ``conv_seg`` head, upsampling to the input.

    Chen, Ma, Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis", arXiv:1904.00625, 2019.

    The reference code computes the loss at 1/4 resolution on shrunken labels; ``upsample=True`` (default) instead
    interpolates the logits (trilinear in 3D) to the input size, so standard MONAI losses, metrics and sliding-window
    inference apply unchanged.

    Args:
        encoder: the (pre-trained) :class:`~monai_ext.networks.med3d.Med3DResNet`.
        n_classes: output channels (classes, background included).
        upsample: interpolate logits to the input's spatial size.
    """

    def __init__(self, encoder: Med3DResNet, n_classes: int, upsample: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = _head_for(encoder, n_classes, "medicalnet")
        self.n_classes = n_classes
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes, *spatial)`` (input size with ``upsample``, else the head's resolution)."""
        logits = self.head(self.encoder(x))
        return _upsample_to(logits, x.shape[2:]) if self.upsample else logits


class MultiDomainSegmenter(nn.Module):
    """Med3D co-training network: one shared encoder and one decoder branch per dataset.

    Chen, Ma, Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis", arXiv:1904.00625, 2019.

    The branches live in ``heads`` (an ``nn.ModuleDict`` keyed by dataset name, state-dict keys ``heads.<name>.*``).
    The encoder runs once on the whole batch; each sample is then decoded by its own branch only (the batch is grouped
    by domain, each needed branch runs on its subset and the results are scattered back), so the branches of datasets
    absent from a batch take no part in it and get no gradient.

    Output with a per-sample ``domain`` tensor: logits upsampled to the input size with ``max(class_counts)``
    channels, the channels beyond a sample's own class count filled with :data:`PAD_LOGIT` (see
    :class:`~monai_ext.losses.multidomain.BranchMaskedDiceCELoss`). With a single domain (name, index or None) only
    that branch's channels are returned, unpadded, so inference and TorchScript export of one branch give that
    dataset's class count; ``forward(image)`` alone uses ``default_domain`` and can be traced with ``torch.jit.trace``.

    Args:
        encoder: the shared :class:`~monai_ext.networks.med3d.Med3DResNet`.
        domains: dataset name -> class count (background included), as a dict or a list of ``(name, count)``;
            the order defines the domain indices.
        default_domain: branch used when ``forward`` gets no domain; None means the first one.
        head_type: "medicalnet" (the ``conv_seg`` head, default) or "conv1x1" (one 1x1x1 convolution per dataset,
            as the paper describes its branches).

    Raises:
        ValueError: no domains, duplicate or invalid names (empty or containing "."), class counts below 1, or an
            unknown ``default_domain``.
    """

    def __init__(
        self,
        encoder: Med3DResNet,
        domains: Mapping[str, int] | Sequence[tuple[str, int]],
        default_domain: str | None = None,
        head_type: str = "medicalnet",
    ) -> None:
        super().__init__()
        pairs = list(domains.items()) if isinstance(domains, Mapping) else [tuple(p) for p in domains]
        if not pairs:
            raise ValueError("MultiDomainSegmenter needs at least one domain (dataset name -> class count).")
        names = [str(name) for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"domain names must be unique, got {names}.")
        for name, count in pairs:
            if not name or "." in name:
                raise ValueError(f"domain name {name!r} cannot be a module key: use a non-empty name without '.'.")
            if int(count) < 1:
                raise ValueError(f"domain {name!r} must have at least one class, got {count}.")
        if default_domain is not None and default_domain not in names:
            raise ValueError(f"default_domain {default_domain!r} is not one of the domains {names}.")

        self.encoder = encoder
        self.domain_names: tuple[str, ...] = tuple(names)
        self.class_counts: tuple[int, ...] = tuple(int(count) for _, count in pairs)
        self.max_classes: int = max(self.class_counts)
        self.default_domain: str = default_domain if default_domain is not None else names[0]
        self.head_type = head_type
        self.heads = nn.ModuleDict(
            {name: _head_for(encoder, n, head_type) for name, n in zip(names, self.class_counts)}
        )

    def domain_index(self, domain: str | int) -> int:
        """Index of a domain given by name or index.

        Raises:
            ValueError: unknown name or index out of range.
        """
        if isinstance(domain, str):
            if domain not in self.domain_names:
                raise ValueError(f"unknown domain {domain!r}; the network has branches {list(self.domain_names)}.")
            return self.domain_names.index(domain)
        index = int(domain)
        if not 0 <= index < len(self.domain_names):
            raise ValueError(f"domain index {index} out of range for {len(self.domain_names)} branches.")
        return index

    def _decode(self, features: torch.Tensor, index: int, size: Sequence[int]) -> torch.Tensor:
        logits = self.heads[self.domain_names[index]](features)
        return _upsample_to(logits, size)

    def _domain_tensor(self, domain: torch.Tensor | Sequence[str | int], batch_size: int) -> torch.Tensor:
        """Per-sample domain indices as a LongTensor [B], validated."""
        if isinstance(domain, torch.Tensor):
            indices = domain.reshape(-1).long()
        else:
            indices = torch.tensor([self.domain_index(d) for d in domain], dtype=torch.long)
        if indices.numel() == 1 and batch_size > 1:
            # one image split into several windows by a sliding-window inferer: every window has its domain
            indices = indices.expand(batch_size)
        if indices.numel() != batch_size:
            raise ValueError(f"got {indices.numel()} domain indices for a batch of {batch_size} samples.")
        if indices.numel() and (indices.min() < 0 or indices.max() >= len(self.domain_names)):
            raise ValueError(
                f"domain indices must be in [0, {len(self.domain_names) - 1}] (order {list(self.domain_names)}), "
                f"got {indices.tolist()}."
            )
        return indices

    def forward(
        self, x: torch.Tensor, domain: torch.Tensor | Sequence[str | int] | str | int | None = None
    ) -> torch.Tensor:
        """Segment ``x`` with the branch of each sample's domain.

        Args:
            x: images ``(B, C, *spatial)``.
            domain: a LongTensor ``[B]`` (or list) of per-sample domain indices or names; or one name or index for
                the whole batch; or None for ``default_domain``.

        Returns:
            logits at the input size: ``(B, max_classes, *spatial)`` padded with :data:`PAD_LOGIT` for a per-sample
            ``domain``; ``(B, class_count, *spatial)`` of that branch for a single domain.

        Raises:
            ValueError: unknown domain, or a per-sample domain whose length differs from the batch size.
        """
        size = x.shape[2:]
        if domain is None:
            domain = self.default_domain
        if isinstance(domain, torch.Tensor) and domain.dim() == 0:
            domain = int(domain)
        features = self.encoder(x)
        if isinstance(domain, (str, numbers.Integral)):
            return self._decode(features, self.domain_index(domain), size)

        indices = self._domain_tensor(domain, x.shape[0]).to(features.device)
        pieces = []
        for d in torch.unique(indices).tolist():
            rows = (indices == d).nonzero(as_tuple=True)[0]
            logits = self._decode(features.index_select(0, rows), d, size)
            n_pad = self.max_classes - logits.shape[1]
            if n_pad:
                pad = logits.new_full((logits.shape[0], n_pad, *logits.shape[2:]), PAD_LOGIT)
                logits = torch.cat([logits, pad], dim=1)
            pieces.append((rows, logits))
        out = pieces[0][1].new_full((x.shape[0], self.max_classes, *size), PAD_LOGIT)
        for rows, logits in pieces:
            out = out.index_copy(0, rows, logits)
        return out
