"""Cross-dimensional weight transfer: 2D kernels to 3D kernels, input-channel adaptation, whole state dicts.

The rules follow REFERENCE.md section 3. A 2D weight ``W2`` of shape ``O x I x kh x kw`` becomes a 3D weight of shape
``O x I x kd x kh x kw`` (depth axis = 2, ``kd`` read from the target tensor):

- ``"average"``: every depth slice is ``W2 / kd`` (I3D, Carreira & Zisserman, "Quo Vadis, Action Recognition?",
  CVPR 2017). On a volume made of one repeated slice the 3D network reproduces the 2D output.
- ``"center"``: the middle slice is ``W2``, the others are 0. The 3D network equals the slice-wise 2D network on any
  volume (as long as nothing else mixes slices) and can still learn through-plane weights.
- ``"repeat"``: every slice is ``W2`` (no division: activations grow by ``kd``).
- ``"2.5d"``: the target kernel must have ``kd == 1``; ``W2`` is unsqueezed.

Transposed-convolution weights (``I x O x kh x kw``) inflate the same way; 1x1 and depthwise convolutions need no
special case. Biases, normalisation affine parameters, BatchNorm running statistics (and ``num_batches_tracked``) and
linear layers are copied unchanged.

Every conversion returns a :class:`~monai_ext.weights.report.LoadReport` and fails loudly
(:class:`~monai_ext.weights.report.WeightTransferError`) unless every entry of the target was either transferred or
declared new, and every source entry found its place: a "pre-trained" 3D network that silently stays random is the
failure this module exists to prevent.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from monai_ext.weights.report import LoadReport, WeightTransferError

__all__ = [
    "INFLATION_MODES",
    "INPUT_CHANNEL_RULES",
    "inflate_conv_weight",
    "adapt_input_channels",
    "describe_input_channel_rule",
    "inflate_state_dict",
    "inflation_filter",
    "inflate_module",
    "expand_2d_network_to_3d",
]

logger = logging.getLogger(__name__)

INFLATION_MODES: tuple[str, ...] = ("average", "center", "repeat", "2.5d")
"""Kernel rules accepted by :func:`inflate_conv_weight`."""

INPUT_CHANNEL_RULES: tuple[str, ...] = ("sum_rgb", "sum_or_init", "init")
"""Input-channel rules accepted by :func:`adapt_input_channels`:

- ``"sum_rgb"`` (timm's convention): 1 channel <- sum of the RGB kernels; C channels <- RGB kernels tiled to C and
  scaled by 3/C.
- ``"sum_or_init"`` (the rule of Messaoudi et al. 2023): 1 channel <- sum of the RGB kernels, any other count <- fresh
  initialisation.
- ``"init"``: always a fresh initialisation.
"""

KeyMap = Mapping[str, str | None] | Callable[[str], str | None]


def _check_mode(mode: str) -> str:
    if mode not in INFLATION_MODES:
        raise ValueError(f"unknown inflation mode {mode!r}; choose one of {INFLATION_MODES}.")
    return mode


def inflate_conv_weight(w2d: torch.Tensor, target_shape: Sequence[int], mode: str = "average") -> torch.Tensor:
    """Add a depth axis (dim 2) to a convolution kernel.

    Works for any kernel with a leading pair of channel dimensions: ``O x I x kh x kw`` (convolution, grouped and
    depthwise convolution) and ``I x O x kh x kw`` (transposed convolution) become ``... x kd x kh x kw``; more
    generally an N-d kernel becomes an (N+1)-d kernel. The depth ``kd`` is taken from ``target_shape``, so anisotropic
    kernels such as ``(1, 3, 3)`` work.

    Args:
        w2d: the lower-dimensional kernel.
        target_shape: shape of the target kernel; equal to ``w2d.shape`` with ``kd`` inserted at position 2.
        mode: ``"average"`` (every slice ``W2 / kd``), ``"center"`` (slice ``kd // 2`` is ``W2``, the others 0; for an
            even ``kd`` this is the later of the two middle slices, the one aligned with PyTorch's symmetric padding
            ``kd // 2``), ``"repeat"`` (every slice ``W2``) or ``"2.5d"`` (``kd`` must be 1).

    Returns:
        A new tensor of shape ``target_shape`` with the dtype and device of ``w2d``.

    Raises:
        ValueError: unknown mode, shapes that differ by more than the depth axis, or ``"2.5d"`` with ``kd != 1``.
    """
    _check_mode(mode)
    target_shape = tuple(int(s) for s in target_shape)
    source_shape = tuple(w2d.shape)
    expected = source_shape[:2] + target_shape[2:3] + source_shape[2:] if len(target_shape) > 2 else None
    if w2d.ndim < 3 or len(target_shape) != w2d.ndim + 1 or expected != target_shape:
        raise ValueError(
            f"cannot inflate a kernel of shape {source_shape} to {target_shape}: the target must be the source shape "
            "with one depth axis inserted at position 2 (same channels, same in-plane kernel). Check that both "
            "networks have the same widths and kernel sizes."
        )
    kd = target_shape[2]
    if kd < 1:
        raise ValueError(f"cannot inflate a kernel of shape {source_shape} to {target_shape}: the depth is 0.")
    if mode == "2.5d" and kd != 1:
        raise ValueError(
            f"mode '2.5d' needs a target kernel of depth 1, got target shape {target_shape} for source shape "
            f"{source_shape}; use 'center' to get the same output with a depth-{kd} kernel."
        )
    slices = w2d.unsqueeze(2)
    if mode == "center":
        out = torch.zeros(target_shape, dtype=w2d.dtype, device=w2d.device)
        out[:, :, kd // 2] = w2d
        return out
    out = slices.expand(target_shape).clone()
    if mode == "average":
        out = out / kd
    return out.contiguous()


def adapt_input_channels(w: torch.Tensor, in_channels: int, mode: str = "sum_rgb") -> torch.Tensor | None:
    """Adapt the input channels (dim 1) of a first-layer kernel, 2D or 3D.

    timm's convention for a kernel pre-trained on RGB images: 1 channel gets the sum of the RGB kernels (so a grey
    image gives exactly the response of the RGB network to that grey image copied to RGB); ``C`` channels get the RGB
    kernels tiled to ``C`` and scaled by ``3 / C`` (more generally ``I / C`` for ``I`` source channels).

    Args:
        w: kernel of shape ``O x I x k...``.
        in_channels: the number of input channels wanted.
        mode: one of :data:`INPUT_CHANNEL_RULES`.

    Returns:
        The adapted kernel (``w`` itself when the channel count already matches), or ``None`` when the rule asks for a
        fresh initialisation (the caller keeps the target's initial value and reports it as initialised).

    Raises:
        ValueError: unknown mode, ``in_channels < 1`` or a tensor with fewer than 3 dimensions.
    """
    if mode not in INPUT_CHANNEL_RULES:
        raise ValueError(f"unknown input-channel rule {mode!r}; choose one of {INPUT_CHANNEL_RULES}.")
    if w.ndim < 3:
        raise ValueError(f"expected a convolution kernel (O x I x k...), got a tensor of shape {tuple(w.shape)}.")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}.")
    source_channels = w.shape[1]
    if in_channels == source_channels:
        return w
    if mode == "init" or (mode == "sum_or_init" and in_channels != 1):
        return None
    if in_channels == 1:
        return w.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / source_channels)
    tiled = w.repeat(1, repeats, *([1] * (w.ndim - 2)))[:, :in_channels]
    return tiled * (source_channels / in_channels)


def describe_input_channel_rule(source_channels: int, in_channels: int, mode: str) -> str:
    """Short description of what :func:`adapt_input_channels` does, for reports.

    Args:
        source_channels: input channels of the pre-trained kernel.
        in_channels: input channels of the target kernel.
        mode: one of :data:`INPUT_CHANNEL_RULES`.

    Returns:
        e.g. ``"input channels 3->1 (sum RGB)"``.
    """
    prefix = f"input channels {source_channels}->{in_channels}"
    if in_channels == source_channels:
        return f"{prefix} (unchanged)"
    if mode == "init" or (mode == "sum_or_init" and in_channels != 1):
        return f"{prefix} (fresh initialisation, rule {mode!r})"
    if in_channels == 1:
        return f"{prefix} (sum RGB)"
    return f"{prefix} (tiled, x{source_channels}/{in_channels})"


def _map_key(key: str, key_map: KeyMap | None) -> str | None:
    """Rename a source key: a callable, or a mapping of source prefixes (longest match wins; ``None`` drops)."""
    if key_map is None:
        return key
    if callable(key_map):
        return key_map(key)
    matches = [p for p in key_map if key.startswith(p)]
    if not matches:
        return key
    prefix = max(matches, key=len)
    replacement = key_map[prefix]
    return None if replacement is None else replacement + key[len(prefix) :]


def _first_conv_key(first_conv: str | None) -> str | None:
    if first_conv is None:
        return None
    return first_conv if first_conv.endswith(".weight") else f"{first_conv}.weight"


def _list_keys(keys: Iterable[str], limit: int = 10) -> str:
    """All keys up to ``limit``, then a count; plus the number of keys per top-level module."""
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    if len(keys) > limit:
        shown += f", ... ({len(keys) - limit} more)"
    per_module = Counter(k.split(".")[0] for k in keys)
    return f"{shown} [per module: {', '.join(f'{m}: {n}' for m, n in per_module.items())}]"


def _transfer_value(
    key: str,
    source: torch.Tensor,
    target: torch.Tensor,
    mode: str,
    is_first_conv: bool,
    in_channels_rule: str,
) -> tuple[torch.Tensor | None, list[str]]:
    """Turn one source tensor into the target's shape.

    Returns:
        ``(value, notes)``: ``value`` is ``None`` when the input-channel rule asks for a fresh initialisation;
        ``notes`` lists the rules applied (empty for a plain copy).

    Raises:
        ValueError: the source shape cannot be mapped to the target shape.
    """
    notes: list[str] = []
    value = source
    if is_first_conv and value.ndim >= 3 and target.ndim >= 3 and value.shape[1] != target.shape[1]:
        notes.append(describe_input_channel_rule(value.shape[1], target.shape[1], in_channels_rule))
        adapted = adapt_input_channels(value, target.shape[1], in_channels_rule)
        if adapted is None:
            return None, notes
        value = adapted
    if tuple(value.shape) != tuple(target.shape):
        if value.ndim + 1 != target.ndim or value.ndim < 3:
            raise ValueError(
                f"source shape {tuple(source.shape)} cannot map to target shape {tuple(target.shape)} of {key!r}"
            )
        value = inflate_conv_weight(value, target.shape, mode)
        notes.insert(0, f"inflated {value.ndim - 3}D->{value.ndim - 2}D ({mode})")
    return value.to(device=target.device, dtype=target.dtype), notes


def _target_state(target: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(target, nn.Module):
        return target.state_dict()
    return target


def inflate_state_dict(
    state_2d: Mapping[str, torch.Tensor],
    target_model_or_state: nn.Module | Mapping[str, torch.Tensor],
    mode: str = "average",
    key_map: KeyMap | None = None,
    first_conv: str | None = None,
    in_channels_rule: str = "sum_rgb",
    new_layers: Sequence[str] = (),
    drop_source: Sequence[str] = (),
    source: str = "",
) -> tuple[OrderedDict[str, torch.Tensor], LoadReport]:
    """Convert a 2D state dict to the state dict of a 3D (or same-dimension) target, entry by entry, with a report.

    Every target parameter and buffer is either copied (same shape: biases, normalisation affine parameters,
    BatchNorm running statistics and ``num_batches_tracked``, linear layers, kernels of a same-dimension target),
    inflated (kernel with one more dimension, see :func:`inflate_conv_weight`), adapted (input channels of
    ``first_conv``, see :func:`adapt_input_channels`) or left at its initial value, which is only allowed for target
    keys under one of ``new_layers``.

    Args:
        state_2d: source tensors (e.g. a torchvision or timm state dict, already unwrapped).
        target_model_or_state: the 3D network or its state dict; not modified.
        mode: kernel rule, one of :data:`INFLATION_MODES`.
        key_map: source key -> target key, either a callable (return ``None`` to drop a key) or a mapping of source
            prefixes to target prefixes (longest match wins, a ``None`` value drops the keys under that prefix).
        first_conv: target module name (``"conv1"``) or key (``"conv1.weight"``) of the first convolution, whose input
            channels may differ from the source's.
        in_channels_rule: rule for ``first_conv``, one of :data:`INPUT_CHANNEL_RULES`.
        new_layers: prefixes of target keys declared new (a new head, a new stem): they keep their initial values.
        drop_source: prefixes of source keys deliberately left unused (e.g. ``("fc.",)`` for a classifier).
        source: a name for the weights, used in messages.

    Returns:
        ``(state_3d, report)``: ``state_3d`` holds every target key (transferred values, or the target's own values for
        declared keys) and can be loaded with ``load_state_dict(strict=True)``; ``report.loaded`` lists copied keys,
        ``report.adapted`` maps inflated/adapted keys to the rule used, ``report.initialised`` the declared keys and
        ``report.unexpected`` the unused source keys.

    Raises:
        WeightTransferError: a source tensor whose shape cannot map to its target (named), target keys left without a
            value and not declared in ``new_layers`` (named), source keys with no place in the target and not listed in
            ``drop_source`` (named), or nothing transferred at all.
        ValueError: unknown ``mode`` or ``in_channels_rule``.
    """
    _check_mode(mode)
    if in_channels_rule not in INPUT_CHANNEL_RULES:
        raise ValueError(f"unknown input-channel rule {in_channels_rule!r}; choose one of {INPUT_CHANNEL_RULES}.")
    target_state = _target_state(target_model_or_state)
    first_key = _first_conv_key(first_conv)
    name = source or "the 2D state dict"
    if first_key is not None and first_key not in target_state:
        raise WeightTransferError(f"first_conv {first_conv!r} is not a key of the target (looked for {first_key!r}).")

    renamed: dict[str, tuple[str, torch.Tensor]] = {}
    dropped_by_map: list[str] = []
    for src_key, value in state_2d.items():
        dst_key = _map_key(src_key, key_map)
        if dst_key is None:
            dropped_by_map.append(src_key)
            continue
        if dst_key in renamed:
            raise WeightTransferError(
                f"source keys {renamed[dst_key][0]!r} and {src_key!r} of {name} both map to target key {dst_key!r}; "
                "fix the key_map."
            )
        renamed[dst_key] = (src_key, value)

    report = LoadReport(source=source)
    new_state: OrderedDict[str, torch.Tensor] = OrderedDict()
    used_sources: set[str] = set()
    replaced_sources: set[str] = set()  # source entries whose target is declared new: unused, but not strays
    for key, target_value in target_state.items():
        new_state[key] = target_value
        if any(key.startswith(p) for p in new_layers):
            report.initialised.append(key)
            if key in renamed:
                replaced_sources.add(renamed[key][0])
            continue
        if key not in renamed:
            report.missing.append(key)
            continue
        src_key, src_value = renamed[key]
        used_sources.add(src_key)
        try:
            value, notes = _transfer_value(key, src_value, target_value, mode, key == first_key, in_channels_rule)
        except ValueError:
            report.shape_mismatch[key] = (tuple(src_value.shape), tuple(target_value.shape))
            continue
        if value is None:  # the input-channel rule asks for a fresh first convolution
            report.initialised.append(key)
            used_sources.discard(src_key)
            replaced_sources.add(src_key)
            continue
        new_state[key] = value
        if notes:
            report.adapted[key] = "; ".join(notes)
        else:
            report.loaded.append(key)

    unused = [k for k in state_2d if k not in used_sources and k not in dropped_by_map]
    report.unexpected = unused + dropped_by_map
    if report.shape_mismatch:
        details = "; ".join(f"{k}: source {s} vs target {t}" for k, (s, t) in list(report.shape_mismatch.items())[:10])
        raise WeightTransferError(
            f"{len(report.shape_mismatch)} entries of {name} cannot map to the target's shapes ({mode!r} inflation): "
            f"{details}. The 2D and 3D networks differ (width, kernel size, input channels: pass first_conv to adapt "
            f"the stem); declare genuinely new layers in new_layers.\n{report.summary()}"
        )
    if report.missing:
        raise WeightTransferError(
            f"{len(report.missing)} entries of the target got no value from {name} and were not declared in "
            f"new_layers: {_list_keys(report.missing)}. They would silently stay random: fix the key_map or the "
            f"architecture, or declare them new.\n{report.summary()}"
        )
    strays = [k for k in unused if k not in replaced_sources and not any(k.startswith(p) for p in drop_source)]
    if strays:
        raise WeightTransferError(
            f"{len(strays)} entries of {name} have no place in the target: {_list_keys(strays)}. The target "
            "lacks these layers (a different depth, or parameter-free shortcuts where the source has 1x1-conv "
            "shortcuts); list deliberately unused source prefixes in drop_source.\n" + report.summary()
        )
    report.check()
    return new_state, report.log()


def inflation_filter(
    mode: str,
    target: nn.Module | Mapping[str, torch.Tensor],
    key_map: KeyMap | None = None,
    first_conv: str | None = None,
    in_channels_rule: str = "sum_rgb",
    new_layers: Sequence[str] = (),
) -> Callable[[str, torch.Tensor], tuple[str, torch.Tensor] | None]:
    """A ``filter_func`` for :func:`monai.networks.utils.copy_model_state` that inflates 2D values to 3D.

    ``copy_model_state(dst=model_3d, src=model_2d, filter_func=inflation_filter("center", model_3d))`` copies what has
    the same shape and inflates the kernels. Use :func:`inflate_state_dict` when you need the coverage report:
    ``copy_model_state`` only returns the lists of changed and unchanged keys.

    Args:
        mode: kernel rule, one of :data:`INFLATION_MODES`.
        target: the destination network or state dict (the shapes to inflate to are read from it once).
        key_map: as in :func:`inflate_state_dict`.
        first_conv: as in :func:`inflate_state_dict`.
        in_channels_rule: as in :func:`inflate_state_dict`.
        new_layers: prefixes of target keys that keep their initial values (e.g. a new head of another size).

    Returns:
        ``filter_func(key, value) -> (target_key, target_value) | None``: ``None`` for keys with no place in the target,
        keys under ``new_layers`` and a first convolution re-initialised by its rule.

    Raises:
        WeightTransferError: (when called) a source value whose shape cannot map to its target.
    """
    _check_mode(mode)
    if in_channels_rule not in INPUT_CHANNEL_RULES:
        raise ValueError(f"unknown input-channel rule {in_channels_rule!r}; choose one of {INPUT_CHANNEL_RULES}.")
    targets = {k: v.detach() for k, v in _target_state(target).items()}  # for shapes, dtypes, devices
    first_key = _first_conv_key(first_conv)

    def _filter(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        dst_key = _map_key(key, key_map)
        if dst_key is None or dst_key not in targets or any(dst_key.startswith(p) for p in new_layers):
            return None
        try:
            new_value, _ = _transfer_value(
                dst_key, value, targets[dst_key], mode, dst_key == first_key, in_channels_rule
            )
        except ValueError as err:
            raise WeightTransferError(f"cannot transfer source entry {key!r}: {err}") from err
        return None if new_value is None else (dst_key, new_value)

    return _filter


def inflate_module(
    model_2d: nn.Module | Mapping[str, torch.Tensor],
    model_3d: nn.Module,
    mode: str = "average",
    **kwargs,
) -> LoadReport:
    """Inflate the weights of ``model_2d`` into ``model_3d`` in place (see :func:`inflate_state_dict`).

    Args:
        model_2d: the 2D network (or its state dict).
        model_3d: the 3D network; its state is replaced.
        mode: kernel rule, one of :data:`INFLATION_MODES`.
        kwargs: ``key_map``, ``first_conv``, ``in_channels_rule``, ``new_layers``, ``drop_source``, ``source`` of
            :func:`inflate_state_dict`.

    Returns:
        The :class:`LoadReport` of the conversion.

    Raises:
        WeightTransferError: as :func:`inflate_state_dict`.
    """
    state_2d = model_2d.state_dict() if isinstance(model_2d, nn.Module) else model_2d
    kwargs.setdefault("source", type(model_2d).__name__ if isinstance(model_2d, nn.Module) else "")
    state_3d, report = inflate_state_dict(state_2d, model_3d, mode=mode, **kwargs)
    model_3d.load_state_dict(state_3d)
    return report


def expand_2d_network_to_3d(model_2d: nn.Module, model_3d: nn.Module, mode: str = "center") -> LoadReport:
    """Dimensional transfer: expand a whole trained 2D network into its 3D twin, decoder and head included.

    The twin is the same architecture built with ``spatial_dims=3`` (same widths, same input channels, same key names),
    e.g. MONAI ``FlexibleUNet(spatial_dims=2, backbone="inflated-resnet18")`` trained slice by slice and
    :class:`monai_ext.networks.inflated.InflatedFlexUNet` with ``spatial_dims=3``. Every entry must be covered: no new
    layers, no channel adaptation.

    With ``mode="center"`` (or ``"2.5d"`` for a twin whose kernels have depth 1) the 3D network equals the slice-wise
    2D network at initialisation, provided the twin neither resamples nor pools along depth (see
    :class:`~monai_ext.networks.inflated.InflatedFlexUNet` with ``stride_depth=False``).

    Args:
        model_2d: the trained 2D network.
        model_3d: its 3D twin; modified in place.
        mode: kernel rule, one of :data:`INFLATION_MODES`.

    Returns:
        The :class:`LoadReport` (everything loaded or inflated).

    Raises:
        WeightTransferError: the networks are not twins (an entry without a counterpart, or a shape that cannot map).
    """
    return inflate_module(model_2d, model_3d, mode=mode, source=f"2D {type(model_2d).__name__}")
