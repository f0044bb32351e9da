"""Losses for multi-domain co-training and multi-label pre-training."""

from .multidomain import (
    BranchMaskedDiceCELoss,
)
from .multilabel import (
    PresentClassDiceBCELoss,
)

__all__ = [
    "BranchMaskedDiceCELoss",
    "PresentClassDiceBCELoss",
]
