"""2D slices of 3D volumes, for training a 2D network on 3D data before expanding it to 3D.

Dimensional transfer (Messaoudi, Belaid, Ben Salem, Conze, "Cross-dimensional transfer learning in medical image
segmentation with deep learning", MedIA 2023, arXiv:2307.15874) first trains a 2D network slice by slice on the 3D
target, then expands it into its 3D twin. :class:`RandForegroundSlice` / :class:`RandForegroundSliced` draw the
training slices (slices that contain foreground preferred, as ``RandCropByPosNegLabel`` prefers foreground voxels);
:func:`volume_to_slices` and :func:`slices_to_volume` turn a batch of volumes into a batch of slices and back, the
layout in which a 2D network sees a volume and in which its output compares with the 3D twin's.

Slices are taken along a spatial axis of a channel-first volume (``axis`` 0 is the first spatial axis, the depth
axis of the 3D networks in :mod:`monai_ext.networks.inflated`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait

__all__ = [
    "take_slice",
    "foreground_slice_indices",
    "volume_to_slices",
    "slices_to_volume",
    "RandForegroundSlice",
    "RandForegroundSliced",
    "RandForegroundSliceD",
    "RandForegroundSliceDict",
]


def _check_axis(axis: int, spatial_dims: int) -> int:
    if not 0 <= axis < spatial_dims:
        raise ValueError(f"slice axis {axis} is not a spatial axis of a volume with {spatial_dims} spatial dimensions.")
    return axis


def take_slice(img: NdarrayOrTensor, axis: int, index: int) -> NdarrayOrTensor:
    """The slice ``index`` along spatial ``axis`` of a channel-first volume, with that axis removed.

    ``C x D x H x W`` becomes ``C x H x W`` for ``axis=0``. For a :class:`monai.data.MetaTensor` the affine follows
    MONAI's ``SqueezeDim`` convention: the origin moves to the slice, then the row and column of the removed axis are
    dropped (exact for axis-aligned volumes, which is what the 2D network needs: it does not use the affine).

    Args:
        img: channel-first volume (numpy array, tensor or MetaTensor).
        axis: spatial axis (0 = first spatial axis).
        index: slice index along ``axis``; negative values count from the end.

    Returns:
        The slice, same type as ``img``.

    Raises:
        ValueError: ``axis`` is not a spatial axis or ``index`` is out of range.
    """
    spatial_dims = img.ndim - 1
    _check_axis(axis, spatial_dims)
    size = img.shape[axis + 1]
    if not -size <= index < size:
        raise ValueError(
            f"slice index {index} is out of range for axis {axis} of size {size} (shape {tuple(img.shape)})."
        )
    index = index % size
    selector = (slice(None),) * (axis + 1) + (index,)
    if not isinstance(img, MetaTensor):
        return img[selector]
    out = img.as_tensor()[selector]
    affine = img.affine.clone().to(torch.float64)
    if affine.ndim == 2 and affine.shape[0] == spatial_dims + 1:
        affine[:spatial_dims, spatial_dims] += affine[:spatial_dims, axis] * index
        keep = [i for i in range(spatial_dims + 1) if i != axis]
        affine = affine[keep][:, keep]
    return MetaTensor(out, affine=affine, meta={k: v for k, v in img.meta.items() if k != "affine"})


def foreground_slice_indices(label: NdarrayOrTensor, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the slices along ``axis`` that contain a non-zero voxel of ``label``, and of those that do not.

    Args:
        label: channel-first label (index map or one-hot; any channel counts).
        axis: spatial axis.

    Returns:
        ``(foreground, background)`` index arrays (int64).
    """
    _check_axis(axis, label.ndim - 1)
    data = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    other = tuple(i for i in range(data.ndim) if i != axis + 1)
    has_foreground = np.any(data != 0, axis=other)
    return np.flatnonzero(has_foreground), np.flatnonzero(~has_foreground)


def volume_to_slices(volume: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """A batch of volumes as a batch of slices: ``B x C x D x H x W`` -> ``(B*D) x C x H x W`` for ``axis=0``.

    Slices of one volume are consecutive; :func:`slices_to_volume` undoes it.

    Args:
        volume: batch of channel-first volumes with three spatial dimensions.
        axis: spatial axis to slice along.

    Returns:
        The slices.
    """
    if volume.ndim != 5:
        raise ValueError(f"expected a batch of 3D volumes (B x C x D x H x W), got shape {tuple(volume.shape)}.")
    _check_axis(axis, 3)
    moved = volume.movedim(axis + 2, 1)  # B x S x C x ...
    return moved.reshape(-1, *moved.shape[2:])


def slices_to_volume(slices: torch.Tensor, depth: int, axis: int = 0) -> torch.Tensor:
    """Inverse of :func:`volume_to_slices`: ``(B*D) x C x H x W`` -> ``B x C x D x H x W`` for ``axis=0``.

    Args:
        slices: batch of slices, ``depth`` consecutive slices per volume.
        depth: number of slices per volume.
        axis: spatial axis the slices were taken along.

    Returns:
        The volumes.

    Raises:
        ValueError: the number of slices is not a multiple of ``depth``.
    """
    if slices.ndim != 4 or slices.shape[0] % depth:
        raise ValueError(f"cannot stack {tuple(slices.shape)} slices into volumes of depth {depth}.")
    _check_axis(axis, 3)
    stacked = slices.reshape(slices.shape[0] // depth, depth, *slices.shape[1:])
    return stacked.movedim(1, axis + 2)


class RandForegroundSlice(Randomizable, Transform, MultiSampleTrait):
    """Draw 2D slices of a channel-first volume along one axis, preferring slices that contain foreground.

    Each of the ``num_samples`` slices is drawn from the slices with foreground with probability
    ``pos / (pos + neg)`` and from the slices without foreground otherwise (from all slices when one of the two sets
    is empty), uniformly within the set. Used for stage one of dimensional transfer (Messaoudi et al., MedIA 2023):
    the 2D network trains on slices of the 3D training volumes.

    Args:
        axis: spatial axis to slice along (0 = first spatial axis).
        num_samples: number of slices returned per call.
        pos: weight of slices with foreground.
        neg: weight of slices without foreground.

    Raises:
        ValueError: negative weights, both weights zero, or ``num_samples < 1``.
    """

    def __init__(self, axis: int = 0, num_samples: int = 1, pos: float = 1.0, neg: float = 1.0) -> None:
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(f"pos and neg must be non-negative and not both zero, got pos={pos}, neg={neg}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        self.axis = axis
        self.num_samples = int(num_samples)
        self.pos_ratio = pos / (pos + neg)
        self.indices: list[int] = []

    def randomize(self, label: NdarrayOrTensor) -> None:
        """Draw ``num_samples`` slice indices from ``label`` (stored in ``self.indices``)."""
        foreground, background = foreground_slice_indices(label, self.axis)
        everything = np.arange(label.shape[self.axis + 1])
        indices = []
        for _ in range(self.num_samples):
            wanted = foreground if self.R.rand() < self.pos_ratio else background
            pool = wanted if len(wanted) else everything
            indices.append(int(pool[self.R.randint(len(pool))]))
        self.indices = indices

    def __call__(
        self, img: NdarrayOrTensor, label: NdarrayOrTensor | None = None, randomize: bool = True
    ) -> list[NdarrayOrTensor]:
        """Slices of ``img``.

        Args:
            img: channel-first volume.
            label: volume whose non-zero voxels mark the foreground (default: ``img`` itself).
            randomize: draw new indices; ``False`` reuses the last ones.

        Returns:
            ``num_samples`` slices, each ``img`` without the sliced axis.
        """
        if randomize:
            self.randomize(img if label is None else label)
        if not self.indices:
            raise RuntimeError("no slice indices drawn yet: call with randomize=True first.")
        return [take_slice(img, self.axis, i) for i in self.indices]


class RandForegroundSliced(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandForegroundSlice`: the same slices of every key, chosen from ``label_key``.

    Stage one of dimensional transfer (Messaoudi et al., MedIA 2023, arXiv:2307.15874).

    Returns a list of ``num_samples`` dictionaries (MONAI's ``list_data_collate`` flattens them into the batch), each
    a shallow copy of the input with every key in ``keys`` replaced by one slice.

    Args:
        keys: keys of the volumes to slice (image and label).
        label_key: key of the label that marks the foreground.
        axis: spatial axis to slice along.
        num_samples: slices per volume.
        pos: weight of slices with foreground.
        neg: weight of slices without foreground.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        axis: int = 0,
        num_samples: int = 1,
        pos: float = 1.0,
        neg: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.slicer = RandForegroundSlice(axis=axis, num_samples=num_samples, pos=pos, neg=neg)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.slicer.set_random_state(seed, state)
        return self

    def randomize(self, label: NdarrayOrTensor) -> None:
        self.slicer.randomize(label)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"item has no '{self.label_key}' entry to choose the slices from (keys: {sorted(d)}).")
        self.randomize(d[self.label_key])
        out: list[dict[Hashable, NdarrayOrTensor]] = [dict(d) for _ in self.slicer.indices]
        for key in self.key_iterator(d):
            for item, index in zip(out, self.slicer.indices):
                item[key] = take_slice(d[key], self.slicer.axis, index)
        return out


RandForegroundSliceD = RandForegroundSliceDict = RandForegroundSliced
