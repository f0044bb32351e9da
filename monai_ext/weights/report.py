"""A report of what a weight transfer did, key by key.

A pre-trained weight that silently stays random is the most common bug of transfer learning: every loader in
``monai_ext`` returns a :class:`LoadReport` and refuses to finish when nothing (or too little) was transferred.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

__all__ = ["LoadReport", "WeightTransferError", "load_with_report"]

logger = logging.getLogger(__name__)


class WeightTransferError(RuntimeError):
    """Raised when pre-trained weights do not fit the target network (wrong architecture, nothing matched, ...)."""


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
