import pytest
import torch

from monai_ext.weights.report import WeightTransferError, load_with_report


def _net():
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.Conv3d(4, 2, 1))


def test_values_arrive_and_declared_head_keeps_its_init():
    src, dst = _net(), _net()
    head_before = dst[2].weight.detach().clone()
    report = load_with_report(dst, src.state_dict(), source="src", initialise=("2.",))
    torch.testing.assert_close(dst[0].weight, src[0].weight)
    torch.testing.assert_close(dst[1].running_var, src[1].running_var)
    torch.testing.assert_close(dst[2].weight, head_before)
    assert report.initialised == ["2.weight", "2.bias"] and report.n_transferred == len(dst.state_dict()) - 2
    assert "2 initialised (declared)" in report.summary()


def test_nothing_matching_fails_loudly():
    with pytest.raises(WeightTransferError, match="silently stay random"):
        load_with_report(_net(), {"module." + k: v for k, v in _net().state_dict().items()}, source="x.pth")


def test_shape_mismatch_and_missing_keys_fail():
    src = _net().state_dict()
    src["0.weight"] = torch.zeros(4, 1, 5, 5, 5)
    with pytest.raises(WeightTransferError, match="0.weight"):
        load_with_report(_net(), src)


def test_unused_source_keys_mean_another_architecture():
    src = dict(_net().state_dict(), **{"3.weight": torch.zeros(2)})
    with pytest.raises(WeightTransferError, match="different architecture"):
        load_with_report(_net(), src)
    report = load_with_report(_net(), src, drop=("3.",))
    assert report.unexpected == ["3.weight"]
