"""Spatial transforms whose parameters travel with each sample.

Med3D (Chen et al. 2019, arXiv:1904.00625) resamples every volume to the median voxel spacing of **its own**
dataset; in a multi-domain datalist each item therefore carries its target spacing, and ``SpacingFromKeyd``
resamples to it with MONAI's ``Spacing`` (affine-aware, so labels stay aligned with their image).
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform, Spacing
from monai.utils import ensure_tuple_rep

__all__ = ["SpacingFromKeyd", "SpacingFromKeyD", "SpacingFromKeyDict"]


class SpacingFromKeyd(MapTransform):
    """Resample ``keys`` to the voxel spacing stored in each item under ``pixdim_key``.

    Args:
        keys: keys of the images to resample (image and label).
        pixdim_key: item key holding the target spacing (a sequence of floats, one per spatial axis).
        mode: interpolation per key ("bilinear" for images, "nearest" for labels).
        padding_mode: padding per key.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixdim_key: str = "target_spacing",
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "border",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.pixdim_key = pixdim_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = ensure_tuple_rep(padding_mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.pixdim_key not in d:
            raise KeyError(
                f"item has no '{self.pixdim_key}' entry: build the datalist with "
                "monai_ext.data.multidomain_datalist (it adds each dataset's median spacing)."
            )
        pixdim = [float(p) for p in d[self.pixdim_key]]
        resample = Spacing(pixdim=pixdim)
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            d[key] = resample(d[key], mode=mode, padding_mode=padding_mode)
        return d


SpacingFromKeyD = SpacingFromKeyDict = SpacingFromKeyd
