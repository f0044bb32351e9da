"""Exports at the end of a training run."""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch

from monai_ext.engines.checkpoint import is_main_process, unwrap_model
from monai_ext.weights.report import load_weights_file, load_with_report

__all__ = ["load_best_weights", "export_best_encoder"]

logger = logging.getLogger(__name__)


def load_best_weights(network: torch.nn.Module, model_path: str) -> torch.nn.Module:
    """Load the bundle's best ``models/model.pt`` into ``network`` (unwrapped); keep the current weights if absent."""
    net = unwrap_model(network)
    if os.path.exists(model_path):
        load_with_report(net, load_weights_file(model_path), source=model_path)
        logger.info(f"loaded the best weights from {model_path}")
    else:
        logger.warning(f"{model_path} not found (no validation ran?): exporting the last weights instead")
    return net


def export_best_encoder(
    network: torch.nn.Module, model_path: str, output_path: str, exporter: Callable[[torch.nn.Module, str], object]
) -> str | None:
    """Write the encoder (``network.encoder``) of the best weights with ``exporter(encoder, output_path)``.

    Runs on the main process only; returns the path written (None on other ranks).
    """
    if not is_main_process():
        return None
    net = load_best_weights(network, model_path)
    exporter(net.encoder, output_path)
    logger.info(f"exported the encoder to {output_path}")
    return output_path
