"""VDT checkpoints: load a Variable Dimension Transform pre-training into a 3D ResNet of any depth, export it.

Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform" (arXiv:2201.01426, Neurocomputing 2023; code
urmagicsmine/CSPR) pre-train a 3D ResNet on 2D natural images made depth-3 volumes, with no striding along depth, and
fine-tune the same kernels at other depths (LIDC 48^3, LiTS 32 x 256 x 256, 9-slice DeepLesion) with depth striding
on. Kernel shapes do not depend on the strides, so the transfer copies every encoder tensor as is; what a transfer must
tell is which entries were loaded, that the pre-training classifier (``fc.*``) or decoder (``decoder.*``) was dropped,
and what was adapted (the stem's input channels when the target has ``C != 1``).

Checkpoints read here: the bundle's ``models/model.pt`` (a :class:`~monai_ext.networks.vdt.VDTClassifier` or
:class:`~monai_ext.networks.vdt.VDTSegmenter` state dict: ``encoder.*`` + head), a resumable training checkpoint
(``{"network": state_dict, ...}``), ``{"state_dict": ...}`` files, ``module.``-prefixed keys (DataParallel), and bare
encoder state dicts (MedicalNet names, e.g. ``models/encoder_medicalnet.pth``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch
import torch.nn as nn

from monai_ext.networks.med3d import Med3DResNet
from monai_ext.weights.medicalnet import (
    adapt_first_conv_channels,
    export_medicalnet_checkpoint,
    infer_medicalnet_architecture,
)
from monai_ext.weights.report import LoadReport, WeightTransferError, load_weights_file, load_with_report

__all__ = [
    "VDT_ENCODER_PREFIX",
    "VDT_HEAD_PREFIXES",
    "read_vdt_state_dict",
    "split_vdt_encoder",
    "vdt_checkpoint_info",
    "load_vdt_checkpoint",
    "vdt_encoder_from_checkpoint",
    "export_vdt_encoder",
]

logger = logging.getLogger(__name__)

#: key prefix of the encoder entries in the VDT task networks.
VDT_ENCODER_PREFIX = "encoder."
#: key prefixes of the pre-training heads (classifier of VDTClassifier, decoder of VDTSegmenter).
VDT_HEAD_PREFIXES: tuple[str, ...] = ("fc.", "decoder.")
_WRAPPER_KEYS = ("network", "state_dict", "model")


def read_vdt_state_dict(
    path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str]:
    """Load a VDT checkpoint (``torch.load(weights_only=True)``), unwrap it and strip ``module.`` prefixes.

    Args:
        path_or_state_dict: a file path; a state dict; or a dict holding one under ``"network"`` (a resumable
            training checkpoint), ``"state_dict"`` or ``"model"``.

    Returns:
        the state dict and a source name for messages.

    Raises:
        FileNotFoundError: no such file (the message says which bundle output to use).
        CheckpointFileError: the file is corrupt, or ``weights_only`` loading refuses it (it pickles objects).
        WeightTransferError: the content holds no tensor state dict.
    """
    if isinstance(path_or_state_dict, Mapping):
        content: Mapping = path_or_state_dict
        source = "<state dict>"
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(
                f"VDT checkpoint {path} not found: train bundles/vdt_natural_image_pretraining and pass its "
                "models/model.pt (whole network) or models/encoder_medicalnet.pth (encoder)."
            )
        content = load_weights_file(path)
        source = str(path)
    if not isinstance(content, Mapping):
        raise WeightTransferError(
            f"{source} holds a {type(content).__name__}, not a state dict: pass the bundle's models/model.pt, a "
            "checkpoint_epoch=N.pt, or a network's state_dict()."
        )
    for key in _WRAPPER_KEYS:
        if key in content and isinstance(content[key], Mapping):
            content = content[key]
            break
    bad = [k for k, v in content.items() if not isinstance(v, torch.Tensor)]
    if bad or not content:
        raise WeightTransferError(
            f"{source} is not a VDT state dict (entries {bad[:4]} are not tensors, or it is empty): pass the bundle's "
            "models/model.pt, a checkpoint_epoch=N.pt, or a network's state_dict()."
        )
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in content.items()}
    return state, source


def split_vdt_encoder(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a VDT state dict into encoder entries (``encoder.`` stripped) and head entries (``fc.*``, ...).

    A state dict without any ``encoder.`` key is taken as a bare encoder (e.g. an exported MedicalNet-format file):
    every entry is an encoder entry except the head prefixes.
    """
    has_prefix = any(k.startswith(VDT_ENCODER_PREFIX) for k in state_dict)
    encoder, head = {}, {}
    for key, value in state_dict.items():
        if has_prefix and key.startswith(VDT_ENCODER_PREFIX):
            encoder[key[len(VDT_ENCODER_PREFIX) :]] = value
        elif not has_prefix and not key.startswith(VDT_HEAD_PREFIXES):
            encoder[key] = value
        else:
            head[key] = value
    return encoder, head


def vdt_checkpoint_info(path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> dict:
    """Describe a VDT checkpoint without building a network.

    Returns:
        ``dict(depth, shortcut, block, layers, in_channels, n_entries, num_classes, head_keys)``: the encoder's
        architecture as read from its keys (see
        :func:`~monai_ext.weights.medicalnet.infer_medicalnet_architecture`), ``num_classes`` from ``fc.weight``
        (None without a classifier) and the head keys.
    """
    state, _ = read_vdt_state_dict(path_or_state_dict)
    encoder_state, head_state = split_vdt_encoder(state)
    info = infer_medicalnet_architecture(encoder_state)
    fc = head_state.get("fc.weight")
    info.update(num_classes=int(fc.shape[0]) if fc is not None else None, head_keys=sorted(head_state))
    return info


def _target_encoder(model: nn.Module) -> tuple[Med3DResNet, str]:
    """The Med3D encoder of ``model`` and the key prefix of its entries in ``model.state_dict()``."""
    if isinstance(model, Med3DResNet):
        return model, ""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, Med3DResNet):
        return encoder, VDT_ENCODER_PREFIX
    raise TypeError(
        f"{type(model).__name__} is neither a Med3DResNet nor a network with a Med3DResNet `encoder` "
        "(VDTClassifier, VDTSegmenter, Med3DSegmenter, MultiDomainSegmenter)."
    )


def _check_encoder_fits(encoder_state: Mapping[str, torch.Tensor], encoder: Med3DResNet, source: str) -> None:
    """Raise a :class:`WeightTransferError` naming both architectures when the encoder cannot take the weights."""
    info = infer_medicalnet_architecture(encoder_state)
    if info["depth"] == encoder.depth and info["shortcut"] == encoder.shortcut_type:
        return
    found = (
        f"ResNet-{info['depth']} with shortcut {info['shortcut']}"
        if info["depth"] is not None
        else f"an unknown layout ({info['block']} blocks {info['layers']}, shortcut {info['shortcut']})"
    )
    fix = (
        f"build the target with Med3DResNet(depth={info['depth']}, shortcut_type={info['shortcut']!r}, ...)"
        if info["depth"] is not None
        else "pass a checkpoint saved from a VDTClassifier/VDTSegmenter"
    )
    raise WeightTransferError(
        f"{source} holds a VDT encoder that is a {found}, but the target is Med3DResNet(depth={encoder.depth}, "
        f"shortcut_type={encoder.shortcut_type!r}): {fix}."
    )


def load_vdt_checkpoint(
    path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor],
    model: nn.Module,
    keep_classifier: bool = False,
) -> LoadReport:
    """Load a VDT pre-training into a 3D ResNet (or a network built on one) at any depth and depth stride.

    The encoder entries are copied unchanged (a VDT network has no depth striding, the target may have it: the kernels
    have the same shape either way). The pre-training classifier ``fc.*`` and decoder ``decoder.*`` are dropped and
    listed as unused source keys, unless ``keep_classifier`` and the target has an ``fc`` of the same shape (e.g. a
    :class:`~monai_ext.networks.vdt.VDTClassifier` that continues the pre-training). A 1-channel stem is adapted to a
    target with ``C > 1`` input channels (tiled and scaled by ``1/C``, see
    :func:`~monai_ext.weights.medicalnet.adapt_first_conv_channels`) and reported as adapted. Every target entry
    outside the encoder (a new head) is reported as initialised.

    Args:
        path_or_state_dict: a checkpoint path or state dict (see :func:`read_vdt_state_dict`).
        model: a :class:`~monai_ext.networks.med3d.Med3DResNet` or a network whose ``encoder`` is one; modified in
            place.
        keep_classifier: also load ``fc.*`` when the target's classifier has the same shape.

    Returns:
        the :class:`~monai_ext.weights.report.LoadReport` (keys as in ``model.state_dict()``).

    Raises:
        FileNotFoundError: no such file.
        WeightTransferError: the checkpoint's encoder is another depth or shortcut type (the message names both), its
            stem has several channels that do not match the target, or nothing matched.
        TypeError: ``model`` has no Med3D encoder.
    """
    state, source = read_vdt_state_dict(path_or_state_dict)
    encoder_state, head_state = split_vdt_encoder(state)
    encoder, prefix = _target_encoder(model)
    _check_encoder_fits(encoder_state, encoder, source)

    adapted: dict[str, str] = {}
    stem = encoder_state.get("conv1.weight")
    if stem is not None and stem.shape[1] != encoder.in_channels:
        if stem.shape[1] != 1:
            raise WeightTransferError(
                f"{source}: conv1.weight has {stem.shape[1]} input channels and the target {encoder.in_channels}; only "
                "a 1-channel stem (the VDT default) can be adapted. Build the target with "
                f"in_channels={stem.shape[1]}."
            )
        encoder_state["conv1.weight"] = adapt_first_conv_channels(stem, encoder.in_channels)
        adapted[prefix + "conv1.weight"] = (
            f"input channels 1->{encoder.in_channels}: tiled and scaled by 1/{encoder.in_channels}"
        )

    source_state = {prefix + k: v for k, v in encoder_state.items()}
    target_keys = model.state_dict()
    kept_head = []
    if keep_classifier and prefix:
        for key, value in head_state.items():
            if key.startswith("fc.") and key in target_keys and tuple(target_keys[key].shape) == tuple(value.shape):
                source_state[key] = value
                kept_head.append(key)
        if not kept_head:
            logger.warning("%s: keep_classifier=True but the target has no fc of that shape; fc is dropped.", source)
    head_only = sorted(k for k in head_state if k not in kept_head)
    source_state.update({k: head_state[k] for k in head_only})  # reported as unused (dropped) source keys
    # every target part outside the encoder (a new classifier, decoder or head) keeps its initial values
    new_parts = {k.split(".", 1)[0] + "." for k in target_keys if prefix and not k.startswith(prefix)}
    initialise = tuple(sorted(new_parts - ({"fc."} if kept_head else set())))
    if encoder.stride_depth:
        logger.info(
            "%s: the target encoder strides along depth; the VDT kernels are reused unchanged at the new stride.",
            source,
        )
    for key, rule in adapted.items():
        logger.info("%s: %s %s", source, key, rule)
    report = load_with_report(
        model,
        source_state,
        source=source,
        initialise=initialise,
        drop=VDT_HEAD_PREFIXES,
    )
    for key, rule in adapted.items():
        if key in report.loaded:
            report.loaded.remove(key)
            report.adapted[key] = rule
    return report


def vdt_encoder_from_checkpoint(path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor]) -> Med3DResNet:
    """Build the Med3D encoder a VDT checkpoint holds (depth, shortcut and input channels from its keys) and load it.

    The encoder is built with ``dilated=False`` and ``stride_depth=False`` (the VDT pre-training layout); strides
    carry no weights, so the same weights serve any layout.

    Raises:
        WeightTransferError: the encoder entries do not describe a known ResNet depth.
    """
    state, source = read_vdt_state_dict(path_or_state_dict)
    encoder_state, _ = split_vdt_encoder(state)
    info = infer_medicalnet_architecture(encoder_state)
    if info["depth"] is None or info["in_channels"] is None:
        raise WeightTransferError(
            f"{source} has no encoder of a known ResNet depth ({info['block']} blocks {info['layers']}): pass the "
            "bundle's models/model.pt or a VDTClassifier/VDTSegmenter state_dict()."
        )
    encoder = Med3DResNet(
        depth=info["depth"],
        in_channels=info["in_channels"],
        shortcut_type=info["shortcut"],
        dilated=False,
        stride_depth=False,
    )
    load_with_report(encoder, encoder_state, source=source)
    return encoder


def export_vdt_encoder(
    model_or_checkpoint: nn.Module | str | PathLike | Mapping[str, torch.Tensor], path: str | PathLike
) -> Path:
    """Write the encoder of a VDT network or checkpoint in MedicalNet's format, for the Med3D fine-tuning path.

    The file is ``{"state_dict": {"module.<key>": tensor}}`` with the encoder entries only, as the published
    ``resnet_<depth>.pth`` (see :func:`~monai_ext.weights.medicalnet.export_medicalnet_checkpoint`), so
    :func:`~monai_ext.weights.medicalnet.load_medicalnet_checkpoint` and MONAI's ``resnet<depth>`` take it.

    Args:
        model_or_checkpoint: a VDT network (or its Med3D encoder), or a checkpoint path / state dict.
        path: output file.

    Returns:
        the path written.
    """
    if isinstance(model_or_checkpoint, nn.Module):
        encoder, _ = _target_encoder(model_or_checkpoint)
    else:
        encoder = vdt_encoder_from_checkpoint(model_or_checkpoint)
    return export_medicalnet_checkpoint(encoder, path)
