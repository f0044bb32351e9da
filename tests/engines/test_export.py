"""End-of-training export: the best weights are loaded back (or their absence is said), bad files are named."""

import pytest
import torch
from torch import nn

from monai_ext.engines.export import export_best_encoder, load_best_weights
from monai_ext.weights.report import CheckpointFileError, WeightTransferError


class EncoderNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.encoder = nn.Conv3d(1, width, 3)
        self.head = nn.Conv3d(width, 2, 1)


def test_best_weights_are_loaded_and_the_encoder_exported(tmp_path):
    best = EncoderNet()
    torch.save(best.state_dict(), tmp_path / "model.pt")
    written = {}
    out = export_best_encoder(EncoderNet(), str(tmp_path / "model.pt"), str(tmp_path / "enc.pt"),
                              lambda enc, path: written.update(path=path, state=enc.state_dict()))  # fmt: skip
    assert out == str(tmp_path / "enc.pt") and written["path"] == out
    for key, value in best.encoder.state_dict().items():
        torch.testing.assert_close(written["state"][key], value)


def test_missing_best_weights_keep_the_last_ones(tmp_path, caplog):
    net = EncoderNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert load_best_weights(net, str(tmp_path / "model.pt")) is net
    assert "not found" in caplog.text
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_best_weights_of_another_network_or_corrupt_are_named(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(EncoderNet(width=8).state_dict(), path)
    with pytest.raises(WeightTransferError, match=str(path)):
        load_best_weights(EncoderNet(), str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointFileError, match=f"{path}.*download it again"):
        load_best_weights(EncoderNet(), str(path))
