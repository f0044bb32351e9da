"""Multi-label (per-class sigmoid) predictions: an index map from class probabilities, and one mask file per class.

A network trained with per-class sigmoids (SuPreM: Li, Zhou et al., ICLR 2024, arXiv:2501.11253) predicts one
probability channel per class, and the channels may overlap. :class:`MultiLabelToIndexMap` turns them into one
index map (0 = background, ``i`` = class ``i`` of the class list, the most probable class above a threshold), the
format of AbdomenAtlas' ``combined_labels.nii.gz``. :class:`SaveClassMasks` writes
``<output_dir>/<case>/<class>.nii.gz`` (one binary mask per class, the format of AbdomenAtlas' ``segmentations/``
folder) and, optionally, the index map.
"""

from __future__ import annotations

import os
from copy import deepcopy
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SaveImage, Transform
from monai.utils import ImageMetaKey, convert_to_tensor

__all__ = [
    "case_name_from_path",
    "MultiLabelToIndexMap",
    "MultiLabelToIndexMapd",
    "MultiLabelToIndexMapD",
    "MultiLabelToIndexMapDict",
    "SaveClassMasks",
    "SaveClassMasksd",
    "SaveClassMasksD",
    "SaveClassMasksDict",
]

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def case_name_from_path(path: str | os.PathLike) -> str:
    """Case name of an image file: its folder's name for AbdomenAtlas' ``<case>/ct.nii.gz``, else the file name
    without extension (``/data/liver_001.nii.gz`` -> ``liver_001``)."""
    name = os.path.basename(os.fspath(path))
    stem = name
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            break
    if stem.lower() == "ct":
        parent = os.path.basename(os.path.dirname(os.path.abspath(os.fspath(path))))
        return parent or stem
    return stem


class MultiLabelToIndexMap(Transform):
    """One index map from per-class probabilities: the most probable class where it exceeds ``threshold``.

    For an input ``[C, *spatial]`` of per-class (sigmoid) probabilities, the output ``[1, *spatial]`` is 0 where
    no channel exceeds ``threshold`` and ``argmax + 1`` elsewhere, so value ``i`` means the ``i``-th class of the
    channel list (AbdomenAtlas' ``combined_labels.nii.gz`` convention, SuPreM: Li, Zhou et al., ICLR 2024,
    arXiv:2501.11253). Meta data (affine, applied operations) are kept, so ``Invertd`` can map it back.

    Args:
        threshold: a voxel is foreground where its largest probability is strictly above this value.
        dtype: output dtype (``torch.uint8`` holds up to 255 classes).

    Raises:
        ValueError: the input has no channel or more classes than ``dtype`` can index.
    """

    def __init__(self, threshold: float = 0.5, dtype: torch.dtype = torch.uint8) -> None:
        self.threshold = float(threshold)
        self.dtype = dtype

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        """
        Args:
            img: probabilities ``[C, *spatial]`` (a MetaTensor keeps its meta data).

        Returns:
            the index map ``[1, *spatial]`` of type ``dtype``.
        """
        probs = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        n_classes = probs.shape[0] if probs.ndim else 0
        if probs.ndim < 2 or n_classes < 1:
            raise ValueError(f"expected per-class probabilities [C, *spatial], got shape {tuple(probs.shape)}.")
        if not self.dtype.is_floating_point and n_classes > torch.iinfo(self.dtype).max:
            raise ValueError(f"{n_classes} classes cannot be indexed with {self.dtype}; pass dtype=torch.int16.")
        plain = probs.as_tensor() if isinstance(probs, MetaTensor) else probs
        best, index = torch.max(plain, dim=0, keepdim=True)
        out = torch.where(best > self.threshold, index + 1, torch.zeros_like(index)).to(self.dtype)
        if isinstance(probs, MetaTensor):
            out = MetaTensor(out, meta=dict(probs.meta), applied_operations=deepcopy(probs.applied_operations))
        return out


class MultiLabelToIndexMapd(MapTransform):
    """Dictionary wrapper of :class:`MultiLabelToIndexMap`.

    Args:
        keys: keys of the per-class probabilities.
        output_keys: where to write the index maps (default: replace ``keys``); one per key.
        threshold: see :class:`MultiLabelToIndexMap`.
        dtype: see :class:`MultiLabelToIndexMap`.
        allow_missing_keys: do not raise when a key is absent.

    Raises:
        ValueError: ``output_keys`` and ``keys`` differ in length.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        threshold: float = 0.5,
        dtype: torch.dtype = torch.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_keys is None:
            output_keys = self.keys
        self.output_keys = (output_keys,) if isinstance(output_keys, str) else tuple(output_keys)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"{len(self.keys)} keys but {len(self.output_keys)} output_keys; give one per key.")
        self.to_index = MultiLabelToIndexMap(threshold, dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.to_index(d[key])
        return d


class SaveClassMasks(Transform):
    """Write one binary mask per class, ``<output_dir>/<case>/<class><ext>``, plus an optional index map.

    The layout of AbdomenAtlas' ``segmentations/`` folder (Li, Zhou et al., ICLR 2024, arXiv:2501.11253), so a
    multi-label prediction can be read back like a label folder. The masks are written with the input's affine
    (``resample=False``): invert the pre-processing first (``Invertd``) to save them in the original image space.

    Args:
        classes: class names, one per channel, used as file names.
        output_dir: root folder; one sub-folder per case is created.
        output_ext: file extension (any MONAI writer's: ``.nii.gz``, ``.nrrd``, ...).
        output_dtype: dtype of the files.
        index_map_name: file name (without extension) of the index map, when one is passed.
        print_log: log every file written.

    Raises:
        ValueError: empty or duplicated ``classes``, or a class name that is not a plain file name.
    """

    def __init__(
        self,
        classes: Sequence[str],
        output_dir: str | os.PathLike,
        output_ext: str = ".nii.gz",
        output_dtype: Any = np.uint8,
        index_map_name: str = "combined_labels",
        print_log: bool = False,
    ) -> None:
        classes = tuple(str(c) for c in classes)
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be a non-empty list of distinct names, got {list(classes)}.")
        bad = [c for c in (*classes, index_map_name) if not c or os.sep in c or c in (".", "..")]
        if bad:
            raise ValueError(f"{bad} cannot be used as file names; rename the classes.")
        if index_map_name in classes:
            raise ValueError(f"index_map_name {index_map_name!r} is also a class name; choose another one.")
        self.classes = classes
        self.output_dir = Path(output_dir)
        self.index_map_name = index_map_name
        self.saver = SaveImage(
            output_ext=output_ext, output_dtype=output_dtype, resample=False, separate_folder=False, print_log=print_log
        )

    def __call__(
        self,
        masks: torch.Tensor,
        case: str | None = None,
        index_map: torch.Tensor | None = None,
    ) -> list[Path]:
        """
        Args:
            masks: ``[len(classes), *spatial]`` binary masks (a MetaTensor, whose affine is written).
            case: the case's folder name (default: :func:`case_name_from_path` of the masks' ``filename_or_obj``).
            index_map: optional ``[1, *spatial]`` index map written as ``<index_map_name><ext>``.

        Returns:
            the files written.

        Raises:
            ValueError: the number of channels differs from the number of classes, or no case name can be found.
        """
        if masks.shape[0] != len(self.classes):
            raise ValueError(
                f"the prediction has {masks.shape[0]} channels but {len(self.classes)} classes were given; pass the "
                "classes the network was trained with."
            )
        meta = dict(masks.meta) if isinstance(masks, MetaTensor) else {}
        if case is None:
            source = meta.get(ImageMetaKey.FILENAME_OR_OBJ)
            if not source:
                raise ValueError("no case name: pass case= or give masks whose meta data name their source file.")
            case = case_name_from_path(str(source))
        folder = self.output_dir / str(case)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        outputs = [(name, masks[c : c + 1]) for c, name in enumerate(self.classes)]
        if index_map is not None:
            outputs.append((self.index_map_name, index_map))
        for name, array in outputs:
            array = array if isinstance(array, MetaTensor) else MetaTensor(array, meta=meta)
            self.saver(array, filename=str(folder / name))
            written.append(folder / f"{name}{self.saver.output_ext}")
        return written


class SaveClassMasksd(MapTransform):
    """Dictionary wrapper of :class:`SaveClassMasks`; the item is returned unchanged.

    Args:
        keys: key of the binary masks (exactly one).
        classes: see :class:`SaveClassMasks`.
        output_dir: see :class:`SaveClassMasks`.
        index_map_key: key of an index map to save too (optional; may be absent from an item).
        case_key: key of the case name (optional; when absent the name comes from the masks' source file).
        output_ext: see :class:`SaveClassMasks`.
        output_dtype: see :class:`SaveClassMasks`.
        index_map_name: see :class:`SaveClassMasks`.
        print_log: see :class:`SaveClassMasks`.

    Raises:
        ValueError: more than one key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        classes: Sequence[str],
        output_dir: str | os.PathLike,
        index_map_key: str | None = None,
        case_key: str | None = "case",
        output_ext: str = ".nii.gz",
        output_dtype: Any = np.uint8,
        index_map_name: str = "combined_labels",
        print_log: bool = False,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"SaveClassMasksd saves one multi-channel prediction; got keys {self.keys}.")
        self.index_map_key = index_map_key
        self.case_key = case_key
        self.save = SaveClassMasks(classes, output_dir, output_ext, output_dtype, index_map_name, print_log)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case = d.get(self.case_key) if self.case_key is not None else None
        index_map = d.get(self.index_map_key) if self.index_map_key is not None else None
        self.save(d[self.keys[0]], case=None if case is None else str(case), index_map=index_map)
        return d


MultiLabelToIndexMapD = MultiLabelToIndexMapDict = MultiLabelToIndexMapd
SaveClassMasksD = SaveClassMasksDict = SaveClassMasksd
