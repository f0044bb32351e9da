"""Multi-hot labels of AbdomenAtlas, and moving channels between class orders.

AbdomenAtlas 1.0/1.1 (Li, Zhou et al., ICLR 2024, arXiv:2501.11253; licence CC BY-NC-SA 4.0) stores one folder per
CT: ``BDMAP_xxxxxxxx/ct.nii.gz``, ``segmentations/<class>.nii.gz`` (one binary mask per class) and
``combined_labels.nii.gz`` (an index map, ``i`` -> ``ABDOMENATLAS_CLASSES[i - 1]``). SuPreM pre-trains on a multi-hot
tensor with one channel per class. :class:`AssembleMultiHotLabel` builds it *with the CT's affine*, so that
``Orientationd``/``Spacingd`` resample image and label identically (a label without the CT's affine is resampled
as if it were 1 mm RAS and no longer lies on the anatomy).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform

from monai_ext.data.abdomenatlas_classes import ABDOMENATLAS_CLASSES

__all__ = [
    "class_order_map",
    "remap_channels",
    "AssembleMultiHotLabel",
    "AssembleMultiHotLabeld",
    "AssembleMultiHotLabelD",
    "AssembleMultiHotLabelDict",
]

_MISSING_POLICIES = ("error", "unknown")
_REFERENCE_META_KEYS = ("original_affine", "spatial_shape", "space")


def class_order_map(src_classes: Sequence[str], dst_classes: Sequence[str], allow_missing: bool = False) -> list[int]:
    """Position in ``src_classes`` of every class of ``dst_classes``.

    Example: ``class_order_map(SUPREM_CLASSES_32, ABDOMENATLAS_CLASSES)[0]`` is 7 ("aorta" is channel 7 of a SuPreM
    checkpoint and channel 0 of an AbdomenAtlas label).

    Args:
        src_classes: class names in the order of the source channels.
        dst_classes: class names in the wanted order.
        allow_missing: give -1 for a class that ``src_classes`` lacks instead of raising.

    Returns:
        one source index (or -1) per destination class.

    Raises:
        ValueError: a class of ``dst_classes`` is not in ``src_classes`` (unless ``allow_missing``), or a list has
            duplicates.
    """
    for name, classes in (("src_classes", src_classes), ("dst_classes", dst_classes)):
        if len(set(classes)) != len(classes):
            duplicates = sorted({c for c in classes if list(classes).count(c) > 1})
            raise ValueError(f"{name} lists {duplicates} more than once.")
    position = {c: i for i, c in enumerate(src_classes)}
    absent = [c for c in dst_classes if c not in position]
    if absent and not allow_missing:
        raise ValueError(
            f"classes {absent} are not in the source order ({len(src_classes)} classes: {', '.join(src_classes)}); "
            "pass allow_missing=True (or a fill value to remap_channels) to leave them empty."
        )
    return [position.get(c, -1) for c in dst_classes]


def remap_channels(
    x: torch.Tensor | np.ndarray,
    src_classes: Sequence[str],
    dst_classes: Sequence[str],
    dim: int = 0,
    fill: float | None = None,
) -> torch.Tensor | np.ndarray:
    """Reorder (and select) the class channels of a label, a prediction or a head weight.

    Use ``dim=0`` for a label ``[C, ...]`` or a convolution weight/bias ``[C_out, ...]`` and ``dim=1`` for a batch
    ``[B, C, ...]``. For instance ``remap_channels(w, SUPREM_CLASSES_32, ABDOMENATLAS_CLASSES)`` turns the final
    convolution of a SuPreM checkpoint into one for the 25 AbdomenAtlas classes.

    Args:
        x: tensor or array with one entry per source class along ``dim``.
        src_classes: class names of ``x`` along ``dim``.
        dst_classes: wanted class names and order.
        dim: the class axis.
        fill: value of the channels of classes that ``src_classes`` lacks; ``None`` raises instead.

    Returns:
        the same type as ``x`` with ``len(dst_classes)`` entries along ``dim`` (a new tensor, never a view).

    Raises:
        ValueError: ``x`` does not have ``len(src_classes)`` entries along ``dim``, or a class is absent and
            ``fill`` is None.
    """
    if x.shape[dim] != len(src_classes):
        raise ValueError(
            f"axis {dim} of the input has {x.shape[dim]} entries but {len(src_classes)} source classes were given."
        )
    index = class_order_map(src_classes, dst_classes, allow_missing=fill is not None)
    if isinstance(x, np.ndarray):
        out = np.take(x, [max(i, 0) for i in index], axis=dim)
        moved = np.moveaxis(out, dim, 0)
    else:
        out = torch.index_select(x, dim, torch.as_tensor([max(i, 0) for i in index], device=x.device))
        moved = out.movedim(dim, 0)
    for j, i in enumerate(index):
        if i < 0:
            moved[j] = fill
    return out


def _reference_geometry(reference: Any) -> tuple[np.ndarray, tuple[int, ...], dict]:
    """Affine, shape (spatial, or channel-first) and extra meta data of the CT."""
    if isinstance(reference, MetaTensor):
        meta = {k: reference.meta[k] for k in _REFERENCE_META_KEYS if k in reference.meta}
        return np.asarray(reference.affine, dtype=np.float64), tuple(reference.shape), meta
    if isinstance(reference, (str, Path)):
        header = nib.load(str(reference))
        affine = np.asarray(header.affine, dtype=np.float64)
        shape = tuple(int(s) for s in header.shape[:3])
        return affine, shape, {"original_affine": affine.copy(), "spatial_shape": np.asarray(shape)}
    raise TypeError(
        f"the reference image must be a MetaTensor (after LoadImaged) or the CT's file path, got {type(reference)}."
    )


class AssembleMultiHotLabel(Transform):
    """Stack the per-class masks of an AbdomenAtlas case into a multi-hot label with the CT's affine.

    Dataset: Li, Zhou et al., "AbdomenAtlas" / SuPreM, ICLR 2024 (arXiv:2501.11253). For each class of ``classes``
    the mask ``<label_dir>/<class>.nii.gz`` becomes one channel (voxels > 0 -> 1). Every mask's shape and affine must
    equal the CT's; the output is a :class:`~monai.data.MetaTensor` ``[C, X, Y, Z]`` that carries the CT's affine.
    If none of the requested per-class files exists, the index map ``combined_labels.nii.gz`` is used instead
    (index ``i`` -> channel of ``combined_classes[i - 1]`` when that class is requested).

    A class without a mask is handled by ``missing``: ``"error"`` raises, ``"unknown"`` fills the channel with
    ``unknown_value`` so that :class:`~monai_ext.losses.multilabel.PresentClassDiceBCELoss` ignores it (e.g. the
    classes 10-25 of an AbdomenAtlas 1.0 case). Use the transform before any spatial transform: the masks are
    compared with the CT as stored on disk.

    Args:
        classes: class names, in channel order (default: the 25 of AbdomenAtlas 1.1; any subset or order works).
        missing: "error" or "unknown".
        unknown_value: value of a channel whose mask is missing (with ``missing="unknown"``).
        combined_classes: classes of indices 1, 2, ... of ``combined_labels.nii.gz`` (pass
            ``ABDOMENATLAS_1_0_CLASSES`` for AbdomenAtlas 1.0 maps, whose other classes are not annotated).
        dtype: dtype of the output; the default ``torch.int8`` holds 0, 1 and -1 at one byte per voxel (25 float32
            channels of a 512 x 512 x 300 CT would need 7.9 GB).
        affine_atol: absolute tolerance when comparing a mask's affine with the CT's.

    Raises:
        ValueError: unknown ``missing`` policy, empty or duplicated ``classes``, or ``unknown_value`` not
            representable in ``dtype``.
    """

    def __init__(
        self,
        classes: Sequence[str] = ABDOMENATLAS_CLASSES,
        missing: str = "error",
        unknown_value: float = -1,
        combined_classes: Sequence[str] = ABDOMENATLAS_CLASSES,
        dtype: torch.dtype = torch.int8,
        affine_atol: float = 1e-3,
    ) -> None:
        if missing not in _MISSING_POLICIES:
            raise ValueError(f"missing={missing!r}; use one of {_MISSING_POLICIES}.")
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be a non-empty list of distinct names, got {list(classes)}.")
        if missing == "unknown" and torch.tensor(unknown_value, dtype=dtype).item() != unknown_value:
            raise ValueError(f"unknown_value={unknown_value} cannot be stored as {dtype}; choose another dtype.")
        self.classes = tuple(classes)
        self.missing = missing
        self.unknown_value = unknown_value
        self.combined_classes = tuple(combined_classes)
        self.dtype = dtype
        self.affine_atol = affine_atol
        self._reader = LoadImage(reader="NibabelReader", image_only=True, dtype=None)

    @staticmethod
    def mask_path(label_dir: str | Path, name: str) -> Path | None:
        """``<label_dir>/<name>.nii.gz`` (or ``.nii``) if it exists, else None."""
        for suffix in (".nii.gz", ".nii"):
            path = Path(label_dir) / f"{name}{suffix}"
            if path.is_file():
                return path
        return None

    def _read(self, path: Path, what: str, case: str, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Read a mask or index map and check that it lies on the CT's voxel grid."""
        image = self._reader(str(path))
        spatial = tuple(image.shape)
        if tuple(shape[len(shape) - len(spatial) :]) != spatial:
            raise ValueError(
                f"case {case}: {what} ({path}) has shape {spatial} but the CT has shape {tuple(shape)}; "
                "assemble the label before any spatial transform and check the case's files."
            )
        mask_affine = np.asarray(image.affine, dtype=np.float64)
        if not np.allclose(mask_affine, affine, atol=self.affine_atol, rtol=0):
            raise ValueError(
                f"case {case}: the affine of {what} ({path}) differs from the CT's.\n{what} affine:\n{mask_affine}\n"
                f"CT affine:\n{affine}\nAssemble the label before Orientationd/Spacingd, and re-export masks that "
                "were saved with another geometry."
            )
        return np.asarray(image)

    def _channels_from_masks(self, out, label_dir, case, affine, shape, present) -> None:
        for channel, name in enumerate(self.classes):
            if name not in present:
                self._fill_missing(out, channel, name, case, f"no file {Path(label_dir) / (name + '.nii.gz')}")
                continue
            mask = self._read(present[name], f"mask '{name}'", case, affine, shape)
            out[channel] = torch.from_numpy(np.ascontiguousarray(mask > 0))

    def _channels_from_index_map(self, out, combined: Path, case, affine, shape) -> None:
        index_map = self._read(combined, "combined_labels", case, affine, shape)
        highest = int(index_map.max()) if index_map.size else 0
        if highest > len(self.combined_classes):
            raise ValueError(
                f"case {case}: {combined} holds index {highest} but combined_classes lists only "
                f"{len(self.combined_classes)} classes; pass the class list the map was written with."
            )
        index_map = torch.from_numpy(np.ascontiguousarray(index_map).astype(np.int16, copy=False))
        for channel, name in enumerate(self.classes):
            if name not in self.combined_classes:
                self._fill_missing(out, channel, name, case, f"'{name}' is not one of the classes of {combined}")
                continue
            out[channel] = index_map == self.combined_classes.index(name) + 1

    def _fill_missing(self, out: torch.Tensor, channel: int, name: str, case: str, why: str) -> None:
        if self.missing == "error":
            raise FileNotFoundError(
                f"case {case}: no mask for class '{name}' ({why}). Pass missing='unknown' to mark such channels "
                f"with {self.unknown_value} (ignored by the loss), or leave the class out of `classes`."
            )
        out[channel] = self.unknown_value

    def __call__(
        self,
        label_dir: str | Path | None,
        reference: MetaTensor | str | Path,
        combined_label: str | Path | None = None,
        case: str | None = None,
    ) -> MetaTensor:
        """
        Args:
            label_dir: the case's ``segmentations`` folder (None if it has none).
            reference: the CT, loaded (a MetaTensor with its affine) or as a file path (only its header is read).
            combined_label: ``combined_labels.nii.gz``; if None, the file next to ``label_dir`` is used when it
                exists.
            case: case name for messages (default: the name of the folder above ``label_dir``).

        Returns:
            the multi-hot label ``[len(classes), *CT spatial shape]`` with the CT's affine.

        Raises:
            FileNotFoundError: neither per-class masks nor an index map exist, or a mask is missing with
                ``missing="error"``.
            ValueError: a mask's shape or affine differs from the CT's, or the index map holds unknown indices.
        """
        affine, shape, meta = _reference_geometry(reference)
        case = case or (Path(label_dir).parent.name if label_dir is not None else "<unknown case>")
        present = {}
        if label_dir is not None:
            present = {c: p for c in self.classes if (p := self.mask_path(label_dir, c)) is not None}
        if combined_label is None and label_dir is not None:
            sibling = Path(label_dir).parent / "combined_labels.nii.gz"
            combined_label = sibling if sibling.is_file() else None
        use_index_map = not present and combined_label is not None and Path(combined_label).is_file()
        if not present and not use_index_map:
            raise FileNotFoundError(
                f"case {case}: none of the {len(self.classes)} requested masks exists in {label_dir} and there is no "
                f"combined_labels.nii.gz ({combined_label}); check the dataset folder (expected "
                "BDMAP_xxxxxxxx/segmentations/<class>.nii.gz)."
            )
        source = combined_label if use_index_map else label_dir
        out = torch.zeros((len(self.classes), *shape[-3:]), dtype=self.dtype)
        if use_index_map:
            self._channels_from_index_map(out, Path(combined_label), case, affine, shape)
        else:
            self._channels_from_masks(out, label_dir, case, affine, shape, present)
        meta = {**meta, "filename_or_obj": str(source)}
        return MetaTensor(out, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


class AssembleMultiHotLabeld(MapTransform):
    """Dictionary wrapper of :class:`AssembleMultiHotLabel` for AbdomenAtlas datalist items.

    Takes items ``{"image": CT (path or loaded MetaTensor), "label_dir": segmentations folder, "combined_label":
    path (optional), "case": "BDMAP_..." (optional)}`` and writes the multi-hot label under ``keys``. Place it
    after ``LoadImaged(keys="image")`` (or before, then only the CT's header is read) and before
    ``Orientationd``/``Spacingd`` on ``["image", "label"]``.

    Args:
        keys: the output key (exactly one).
        label_dir_key: key of the segmentations folder.
        combined_key: key of the ``combined_labels.nii.gz`` path (may be absent from an item).
        image_key: key of the CT whose affine the label receives.
        case_key: key of the case name used in messages (may be absent).
        classes: see :class:`AssembleMultiHotLabel`.
        missing: see :class:`AssembleMultiHotLabel`.
        unknown_value: see :class:`AssembleMultiHotLabel`.
        combined_classes: see :class:`AssembleMultiHotLabel`.
        dtype: see :class:`AssembleMultiHotLabel`.
        affine_atol: see :class:`AssembleMultiHotLabel`.

    Raises:
        ValueError: more than one output key.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        label_dir_key: str = "label_dir",
        combined_key: str = "combined_label",
        image_key: str = "image",
        case_key: str = "case",
        classes: Sequence[str] = ABDOMENATLAS_CLASSES,
        missing: str = "error",
        unknown_value: float = -1,
        combined_classes: Sequence[str] = ABDOMENATLAS_CLASSES,
        dtype: torch.dtype = torch.int8,
        affine_atol: float = 1e-3,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(self.keys) != 1:
            raise ValueError(f"AssembleMultiHotLabeld writes one label; got keys {self.keys}.")
        self.label_dir_key = label_dir_key
        self.combined_key = combined_key
        self.image_key = image_key
        self.case_key = case_key
        self.assemble = AssembleMultiHotLabel(classes, missing, unknown_value, combined_classes, dtype, affine_atol)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise KeyError(f"the item has no '{self.image_key}' entry (the CT whose affine the label takes).")
        d[self.keys[0]] = self.assemble(
            d.get(self.label_dir_key),
            d[self.image_key],
            combined_label=d.get(self.combined_key),
            case=d.get(self.case_key),
        )
        return d


AssembleMultiHotLabelD = AssembleMultiHotLabelDict = AssembleMultiHotLabeld
