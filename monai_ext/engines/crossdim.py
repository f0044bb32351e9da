"""Stage two of dimensional transfer: give a 3D network its initial weights from a 2D network, callable from a config.

Messaoudi, Belaid, Ben Salem, Conze, "Cross-dimensional transfer learning in medical image segmentation with deep
learning", MedIA 2023 (arXiv:2307.15874) transfer 2D knowledge into a 3D segmentation network in two ways:

- *dimensional transfer* (``init="expand_2d"``): a whole 2D segmentation network trained slice by slice on the 3D
  target (stage one) is expanded into its 3D twin, decoder and head included
  (:func:`expand_stage_one_network`). With ``"center"`` inflation and a twin that neither strides nor pools along
  depth, the 3D network equals the slice-wise 2D network at initialisation; this is verified numerically.
- *weight transfer* (``init="imagenet_2d"``): 2D ImageNet classification weights (torchvision/timm layout, RGB stem
  summed to one channel) are inflated into the 3D encoder; the decoder starts from scratch.

``init="scratch"`` keeps the random initialisation, the baseline both are measured against.

In a bundle, the :class:`InitialiseFrom2D` handler calls :func:`initialise_network` when training starts (not
when the config is parsed, so checking or exporting a bundle never trains); when the stage-one network is missing it
can run stage one itself (:func:`run_stage_one`, a separate process on the main rank only).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch import nn

from monai_ext.engines.checkpoint import is_main_process, unwrap_model
from monai_ext.transforms.slices import slices_to_volume, volume_to_slices
from monai_ext.weights.imagenet2d import load_2d_weights_into_3d
from monai_ext.weights.inflate import INFLATION_MODES, expand_2d_network_to_3d
from monai_ext.weights.report import LoadReport, WeightTransferError, load_weights_file, load_with_report

__all__ = [
    "INITIALISATIONS",
    "SLICE_WISE_MODES",
    "STAGE_ONE_CONFIGS",
    "stage_one_command",
    "run_stage_one",
    "slice_wise_output",
    "verify_slice_wise_equivalence",
    "expand_stage_one_network",
    "initialise_network",
    "InitialiseFrom2D",
]

logger = logging.getLogger(__name__)

INITIALISATIONS: tuple[str, ...] = ("expand_2d", "imagenet_2d", "scratch")
"""Initial weights of the 3D network: the expanded stage-one 2D network, inflated 2D ImageNet weights, or random."""

SLICE_WISE_MODES: tuple[str, ...] = ("center", "2.5d")
"""Inflation rules under which the 3D twin must reproduce the slice-wise 2D network exactly."""

STAGE_ONE_CONFIGS: tuple[str, ...] = ("train.json", "train_2d.json")
"""Config files (under ``<bundle>/configs``) that make up stage one: the training config plus the 2D overlay."""

# variables that torchrun sets; a stage-one process started from a distributed run must not inherit them
_DISTRIBUTED_ENV = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
)  # fmt: skip


def stage_one_command(bundle_root: str | PathLike, args_file: str | PathLike | None = None) -> list[str]:
    """The command that runs stage one of a bundle (``python -m monai.bundle run`` with the stage-one configs).

    Args:
        bundle_root: the bundle folder.
        args_file: a JSON file of settings passed with ``--args_file``.

    Returns:
        The argument list, starting with the current Python interpreter.
    """
    configs = Path(bundle_root) / "configs"
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", json.dumps([str(configs / name) for name in STAGE_ONE_CONFIGS]),
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
    ]  # fmt: skip
    if args_file is not None:
        command += ["--args_file", str(args_file)]
    return command


def run_stage_one(bundle_root: str | PathLike, settings: Mapping, model_2d_path: str | PathLike) -> str:
    """Run stage one (slice-wise training of the 2D network) in a separate process and wait for it.

    In a distributed run only the main process trains; the others wait at a barrier, then every process finds
    ``model_2d_path``. The child process does not inherit the distributed environment variables.

    Args:
        bundle_root: the bundle folder (holds ``configs/train.json`` and ``configs/train_2d.json``).
        settings: settings passed to stage one (``--args_file``), e.g. ``dataset_dir``, ``patch_size``, ``seed`` and
            stage one's own ``max_epochs``; they must be JSON-serialisable.
        model_2d_path: the file stage one writes (its ``model_2d_path`` setting is set to it).

    Returns:
        ``model_2d_path`` as a string.

    Raises:
        RuntimeError: stage one failed (the message gives the command to rerun it alone) or wrote no model.
        TypeError: a setting is not JSON-serialisable.
    """
    model_2d_path = str(model_2d_path)
    args = {**dict(settings), "bundle_root": str(bundle_root), "model_2d_path": model_2d_path}
    if is_main_process():
        text = json.dumps(args, indent=2)
        with tempfile.NamedTemporaryFile("w", suffix="_stage_one_args.json", delete=False) as f:
            f.write(text)
            args_file = f.name
        command = stage_one_command(bundle_root, args_file)
        env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV}
        logger.info(f"{model_2d_path} does not exist: running stage one (2D, slice-wise): {shlex.join(command)}")
        result = subprocess.run(command, env=env, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"stage one failed (exit code {result.returncode}); see its log above. Rerun it alone with:\n"
                f"  {shlex.join(command)}\n(the settings file {args_file} is kept for that)"
            )
        os.remove(args_file)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if not os.path.exists(model_2d_path):
        raise RuntimeError(
            f"stage one finished but wrote no {model_2d_path}: no validation ran (set val_interval <= max_epochs "
            "of stage one)."
        )
    return model_2d_path


def slice_wise_output(network_2d: nn.Module, volume: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Apply a 2D network to every slice of a batch of volumes and stack the outputs back into volumes.

    Args:
        network_2d: the 2D network.
        volume: ``B x C x D x H x W``.
        axis: spatial axis the slices are taken along (0 = depth, the 3D twins' depth axis).

    Returns:
        ``B x C_out x D x H x W`` (for ``axis=0``).
    """
    depth = volume.shape[axis + 2]
    return slices_to_volume(network_2d(volume_to_slices(volume, axis)), depth, axis)


def verify_slice_wise_equivalence(
    network_2d: nn.Module,
    network_3d: nn.Module,
    volume: torch.Tensor | None = None,
    tolerance: float = 1e-3,
) -> float:
    """Check that a 3D twin reproduces the slice-wise 2D network (eval mode), as center/2.5D expansion promises.

    Both networks are evaluated in eval mode (BatchNorm running statistics) without gradients; their training
    flags are restored afterwards.

    Args:
        network_2d: the 2D network.
        network_3d: its 3D twin, expanded with ``"center"`` or ``"2.5d"``.
        volume: input ``B x C x D x H x W`` on the networks' device (default: a random ``1 x C x 3 x 32 x 32`` volume,
            ``C`` read from the 3D network's first convolution).
        tolerance: largest accepted difference, relative to the largest absolute 2D output (at least 1).

    Returns:
        The largest absolute difference between the two outputs.

    Raises:
        WeightTransferError: the outputs differ (the twin strides, pools or upsamples along depth, or squeezes over
            depth in squeeze-and-excitation: build it with ``stride_depth=False``).
    """
    if volume is None:
        first_conv = next(m for m in network_3d.modules() if isinstance(m, nn.Conv3d))
        device = first_conv.weight.device
        generator = torch.Generator().manual_seed(0)
        volume = torch.randn(1, first_conv.in_channels, 3, 32, 32, generator=generator).to(device)
    modes = (network_2d.training, network_3d.training)
    network_2d.eval()
    network_3d.eval()
    try:
        with torch.no_grad():
            expected = slice_wise_output(network_2d, volume)
            try:
                result = network_3d(volume)
            except (RuntimeError, ValueError) as err:  # ValueError: InflatedFlexUNet refuses the input size itself
                raise WeightTransferError(
                    f"the 3D network cannot process a stack of {volume.shape[2]} slices ({err}): the 3D twin must keep "
                    "the depth resolution (stride_depth=False)."
                ) from err
    finally:
        network_2d.train(modes[0])
        network_3d.train(modes[1])
    if result.shape != expected.shape:
        raise WeightTransferError(
            f"the 3D network's output {tuple(result.shape)} differs in shape from the slice-wise 2D output "
            f"{tuple(expected.shape)}: the 3D twin must keep the depth resolution (stride_depth=False)."
        )
    difference = float((result - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if not difference <= tolerance * scale:
        raise WeightTransferError(
            "the expanded 3D network does not reproduce the slice-wise 2D network: largest difference "
            f"{difference:.3g} "
            f"(outputs up to {scale:.3g}). Build the 3D twin with stride_depth=False (nothing may stride, pool or "
            "upsample along depth) and expand with mode 'center' (or '2.5d' with depth_kernels=False)."
        )
    return difference


def expand_stage_one_network(
    network_2d: nn.Module,
    network_3d: nn.Module,
    model_2d_path: str | PathLike,
    mode: str = "center",
    verify: bool = True,
) -> LoadReport:
    """Load the stage-one 2D weights and expand the whole 2D network into its 3D twin, with full coverage.

    Args:
        network_2d: the 2D network (same constructor arguments as the 3D twin but ``spatial_dims=2``); its weights
            are replaced by the file's.
        network_3d: the 3D twin; modified in place.
        model_2d_path: the stage-one state dict (``models/model_2d.pt``).
        mode: inflation rule, one of :data:`monai_ext.weights.inflate.INFLATION_MODES`.
        verify: for ``"center"`` and ``"2.5d"``, check numerically that the 3D twin reproduces the slice-wise 2D
            network (:func:`verify_slice_wise_equivalence`).

    Returns:
        The :class:`LoadReport` of the expansion (every 3D entry loaded or inflated).

    Raises:
        FileNotFoundError: ``model_2d_path`` does not exist (the message says to run stage one).
        WeightTransferError: the file does not fit the 2D network, an entry of the 3D twin got no value, or the
            expanded network does not reproduce the 2D one.
        ValueError: unknown ``mode``.
    """
    if mode not in INFLATION_MODES:
        raise ValueError(f"unknown inflation mode {mode!r}; choose one of {INFLATION_MODES}.")
    path = Path(model_2d_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: stage two (init 'expand_2d') expands the stage-one 2D network. Run stage one first "
            "(python -m monai.bundle run --config_file \"['<bundle>/configs/train.json','<bundle>/configs/"
            "train_2d.json']\"), set auto_stage_one to true, or choose init 'imagenet_2d' or 'scratch'."
        )
    state_2d = load_weights_file(path)
    load_with_report(network_2d, state_2d, source=str(path))
    network_2d.to(next(network_3d.parameters()).device)
    report = expand_2d_network_to_3d(network_2d, network_3d, mode=mode)
    n_entries = len(network_3d.state_dict())
    if report.initialised or report.missing or report.n_transferred != n_entries:
        raise WeightTransferError(
            f"expansion of {path} covered {report.n_transferred} of {n_entries} entries of the 3D network; every "
            f"entry must come from the 2D network.\n{report.summary()}"
        )
    report.source = str(path)
    logger.info(
        f"expanded the stage-one 2D network {path} into the 3D network ({mode!r}): {len(report.loaded)} entries "
        f"copied, {len(report.adapted)} kernels inflated, coverage {report.n_transferred}/{n_entries}"
    )
    if verify and mode in SLICE_WISE_MODES:
        difference = verify_slice_wise_equivalence(network_2d, network_3d)
        logger.info(f"the 3D network reproduces the slice-wise 2D network (largest difference {difference:.2e})")
    return report


def initialise_network(
    network: nn.Module,
    init: str,
    network_2d: nn.Module | None = None,
    model_2d_path: str | PathLike | None = None,
    mode: str = "center",
    pretrained_2d_path: str | PathLike | None = None,
    stage_one_settings: Mapping | None = None,
    bundle_root: str | PathLike | None = None,
    record_path: str | PathLike | None = None,
) -> nn.Module:
    """Give a network its initial weights: the expanded stage-one 2D network, 2D ImageNet weights, or random.

    Stage two initialises its 3D network with any of the three; stage one initialises its 2D network with
    ``"imagenet_2d"`` (weights copied, RGB stem summed to one channel) or ``"scratch"``.

    Args:
        network: the network to initialise (e.g. :class:`monai_ext.networks.inflated.InflatedFlexUNet`, 3D with
            ``stride_depth=False`` for stage two); modified in place and returned.
        init: one of :data:`INITIALISATIONS`.
        network_2d: the 2D twin to load ``model_2d_path`` into (``init="expand_2d"``).
        model_2d_path: the stage-one state dict (``init="expand_2d"``).
        mode: inflation rule, one of :data:`monai_ext.weights.inflate.INFLATION_MODES` (no effect on a 2D network).
        pretrained_2d_path: ``init="imagenet_2d"``: a torchvision/timm checkpoint, or ``None`` for the backbone's
            default ImageNet weights found locally (see :func:`monai_ext.weights.imagenet2d.find_2d_weights`).
        stage_one_settings: with ``init="expand_2d"`` and no file at ``model_2d_path``, run stage one with these
            settings (:func:`run_stage_one`); ``None`` fails instead, saying how to run stage one.
        bundle_root: the bundle folder, needed to run stage one.
        record_path: where to write a JSON record of the initialisation (main process only), or ``None``.

    Returns:
        ``network``.

    Raises:
        ValueError: unknown ``init`` or ``mode``, or a missing argument of the chosen ``init``.
        FileNotFoundError: the stage-one file (or the default ImageNet weights) is missing.
        WeightTransferError: the weights do not cover the network, or the expanded network does not reproduce the
            slice-wise 2D network.
    """
    if init not in INITIALISATIONS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITIALISATIONS}.")
    if mode not in INFLATION_MODES:
        raise ValueError(f"unknown inflation mode {mode!r}; choose one of {INFLATION_MODES}.")
    record: dict = {"init": init, "mode": mode}
    if init == "expand_2d":
        if network_2d is None or model_2d_path is None:
            raise ValueError("init 'expand_2d' needs network_2d (the 2D twin) and model_2d_path (the stage-one file).")
        if not os.path.exists(model_2d_path) and stage_one_settings is not None:
            if bundle_root is None:
                raise ValueError("running stage one automatically needs bundle_root.")
            run_stage_one(bundle_root, stage_one_settings, model_2d_path)
        report = expand_stage_one_network(network_2d, network, model_2d_path, mode=mode)
    elif init == "imagenet_2d":
        encoder = getattr(network, "encoder", None)
        if encoder is None:
            raise ValueError(f"init 'imagenet_2d' needs a network with an 'encoder' ({type(network).__name__}).")
        report = load_2d_weights_into_3d(encoder, pretrained_2d_path, mode=mode, in_channels_rule="sum_rgb")
        logger.info(
            f"loaded 2D ImageNet weights {report.source} into the encoder ({mode!r} inflation for a 3D encoder, RGB "
            "stem summed for one channel); the decoder and head start from random weights"
        )
    else:
        report = None
        logger.info("init 'scratch': the network keeps its random initialisation")
    if report is not None:
        record.update(
            source=report.source,
            loaded=len(report.loaded),
            adapted=len(report.adapted),
            rules=sorted(set(report.adapted.values())),
            initialised=len(report.initialised),
            unused_source_keys=report.unexpected,
        )
    if record_path is not None and is_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(record_path)), exist_ok=True)
        with open(record_path, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
    return network


class InitialiseFrom2D:
    """Trainer handler: give the trained network its initial weights when training starts (see
    :func:`initialise_network`).

    Dimensional and weight transfer after Messaoudi, Belaid, Ben Salem, Conze, "Cross-dimensional transfer learning
    in medical image segmentation with deep learning", MedIA 2023 (arXiv:2307.15874).

    Runs on ``Events.STARTED``. Attach it after :class:`monai_ext.engines.checkpoint.ResumableCheckpoint`: a run that
    resumed from a checkpoint (iteration > 0) keeps the checkpoint's weights and is not initialised again. The
    network may be wrapped (DistributedDataParallel): the module inside is modified in place, so the optimiser keeps
    its parameters.

    Args:
        network: the network being trained.
        init: one of :data:`INITIALISATIONS`.
        network_2d: as in :func:`initialise_network`.
        model_2d_path: as in :func:`initialise_network`.
        mode: as in :func:`initialise_network`.
        pretrained_2d_path: as in :func:`initialise_network`.
        stage_one_settings: as in :func:`initialise_network`.
        bundle_root: as in :func:`initialise_network`.
        record_path: as in :func:`initialise_network`.

    Raises:
        ValueError: unknown ``init`` or ``mode`` (at construction, before any training).
    """

    def __init__(
        self,
        network: nn.Module,
        init: str,
        network_2d: nn.Module | None = None,
        model_2d_path: str | PathLike | None = None,
        mode: str = "center",
        pretrained_2d_path: str | PathLike | None = None,
        stage_one_settings: Mapping | None = None,
        bundle_root: str | PathLike | None = None,
        record_path: str | PathLike | None = None,
    ) -> None:
        if init not in INITIALISATIONS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITIALISATIONS}.")
        if mode not in INFLATION_MODES:
            raise ValueError(f"unknown inflation mode {mode!r}; choose one of {INFLATION_MODES}.")
        self.network = network
        self.init = init
        self.kwargs = {
            "network_2d": network_2d,
            "model_2d_path": model_2d_path,
            "mode": mode,
            "pretrained_2d_path": pretrained_2d_path,
            "stage_one_settings": stage_one_settings,
            "bundle_root": bundle_root,
            "record_path": record_path,
        }

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration > 0:
            logger.info(f"resumed at iteration {engine.state.iteration}: keeping the checkpoint's weights, no init")
            return
        initialise_network(unwrap_model(self.network), self.init, **self.kwargs)
