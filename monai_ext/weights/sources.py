"""The table of pre-trained starts for fine-tuning: weights as data, in the manner of timm's pretrained configs.

Each :class:`PretrainedSource` names a published (or project-made) checkpoint, the architecture its weights fit
(:data:`monai_ext.networks.transfer.TRANSFER_ARCHITECTURES`), the key layout it is stored in, its first convolution,
the keys a fine-tuning replaces, its licence and, for users with the network, its download location and checksum.
One function, :func:`load_pretrained`, loads any of them into a network built by
:func:`monai_ext.networks.transfer.build_transfer_network` and returns the :class:`LoadReport`; it fails loudly when
nothing (or the wrong architecture) matches.

Sources:

- ``medicalnet-resnet<d>`` (d = 10 ... 200) and ``medicalnet-resnet<d>-23datasets`` (d = 10, 18, 34, 50): Chen, Ma,
  Zheng, "Med3D", arXiv:1904.00625 (2019), Tencent/MedicalNet, MIT licence. ``{"state_dict": {"module.<key>"}}``.
- ``suprem-unet``, ``suprem-segresnet``, ``suprem-swinunetr``: Li, Zhou et al., "How Well Do Supervised 3D Models
  Transfer to Medical Imaging Tasks?", ICLR 2024, MrGiovanni/SuPreM (weights trained on AbdomenAtlas 1.1, CC BY-NC-SA
  4.0). ``{"net": {"module.backbone.<key>"}}`` (``module.<key>`` for SegResNet).
- ``imagenet-resnet<d>`` and ``imagenet-efficientnet-b<k>``: torchvision (BSD-3-Clause) and timm (Apache-2.0) 2D
  ImageNet classifiers, inflated into 3D encoders (Carreira & Zisserman, CVPR 2017; Messaoudi et al., MedIA 2023).
- ``vdt-resnet18``: this project's Variable Dimension Transform pre-training (Zhang et al., arXiv:2201.01426),
  ``bundles/vdt_natural_image_pretraining/models/model.pt``.
- ``med3d-bundle``: this project's Med3D co-training encoder,
  ``bundles/med3d_3dseg8_cotraining/models/encoder_medicalnet.pth`` (MedicalNet format).
- ``bundle``: ``models/model.pt`` of any bundle of this project, given by path; the architecture is read from its
  keys (Med3D / VDT ResNets, SuPreM backbones, inflated ResNet U-Nets).

Files are looked up (no download unless asked) at an explicit path (a file, or a folder holding the file name), in
the folder named by ``$MONAI_EXT_WEIGHTS``, then in torch hub's checkpoint folder, where ``download=True`` puts them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ext.networks.inflated import RESNET_LAYOUTS
from monai_ext.networks.transfer import TRANSFER_ARCHITECTURES
from monai_ext.weights.imagenet2d import (
    DEFAULT_IMAGENET_2D_WEIGHTS,
    WEIGHTS_DIR_ENV,
    _sha256,
    find_2d_weights,
    get_2d_weights_info,
    load_2d_weights_into_3d,
)
from monai_ext.weights.medicalnet import (
    MEDICALNET_WEIGHTS,
    infer_medicalnet_architecture,
    load_medicalnet_checkpoint,
    strip_module_prefix,
)
from monai_ext.weights.report import LoadReport, WeightTransferError, load_weights_file, load_with_report
from monai_ext.weights.suprem import (
    detect_suprem_backbone,
    load_suprem_checkpoint,
    read_suprem_checkpoint,
    strip_suprem_prefixes,
)
from monai_ext.weights.vdt import load_vdt_checkpoint

__all__ = [
    "PretrainedSource",
    "PRETRAINED_SOURCES",
    "NO_SOURCE",
    "get_source",
    "list_sources",
    "project_bundle_dir",
    "find_source_file",
    "source_architecture",
    "read_bundle_state_dict",
    "load_pretrained",
]

logger = logging.getLogger(__name__)

NO_SOURCE = "scratch"
"""Source name meaning: no pre-trained weights (random initialisation), the baseline of every comparison."""

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PretrainedSource:
    """One pre-trained start.

    Attributes:
        name: table key (used as the ``source`` setting of the fine-tuning bundles).
        family: loader family: ``"medicalnet"``, ``"suprem"``, ``"imagenet2d"``, ``"vdt"`` or ``"bundle"``.
        architecture: the architecture its weights fit (``None`` for ``"bundle"``: read from the file).
        description: one line for listings.
        filename: file name of the checkpoint (looked up in the weight folders).
        url: download location (``None``: made by a bundle of this project).
        sha256: the file's sha256 (a prefix when only that is published), or ``None`` when the publisher gives none.
        key_format: how the file stores its tensors.
        first_conv: target key of the stem convolution (adapted when ``in_channels`` differs).
        head_keys: source key prefixes a fine-tuning drops (pre-training heads).
        licence: licence of the weights.
        citation: the paper.
        in_channels: input channels of the stored stem.
        architecture_kwargs: constructor arguments the weights need (e.g. the shortcut type).
        default_path: where a project bundle writes the file, relative to the repository (project sources).
    """

    name: str
    family: str
    architecture: str | None
    description: str
    filename: str | None
    url: str | None
    sha256: str | None
    key_format: str
    first_conv: str
    head_keys: tuple[str, ...]
    licence: str
    citation: str
    in_channels: int = 1
    architecture_kwargs: Mapping[str, Any] = field(default_factory=dict)
    default_path: str | None = None


_MEDICALNET_CITATION = "Chen, Ma, Zheng. Med3D: Transfer Learning for 3D Medical Image Analysis. arXiv:1904.00625"
_SUPREM_CITATION = "Li, Yuille, Zhou. How Well Do Supervised 3D Models Transfer to Medical Imaging Tasks? ICLR 2024"
_SUPREM_FILES = {"unet": "supervised_suprem_unet_2100.pth", "segresnet": "supervised_suprem_segresnet_2100.pth",
                 "swinunetr": "supervised_suprem_swinunetr_2100.pth"}  # fmt: skip
_SUPREM_FIRST_CONV = {"unet": "down_tr64.ops.0.conv1.weight", "segresnet": "convInit.conv.weight",
                      "swinunetr": "swinViT.patch_embed.proj.weight"}  # fmt: skip


def _medicalnet_sources() -> list[PretrainedSource]:
    sources = []
    for (depth, variant), w in MEDICALNET_WEIGHTS.items():
        suffix = "-23datasets" if variant == "23dataset" else ""
        data = "23 medical datasets" if variant == "23dataset" else "the 8 datasets of 3DSeg-8"
        sources.append(
            PretrainedSource(
                name=f"medicalnet-resnet{depth}{suffix}",
                family="medicalnet",
                architecture=f"med3d-resnet{depth}",
                description=f"MedicalNet 3D ResNet-{depth} (shortcut {w.shortcut_type}) co-trained on {data}",
                filename=w.filename,
                url=f"https://huggingface.co/{w.hf_repo_id}/resolve/main/{w.filename}",
                sha256=None,
                key_format='{"state_dict": {"module.conv1.weight", "module.layer1.0.conv1.weight", ...}}',
                first_conv="encoder.conv1.weight",
                head_keys=("conv_seg.", "fc."),
                licence="MIT (Tencent/MedicalNet)",
                citation=_MEDICALNET_CITATION,
                architecture_kwargs={"shortcut_type": w.shortcut_type},
            )
        )
    return sources


def _suprem_sources() -> list[PretrainedSource]:
    return [
        PretrainedSource(
            name=f"suprem-{backbone}",
            family="suprem",
            architecture=f"suprem-{backbone}",
            description=f"SuPreM {backbone} pre-trained on AbdomenAtlas 1.1 (2,100 CTs, 25 classes)",
            filename=filename,
            url=f"https://huggingface.co/MrGiovanni/SuPreM/resolve/main/{filename}",
            sha256=None,
            key_format='{"net": {"module.backbone.<key>"}}' if backbone != "segresnet" else '{"net": {"module.<key>"}}',
            first_conv=_SUPREM_FIRST_CONV[backbone],
            head_keys=("precls_conv", "GAP", "controller", "text_to_vision", "organ_embedding"),
            licence="CC BY-NC-SA 4.0 (AbdomenAtlas 1.1 / SuPreM weights)",
            citation=_SUPREM_CITATION,
        )
        for backbone, filename in _SUPREM_FILES.items()
    ]


def _imagenet_sources() -> list[PretrainedSource]:
    sources = []
    for architecture, weights_name in DEFAULT_IMAGENET_2D_WEIGHTS.items():
        info = get_2d_weights_info(weights_name)
        sources.append(
            PretrainedSource(
                name=f"imagenet-{architecture}",
                family="imagenet2d",
                architecture=f"inflated-{architecture}",
                description=f"2D ImageNet {architecture} ({weights_name}) inflated to 3D; stem summed to 1 channel",
                filename=info.filename,
                url=info.url,
                sha256=info.sha256_prefix,
                key_format="2D state dict, torchvision/timm keys (conv1.weight, layer1.0.conv1.weight, fc.weight)",
                first_conv="encoder." + info.first_conv + ".weight",
                head_keys=info.head_prefixes,
                licence=info.licence,
                citation="Carreira, Zisserman. Quo Vadis, Action Recognition? CVPR 2017; Messaoudi et al. MedIA 2023",
                in_channels=3,
            )
        )
    return sources


def _project_sources() -> list[PretrainedSource]:
    return [
        PretrainedSource(
            name="vdt-resnet18",
            family="vdt",
            architecture="med3d-resnet18",
            description="this project's VDT pre-training (2D natural images as depth-3 volumes), ResNet-18",
            filename="model.pt",
            url=None,
            sha256=None,
            key_format="VDTClassifier state dict (encoder.conv1.weight, ..., fc.weight)",
            first_conv="encoder.conv1.weight",
            head_keys=("fc.", "decoder."),
            licence="MIT (this project); the weights inherit the licence of the pre-training images",
            citation="Zhang, Li, Zhou, Ma, Yu. Variable Dimension Transform. arXiv:2201.01426",
            default_path="bundles/vdt_natural_image_pretraining/models/model.pt",
        ),
        PretrainedSource(
            name="med3d-bundle",
            family="medicalnet",
            architecture="med3d-resnet10",
            description="this project's Med3D co-training encoder (bundles/med3d_3dseg8_cotraining), ResNet-10",
            filename="encoder_medicalnet.pth",
            url=None,
            sha256=None,
            key_format='MedicalNet format, {"state_dict": {"module.conv1.weight", ...}}',
            first_conv="encoder.conv1.weight",
            head_keys=("conv_seg.", "fc."),
            licence="MIT (this project); the weights inherit the licences of the co-training datasets",
            citation=_MEDICALNET_CITATION,
            default_path="bundles/med3d_3dseg8_cotraining/models/encoder_medicalnet.pth",
        ),
        PretrainedSource(
            name="bundle",
            family="bundle",
            architecture=None,
            description="models/model.pt of any bundle of this project (give its path); architecture read from it",
            filename="model.pt",
            url=None,
            sha256=None,
            key_format="a bundle's network state dict",
            first_conv="",
            head_keys=(),
            licence="that of the bundle",
            citation="",
        ),
    ]


PRETRAINED_SOURCES: dict[str, PretrainedSource] = {
    s.name: s for s in (*_medicalnet_sources(), *_suprem_sources(), *_imagenet_sources(), *_project_sources())
}
"""Every known pre-trained start, by name."""


def get_source(name: str) -> PretrainedSource:
    """The table entry ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in PRETRAINED_SOURCES:
        raise KeyError(
            f"unknown pre-trained source {name!r}; known: {', '.join(PRETRAINED_SOURCES)} (or {NO_SOURCE!r} for "
            "random initialisation). `monai-ext sources` lists them."
        )
    return PRETRAINED_SOURCES[name]


def list_sources(family: str | None = None) -> list[PretrainedSource]:
    """The table, optionally only one family."""
    return [s for s in PRETRAINED_SOURCES.values() if family is None or s.family == family]


def project_bundle_dir(name: str) -> Path:
    """``bundles/<name>`` of this repository (the installed checkout), else of the current folder."""
    for root in (_REPO_ROOT, Path.cwd()):
        if (root / "bundles" / name).is_dir():
            return root / "bundles" / name
    return Path.cwd() / "bundles" / name


def _check_hash(path: Path, source: PretrainedSource) -> Path:
    if source.sha256 and not _sha256(path).startswith(source.sha256):
        raise WeightTransferError(
            f"{path} does not have the published sha256 of {source.name} ({source.sha256}...): the file is corrupt or "
            f"another version; download it again from {source.url}."
        )
    return path


def find_source_file(
    source: str | PretrainedSource, path: str | PathLike | None = None, download: bool = False
) -> Path:
    """Find the checkpoint file of a source on disk (or download it when asked and a URL is known).

    Args:
        source: a table name or entry.
        path: an explicit file, or a folder holding the source's file name (for ``bundle`` and the project sources
            also a bundle folder: ``<folder>/models/<file>``).
        download: when nothing is found and the source has a URL, download into torch hub's checkpoint folder.

    Returns:
        The file.

    Raises:
        FileNotFoundError: nothing found; the message says where to get it and where to put it.
        WeightTransferError: a file under the published name does not have the published checksum.
    """
    src = get_source(source) if isinstance(source, str) else source
    if src.family == "imagenet2d":
        return find_2d_weights(DEFAULT_IMAGENET_2D_WEIGHTS[src.architecture.removeprefix("inflated-")], path, download)
    if path is not None:
        explicit = Path(path)
        if explicit.is_file():
            return explicit
        for candidate in (explicit / str(src.filename), explicit / "models" / str(src.filename)):
            if candidate.is_file():
                return _check_hash(candidate, src)
        raise FileNotFoundError(
            f"{explicit} is neither a checkpoint file nor a folder holding {src.filename} (or models/{src.filename}) "
            f"for the source {src.name}."
        )
    candidates = []
    if src.default_path:
        candidates.append(_REPO_ROOT / src.default_path)
    if os.environ.get(WEIGHTS_DIR_ENV) and src.filename:
        candidates.append(Path(os.environ[WEIGHTS_DIR_ENV]) / src.filename)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / str(src.filename)
    if src.url:
        candidates.append(hub_file)
    for candidate in candidates:
        if candidate.is_file():
            return _check_hash(candidate, src)
    if download and src.url:
        hub_file.parent.mkdir(parents=True, exist_ok=True)
        logger.info(f"downloading {src.url} to {hub_file}")
        torch.hub.download_url_to_file(src.url, str(hub_file), hash_prefix=src.sha256)
        return hub_file
    looked = ", ".join(str(c) for c in candidates) or "nowhere (no default location)"
    if src.url:
        how = (
            f"download {src.url} and save it as {hub_file}, or into the folder named by ${WEIGHTS_DIR_ENV}, or pass "
            "its path (pretrained_path), or allow download=True on a machine with network access"
        )
    elif src.default_path:
        bundle = src.default_path.split("/models/")[0]
        how = f"train {bundle} first (python -m monai.bundle run --config_file {bundle}/configs/train.json), or pass the path"
    else:
        how = "pass the path of a bundle folder or of its models/model.pt (pretrained_path)"
    raise FileNotFoundError(f"weights of {src.name} not found (looked at: {looked}): {how}.")


def read_bundle_state_dict(path: str | PathLike) -> dict[str, torch.Tensor]:
    """Read a bundle's ``models/model.pt`` (a tensor state dict, ``weights_only`` loading; ``module.`` stripped).

    Raises:
        FileNotFoundError: no such file.
        CheckpointFileError: the file is corrupt, or ``weights_only`` loading refuses it (it pickles objects).
        WeightTransferError: it is not a tensor state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the bundle first, or correct the path.")
    content = load_weights_file(path)
    if isinstance(content, Mapping) and "network" in content and isinstance(content["network"], Mapping):
        content = content["network"]  # a resumable checkpoint_epoch=N.pt
    if not isinstance(content, Mapping) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise WeightTransferError(f"{path} is not a tensor state dict (a bundle's models/model.pt is one).")
    return strip_module_prefix(content)


def _encoder_entries(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}


def _bundle_architecture(state: Mapping[str, torch.Tensor], path: str) -> tuple[str, dict]:
    """Architecture (and constructor arguments) of a bundle's state dict, from its keys."""
    backbone = detect_suprem_backbone(state)
    if backbone is not None:
        return f"suprem-{backbone}", {}
    encoder = _encoder_entries(state)
    if "layer1.0.conv1.weight" not in encoder:
        raise WeightTransferError(
            f"{path}: unknown network (first keys {', '.join(list(state)[:4])}); the bundle source reads Med3D/VDT "
            "ResNets (encoder.layer1...), SuPreM backbones and inflated ResNet U-Nets."
        )
    info = infer_medicalnet_architecture(encoder)
    if any(k.startswith("segmentation_head.") for k in state):  # an inflated ResNet U-Net (crossdim bundle)
        bottleneck = "layer1.0.conv3.weight" in encoder
        counts = tuple(len({k.split(".")[1] for k in encoder if k.startswith(f"layer{i}.")}) for i in range(1, 5))
        for name, (block, layers) in RESNET_LAYOUTS.items():
            if tuple(layers) == counts and (block == "bottleneck") == bottleneck:
                return f"inflated-{name}", {"stride_depth": encoder["conv1.weight"].shape[2] != 1}
        raise WeightTransferError(f"{path}: an inflated ResNet with blocks {counts} matches no known depth.")
    if info["depth"] is None:
        raise WeightTransferError(f"{path}: a 3D ResNet encoder of no known depth ({info['layers']}).")
    return f"med3d-resnet{info['depth']}", {"shortcut_type": info["shortcut"]}


def _bundle_network_kwargs(spec_file: Path, architecture: str) -> dict:
    """Constructor arguments a bundle recorded next to its weights (``models/network.json``), if any: the
    fine-tuning bundles' ``{"architecture", "kwargs"}`` or the AbdomenAtlas bundle's ``{"backbone",
    "backbone_kwargs"}``."""
    if not spec_file.is_file():
        return {}
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    if spec.get("architecture") == architecture:
        return dict(spec.get("kwargs") or {})
    if f"suprem-{spec.get('backbone')}" == architecture:
        return dict(spec.get("backbone_kwargs") or {})
    return {}


def source_architecture(
    source: str, pretrained_path: str | PathLike | None = None, architecture: str | None = None
) -> tuple[str, dict]:
    """The architecture a source's weights fit, and the constructor arguments they need.

    Args:
        source: a table name, or :data:`NO_SOURCE`.
        pretrained_path: the file (needed for ``bundle``, whose architecture is read from its keys).
        architecture: an explicit architecture; required for :data:`NO_SOURCE`, checked against the source otherwise.

    Returns:
        ``(architecture, kwargs)`` for :func:`monai_ext.networks.transfer.build_transfer_network`.

    Raises:
        ValueError: no architecture for :data:`NO_SOURCE`, or one that the source's weights do not fit.
    """
    if source == NO_SOURCE:
        if not architecture:
            raise ValueError(f"source {NO_SOURCE!r} needs an architecture: one of {', '.join(TRANSFER_ARCHITECTURES)}.")
        return architecture, {}
    src = get_source(source)
    if src.family == "bundle":
        path = find_source_file(src, pretrained_path)
        found, kwargs = _bundle_architecture(read_bundle_state_dict(path), str(path))
        kwargs.update(_bundle_network_kwargs(path.parent / "network.json", found))
    else:
        found, kwargs = str(src.architecture), dict(src.architecture_kwargs)
    if architecture and architecture != found:
        raise ValueError(
            f"source {source!r} holds weights of a {found}, not a {architecture}: set architecture to {found!r} (or null)."
        )
    return found, kwargs


def _prefixed(report: LoadReport, prefix: str, network: nn.Module) -> LoadReport:
    """Re-key a report made on a sub-module and add the network's other entries as initialised (new layers)."""
    full = LoadReport(source=report.source)
    full.loaded = [prefix + k for k in report.loaded]
    full.adapted = {prefix + k: v for k, v in report.adapted.items()}
    full.missing = [prefix + k for k in report.missing]
    full.unexpected = list(report.unexpected)
    full.shape_mismatch = {prefix + k: v for k, v in report.shape_mismatch.items()}
    full.initialised = [k for k in network.state_dict() if not k.startswith(prefix)] + [
        prefix + k for k in report.initialised
    ]
    return full


def _load_suprem(network: nn.Module, state: Mapping[str, torch.Tensor], backbone: str, source: str) -> LoadReport:
    encoder = getattr(network, "encoder", None)
    if encoder is None or not hasattr(network, "fc"):  # the whole backbone (segmentation)
        report = load_suprem_checkpoint(dict(state), network, backbone)
        report.source = source
        return report
    plain, dropped = strip_suprem_prefixes(state)
    if detect_suprem_backbone(plain) != backbone:
        raise WeightTransferError(f"{source} holds no SuPreM {backbone} (found {detect_suprem_backbone(plain)}).")
    target = network.state_dict()
    mapped = {"encoder." + k: v for k, v in plain.items() if "encoder." + k in target}
    unused = [k for k in plain if "encoder." + k not in target]
    mapped.update({k: plain[k] for k in unused})  # listed as unused: the decoder a classifier does not have
    mapped.update({k: state[k] for k in dropped})
    return load_with_report(network, mapped, source=source, initialise=("fc.",), drop=tuple(unused) + tuple(dropped))


def load_pretrained(
    network: nn.Module,
    source: str,
    pretrained_path: str | PathLike | None = None,
    download: bool = False,
    inflation: str = "average",
    allow_pickle: bool = False,
) -> LoadReport:
    """Load a source's weights into a network built by :func:`~monai_ext.networks.transfer.build_transfer_network`.

    Every loader copies what fits, adapts the first convolution to the network's input channels, declares the new
    head as initialised, lists the dropped pre-training heads as unused, and raises when the checkpoint is another
    architecture or nothing matched (see :class:`~monai_ext.weights.report.LoadReport`).

    Args:
        network: the target (segmentation network or :class:`~monai_ext.networks.transfer.EncoderClassifier`);
            modified in place.
        source: a table name (:data:`PRETRAINED_SOURCES`).
        pretrained_path: the checkpoint file or a folder holding it; ``None`` looks in the default places
            (:func:`find_source_file`).
        download: allow downloading a published file that is not found locally.
        inflation: 2D->3D kernel rule for ``imagenet-*`` sources.
        allow_pickle: SuPreM files that ``torch.load(weights_only=True)`` refuses are unpickled in full (trusted files
            only).

    Returns:
        The report, with keys as in ``network.state_dict()``; also logged.

    Raises:
        FileNotFoundError: the file is not found (the message says where to get it).
        WeightTransferError: the file does not fit the network.
    """
    src = get_source(source)
    path = find_source_file(src, pretrained_path, download)
    logger.info(f"pre-trained start: {src.name} from {path}")
    if src.family == "medicalnet":
        report = load_medicalnet_checkpoint(path, network)
    elif src.family == "vdt":
        report = load_vdt_checkpoint(path, network)
    elif src.family == "suprem":
        state = read_suprem_checkpoint(path, allow_pickle=allow_pickle)
        report = _load_suprem(network, state, str(src.architecture).removeprefix("suprem-"), str(path))
    elif src.family == "imagenet2d":
        encoder = getattr(network, "encoder", None)
        if encoder is None:
            raise WeightTransferError(f"{type(network).__name__} has no `encoder` to carry the inflated 2D weights.")
        report = _prefixed(load_2d_weights_into_3d(encoder, path, mode=inflation), "encoder.", network)
    else:
        report = _load_bundle(network, path)
    report.source = f"{src.name} ({path})"
    return report


def _load_bundle(network: nn.Module, path: Path) -> LoadReport:
    state = read_bundle_state_dict(path)
    architecture, _ = _bundle_architecture(state, str(path))
    if architecture.startswith("suprem-"):
        return _load_suprem(network, state, architecture.removeprefix("suprem-"), str(path))
    encoder_state = _encoder_entries(state)
    if architecture.startswith("med3d-"):
        report = load_medicalnet_checkpoint(encoder_state, network)
    else:
        target = network.state_dict()
        mapped = {"encoder." + k: v for k, v in encoder_state.items()}
        new = tuple(sorted({k.split(".", 1)[0] + "." for k in target if not k.startswith("encoder.")}))
        report = load_with_report(network, mapped, source=str(path), initialise=new)
    heads = sorted(k for k in state if not k.startswith("encoder."))
    report.unexpected = sorted(set(report.unexpected) | set(heads))
    logger.info(f"{path}: {len(heads)} entries outside the encoder (the bundle's own head/decoder) were not used")
    return report
