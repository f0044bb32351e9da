"""Distributed-training helpers for the bundles' ``multi_gpu_train.json``.

Under ``torchrun`` every rank runs the same handlers. Checkpoint writers here already write on rank 0 only and the
metrics gather over ranks, but MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` would print every loss line
once per rank and write one TensorBoard event file per rank into the same ``logs/`` folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.handlers import StatsHandler, TensorBoardImageHandler, TensorBoardStatsHandler

from .checkpoint import is_main_process

__all__ = ["main_process_logging"]

_LOGGING_HANDLERS = (StatsHandler, TensorBoardStatsHandler, TensorBoardImageHandler)


def main_process_logging(handlers: Sequence[Any] | None) -> list[Any]:
    """The handlers to attach on this rank: all of them on rank 0 (or without ``torch.distributed``), and on the
    other ranks all but the logging ones (MONAI's Stats/TensorBoard handlers).

    Used in ``multi_gpu_train.json`` as
    ``"train#trainer#train_handlers": "$monai_ext.engines.distributed.main_process_logging(@train#handlers)"``.
    """
    handlers = list(handlers or [])
    if is_main_process():
        return handlers
    return [h for h in handlers if not isinstance(h, _LOGGING_HANDLERS)]
