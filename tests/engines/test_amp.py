import pytest
import torch
from monai.inferers import SlidingWindowInferer

from monai_ext.engines.amp import AutocastInferer, resolve_amp_dtype


class DtypeProbe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.seen = None

    def forward(self, x, scale=1.0):
        y = self.conv(x)
        self.seen = y.dtype
        return y * scale


def test_bf16_autocast_on_cpu_returns_float32():
    net = DtypeProbe()
    x = torch.randn(1, 1, 8, 8, 8)
    out = AutocastInferer(dtype="bf16")(x, net)
    assert net.seen == torch.bfloat16 and out.dtype == torch.float32
    torch.testing.assert_close(out, net.conv(x), atol=0.1, rtol=0.05)


def test_disabled_and_fp32_run_in_full_precision():
    net = DtypeProbe()
    x = torch.randn(1, 1, 8, 8, 8)
    for inferer in (AutocastInferer(enabled=False), AutocastInferer(dtype="fp32")):
        inferer(x, net)
        assert net.seen == torch.float32


def test_wraps_sliding_window_and_passes_kwargs():
    net = DtypeProbe()
    x = torch.randn(1, 1, 12, 12, 12)
    inferer = AutocastInferer(SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=2), dtype="bf16")
    out = inferer(x, net, scale=0.0)
    assert out.shape == (1, 2, 12, 12, 12) and out.dtype == torch.float32 and float(out.abs().max()) == 0.0


def test_fp16_on_cpu_and_unknown_dtype_are_refused():
    with pytest.raises(ValueError, match="bf16"):
        AutocastInferer(dtype="fp16")(torch.randn(1, 1, 4, 4, 4), DtypeProbe())
    with pytest.raises(ValueError, match="unknown"):
        resolve_amp_dtype("int8")


@pytest.mark.parametrize("text, on", [("false", False), ("False", False), ("0", False), ("true", True), ("True", True)])
def test_enabled_given_as_text_from_the_command_line(text, on):
    # `python -m monai.bundle run --amp false` hands the string "false" to the config
    assert (AutocastInferer(enabled=text).dtype is not None) == on


def test_unreadable_switch_is_refused():
    with pytest.raises(ValueError, match="on/off"):
        AutocastInferer(enabled="maybe")
