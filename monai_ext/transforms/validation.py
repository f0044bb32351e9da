"""Checks that stop a pipeline at a bad input file, naming the file and saying what to do.

MONAI's ``LoadImaged`` reads whatever a file holds, and what fails later does not say which file is at fault: a
truncated ``.nii.gz`` fails with "Compressed file ended before the end-of-stream marker was reached", a label value
outside the declared classes with an index error inside ``one_hot``, a 2D file in a 3D pipeline inside a crop, and
NaN intensities or an image/label pair on different grids do not fail at all (a NaN loss; a label resampled off the
anatomy). These transforms raise :class:`~monai_ext.data.datalists.DatalistError` (a ``ValueError``) naming the file
(the ``filename_or_obj`` of the loaded MetaTensor) and the fix. MONAI wraps every transform error in
``RuntimeError("applying transform ...")``: the named error is its cause, printed above it in the traceback (and in
the traceback text a ``DataLoader`` worker passes on).

Place them right after loading, on channel-first data, before any spatial transform::

    CheckedLoadImaged(keys=["image", "label"], ensure_channel_first=True),
    CheckSpatialDimsd(keys=["image", "label"], spatial_dims=3),
    CheckSameGridd(keys=["image", "label"]),
    CheckFinited(keys="image"),
    CheckLabelValuesd(keys="label", labels=num_classes),

The datalist builders find most of these problems earlier, from the headers (:mod:`monai_ext.data.datalists`; the
voxel checks with ``deep=True`` or ``monai-ext datalist --deep``); these transforms are the last line for what
reaches a pipeline anyway (a datalist built elsewhere, a file replaced after the check).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import LoadImaged, MapTransform

from monai_ext.data.datalists import DatalistError, _affine_corner_distance, read_volume_header

__all__ = [
    "CheckedLoadImaged",
    "CheckedLoadImageD",
    "CheckedLoadImageDict",
    "CheckSpatialDimsd",
    "CheckSpatialDimsD",
    "CheckSpatialDimsDict",
    "CheckSameGridd",
    "CheckSameGridD",
    "CheckSameGridDict",
    "CheckFinited",
    "CheckFiniteD",
    "CheckFiniteDict",
    "CheckLabelValuesd",
    "CheckLabelValuesD",
    "CheckLabelValuesDict",
    "source_name",
]

_FIND_ALL = "`monai-ext datalist <dataset folder> --deep` lists every such file"


def source_name(img: Any, key: Hashable) -> str:
    """The file a loaded image came from (its ``filename_or_obj``), else a description of the item entry."""
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj")
    if isinstance(name, (list, tuple)):
        name = ", ".join(str(n) for n in name)
    return str(name) if name else f"the '{key}' entry of the item (no file name in its meta data)"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class CheckedLoadImaged(LoadImaged):
    """:class:`monai.transforms.LoadImaged` whose errors name the file that cannot be loaded and say what to do.

    Takes the arguments of ``LoadImaged``. When loading fails, the item's files are diagnosed: first their headers
    (:func:`~monai_ext.data.datalists.read_volume_header`: empty, truncated, not gzip, unreadable), then, if every
    header is sound, each file alone; the first culprit found is named in a
    :class:`~monai_ext.data.datalists.DatalistError` raised from the original error.
    """

    def __call__(self, data: Mapping[Hashable, Any], reader=None) -> dict[Hashable, Any]:
        try:
            return super().__call__(data, reader)
        except Exception as error:
            named = self._diagnose(data, reader, error)
            if named is None:
                raise
            raise named from error

    def _files(self, data: Mapping[Hashable, Any]) -> list[tuple[Hashable, str]]:
        files = []
        for key in self.keys:
            value = data.get(key)
            for path in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(path, (str, os.PathLike)):
                    files.append((key, os.fspath(path)))
        return files

    def _diagnose(self, data: Mapping[Hashable, Any], reader, error: Exception) -> DatalistError | None:
        files = self._files(data)
        if not files or (not self.allow_missing_keys and any(k not in data for k in self.keys)):
            return None  # a missing key: MONAI's own error says which
        for key, path in files:
            try:
                read_volume_header(path)
            except DatalistError as e:
                return DatalistError(f"{e} (the '{key}' entry of the item)")
        for key, path in files:
            try:
                self._loader(path, reader)
            except Exception as e:
                return DatalistError(
                    f"{path}: cannot be loaded ({type(e).__name__}: {_first_line(e)}): the file is truncated or "
                    f"corrupt (the '{key}' entry of the item); re-download or re-export it ({_FIND_ALL})."
                )
        listed = ", ".join(p for _, p in files)
        return DatalistError(
            f"loading {listed} failed ({type(error).__name__}: {_first_line(error)}), though each file loads alone: "
            "check that the files of one entry (e.g. the channels of an image) have the same shape."
        )


class CheckSpatialDimsd(MapTransform):
    """Refuse channel-first data whose number of spatial dimensions is not ``spatial_dims``.

    A 2D file (one slice) in a 3D dataset otherwise fails later inside a crop or a convolution without the file's
    name.

    Args:
        keys: keys of the loaded, channel-first images (``LoadImaged(..., ensure_channel_first=True)``).
        spatial_dims: the spatial dimensions every image must have.
        allow_missing_keys: skip absent keys.

    Raises:
        DatalistError: an image has another number of spatial dimensions (the message names its file).
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(spatial_dims) < 1:
            raise ValueError(f"spatial_dims must be at least 1, got {spatial_dims}.")
        self.spatial_dims = int(spatial_dims)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            shape = tuple(d[key].shape)
            if len(shape) - 1 != self.spatial_dims:
                raise DatalistError(
                    f"{source_name(d[key], key)}: {len(shape) - 1}D data (channel-first shape {shape}) where "
                    f"{self.spatial_dims}D volumes are expected: re-export the whole volume (was a single slice "
                    "saved?), remove the entry from the datalist, or use a 2D pipeline."
                )
        return d


def _as_4x4(affine: Any) -> np.ndarray:
    """A 4x4 affine from a 4x4 (3D) or 3x3 (2D) one."""
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=float)
    if a.shape == (4, 4):
        return a
    out = np.eye(4)
    n = a.shape[0] - 1
    out[:n, :n], out[:n, 3] = a[:n, :n], a[:n, n]
    return out


class CheckSameGridd(MapTransform):
    """Refuse an item whose images (e.g. an image and its label) do not lie on one voxel grid.

    The first key is the reference; every other key must have its spatial shape and an affine that puts the grid
    corners within ``tolerance_mm`` of the reference's. Use it before ``Orientationd``/``Spacingd``, which would
    otherwise resample a label on another grid independently, off the anatomy.

    Args:
        keys: the reference key first (``["image", "label"]``); loaded, channel-first MetaTensors.
        tolerance_mm: largest corner distance accepted (default: half the smallest voxel spacing of the reference).
        allow_missing_keys: skip absent keys.

    Raises:
        DatalistError: a shape or affine differs (the message names both files).
    """

    def __init__(self, keys: KeysCollection, tolerance_mm: float | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) < 2:
            raise ValueError(f"CheckSameGridd compares at least two keys (reference first), got {self.keys}.")
        self.tolerance_mm = tolerance_mm

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if len(keys) < 2:
            return d
        ref_key, ref = keys[0], d[keys[0]]
        ref_name, ref_shape = source_name(ref, ref_key), tuple(ref.shape[1:])
        for key in keys[1:]:
            other, name = d[key], source_name(d[key], key)
            if tuple(other.shape[1:]) != ref_shape:
                raise DatalistError(
                    f"{name}: spatial shape {tuple(other.shape[1:])} differs from {ref_shape} of {ref_name}: the "
                    f"'{key}' file belongs to another image or was resampled; re-export it on the grid of "
                    f"{ref_name}."
                )
            if not (hasattr(ref, "affine") and hasattr(other, "affine")):
                continue
            a, b = _as_4x4(ref.affine), _as_4x4(other.affine)
            distance = _affine_corner_distance(a, b, ref_shape)
            spacing = np.linalg.norm(a[:3, : min(3, len(ref_shape))], axis=0)
            limit = self.tolerance_mm if self.tolerance_mm is not None else 0.5 * float(np.min(spacing))
            if distance > limit:
                raise DatalistError(
                    f"{name}: its grid is {distance:.3g} mm away from the grid of {ref_name} (tolerance "
                    f"{limit:.3g} mm): fix the '{key}' file's header (copy the affine of {ref_name}) or resample "
                    "it onto that grid."
                )
        return d


class CheckFinited(MapTransform):
    """Refuse images that hold NaN or infinite values (training on them gives a NaN loss without saying why).

    Args:
        keys: keys of the loaded images.
        allow_missing_keys: skip absent keys.

    Raises:
        DatalistError: an image holds NaN/inf values (the message names its file and counts them).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            if not (img.is_floating_point() or img.is_complex()):
                continue
            bad = int((~torch.isfinite(img)).sum())
            if bad:
                n_nan = int(torch.isnan(img).sum())
                raise DatalistError(
                    f"{source_name(d[key], key)}: {bad} non-finite values ({n_nan} NaN, {bad - n_nan} inf): fix the "
                    "export, or replace them (e.g. with the image minimum) and save the file again ("
                    f"{_FIND_ALL})."
                )
        return d


def _declared_values(labels: int | Mapping[int, Any] | Iterable[int]) -> set[int]:
    if isinstance(labels, (int, np.integer)):
        if int(labels) < 1:
            raise ValueError(f"labels (a number of classes) must be at least 1, got {labels}.")
        return set(range(int(labels)))
    values = labels.keys() if isinstance(labels, Mapping) else labels
    declared = {int(v) for v in values}
    if not declared:
        raise ValueError("labels must declare at least one value.")
    return declared


class CheckLabelValuesd(MapTransform):
    """Refuse labels whose values are not integers among the declared classes.

    A value outside the classes (e.g. 7 in a 3-class task) otherwise fails inside the loss's one-hot encoding with an
    index error that names no file; a non-integer value means the label was interpolated.

    Args:
        keys: keys of the loaded labels (index maps).
        labels: the declared values: a number of classes ``n`` (values ``0 .. n-1``), a mapping value -> name, or
            the values.
        allow_missing_keys: skip absent keys.

    Raises:
        DatalistError: a label holds other values (the message names its file, the values and the declared ones).
    """

    def __init__(
        self,
        keys: KeysCollection,
        labels: int | Mapping[int, Any] | Iterable[int],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.declared = _declared_values(labels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = torch.unique(torch.as_tensor(d[key]).detach())
            if values.is_floating_point():
                if not bool(torch.all(torch.isfinite(values) & (values == torch.round(values)))):
                    raise DatalistError(
                        f"{source_name(d[key], key)}: the label holds non-integer values (e.g. "
                        f"{values[values != torch.round(values)][:3].tolist()}): it was interpolated; resample labels "
                        "with nearest-neighbour interpolation and save it again."
                    )
            extra = sorted({int(v) for v in values.tolist()} - self.declared)
            if extra:
                raise DatalistError(
                    f"{source_name(d[key], key)}: label values {extra} are not among the declared classes "
                    f"{sorted(self.declared)}: fix the label file, or declare the classes (the dataset's labels / "
                    f"num_classes) ({_FIND_ALL})."
                )
        return d


CheckedLoadImageD = CheckedLoadImageDict = CheckedLoadImaged
CheckSpatialDimsD = CheckSpatialDimsDict = CheckSpatialDimsd
CheckSameGridD = CheckSameGridDict = CheckSameGridd
CheckFiniteD = CheckFiniteDict = CheckFinited
CheckLabelValuesD = CheckLabelValuesDict = CheckLabelValuesd
