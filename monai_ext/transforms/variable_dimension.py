"""Variable Dimension Transform (VDT): 2D natural images as 3D volumes, so a 3D network can pre-train on them.

Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform" (arXiv:2201.01426, Neurocomputing 2023; code
urmagicsmine/CSPR): an RGB image ``(3, H, W)`` becomes a one-channel volume ``(1, 3, H, W)`` whose depth slices are the
three colour planes, normalised with one grey mean/std; the slice order is shuffled for every sample. A 3D ResNet
without striding along depth (:func:`monai_ext.networks.vdt.vdt_resnet`) is pre-trained on these volumes and then
fine-tuned at any depth.

- :class:`PILRGBConverter`: a ``converter`` for MONAI's ``PILReader`` that turns every image into 8-bit RGB (grey,
  palette, RGBA, CMYK, 16-bit PNG, ...) and lets JPEGs decode at a reduced scale (``draft``), which is where most of
  the time of a natural-image pipeline goes.
- :class:`ImageToVolume` / :class:`ImageToVolumed`: ``(3, H, W)`` -> ``(1, D, H, W)``, depth ``D`` free: ``"repeat"``
  (each colour plane repeated, ``RRGGBB``) or ``"stack"`` (the RGB triple stacked, ``RGBRGB``).
- :class:`RandShuffleDepth` / :class:`RandShuffleDepthd`: a random permutation of the depth slices (or of groups of
  slices), one draw for every key of a sample.
- :class:`MaskToVolume` / :class:`MaskToVolumed`: a 2D index mask ``(1, H, W)`` -> ``(1, D, H, W)`` (the mask on every
  slice), so 2D segmentation data can pre-train a 3D segmentation network.

Spatial axes keep the order of the input: with ``LoadImage``'s ``PILReader`` (``reverse_indexing=True``) the 2D image
is ``(C, W, H)`` and the volume ``(1, D, W, H)``. The depth axis is always the first spatial axis.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_tensor

__all__ = [
    "VOLUME_DEPTH_MODES",
    "GREY_MEAN",
    "GREY_STD",
    "PILRGBConverter",
    "colour_slice_order",
    "image_to_volume_affine",
    "permute_depth",
    "ImageToVolume",
    "RandShuffleDepth",
    "MaskToVolume",
    "ImageToVolumed",
    "ImageToVolumeD",
    "ImageToVolumeDict",
    "RandShuffleDepthd",
    "RandShuffleDepthD",
    "RandShuffleDepthDict",
    "MaskToVolumed",
    "MaskToVolumeD",
    "MaskToVolumeDict",
]

#: how a depth other than 3 is filled from the three colour planes.
VOLUME_DEPTH_MODES: tuple[str, ...] = ("repeat", "stack")

#: grey mean and std (intensities in [0, 1]) used for every slice: the averages of the usual ImageNet RGB statistics
#: ((0.485 + 0.456 + 0.406) / 3 and (0.229 + 0.224 + 0.225) / 3). The VDT publication normalises all slices with one
#: grey mean/std; its exact values are not part of this project's reference, so these are this module's defaults.
GREY_MEAN: float = 0.449
GREY_STD: float = 0.226

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class PILRGBConverter:
    """Turn any PIL image into 8-bit RGB; use it as ``monai.data.PILReader(converter=PILRGBConverter(...))``.

    Natural-image collections are not all RGB: ImageNet has grey and CMYK JPEGs, web images come as palette GIF/PNG
    or with an alpha channel, and scientific PNGs can be 16-bit grey. Without conversion ``PILReader`` returns 1, 2 or
    4 channels (palette images even return palette *indices*), and a batch cannot be collated. This converter:

    - composites images with transparency (``RGBA``, ``LA``, palette with a transparent colour) onto ``background``;
    - rescales 16-bit and 32-bit grey images to 0-255 (``I;16`` by 1/257; ``I``/``F`` by their own min/max);
    - converts everything else (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``) with PIL's ``convert("RGB")``.

    With ``draft_size`` a JPEG is decoded directly at the smallest power-of-two reduction (1/2, 1/4, 1/8) that still
    covers ``draft_size`` on both sides: a 1,000 px photo resized to 64 px afterwards decodes about 8-16x faster.

    Args:
        draft_size: least size ``(width, height)`` (or one int for both) the decoded JPEG must keep; None decodes at
            full resolution. Set it to at least the size the pipeline crops/resizes to (e.g. twice ``image_size``).
        background: RGB colour that transparent pixels are composited onto.

    Raises:
        ValueError: (on call) an image mode PIL cannot turn into RGB (e.g. ``LAB``, ``HSV``); the message names the
            file.
    """

    def __init__(self, draft_size: int | Sequence[int] | None = None, background: Sequence[int] = (0, 0, 0)) -> None:
        if draft_size is not None:
            if isinstance(draft_size, (int, np.integer)):
                size: tuple[int, ...] = (int(draft_size), int(draft_size))
            else:
                size = tuple(int(s) for s in draft_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"draft_size must be a positive int or (width, height), got {draft_size!r}.")
            self.draft_size: tuple[int, int] | None = size  # type: ignore[assignment]
        else:
            self.draft_size = None
        self.background = tuple(int(c) for c in background)
        if len(self.background) != 3:
            raise ValueError(f"background must be an RGB triple, got {background!r}.")

    def __call__(self, image: Any) -> Any:
        """Return ``image`` as an 8-bit RGB PIL image (the input itself when it already is one)."""
        from PIL import Image

        if self.draft_size is not None and getattr(image, "format", None) == "JPEG":
            image.draft(None, self.draft_size)  # before any pixel is decoded
        mode = image.mode
        if mode == "RGB":
            return image
        if mode == "P" and "transparency" in image.info:
            image, mode = image.convert("RGBA"), "RGBA"
        if mode in _ALPHA_MODES:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, self.background + (255,))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        if mode in _HIGH_DEPTH_MODES:
            values = np.asarray(image, dtype=np.float64)
            if mode.startswith("I;16"):
                grey = values / 257.0
            else:
                low, high = float(values.min()), float(values.max())
                grey = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
            return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), mode="L").convert("RGB")
        try:
            return image.convert("RGB")
        except (ValueError, OSError) as error:
            name = getattr(image, "filename", "") or "<in-memory image>"
            raise ValueError(
                f"{name}: PIL cannot convert an image of mode {mode!r} to RGB ({error}). Convert the file to RGB or "
                "grey (e.g. `PIL.Image.open(path).convert('RGB').save(path)`) or remove it from the dataset."
            ) from error

    def __repr__(self) -> str:
        return f"{type(self).__name__}(draft_size={self.draft_size}, background={self.background})"


def colour_slice_order(depth: int, mode: str = "repeat") -> list[int]:
    """Which colour plane (0 = R, 1 = G, 2 = B) fills each depth slice.

    ``"repeat"`` spreads the planes over the depth in runs as equal as possible (depth 6: ``R R G G B B``; depth 4:
    ``R R G B``); ``"stack"`` cycles through them (depth 6: ``R G B R G B``; depth 4: ``R G B R``). Depth 3 is
    ``R G B`` in both modes, the published VDT input.

    Args:
        depth: number of slices, at least 3 (fewer would drop a colour plane).
        mode: one of :data:`VOLUME_DEPTH_MODES`.

    Returns:
        ``depth`` plane indices.

    Raises:
        ValueError: ``depth < 3`` or an unknown mode.
    """
    if mode not in VOLUME_DEPTH_MODES:
        raise ValueError(f"mode must be one of {VOLUME_DEPTH_MODES}, got {mode!r}.")
    if int(depth) < 3:
        raise ValueError(
            f"depth must be at least 3 so that every colour plane is a slice, got {depth}; for a single-slice input "
            "convert the image to grey first (e.g. PIL's convert('L')) and add a depth axis."
        )
    depth = int(depth)
    if mode == "stack":
        return [i % 3 for i in range(depth)]
    return [(3 * i) // depth for i in range(depth)]


def image_to_volume_affine(affine: torch.Tensor | np.ndarray, depth_spacing: float = 1.0) -> torch.Tensor:
    """The 4x4 affine of a volume made from a 2D image: depth becomes the first voxel axis, along world ``z``.

    The 2D image's affine maps pixel ``(i, j)`` to world ``(x, y)``; it is 3x3, or 4x4 as MONAI stores it for 2D
    images (the 2D part in rows/columns 0-1, the translation in the last column). The volume's voxel ``(d, i, j)``
    maps to ``(x(i, j), y(i, j), z0 + depth_spacing * d)``, ``z0`` being the image's own ``z`` offset (0 for 3x3).

    Args:
        affine: the 2D image's affine, 3x3 or 4x4.
        depth_spacing: world distance between two slices.

    Returns:
        the 4x4 affine as a float64 tensor.

    Raises:
        ValueError: an affine that is neither 3x3 nor 4x4.
    """
    a = torch.as_tensor(affine, dtype=torch.float64)
    if a.shape not in ((3, 3), (4, 4)):
        raise ValueError(f"expected a 3x3 or 4x4 affine of a 2D image, got shape {tuple(a.shape)}.")
    out = torch.zeros(4, 4, dtype=torch.float64)
    out[:2, 1:3] = a[:2, :2]
    out[:2, 3] = a[:2, -1]
    out[2, 0] = float(depth_spacing)
    out[2, 3] = a[2, 3] if a.shape == (4, 4) else 0.0
    out[3, 3] = 1.0
    return out


def _volume_like(volume: torch.Tensor, img: Any) -> Any:
    """Return ``volume`` as the type of ``img``: a MetaTensor with a 4x4 affine, a tensor, or a numpy array."""
    if isinstance(img, MetaTensor):
        meta = {k: v for k, v in img.meta.items() if k != "affine"}
        return MetaTensor(volume, affine=image_to_volume_affine(img.affine), meta=meta)
    if isinstance(img, torch.Tensor):
        return volume
    return volume.numpy()


def permute_depth(img: NdarrayOrTensor, order: Sequence[int]) -> NdarrayOrTensor:
    """Reorder the depth slices (first spatial axis, array axis 1) of a channel-first volume ``(C, D, ...)``.

    Args:
        img: the volume, numpy or torch (MetaTensors keep their metadata).
        order: a permutation of ``range(D)``: output slice ``k`` is input slice ``order[k]``.

    Raises:
        ValueError: ``order`` is not a permutation of the volume's depth.
    """
    if img.ndim < 3:
        raise ValueError(f"expected a channel-first volume (C, D, ...), got shape {tuple(img.shape)}.")
    depth = img.shape[1]
    if sorted(int(o) for o in order) != list(range(depth)):
        raise ValueError(f"order {list(order)} is not a permutation of the {depth} depth slices.")
    if isinstance(img, torch.Tensor):
        return torch.index_select(img, 1, torch.as_tensor(list(order), dtype=torch.long, device=img.device))
    return np.take(img, list(order), axis=1)


class ImageToVolume(Transform):
    """Turn a 2D RGB image ``(3, H, W)`` into a one-channel volume ``(1, D, H, W)`` whose slices are colour planes.

    Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform", arXiv:2201.01426 (Neurocomputing 2023).

    The published transform uses depth 3 (slices R, G, B); other depths repeat the planes (see
    :func:`colour_slice_order`). Every slice is normalised with the same grey statistics:
    ``(x / scale - mean) / std``. Input that is not RGB is accepted when its meaning is unambiguous: one channel (grey)
    is replicated to R = G = B, two channels are grey + alpha and four channels RGB + alpha (alpha is dropped; use
    :class:`PILRGBConverter` when loading to composite it properly). Use :class:`MaskToVolume` for masks.

    Args:
        depth: number of slices ``D`` (at least 3).
        mode: ``"repeat"`` (``RRGGBB``) or ``"stack"`` (``RGBRGB``) when ``depth`` is not 3.
        mean: grey mean subtracted after dividing by ``scale``; None skips normalisation (then only ``/ scale``).
        std: grey standard deviation; None skips normalisation.
        scale: intensity of white in the input (255 for 8-bit images, 1 for images already in [0, 1]).

    Raises:
        ValueError: (on call) an input that is not a 2D image with 1-4 channels.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        depth: int = 3,
        mode: str = "repeat",
        mean: float | None = GREY_MEAN,
        std: float | None = GREY_STD,
        scale: float = 255.0,
    ) -> None:
        self.order = colour_slice_order(depth, mode)
        self.depth = int(depth)
        self.mode = mode
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (normalise) or neither (only divide by scale).")
        if std is not None and float(std) <= 0:
            raise ValueError(f"std must be positive, got {std}.")
        if float(scale) <= 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)
        self.scale = float(scale)

    def _rgb(self, img: NdarrayOrTensor) -> torch.Tensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        if x.ndim == 2:  # (H, W) without a channel axis: grey
            x = x[None]
        if x.ndim != 3:
            raise ValueError(
                f"ImageToVolume expects a channel-first 2D image (C, H, W), got shape {tuple(x.shape)}: load 2D "
                "images with LoadImage(ensure_channel_first=True); a 3D volume needs no VDT."
            )
        channels = x.shape[0]
        if channels in (1, 2):  # grey (+ alpha)
            return x[:1].expand(3, *x.shape[1:])
        if channels in (3, 4):  # RGB (+ alpha)
            return x[:3]
        raise ValueError(
            f"ImageToVolume expects 1 (grey), 3 (RGB) or 2/4 (with alpha) channels, got {channels} (shape "
            f"{tuple(x.shape)}). Is the image channel-last? Load it with ensure_channel_first=True, or convert it to "
            "RGB with monai.data.PILReader(converter=monai_ext.transforms.variable_dimension.PILRGBConverter())."
        )

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return the volume ``(1, D, H, W)`` (float32, same array type as ``img``; MetaTensors get a 4x4 affine)."""
        rgb = self._rgb(img)
        volume = rgb[self.order].unsqueeze(0) / self.scale
        if self.mean is not None and self.std is not None:
            volume = (volume - self.mean) / self.std
        return _volume_like(volume.contiguous(), img)


class RandShuffleDepth(RandomizableTransform):
    """Randomly permute the depth slices of a channel-first volume ``(C, D, ...)``, a new order for every call.

    Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform", arXiv:2201.01426 (Neurocomputing 2023): the order of the
    colour slices is shuffled per sample so the network cannot rely on R, G and B sitting at fixed depths.

    With ``group_size > 1`` runs of ``group_size`` consecutive slices move together (e.g. 2 for a depth-6 volume
    made with ``ImageToVolume(mode="repeat")``, keeping ``RR``, ``GG``, ``BB`` intact).

    Args:
        prob: probability of shuffling.
        group_size: slices per group; the depth must be a multiple of it.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, prob: float = 1.0, group_size: int = 1) -> None:
        RandomizableTransform.__init__(self, prob)
        if int(group_size) < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}.")
        self.group_size = int(group_size)
        self.order: list[int] | None = None

    def randomize(self, depth: int) -> None:  # type: ignore[override]
        """Draw whether to shuffle and, if so, the slice order for a volume of ``depth`` slices (from ``self.R``)."""
        super().randomize(None)
        if not self._do_transform:
            self.order = None
            return
        if depth % self.group_size:
            raise ValueError(f"depth {depth} is not a multiple of group_size {self.group_size}.")
        groups = self.R.permutation(depth // self.group_size)
        self.order = [int(g) * self.group_size + k for g in groups for k in range(self.group_size)]

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Shuffle ``img``'s slices; with ``randomize=False`` reuse the last drawn order."""
        if img.ndim < 3:
            raise ValueError(
                f"RandShuffleDepth expects a channel-first volume (C, D, ...), got shape {tuple(img.shape)}."
            )
        if randomize:
            self.randomize(int(img.shape[1]))
        if not self._do_transform or self.order is None:
            return img
        return permute_depth(img, self.order)


class MaskToVolume(Transform):
    """Turn a 2D segmentation mask into a volume ``(1, D, H, W)`` with the mask on every slice.

    Zhang, Li, Zhou, Ma, Yu, "Variable Dimension Transform", arXiv:2201.01426 (Neurocomputing 2023): with the image
    made a volume by :class:`ImageToVolume`, every slice shows the same scene, so the 2D mask is the label of every
    slice and a 3D segmentation network can be pre-trained on 2D segmentation data. The mask's values and dtype are
    kept (no interpolation, no normalisation).

    Args:
        depth: number of slices (the image volume's depth).

    Raises:
        ValueError: (on call) an input that is not one 2D mask: several channels that differ (a colour-coded mask).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, depth: int = 3) -> None:
        if int(depth) < 1:
            raise ValueError(f"depth must be positive, got {depth}.")
        self.depth = int(depth)

    def __call__(self, mask: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return the mask volume ``(1, D, H, W)`` (same array type and dtype as ``mask``)."""
        x = convert_to_tensor(mask, track_meta=False)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(
                f"MaskToVolume expects a 2D mask (H, W) or (1, H, W), got shape {tuple(x.shape)}: load masks with "
                "LoadImage(ensure_channel_first=True)."
            )
        if x.shape[0] > 1:
            if not bool((x == x[:1]).all()):
                raise ValueError(
                    f"MaskToVolume got a {x.shape[0]}-channel mask whose channels differ (a colour-coded mask?): "
                    "convert it to one index map (one integer class per pixel) first."
                )
            x = x[:1]
        volume = x.unsqueeze(1).expand(1, self.depth, *x.shape[1:]).contiguous()
        return _volume_like(volume, mask)


class ImageToVolumed(MapTransform):
    """Dictionary wrapper of :class:`ImageToVolume`.

    Args:
        keys: keys of the 2D images.
        depth: number of slices.
        mode: ``"repeat"`` or ``"stack"``.
        mean: grey mean (None: no normalisation).
        std: grey standard deviation (None: no normalisation).
        scale: intensity of white in the input.
        allow_missing_keys: skip keys that are absent.
    """

    backend = ImageToVolume.backend

    def __init__(
        self,
        keys: KeysCollection,
        depth: int = 3,
        mode: str = "repeat",
        mean: float | None = GREY_MEAN,
        std: float | None = GREY_STD,
        scale: float = 255.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ImageToVolume(depth=depth, mode=mode, mean=mean, std=std, scale=scale)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class RandShuffleDepthd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandShuffleDepth`: one draw, the same slice order for every key.

    Args:
        keys: keys of the volumes (an image volume and its mask volume get the same order).
        prob: probability of shuffling.
        group_size: slices per group.
        allow_missing_keys: skip keys that are absent.

    Raises:
        ValueError: (on call) the volumes of a sample have different depths.
    """

    backend = RandShuffleDepth.backend

    def __init__(
        self, keys: KeysCollection, prob: float = 1.0, group_size: int = 1, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.shuffler = RandShuffleDepth(prob=1.0, group_size=group_size)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandShuffleDepthd:
        super().set_random_state(seed, state)
        self.shuffler.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if not self._do_transform or not keys:
            return d
        depths = {str(k): int(d[k].shape[1]) for k in keys}
        if len(set(depths.values())) > 1:
            raise ValueError(f"RandShuffleDepthd needs volumes of one depth, got {depths}.")
        self.shuffler.randomize(depths[str(keys[0])])
        for key in keys:
            d[key] = self.shuffler(d[key], randomize=False)
        return d


class MaskToVolumed(MapTransform):
    """Dictionary wrapper of :class:`MaskToVolume`.

    Args:
        keys: keys of the 2D masks.
        depth: number of slices (the image volume's depth).
        allow_missing_keys: skip keys that are absent.
    """

    backend = MaskToVolume.backend

    def __init__(self, keys: KeysCollection, depth: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = MaskToVolume(depth=depth)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


ImageToVolumeD = ImageToVolumeDict = ImageToVolumed
RandShuffleDepthD = RandShuffleDepthDict = RandShuffleDepthd
MaskToVolumeD = MaskToVolumeDict = MaskToVolumed
