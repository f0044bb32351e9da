"""Mixed precision that works on CPU and GPU.

MONAI's engines hard-code ``torch.autocast("cuda")``, so their ``amp=True`` does nothing on a CPU. Wrapping the
inferer instead puts every forward pass of a trainer, an evaluator or an inference run under autocast on the
device of its input: bf16 on CPUs with AMX/AVX-512 and on recent GPUs needs no gradient scaler. The output is cast
back to float32 so that losses, metrics and post-transforms run in full precision.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = ["AutocastInferer", "resolve_amp_dtype", "as_flag"]

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def as_flag(value: Any) -> bool:
    """A switch from a config or the command line: ``python -m monai.bundle run --amp false`` hands over the string
    "false", which plain ``bool()`` would read as on."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in ("true", "1", "yes", "on"):
            return True
        if key in ("false", "0", "no", "off", "none", ""):
            return False
        raise ValueError(f"cannot read {value!r} as on/off: use true or false.")
    return bool(value)


def resolve_amp_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Map "bf16"/"bfloat16"/"fp16"/"float16"/"fp32"/None to a torch dtype (None means full precision)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower()
    if key in ("fp32", "float32", "none", "off", "false", ""):
        return None
    if key not in _DTYPES:
        raise ValueError(f"unknown mixed-precision dtype {dtype!r}: use 'bf16', 'fp16' or 'fp32'.")
    return _DTYPES[key]


class AutocastInferer(Inferer):
    """Run another MONAI inferer under ``torch.autocast`` on the input's device.

    Args:
        inferer: the wrapped inferer (``SimpleInferer`` when None), e.g. a ``SlidingWindowInferer``.
        dtype: "bf16" (default), "fp16", or "fp32" to switch autocast off. fp16 on CPU is refused: it is slower
            than fp32 there. fp16 on CUDA needs a gradient scaler: use MONAI's ``amp=True`` for that instead.
        enabled: a second switch, convenient from configs (``"enabled": "@amp"``).
    """

    def __init__(self, inferer: Inferer | None = None, dtype: str | torch.dtype | None = "bf16", enabled: bool = True):
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.dtype = resolve_amp_dtype(dtype) if as_flag(enabled) else None

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        if self.dtype is None:
            return self.inferer(inputs, network, *args, **kwargs)
        device_type = inputs.device.type
        if device_type == "cpu" and self.dtype == torch.float16:
            raise ValueError("fp16 autocast is not supported on CPU: use dtype='bf16'.")
        with torch.autocast(device_type=device_type, dtype=self.dtype):
            out = self.inferer(inputs, network, *args, **kwargs)
        return _to_float(out)


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out
