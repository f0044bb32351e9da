"""Transforms in MONAI's array/dictionary pattern."""

from .abdomenatlas import (
    class_order_map,
    remap_channels,
    AssembleMultiHotLabel,
    AssembleMultiHotLabeld,
    AssembleMultiHotLabelD,
    AssembleMultiHotLabelDict,
)
from .spatial import (
    SpacingFromKeyd,
    SpacingFromKeyD,
    SpacingFromKeyDict,
)

__all__ = [
    "class_order_map",
    "remap_channels",
    "AssembleMultiHotLabel",
    "AssembleMultiHotLabeld",
    "AssembleMultiHotLabelD",
    "AssembleMultiHotLabelDict",
    "SpacingFromKeyd",
    "SpacingFromKeyD",
    "SpacingFromKeyDict",
]
