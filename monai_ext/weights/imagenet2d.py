"""2D ImageNet weights for the inflated encoders: where they come from, where they are looked for, how they load.

Sources (licences of the weights as published):

- torchvision ResNets, BSD-3-Clause (https://github.com/pytorch/vision); file names carry the first 8 hex digits of
  the file's sha256 (torch.hub's convention, checked by torchvision itself). ``IMAGENET1K_V1`` for ResNet-18/34/50/101/
  152 and the better ``IMAGENET1K_V2`` recipe for ResNet-50/101/152 (the default for those depths).
- timm EfficientNets, Apache-2.0 (https://github.com/huggingface/pytorch-image-models), Hugging Face hub ids
  ``timm/efficientnet_b0.ra_in1k`` etc.; the ``url`` is timm's original GitHub release file of the same weights. The
  hex digits in those names are not checked by timm, so no hash is enforced for them.

Lookup order of :func:`find_2d_weights` (no download unless asked): an explicit path (a file, or a folder holding
the file name), the folder named by the environment variable ``MONAI_EXT_WEIGHTS``, then torch hub's cache
``torch.hub.get_dir()/checkpoints/<file name>`` (where ``torch.hub.load_state_dict_from_url`` puts it).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch
from monai.utils import optional_import
from torch import nn

from monai_ext.weights.inflate import inflate_state_dict
from monai_ext.weights.report import LoadReport, WeightTransferError, load_weights_file

__all__ = [
    "ImageNet2DWeights",
    "IMAGENET_2D_WEIGHTS",
    "DEFAULT_IMAGENET_2D_WEIGHTS",
    "WEIGHTS_DIR_ENV",
    "get_2d_weights_info",
    "find_2d_weights",
    "read_2d_state_dict",
    "load_2d_weights_into_3d",
]

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "MONAI_EXT_WEIGHTS"
"""Environment variable naming a folder of downloaded weight files."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageNet2DWeights:
    """One published 2D ImageNet checkpoint.

    Attributes:
        name: table key, ``<architecture>.<tag>`` (timm's naming, ``tv_in1k`` = torchvision V1, ``tv2_in1k`` = V2).
        architecture: ``"resnet50"``, ``"efficientnet-b0"``, ... (as in ``monai_ext.networks.inflated``).
        url: direct download URL.
        sha256_prefix: leading hex digits of the file's sha256 when known, else ``None``.
        hf_hub_id: Hugging Face hub repository of the same weights, when there is one.
        first_conv: key prefix of the stem convolution.
        head_prefixes: key prefixes of the classifier that an encoder drops.
        mean: input normalisation mean (RGB) used in training.
        std: input normalisation standard deviation (RGB).
        licence: licence of the weights.
    """

    name: str
    architecture: str
    url: str
    sha256_prefix: str | None
    hf_hub_id: str | None
    first_conv: str
    head_prefixes: tuple[str, ...]
    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD
    licence: str = ""

    @property
    def filename(self) -> str:
        """File name of the checkpoint (the last component of the URL)."""
        return self.url.rsplit("/", 1)[-1]


def _torchvision(name: str, architecture: str, filename: str) -> ImageNet2DWeights:
    return ImageNet2DWeights(
        name=name,
        architecture=architecture,
        url=f"https://download.pytorch.org/models/{filename}",
        sha256_prefix=filename.rsplit("-", 1)[-1].split(".")[0],
        hf_hub_id=None,
        first_conv="conv1",
        head_prefixes=("fc.",),
        licence="BSD-3-Clause (torchvision)",
    )


def _timm(name: str, architecture: str, filename: str) -> ImageNet2DWeights:
    return ImageNet2DWeights(
        name=name,
        architecture=architecture,
        url=f"https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/{filename}",
        sha256_prefix=None,
        hf_hub_id=f"timm/{name.replace('-', '_')}",
        first_conv="conv_stem",
        head_prefixes=("conv_head.", "bn2.", "classifier."),
        licence="Apache-2.0 (timm)",
    )


IMAGENET_2D_WEIGHTS: dict[str, ImageNet2DWeights] = {
    w.name: w
    for w in (
        _torchvision("resnet18.tv_in1k", "resnet18", "resnet18-f37072fd.pth"),
        _torchvision("resnet34.tv_in1k", "resnet34", "resnet34-b627a593.pth"),
        _torchvision("resnet50.tv_in1k", "resnet50", "resnet50-0676ba61.pth"),
        _torchvision("resnet50.tv2_in1k", "resnet50", "resnet50-11ad3fa6.pth"),
        _torchvision("resnet101.tv_in1k", "resnet101", "resnet101-63fe2227.pth"),
        _torchvision("resnet101.tv2_in1k", "resnet101", "resnet101-cd907fc2.pth"),
        _torchvision("resnet152.tv_in1k", "resnet152", "resnet152-394f9c45.pth"),
        _torchvision("resnet152.tv2_in1k", "resnet152", "resnet152-f82ba261.pth"),
        _timm("efficientnet_b0.ra_in1k", "efficientnet-b0", "efficientnet_b0_ra-3dd342df.pth"),
        _timm("efficientnet_b1.ft_in1k", "efficientnet-b1", "efficientnet_b1-533bc792.pth"),
        _timm("efficientnet_b2.ra_in1k", "efficientnet-b2", "efficientnet_b2_ra-bcdf34b7.pth"),
        _timm("efficientnet_b3.ra2_in1k", "efficientnet-b3", "efficientnet_b3_ra2-cf984f9c.pth"),
        _timm("efficientnet_b4.ra2_in1k", "efficientnet-b4", "efficientnet_b4_ra2_320-7eb33cd5.pth"),
    )
}
"""Published 2D ImageNet checkpoints, by name."""

DEFAULT_IMAGENET_2D_WEIGHTS: dict[str, str] = {
    "resnet18": "resnet18.tv_in1k",
    "resnet34": "resnet34.tv_in1k",
    "resnet50": "resnet50.tv2_in1k",
    "resnet101": "resnet101.tv2_in1k",
    "resnet152": "resnet152.tv2_in1k",
    "efficientnet-b0": "efficientnet_b0.ra_in1k",
    "efficientnet-b1": "efficientnet_b1.ft_in1k",
    "efficientnet-b2": "efficientnet_b2.ra_in1k",
    "efficientnet-b3": "efficientnet_b3.ra2_in1k",
    "efficientnet-b4": "efficientnet_b4.ra2_in1k",
}
"""Architecture -> the checkpoint ``pretrained=True`` uses."""


def get_2d_weights_info(name: str) -> ImageNet2DWeights:
    """Look up a checkpoint by its name (``"resnet50.tv_in1k"``) or by architecture (``"resnet50"``: the default).

    Args:
        name: a key of :data:`IMAGENET_2D_WEIGHTS` or :data:`DEFAULT_IMAGENET_2D_WEIGHTS`.

    Returns:
        The table entry.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    key = DEFAULT_IMAGENET_2D_WEIGHTS.get(name, name)
    if key not in IMAGENET_2D_WEIGHTS:
        raise KeyError(
            f"no 2D ImageNet weights named {name!r}; known: {sorted(IMAGENET_2D_WEIGHTS)} "
            f"or architectures {sorted(DEFAULT_IMAGENET_2D_WEIGHTS)}."
        )
    return IMAGENET_2D_WEIGHTS[key]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, info: ImageNet2DWeights, check_hash: bool) -> Path:
    if check_hash and info.sha256_prefix:
        actual = _sha256(path)
        if not actual.startswith(info.sha256_prefix):
            raise WeightTransferError(
                f"{path} has sha256 {actual[:16]}..., expected a digest starting with {info.sha256_prefix} for "
                f"{info.name}: the file is not the published checkpoint (truncated or another file). Download it "
                f"again from {info.url}, or pass check_hash=False if you changed it on purpose."
            )
    return path


def find_2d_weights(
    name: str, path: str | PathLike | None = None, download: bool = False, check_hash: bool = True
) -> Path:
    """Find the file of a 2D ImageNet checkpoint on disk (or download it when asked).

    Lookup order: ``path`` (a file is used as it is; a folder must hold the table's file name), then
    ``$MONAI_EXT_WEIGHTS/<file name>``, then ``torch.hub.get_dir()/checkpoints/<file name>``.

    Args:
        name: a checkpoint name or an architecture (see :func:`get_2d_weights_info`).
        path: an explicit file or folder.
        download: when nothing is found, download the URL into torch hub's checkpoint folder.
        check_hash: verify the sha256 prefix (when known) of files found under the table's file name.

    Returns:
        The path of the checkpoint file.

    Raises:
        FileNotFoundError: nothing found and ``download`` is False; the message names the URL and where to put it.
        WeightTransferError: a file found under the table's name does not have the published hash.
    """
    info = get_2d_weights_info(name)
    if path is not None:
        explicit = Path(path)
        if explicit.is_file():
            return explicit
        if explicit.is_dir() and (explicit / info.filename).is_file():
            return _verified(explicit / info.filename, info, check_hash)
        raise FileNotFoundError(
            f"{explicit} is neither a checkpoint file nor a folder holding {info.filename} ({info.name}); "
            f"download it from {info.url}."
        )
    candidates = []
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if env_dir:
        candidates.append(Path(env_dir) / info.filename)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / info.filename
    candidates.append(hub_file)
    for candidate in candidates:
        if candidate.is_file():
            return _verified(candidate, info, check_hash)
    if download:
        hub_file.parent.mkdir(parents=True, exist_ok=True)
        logger.info(f"downloading {info.url} to {hub_file}")
        torch.hub.download_url_to_file(info.url, str(hub_file), hash_prefix=info.sha256_prefix if check_hash else None)
        return hub_file
    looked = ", ".join(str(c) for c in candidates)
    hf = f" (also on the Hugging Face hub as {info.hf_hub_id})" if info.hf_hub_id else ""
    raise FileNotFoundError(
        f"2D ImageNet weights {info.name} not found (looked at: {looked}). Download {info.url}{hf} and save it as "
        f"{hub_file}, or put it into the folder named by ${WEIGHTS_DIR_ENV}, or pass download=True on a machine "
        "with network access."
    )


def _unwrap(state: Mapping) -> dict[str, torch.Tensor]:
    """Take the state dict out of a training checkpoint and strip a ``module.`` (DataParallel) prefix."""
    for wrapper in ("state_dict", "model", "net"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def read_2d_state_dict(path: str | PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint (``.pth``/``.pt``/``.bin`` with ``torch.load(weights_only=True)``, or ``.safetensors``).

    Args:
        path: the checkpoint file.

    Returns:
        The state dict, unwrapped from ``{"state_dict": ...}``/``{"model": ...}`` and without a ``module.`` prefix.

    Raises:
        FileNotFoundError: no such file.
        ImportError: a ``.safetensors`` file without the ``safetensors`` package.
        CheckpointFileError: the file is corrupt, or ``weights_only`` loading refuses it (it pickles objects).
        WeightTransferError: the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        load_file, has_safetensors = optional_import("safetensors.torch", name="load_file")
        if not has_safetensors:
            raise ImportError(f"reading {path} needs the safetensors package: pip install safetensors.")
        return _unwrap(load_file(str(path)))
    content = load_weights_file(path)
    if not isinstance(content, Mapping):
        raise WeightTransferError(f"{path} holds a {type(content).__name__}, not a state dict {{name: tensor}}.")
    return _unwrap(content)


def load_2d_weights_into_3d(
    encoder: nn.Module,
    state_dict_2d_or_path: Mapping[str, torch.Tensor] | str | PathLike | None = None,
    mode: str = "average",
    in_channels_rule: str = "sum_rgb",
    *,
    first_conv: str | None = None,
    drop_source: tuple[str, ...] | None = None,
    download: bool = False,
) -> LoadReport:
    """Load 2D weights into an encoder of the same or a higher dimension, with the coverage report.

    This is what ``pretrained=True`` of the inflated encoders calls. Every encoder entry must receive a value: copied
    (same shape), inflated (see :func:`monai_ext.weights.inflate.inflate_conv_weight`) or, for the stem, adapted to
    the encoder's input channels; the 2D classifier is the only part of the checkpoint allowed to go unused.

    Args:
        encoder: the target network, modified in place. ``encoder.first_conv``,
            ``encoder.pretrained_head_prefixes`` and ``encoder.imagenet_weights`` are used when present (as on
            :class:`monai_ext.networks.inflated.InflatedResNetEncoder`).
        state_dict_2d_or_path: a 2D state dict, a checkpoint path, or ``None`` for ``encoder.imagenet_weights`` found
            with :func:`find_2d_weights`.
        mode: kernel rule, one of :data:`monai_ext.weights.inflate.INFLATION_MODES`.
        in_channels_rule: rule for the stem, one of :data:`monai_ext.weights.inflate.INPUT_CHANNEL_RULES`.
        first_conv: override of ``encoder.first_conv``.
        drop_source: override of ``encoder.pretrained_head_prefixes`` (source keys allowed to go unused).
        download: allow :func:`find_2d_weights` to download.

    Returns:
        The :class:`LoadReport` of the transfer.

    Raises:
        WeightTransferError: an encoder entry got no value, a checkpoint entry found no place (e.g. torchvision
            ResNet-18 weights into MONAI's resnet18 with parameter-free shortcut A), or a shape cannot map.
        FileNotFoundError: no state dict given and the default weights are not available locally.
    """
    if state_dict_2d_or_path is None:
        weights_name = getattr(encoder, "imagenet_weights", "")
        if not weights_name:
            raise ValueError(f"{type(encoder).__name__} names no default ImageNet weights; pass a state dict or path.")
        state_dict_2d_or_path = find_2d_weights(weights_name, download=download)
    if isinstance(state_dict_2d_or_path, Mapping):
        source = "the given 2D state dict"
        state_2d = _unwrap(state_dict_2d_or_path)
    else:
        source = str(state_dict_2d_or_path)
        state_2d = read_2d_state_dict(state_dict_2d_or_path)
    state, report = inflate_state_dict(
        state_2d,
        encoder,
        mode=mode,
        first_conv=first_conv if first_conv is not None else (getattr(encoder, "first_conv", None) or None),
        in_channels_rule=in_channels_rule,
        drop_source=drop_source if drop_source is not None else tuple(getattr(encoder, "pretrained_head_prefixes", ())),
        source=source,
    )
    encoder.load_state_dict(state)
    return report
