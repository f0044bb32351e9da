"""MedicalNet checkpoint interop: read, check and load the published Med3D weights; export and convert them.

The published files (Tencent/MedicalNet, MIT licence; Chen, Ma, Zheng 2019, arXiv:1904.00625) are
``{"state_dict": OrderedDict}`` with every key prefixed ``module.`` and only the encoder inside (``conv1``, ``bn1``,
``layer1..4``, BatchNorm buffers included): ``resnet_{10,18,34,50,101,152,200}.pth`` (pre-trained on 3DSeg-8) and
``resnet_{10,18,34,50}_23dataset.pth`` (pre-trained on 23 datasets). MedicalNet's own loader copies only the keys
that match, so a file whose prefix was not stripped leaves the network silently random; the loader here unwraps,
strips, drops head keys, checks the architecture and loads strictly, returning a
:class:`~monai_ext.weights.report.LoadReport`.

Nothing is downloaded at run time: :data:`MEDICALNET_WEIGHTS` records where each file is published, and the error
messages say which file to fetch and from where.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch
import torch.nn as nn

from monai_ext.networks.med3d import MED3D_ARCHITECTURES, Med3DResNet
from monai_ext.weights.report import LoadReport, WeightTransferError, load_weights_file

__all__ = [
    "MEDICALNET_ENTRY_COUNTS",
    "MEDICALNET_HEAD_PREFIXES",
    "MEDICALNET_SOURCES",
    "MEDICALNET_WEIGHTS",
    "MedicalNetWeights",
    "medicalnet_download_hint",
    "read_medicalnet_state_dict",
    "strip_module_prefix",
    "split_head_entries",
    "infer_medicalnet_architecture",
    "adapt_first_conv_channels",
    "medicalnet_checkpoint_info",
    "load_medicalnet_checkpoint",
    "export_medicalnet_checkpoint",
    "to_monai_resnet_state_dict",
    "load_into_monai_resnet",
]

logger = logging.getLogger(__name__)

#: state-dict length of the published encoder checkpoints, per depth.
MEDICALNET_ENTRY_COUNTS: dict[int, int] = {10: 72, 18: 102, 34: 198, 50: 318, 101: 624, 152: 930, 200: 1218}

#: key prefixes of task heads that are never part of an encoder (MedicalNet's ``conv_seg``, classifiers' ``fc``).
MEDICALNET_HEAD_PREFIXES: tuple[str, ...] = ("conv_seg.", "fc.")

#: where the published files can be downloaded by hand.
MEDICALNET_SOURCES: dict[str, str] = {
    "github": "https://github.com/Tencent/MedicalNet (README: 'data & pre-trained models' on Google Drive or "
    "Tencent Weiyun)",
    "google_drive": "https://drive.google.com/file/d/1GvuvccLevWm4Lj8GTsKqLumjokoCA5Tw/view "
    "(MedicalNet_pytorch_files.zip, folder pretrain/)",
    "huggingface": "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{depth}",
}


@dataclass(frozen=True)
class MedicalNetWeights:
    """One published MedicalNet checkpoint.

    Attributes:
        depth: ResNet depth.
        variant: "3dseg8" (pre-trained on the 8 datasets of 3DSeg-8) or "23dataset" (23 datasets).
        filename: the published file name.
        hf_repo_id: the Hugging Face repository that hosts the depth's weights.
        shortcut_type: shortcut type the file needs ("A" for 18/34, "B" otherwise).
        n_entries: number of state-dict entries in the file.
    """

    depth: int
    variant: str
    filename: str
    hf_repo_id: str
    shortcut_type: str
    n_entries: int

    @property
    def hf_url(self) -> str:
        """Web page of the Hugging Face repository."""
        return f"https://huggingface.co/{self.hf_repo_id}"


def _published_entry(depth: int, variant: str) -> MedicalNetWeights:
    suffix = "_23dataset" if variant == "23dataset" else ""
    return MedicalNetWeights(
        depth=depth,
        variant=variant,
        filename=f"resnet_{depth}{suffix}.pth",
        hf_repo_id=f"TencentMedicalNet/MedicalNet-Resnet{depth}",
        shortcut_type=MED3D_ARCHITECTURES[depth][2],
        n_entries=MEDICALNET_ENTRY_COUNTS[depth],
    )


#: (depth, variant) -> published file; variants "3dseg8" (all depths) and "23dataset" (10, 18, 34, 50).
MEDICALNET_WEIGHTS: dict[tuple[int, str], MedicalNetWeights] = {
    **{(d, "3dseg8"): _published_entry(d, "3dseg8") for d in MEDICALNET_ENTRY_COUNTS},
    **{(d, "23dataset"): _published_entry(d, "23dataset") for d in (10, 18, 34, 50)},
}


def medicalnet_download_hint(depth: int) -> str:
    """A sentence naming the published files of ``depth`` and where to download them."""
    files = [w for (d, _), w in MEDICALNET_WEIGHTS.items() if d == depth]
    if not files:
        return f"MedicalNet published no ResNet-{depth}; depths are {sorted(MEDICALNET_ENTRY_COUNTS)}."
    names = " or ".join(w.filename for w in files)
    return (
        f"download {names} from {files[0].hf_url} (or from the Google Drive / Tencent Weiyun links of "
        f"{MEDICALNET_SOURCES['github'].split(' ')[0]}) and pass its path."
    )


def read_medicalnet_state_dict(
    path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str]:
    """Load a checkpoint (``torch.load(weights_only=True)``) and unwrap its ``"state_dict"``.

    Args:
        path_or_state_dict: a file path, a ``{"state_dict": ...}`` dict, or a state dict.

    Returns:
        the state dict (keys untouched) and a source name for messages.

    Raises:
        FileNotFoundError: the file does not exist (the message says where to download the published files).
        CheckpointFileError: the file is corrupt, or ``weights_only`` loading refuses it (it pickles objects).
        WeightTransferError: the content is not a state dict of tensors.
    """
    if isinstance(path_or_state_dict, Mapping):
        content, source = path_or_state_dict, "<state dict>"
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            match = re.search(r"resnet_(\d+)", path.name)
            hint = medicalnet_download_hint(int(match.group(1))) if match else (
                f"download a MedicalNet file resnet_<depth>.pth from {MEDICALNET_SOURCES['huggingface']} "
                "and pass its path."
            )
            raise FileNotFoundError(f"MedicalNet checkpoint {path} not found: {hint}")
        content, source = load_weights_file(path), str(path)
    if not isinstance(content, Mapping):
        raise WeightTransferError(
            f"{source} holds a {type(content).__name__}, not a state dict: pass the file resnet_<depth>.pth, its "
            "'state_dict', or a model's state_dict()."
        )
    for wrapper in ("state_dict", "net", "model"):  # MedicalNet's wrapper; "net"/"model": another family's file
        if wrapper in content and isinstance(content[wrapper], Mapping):
            content = content[wrapper]
            break
    bad = [k for k, v in content.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightTransferError(
            f"{source} is not a MedicalNet state dict: entries {bad[:4]} are not tensors. Pass the file "
            "resnet_<depth>.pth, its 'state_dict', or a model's state_dict()."
        )
    return dict(content), source


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the leading ``module.`` that ``nn.DataParallel`` added to every key of the published files."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def split_head_entries(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split un-prefixed entries into (encoder, head): head keys start with ``MEDICALNET_HEAD_PREFIXES``."""
    encoder, head = {}, {}
    for key, value in state_dict.items():
        (head if key.startswith(MEDICALNET_HEAD_PREFIXES) else encoder)[key] = value
    return encoder, head


def infer_medicalnet_architecture(encoder_state: Mapping[str, torch.Tensor]) -> dict:
    """Read the architecture of un-prefixed encoder entries from their keys.

    The block type comes from ``conv3`` keys (bottleneck), the blocks per stage from the ``layerX.Y.`` indices,
    the shortcut from ``downsample`` keys (B) or their absence (A); the depth is the one of
    ``MED3D_ARCHITECTURES`` with that block type and block counts, else the one with the same entry count.

    Returns:
        ``dict(depth, shortcut, block, layers, n_entries, in_channels)``; ``depth`` is None when nothing matches.
    """
    block = "bottleneck" if any(".conv3." in k for k in encoder_state) else "basic"
    layers = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for k in encoder_state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        layers.append(max(indices) + 1 if indices else 0)
    shortcut = "B" if any(".downsample." in k for k in encoder_state) else "A"
    depth = next((d for d, (b, ls, _) in MED3D_ARCHITECTURES.items() if b == block and list(ls) == layers), None)
    if depth is None:
        depth = next((d for d, n in MEDICALNET_ENTRY_COUNTS.items() if n == len(encoder_state)), None)
    conv1 = encoder_state.get("conv1.weight")
    return {
        "depth": depth,
        "shortcut": shortcut,
        "block": block,
        "layers": tuple(layers),
        "n_entries": len(encoder_state),
        "in_channels": int(conv1.shape[1]) if conv1 is not None else None,
    }


def adapt_first_conv_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a single-channel first-conv weight to ``in_channels`` by tiling it and scaling by ``1 / in_channels``.

    A grey image replicated on the ``in_channels`` inputs then gives exactly the pre-trained response.

    Raises:
        WeightTransferError: the source weight has more than one input channel.
    """
    if weight.shape[1] == in_channels:
        return weight
    if weight.shape[1] != 1:
        raise WeightTransferError(
            f"conv1.weight has {weight.shape[1]} input channels; only a 1-channel MedicalNet stem can be adapted to "
            f"{in_channels} channels. Build the encoder with in_channels={weight.shape[1]}."
        )
    return weight.repeat(1, in_channels, *([1] * (weight.dim() - 2))) / in_channels


def _describe(info: dict) -> str:
    if info["depth"] is None:
        return f"an unknown layout ({info['block']} blocks {info['layers']}, shortcut {info['shortcut']})"
    published = MEDICALNET_WEIGHTS.get((info["depth"], "3dseg8"))
    layout = (
        "a published layout"
        if published and published.shortcut_type == info["shortcut"] and published.n_entries == info["n_entries"]
        else "not a published layout"
    )
    return f"ResNet-{info['depth']} with shortcut {info['shortcut']} ({info['n_entries']} encoder entries, {layout})"


def medicalnet_checkpoint_info(path_or_sd: str | PathLike | Mapping[str, torch.Tensor]) -> dict:
    """Describe a MedicalNet checkpoint without building a network.

    Args:
        path_or_sd: a file path, a ``{"state_dict": ...}`` dict, or a state dict (``module.`` prefix optional).

    Returns:
        ``dict(depth, shortcut, n_entries, variant_hint, block, layers, in_channels, module_prefix, head_keys)``:
        ``n_entries`` counts encoder entries (head keys excluded), ``variant_hint`` says which published file it
        can be ("3dseg8", "23dataset", "3dseg8 or 23dataset" when the name does not tell, or "not published").
    """
    raw, source = read_medicalnet_state_dict(path_or_sd)
    encoder_state, head_state = split_head_entries(strip_module_prefix(raw))
    info = infer_medicalnet_architecture(encoder_state)
    published = MEDICALNET_WEIGHTS.get((info["depth"], "3dseg8"))
    if (
        published is None
        or published.shortcut_type != info["shortcut"]
        or published.n_entries != info["n_entries"]
        or info["in_channels"] != 1
    ):
        hint = "not published"
    elif "23dataset" in Path(source).name:
        hint = "23dataset"
    elif re.fullmatch(rf"resnet_{info['depth']}\.pth", Path(source).name) or (info["depth"], "23dataset") not in (
        MEDICALNET_WEIGHTS
    ):
        hint = "3dseg8"
    else:
        hint = "3dseg8 or 23dataset"
    info.update(
        variant_hint=hint,
        module_prefix=bool(raw) and all(k.startswith("module.") for k in raw),
        head_keys=sorted(head_state),
    )
    return info


def _find_encoder(model: nn.Module) -> tuple[Med3DResNet, str]:
    """The Med3D encoder of ``model`` and the key prefix of its entries in ``model.state_dict()``."""
    if isinstance(model, Med3DResNet):
        return model, ""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, Med3DResNet):
        return encoder, "encoder."
    raise TypeError(
        f"{type(model).__name__} is neither a Med3DResNet nor a network with a Med3DResNet `encoder` attribute "
        "(Med3DSegmenter, MultiDomainSegmenter)."
    )


def _stem_is_adaptable(weight: torch.Tensor, encoder: Med3DResNet) -> bool:
    """True when a 1-channel stem weight differs from the encoder's stem only by its input channels."""
    expected = tuple(encoder.conv1.weight.shape)
    return weight.shape[1] == 1 and expected[1] != 1 and (weight.shape[0], *weight.shape[2:]) == (
        expected[0],
        *expected[2:],
    )


def _other_family(encoder_state: Mapping[str, torch.Tensor]) -> str | None:
    """What a state dict that is no ResNet encoder holds, when another loader of this package reads it."""
    from monai_ext.weights.suprem import detect_suprem_backbone, strip_suprem_prefixes

    backbone = detect_suprem_backbone(strip_suprem_prefixes(encoder_state)[0])
    if backbone is None:
        return None
    return (
        f"a SuPreM {backbone} checkpoint, not a MedicalNet ResNet encoder: load it into a network built with "
        f"architecture 'suprem-{backbone}' (load_pretrained(network, 'suprem-{backbone}', path) or "
        "monai_ext.weights.suprem.load_suprem_checkpoint), or pass a MedicalNet file resnet_<depth>.pth"
    )


def _check_architecture(
    encoder_state: Mapping[str, torch.Tensor], encoder: Med3DResNet, source: str, strict: bool
) -> None:
    """Raise (strict) or warn when the checkpoint's encoder is not the model's architecture."""
    target = encoder.state_dict()
    missing = sorted(set(target) - set(encoder_state))
    unexpected = sorted(set(encoder_state) - set(target))
    adaptable_stem = "conv1.weight" in encoder_state and _stem_is_adaptable(encoder_state["conv1.weight"], encoder)
    wrong_shape = [
        k
        for k in set(target) & set(encoder_state)
        if tuple(target[k].shape) != tuple(encoder_state[k].shape) and not (k == "conv1.weight" and adaptable_stem)
    ]
    if not (missing or unexpected or wrong_shape):
        return
    info = infer_medicalnet_architecture(encoder_state)
    model_desc = (
        f"Med3DResNet(depth={encoder.depth}, shortcut_type={encoder.shortcut_type!r}) with {len(target)} entries"
    )
    fix = (
        f"build the model with med3d_resnet({info['depth']}, shortcut_type={info['shortcut']!r}) or "
        f"{medicalnet_download_hint(encoder.depth)}"
        if info["depth"] is not None
        else medicalnet_download_hint(encoder.depth)
    )
    details = "; ".join(
        f"{label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} ({len(keys)})"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", sorted(wrong_shape)))
        if keys
    )
    other = _other_family(encoder_state) if info["depth"] is None else None
    if other is not None:
        message = f"{source} holds {other} (the model is a {model_desc}; {details})"
    elif info["depth"] is None:
        message = (
            f"{source} holds no MedicalNet ResNet encoder ({_describe(info)}; the model is a {model_desc}): {fix} "
            f"({details})"
        )
    else:
        message = (
            f"{source} looks like a MedicalNet {_describe(info)}, but the model is a {model_desc}: {fix} ({details})"
        )
    if strict:
        raise WeightTransferError(message)
    logger.warning(message)


def load_medicalnet_checkpoint(
    path_or_state_dict: str | PathLike | Mapping[str, torch.Tensor],
    model_or_encoder: nn.Module,
    strict: bool = True,
) -> LoadReport:
    """Load published MedicalNet encoder weights into a Med3D encoder or a network built on one.

    Accepts ``{"state_dict": ...}`` files with or without the ``module.`` prefix (3DSeg-8 ``resnet_<d>.pth`` and
    ``resnet_<d>_23dataset.pth``), bare state dicts and in-memory dicts. Head keys (``conv_seg.*``, ``fc.*``) are
    dropped and reported as unused. For a ``Med3DSegmenter`` / ``MultiDomainSegmenter`` the weights go into its
    ``encoder`` and every other entry (the heads) is reported as initialised (declared new). A 1-channel stem is
    adapted to an ``in_channels > 1`` encoder by :func:`adapt_first_conv_channels` and reported as adapted.

    Args:
        path_or_state_dict: a file path, a loaded checkpoint or a state dict.
        model_or_encoder: a :class:`~monai_ext.networks.med3d.Med3DResNet` or a module whose ``encoder`` is one;
            modified in place.
        strict: require the checkpoint's encoder to be exactly the model's (same depth, shortcut, keys and shapes).
            With False, a different layout only warns, the matching entries are copied and the rest is reported
            as missing (still an error when nothing matches).

    Returns:
        the :class:`~monai_ext.weights.report.LoadReport` (keys as in ``model_or_encoder.state_dict()``).

    Raises:
        FileNotFoundError: no such file (the message says where to download it).
        WeightTransferError: another depth or shortcut type (the message names both), shape mismatches, or nothing
            matched.
        TypeError: the model has no Med3D encoder.
    """
    raw, source = read_medicalnet_state_dict(path_or_state_dict)
    encoder, prefix = _find_encoder(model_or_encoder)
    encoder_state, head_state = split_head_entries(strip_module_prefix(raw))
    if head_state:
        logger.info("%s: dropped %d head entries (%s)", source, len(head_state), ", ".join(MEDICALNET_HEAD_PREFIXES))
    _check_architecture(encoder_state, encoder, source, strict)

    adapted: dict[str, str] = {}
    stem = encoder_state.get("conv1.weight")
    if stem is not None and _stem_is_adaptable(stem, encoder):
        encoder_state["conv1.weight"] = adapt_first_conv_channels(stem, encoder.in_channels)
        n = encoder.in_channels
        adapted["conv1.weight"] = f"input channels 1->{n}: tiled and scaled by 1/{n}"

    report = LoadReport(source=source)
    target = model_or_encoder.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    for key, value in target.items():
        if not key.startswith(prefix):
            report.initialised.append(key)
            continue
        name = key[len(prefix) :]
        if name not in encoder_state:
            report.missing.append(key)
            continue
        source_value = encoder_state[name]
        if tuple(source_value.shape) != tuple(value.shape):
            report.shape_mismatch[key] = (tuple(source_value.shape), tuple(value.shape))
            report.missing.append(key)
            continue
        new_state[key] = source_value
        if name in adapted:
            report.adapted[key] = adapted[name]
        else:
            report.loaded.append(key)
    encoder_keys = {k[len(prefix) :] for k in target if k.startswith(prefix)}
    report.unexpected = sorted(head_state) + sorted(k for k in encoder_state if k not in encoder_keys)
    report.check(allow_missing=not strict)
    model_or_encoder.load_state_dict(new_state, strict=False)
    return report.log()


def export_medicalnet_checkpoint(encoder: nn.Module, path: str | PathLike) -> Path:
    """Write an encoder in the published MedicalNet format, ``{"state_dict": {"module." + key: tensor}}``.

    Args:
        encoder: a :class:`~monai_ext.networks.med3d.Med3DResNet` or a network with one as ``encoder`` (only the
            encoder is written, so the file has the published entry count).
        path: output file.

    Returns:
        the path written. The file holds CPU tensors only and loads with ``torch.load(weights_only=True)``.
    """
    encoder, _ = _find_encoder(encoder)
    state = OrderedDict((f"module.{k}", v.detach().cpu().clone()) for k, v in encoder.state_dict().items())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, path)
    return path


def to_monai_resnet_state_dict(
    encoder: nn.Module | Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Entries of a Med3D encoder (or a MedicalNet checkpoint) named as ``monai.networks.nets.resnet<depth>``.

    MONAI's ResNet uses MedicalNet's names (``conv1``, ``bn1``, ``layerX.Y.convN``/``bnN``, ``downsample.0/1``);
    built with ``feed_forward=False`` it has no ``fc``, so the mapping keeps every encoder key and drops
    ``module.`` prefixes and head keys.

    Args:
        encoder: a Med3D encoder, a network with one as ``encoder``, or a MedicalNet state dict / checkpoint.
    """
    if isinstance(encoder, nn.Module):
        state = _find_encoder(encoder)[0].state_dict()
    else:
        state = read_medicalnet_state_dict(encoder)[0]
    encoder_state, _ = split_head_entries(strip_module_prefix(state))
    return dict(encoder_state)


def load_into_monai_resnet(
    encoder_state: nn.Module | Mapping[str, torch.Tensor] | str | PathLike, depth: int
) -> tuple[nn.Module, LoadReport]:
    """Build ``monai.networks.nets.resnet<depth>`` with MedicalNet's settings and load the weights strictly.

    Settings: ``n_input_channels`` from the stem, ``conv1_t_size=7``, ``conv1_t_stride=2``, the checkpoint's shortcut
    type, ``bias_downsample=False``, ``feed_forward=False``. MONAI's ResNet is not dilated (output stride 32), so it
    holds the same weights but computes the features of ``Med3DResNet(dilated=False)``, not MedicalNet's.

    Args:
        encoder_state: a Med3D encoder (or a network with one), a MedicalNet state dict / checkpoint, or a path.
        depth: the ResNet depth to build.

    Returns:
        the MONAI ResNet and a report (all entries loaded).

    Raises:
        WeightTransferError: the weights are of another depth or shortcut type, or the strict load fails.
    """
    from monai.networks import nets

    if depth not in MEDICALNET_ENTRY_COUNTS:
        raise ValueError(f"depth must be one of {sorted(MEDICALNET_ENTRY_COUNTS)}, got {depth}.")
    if isinstance(encoder_state, (str, PathLike)):
        state, source = read_medicalnet_state_dict(encoder_state)
        state = to_monai_resnet_state_dict(state)
    else:
        state, source = to_monai_resnet_state_dict(encoder_state), type(encoder_state).__name__
    info = infer_medicalnet_architecture(state)
    if info["depth"] != depth:
        raise WeightTransferError(
            f"{source} holds a {_describe(info)}; it cannot fill a MONAI resnet{depth}. Call "
            f"load_into_monai_resnet(..., depth={info['depth']}) or {medicalnet_download_hint(depth)}"
        )
    conv1 = state["conv1.weight"]
    model = getattr(nets, f"resnet{depth}")(
        pretrained=False,
        spatial_dims=conv1.dim() - 2,
        n_input_channels=int(conv1.shape[1]),
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type=info["shortcut"],
        bias_downsample=False,
        feed_forward=False,
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise WeightTransferError(
            f"{source} does not load strictly into MONAI resnet{depth} (shortcut {info['shortcut']}): {error}"
        ) from error
    report = LoadReport(source=f"{source} -> monai resnet{depth}", loaded=list(state))
    return model, report.log()
