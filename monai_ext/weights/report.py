"""A report of what a weight transfer did, key by key.

A pre-trained weight that silently stays random is the most common bug of transfer learning: every loader in
``monai_ext`` returns a :class:`LoadReport` and refuses to finish when nothing (or too little) was transferred.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LoadReport",
    "WeightTransferError",
    "CheckpointFileError",
    "load_with_report",
    "load_weights_file",
    "convert_trusted_checkpoint",
]

logger = logging.getLogger(__name__)


class WeightTransferError(RuntimeError):
    """Raised when pre-trained weights do not fit the target network (wrong architecture, nothing matched, ...)."""


class CheckpointFileError(WeightTransferError):
    """A weights file cannot be read safely: it is empty, truncated, corrupt or not written by ``torch.save``, or it
    pickles objects (a class instance, a function, a module) that ``torch.load(weights_only=True)`` refuses."""


@dataclass
class LoadReport:
    """What happened to every entry of the target state dict during a transfer.

    Attributes:
        source: where the weights came from (a path or a name), for messages.
        loaded: target keys copied unchanged from the source.
        adapted: target key -> short description of the rule applied (e.g. "inflated 2D->3D (average)").
        initialised: target keys left at their initial value on purpose (declared new head, new stem).
        missing: target keys nothing was found for (undeclared; an error unless allowed).
        unexpected: source keys that were not used (e.g. a dropped pre-training head).
        shape_mismatch: source key -> (source shape, target shape) pairs that could not be used.
    """

    source: str = ""
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def n_transferred(self) -> int:
        """Number of target entries that carry pre-trained values (copied or adapted)."""
        return len(self.loaded) + len(self.adapted)

    def summary(self) -> str:
        """One line per category with counts and the first few keys."""

        def _few(keys) -> str:
            keys = list(keys)
            shown = ", ".join(keys[:4])
            return f"{shown}{', ...' if len(keys) > 4 else ''}"

        lines = [
            f"weights from {self.source or '<state dict>'}: {len(self.loaded)} loaded, {len(self.adapted)} adapted, "
            f"{len(self.initialised)} initialised (declared), {len(self.missing)} missing, "
            f"{len(self.unexpected)} unused source keys, {len(self.shape_mismatch)} shape mismatches"
        ]
        if self.adapted:
            rules = sorted(set(self.adapted.values()))
            lines.append(f"  adapted: {_few(self.adapted)} (rules: {'; '.join(rules)})")
        if self.initialised:
            lines.append(f"  initialised: {_few(self.initialised)}")
        if self.missing:
            lines.append(f"  missing: {_few(self.missing)}")
        if self.unexpected:
            lines.append(f"  unused: {_few(self.unexpected)}")
        for k, (s, t) in list(self.shape_mismatch.items())[:4]:
            lines.append(f"  shape mismatch: {k} source {tuple(s)} vs target {tuple(t)}")
        return "\n".join(lines)

    def check(self, allow_missing: bool = False, min_fraction: float = 0.0) -> "LoadReport":
        """Raise :class:`WeightTransferError` unless the transfer is complete enough.

        Args:
            allow_missing: accept undeclared missing target keys (they keep their initial values).
            min_fraction: least fraction of target entries that must be transferred (0 still requires one).
        """
        total = self.n_transferred + len(self.initialised) + len(self.missing)
        if self.n_transferred == 0:
            raise WeightTransferError(
                f"no weight of {self.source or 'the checkpoint'} matched the network: the model would silently stay "
                f"random. Check the architecture (depth, shortcut type, backbone) and the key prefix.\n{self.summary()}"
            )
        if self.missing and not allow_missing:
            raise WeightTransferError(
                f"{len(self.missing)} parameters of the network got no pre-trained value from "
                f"{self.source or 'the checkpoint'} and were not declared as new layers.\n{self.summary()}"
            )
        if total and self.n_transferred / total < min_fraction:
            raise WeightTransferError(
                f"only {self.n_transferred}/{total} entries transferred (< {min_fraction:.0%}).\n{self.summary()}"
            )
        return self

    def log(self, level: int = logging.INFO) -> "LoadReport":
        logger.log(level, self.summary())
        return self


def load_with_report(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str = "",
    initialise: tuple[str, ...] | list[str] = (),
    allow_missing: bool = False,
    drop: tuple[str, ...] | list[str] = (),
    allow_unexpected: bool = False,
) -> LoadReport:
    """Copy every entry of ``state_dict`` whose name and shape match ``model`` and report the rest.

    Args:
        model: the target network; modified in place.
        state_dict: source tensors, already renamed to the target's key names.
        source: a name for messages.
        initialise: prefixes of target keys that are declared new (a new head) and keep their initial values.
        allow_missing: accept undeclared target keys without a source value.
        drop: prefixes of source keys that are expected to stay unused (a pre-training head).
        allow_unexpected: accept any unused source key. By default an undeclared unused source key is an error:
            e.g. ResNet-34 weights offered to a ResNet-18 would otherwise "load" with a third of their layers.

    Raises:
        WeightTransferError: nothing matched, undeclared keys are missing (unless ``allow_missing``), or undeclared
            source keys were not used (unless ``allow_unexpected``).
    """
    target = model.state_dict()
    report = LoadReport(source=source)
    new_state = {}
    for key, value in target.items():
        declared = any(key.startswith(p) for p in initialise)
        if key in state_dict and not declared:
            src = state_dict[key]
            if tuple(src.shape) == tuple(value.shape):
                new_state[key] = src.to(dtype=value.dtype)
                report.loaded.append(key)
                continue
            report.shape_mismatch[key] = (tuple(src.shape), tuple(value.shape))
        (report.initialised if declared else report.missing).append(key)
    report.unexpected = [k for k in state_dict if k not in target or k in report.initialised]
    report.check(allow_missing=allow_missing)
    stray = [k for k in report.unexpected if k not in report.initialised and not any(k.startswith(p) for p in drop)]
    if stray and not allow_unexpected:
        raise WeightTransferError(
            f"{len(stray)} tensors of {source or 'the checkpoint'} have no place in the network "
            f"(e.g. {', '.join(stray[:4])}): it was saved from a different architecture. Declare them in `drop` if "
            f"they are a head you mean to discard.\n{report.summary()}"
        )
    model.load_state_dict(new_state, strict=False)
    return report.log()


# ----------------------------------------------------------------------------------------------------------------------
# Reading weight files
# ----------------------------------------------------------------------------------------------------------------------
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_STATE_DICT_WRAPPERS = ("state_dict", "net", "model", "network")


def _reason(error: BaseException) -> str:
    """The informative line of a ``torch.load`` error (torch's weights-only errors start with generic advice)."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1].strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _is_weights_only_refusal(error: BaseException) -> bool:
    """True when ``torch.load(weights_only=True)`` refused a pickled global (a class, function or module reference),
    not when the file is no pickle at all (e.g. "Unsupported operand")."""
    return isinstance(error, pickle.UnpicklingError) and bool(_REFUSED_GLOBAL.search(str(error)))


def _refusal_message(path: Path, error: BaseException, pickle_hint: str) -> str:
    found = _REFUSED_GLOBAL.search(str(error))
    what = f"`{found.group(1)}`" if found else "an object that is not a tensor"
    plain = path.with_name(f"{path.stem}_state_dict{path.suffix or '.pt'}")
    return (
        f"{path} is not a plain tensor state dict: torch.load(weights_only=True) refuses it because it pickles "
        f"{what} (a class instance, function or module reference; unpickling it could run arbitrary code). If you "
        f"trust the file's source, convert it once with monai_ext.weights.report.convert_trusted_checkpoint("
        f"'{path}', '{plain}') and pass {plain.name}{pickle_hint}; otherwise ask its publisher for the weights "
        "saved as torch.save(model.state_dict(), path)."
    )


def load_weights_file(path: str | os.PathLike, allow_pickle: bool = False, pickle_hint: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file and say what to do.

    Every weight loader of ``monai_ext`` reads files through this function: only tensors and plain containers are
    unpickled, so a file that pickles a class instance, a function or a whole module is refused (it could run
    arbitrary code when loaded) instead of being executed.

    Args:
        path: the weights file.
        allow_pickle: unpickle a refused file in full (``weights_only=False``) with a warning. Only for files from a
            trusted source.
        pickle_hint: extra advice appended to the refusal message (e.g. the loader's own ``allow_pickle`` option).

    Returns:
        What the file holds (usually a state dict, or a dict that holds one).

    Raises:
        FileNotFoundError: no such file.
        CheckpointFileError: the file is empty, truncated, corrupt or not a ``torch.save`` file, or (without
            ``allow_pickle``) ``weights_only`` loading refuses it; the message names the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: check the path of the weights file.")
    if path.stat().st_size == 0:
        raise CheckpointFileError(f"{path} is empty (0 bytes): the download or copy failed; download it again.")
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise CheckpointFileError(
                f"{path} is a Git LFS pointer, not the weights: fetch the file itself (git lfs pull) or download it "
                "again."
            )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if not _is_weights_only_refusal(error):
            raise CheckpointFileError(
                f"{path} cannot be read as a PyTorch checkpoint ({_reason(error)}): it is truncated, corrupt or "
                "not a file written by torch.save; download it again (and compare its size or sha256 with the "
                "published file)."
            ) from error
        if not allow_pickle:
            raise CheckpointFileError(_refusal_message(path, error, pickle_hint)) from error
    logger.warning("%s needs full unpickling (allow_pickle=True); only do this for trusted files.", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def _tensor_entries(content: Any) -> dict[str, torch.Tensor]:
    """The tensors of a module, a state dict, or a checkpoint dict that holds one under a usual key."""
    if isinstance(content, torch.nn.Module):
        content = content.state_dict()
    if not isinstance(content, Mapping):
        return {}
    for key in _STATE_DICT_WRAPPERS:
        inner = content.get(key)
        if isinstance(inner, torch.nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            content = inner
            break
    return {str(k): v.detach().cpu().clone() for k, v in content.items() if isinstance(v, torch.Tensor)}


def convert_trusted_checkpoint(path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Re-save a *trusted* checkpoint that ``weights_only`` loading refuses as a plain ``{name: tensor}`` state dict.

    The file is unpickled in full (``torch.load(weights_only=False)``), which can run arbitrary code: use this only on
    files whose source you trust. The tensors kept are those of a pickled module (its ``state_dict()``), of the state
    dict under ``state_dict``/``net``/``model``/``network``, or of the top level; every other object (optimizer
    state, configuration objects, ...) is dropped. Every loader of ``monai_ext`` reads the output.

    Args:
        path: the checkpoint to convert.
        output: the plain state dict to write (written to a temporary file first, then renamed).

    Returns:
        ``output``, checked to load with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointFileError: the file holds no tensors.
    """
    path, output = Path(path), Path(output)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: check the path of the checkpoint to convert.")
    logger.warning("unpickling %s in full (weights_only=False) to convert it: only do this for trusted files.", path)
    state = _tensor_entries(torch.load(path, map_location="cpu", weights_only=False))
    if not state:
        raise CheckpointFileError(
            f"{path} holds no tensors (at its top level or under {', '.join(_STATE_DICT_WRAPPERS)}): nothing to "
            "convert."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    torch.save(state, partial)
    os.replace(partial, output)
    load_weights_file(output)  # the converted file passes weights_only loading
    return output
