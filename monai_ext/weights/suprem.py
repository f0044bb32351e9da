"""Load and write SuPreM checkpoints.

SuPreM (Li, Zhou et al., ICLR 2024, arXiv:2501.11253; weights from MrGiovanni/SuPreM) releases files
``{"net": state_dict, "optimizer": ..., "scheduler": ..., "epoch": ...}``. Swin UNETR and U-Net keys are prefixed
``module.backbone.`` and come with the pre-training heads of the CLIP-Driven Universal Model (``module.precls_conv.*``,
``module.GAP.*``, ``module.controller.*``, ``module.text_to_vision.*``, ``module.organ_embedding``); SegResNet keys
are prefixed ``module.``. A fine-tuning load strips the prefix, drops the heads, re-initialises the final 1x1
convolution and copies every other tensor, which must all be there with the right shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from monai_ext.data.abdomenatlas_classes import SUPREM_CLASSES_32
from monai_ext.networks.suprem_backbones import SUPREM_BACKBONES, SUPREM_HEAD_KEYS
from monai_ext.transforms.abdomenatlas import class_order_map
from monai_ext.weights.report import LoadReport, WeightTransferError, load_weights_file, load_with_report

__all__ = [
    "SUPREM_CHECKPOINT_PREFIXES",
    "SUPREM_PRETRAINING_HEADS",
    "read_suprem_checkpoint",
    "detect_suprem_backbone",
    "strip_suprem_prefixes",
    "load_suprem_checkpoint",
    "export_suprem_checkpoint",
    "export_monai_state_dict",
]

logger = logging.getLogger(__name__)

SUPREM_CHECKPOINT_PREFIXES: dict[str, str] = {
    "unet": "module.backbone.",
    "swinunetr": "module.backbone.",
    "segresnet": "module.",
}
"""Key prefix of the backbone's tensors in the released files."""

SUPREM_PRETRAINING_HEADS: tuple[str, ...] = ("precls_conv", "GAP", "controller", "text_to_vision", "organ_embedding")
"""Top-level modules of the Universal Model's pre-training heads (dropped when fine-tuning)."""

# A key that only the given backbone has (checked on prefix-free keys).
_SIGNATURE_KEYS: dict[str, str] = {
    "unet": "down_tr64.ops.0.conv1.weight",
    "segresnet": "convInit.conv.weight",
    "swinunetr": "swinViT.patch_embed.proj.weight",
}
_OTHER_ARCHITECTURES: dict[str, str] = {
    "layer1.0.conv1.weight": "a 3D ResNet encoder (Med3D/MedicalNet-style)",
    "conv1.weight": "a ResNet-style encoder",
}


def _normalise_name(backbone: str) -> str:
    key = backbone.lower().replace("_", "")
    if key not in SUPREM_BACKBONES:
        raise ValueError(f"unknown SuPreM backbone {backbone!r}; choose one of {', '.join(SUPREM_BACKBONES)}.")
    return key


def read_suprem_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its network state dict (``["net"]``, ``["state_dict"]`` or the file itself).

    Args:
        path: the ``.pth`` file.
        allow_pickle: if the file cannot be read with ``torch.load(weights_only=True)`` (it pickles objects other
            than tensors and plain containers), unpickle it in full. Only for files from a trusted source:
            unpickling can run arbitrary code.

    Returns:
        the state dict, keys as stored.

    Raises:
        FileNotFoundError: no such file.
        CheckpointFileError: the file is corrupt, or it holds non-tensor objects and ``allow_pickle`` is False.
        WeightTransferError: no state dict was found in it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; download the SuPreM weights or correct the path.")
    hint = (
        ", or pass allow_pickle=True (load_pretrained(..., allow_pickle=True)), which unpickles everything and can "
        "run code"
    )
    checkpoint = load_weights_file(path, allow_pickle=allow_pickle, pickle_hint=hint)
    return _unwrap(checkpoint, str(path))


def _unwrap(checkpoint: Mapping, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint dictionary."""
    if not isinstance(checkpoint, Mapping):
        raise WeightTransferError(f"{source} holds a {type(checkpoint).__name__}, not a checkpoint dictionary.")
    for wrapper in ("net", "state_dict", "model"):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], Mapping):
            checkpoint = checkpoint[wrapper]
            break
    state_dict = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise WeightTransferError(
            f"{source} holds no tensors under 'net', 'state_dict' or at its top level (keys: {list(checkpoint)[:8]})."
        )
    return state_dict


def strip_suprem_prefixes(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove the DDP (``module.``) and Universal Model (``backbone.``) prefixes and set the heads apart.

    Args:
        state_dict: keys as stored in a SuPreM file (or already plain: then nothing changes).

    Returns:
        ``(backbone state dict with plain keys, original names of the dropped pre-training-head keys)``.
    """
    backbone, heads = {}, []
    has_backbone_wrapper = any(k.removeprefix("module.").startswith("backbone.") for k in state_dict)
    for key, value in state_dict.items():
        plain = key.removeprefix("module.")
        if has_backbone_wrapper:
            if plain.startswith("backbone."):
                backbone[plain.removeprefix("backbone.")] = value
                continue
            if plain.split(".")[0] in SUPREM_PRETRAINING_HEADS:
                heads.append(key)
                continue
        backbone[plain] = value
    return backbone, heads


def detect_suprem_backbone(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the SuPreM backbone whose weights ``state_dict`` (plain keys) holds, or None."""
    for name, key in _SIGNATURE_KEYS.items():
        if key in state_dict:
            return name
    return None


def _describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short description of an unrecognised state dict for error messages."""
    for key, what in _OTHER_ARCHITECTURES.items():
        if key in state_dict:
            return f"{what} (key '{key}')"
    return f"an unknown network (first keys: {', '.join(list(state_dict)[:4])})"


def _remapped_head(
    model_state: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    head: str,
    head_classes: Sequence[str],
    checkpoint_classes: Sequence[str],
    source: str,
) -> dict[str, torch.Tensor]:
    """The checkpoint's final convolution with its rows moved to ``head_classes`` (absent classes keep the model's)."""
    index = class_order_map(checkpoint_classes, head_classes, allow_missing=True)
    remapped = {}
    for suffix in ("weight", "bias"):
        key = f"{head}.{suffix}"
        if key not in model_state:
            continue
        if key not in state_dict:
            raise WeightTransferError(
                f"{source} has no '{key}' (the released U-Net has no final convolution): the head cannot be reused; "
                "leave head_classes=None to train a new one."
            )
        if state_dict[key].shape[0] != len(checkpoint_classes):
            raise WeightTransferError(
                f"'{key}' of {source} has {state_dict[key].shape[0]} output channels but checkpoint_classes lists "
                f"{len(checkpoint_classes)} classes; pass the class order the checkpoint was trained with."
            )
        if model_state[key].shape[0] != len(head_classes):
            raise WeightTransferError(
                f"the network's '{key}' has {model_state[key].shape[0]} output channels but head_classes lists "
                f"{len(head_classes)}; build the network with out_channels=len(head_classes)."
            )
        rows = model_state[key].clone()
        for target_row, source_row in enumerate(index):
            if source_row >= 0:
                rows[target_row] = state_dict[key][source_row]
        remapped[key] = rows
    return remapped


def load_suprem_checkpoint(
    path_or_sd: str | Path | Mapping,
    model: nn.Module,
    backbone: str,
    head_classes: Sequence[str] | None = None,
    checkpoint_classes: Sequence[str] = SUPREM_CLASSES_32,
    strict: bool = True,
    allow_pickle: bool = False,
) -> LoadReport:
    """Load SuPreM weights into a backbone built by :func:`~monai_ext.networks.suprem_backbones.suprem_backbone`.

    Every tensor except the final 1x1 convolution (:data:`SUPREM_HEAD_KEYS`) is copied and must exist with the same
    shape; the final convolution is re-initialised (``reset_parameters``) and reported as initialised; the
    pre-training heads and the checkpoint's own final convolution are reported as unused. With ``head_classes``
    the checkpoint's final convolution is kept instead, its rows moved from ``checkpoint_classes`` to
    ``head_classes`` (rows of classes the checkpoint lacks keep fresh values; reported as adapted).

    Args:
        path_or_sd: a checkpoint file, a checkpoint dictionary (``{"net": ...}``) or a state dict; keys with or
            without the ``module.``/``module.backbone.`` prefixes.
        model: the target network, modified in place.
        backbone: "unet", "segresnet" or "swinunetr"; the checkpoint must hold that backbone.
        head_classes: reuse the checkpoint's final convolution for these classes (None: new head).
        checkpoint_classes: class order of the checkpoint's final convolution (SuPreM's 32 classes).
        strict: refuse checkpoint tensors that belong to neither the network nor the known heads.
        allow_pickle: see :func:`read_suprem_checkpoint`.

    Returns:
        the :class:`~monai_ext.weights.report.LoadReport` (also logged).

    Raises:
        WeightTransferError: the checkpoint holds another backbone or architecture, a tensor is missing or has
            another shape (e.g. a different ``feature_size``), unknown extra tensors with ``strict``, or a head
            that cannot be reused.
        ValueError: unknown ``backbone``.
    """
    backbone = _normalise_name(backbone)
    if isinstance(path_or_sd, (str, Path)):
        source, raw = str(path_or_sd), read_suprem_checkpoint(path_or_sd, allow_pickle=allow_pickle)
    else:
        source, raw = "<checkpoint dict>", _unwrap(path_or_sd, "the checkpoint dictionary")
    state_dict, dropped_heads = strip_suprem_prefixes(raw)

    found = detect_suprem_backbone(state_dict)
    if found is None:
        raise WeightTransferError(
            f"{source} does not look like a SuPreM checkpoint: it holds {_describe(state_dict)}, not a "
            f"{backbone} (expected a key '{_SIGNATURE_KEYS[backbone]}' under '{SUPREM_CHECKPOINT_PREFIXES[backbone]}')."
        )
    if found != backbone:
        raise WeightTransferError(
            f"{source} holds a SuPreM {found} checkpoint (key '{_SIGNATURE_KEYS[found]}'), but backbone='{backbone}' "
            f"was requested; build the network with suprem_backbone('{found}', ...) or choose the {backbone} file."
        )

    head = SUPREM_HEAD_KEYS[backbone]
    model_state = model.state_dict()
    if strict:
        unknown = [k for k in state_dict if k not in model_state and not k.startswith(head + ".")]
        if unknown:
            raise WeightTransferError(
                f"{source} has {len(unknown)} tensors the {backbone} network lacks (e.g. {', '.join(unknown[:4])}): "
                "the architecture differs (constructor arguments, MONAI version). Pass strict=False to ignore them."
            )

    try:
        head_module = model.get_submodule(head)
    except AttributeError as error:
        raise WeightTransferError(
            f"{type(model).__name__} has no final convolution '{head}': is it the {backbone} built by "
            "suprem_backbone (not wrapped in another module)?"
        ) from error
    if not hasattr(head_module, "reset_parameters"):
        raise WeightTransferError(f"'{head}' of {type(model).__name__} is not a layer with parameters to reset.")
    if head_classes is not None:  # validate before anything is modified
        _remapped_head(model_state, state_dict, head, head_classes, checkpoint_classes, source)

    # the dropped heads keep their stored names so that the report lists them as unused
    source_tensors = {**state_dict, **{k: raw[k] for k in dropped_heads}}
    report = load_with_report(
        model, source_tensors, source=source, initialise=(head + ".",), drop=tuple(dropped_heads), allow_unexpected=not strict
    )
    head_module.reset_parameters()
    if head_classes is not None:
        reused = _remapped_head(model.state_dict(), state_dict, head, head_classes, checkpoint_classes, source)
        model.load_state_dict(reused, strict=False)
        for key in reused:
            report.initialised.remove(key)
            report.unexpected.remove(key)
            report.adapted[key] = f"final conv remapped from the checkpoint's {len(checkpoint_classes)}-class order"
        report.log()
    return report


def _tensor_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def export_suprem_checkpoint(
    model: nn.Module,
    backbone: str,
    path: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    epoch: int = 0,
) -> Path:
    """Write ``model`` in the format of the released SuPreM files (readable by the reference code and by
    :func:`load_suprem_checkpoint`).

    Args:
        model: a backbone built by :func:`~monai_ext.networks.suprem_backbones.suprem_backbone`.
        backbone: its name; sets the key prefix (:data:`SUPREM_CHECKPOINT_PREFIXES`).
        path: the output file (parent folders are created).
        optimizer: stored as ``"optimizer"`` (its state dict) when given, else an empty dict.
        scheduler: stored as ``"scheduler"`` (its state dict) when given, else an empty dict.
        epoch: stored as ``"epoch"``.

    Returns:
        the path written.

    Raises:
        ValueError: unknown ``backbone``.
    """
    prefix = SUPREM_CHECKPOINT_PREFIXES[_normalise_name(backbone)]
    checkpoint = {
        "net": {prefix + k: v for k, v in _tensor_state(model).items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "epoch": int(epoch),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def export_monai_state_dict(model: nn.Module, path: str | Path) -> Path:
    """Write the plain state dict of ``model`` (tensors only; loads with ``torch.load(weights_only=True)`` and
    ``model.load_state_dict``), e.g. a bundle's ``models/model.pt``.

    Args:
        model: any network.
        path: the output file (parent folders are created).

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_tensor_state(model), path)
    return path
