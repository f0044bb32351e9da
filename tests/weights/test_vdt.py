"""Tests of monai_ext.weights.vdt: VDT checkpoints into 3D ResNets at other depths, MedicalNet-format export."""

from pathlib import Path

import pytest
import torch

from monai_ext.networks.med3d import Med3DResNet
from monai_ext.networks.multidomain import Med3DSegmenter
from monai_ext.networks.vdt import vdt_resnet, vdt_segmenter
from monai_ext.weights.medicalnet import load_medicalnet_checkpoint, medicalnet_checkpoint_info
from monai_ext.weights.report import WeightTransferError
from monai_ext.weights.vdt import (
    export_vdt_encoder,
    load_vdt_checkpoint,
    read_vdt_state_dict,
    split_vdt_encoder,
    vdt_checkpoint_info,
    vdt_encoder_from_checkpoint,
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A VDT classifier with non-default weights (and BN statistics), saved as the bundle saves models/model.pt."""
    torch.manual_seed(0)
    net = vdt_resnet(10, num_classes=6)
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 1, 3, 32, 32) * 3 + 1)  # move the BatchNorm running statistics off their defaults
    path = tmp_path_factory.mktemp("vdt") / "model.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_pretrained_checkpoint_loads_at_depth_32_with_depth_striding_and_reports_the_adaptation(pretrained):
    net, path = pretrained
    target = Med3DResNet(10, in_channels=2, dilated=True, stride_depth=True)
    report = load_vdt_checkpoint(path, target)

    assert report.adapted == {"conv1.weight": "input channels 1->2: tiled and scaled by 1/2"}
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]  # the classifier was dropped
    assert len(report.loaded) == 71 and not report.missing and not report.initialised
    assert "1 adapted" in report.summary() and "unused: fc.bias, fc.weight" in report.summary()

    source = net.encoder.state_dict()
    for key, value in target.state_dict().items():
        if key == "conv1.weight":
            torch.testing.assert_close(value, source[key].repeat(1, 2, 1, 1, 1) / 2)
        else:
            torch.testing.assert_close(value, source[key])
    # depth 32 is strided like the in-plane axes; a grey volume on both channels gives the 1-channel response
    single = Med3DResNet(10, in_channels=1, dilated=True, stride_depth=True).eval()
    load_vdt_checkpoint(path, single)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        out = target.eval()(x.repeat(1, 2, 1, 1, 1))
        assert out.shape == (1, 512, 4, 4, 4)
        torch.testing.assert_close(out, single(x), rtol=1e-4, atol=1e-4)


def test_new_heads_are_reported_as_initialised_and_the_classifier_can_be_kept(pretrained):
    _, path = pretrained
    seg = Med3DSegmenter(Med3DResNet(10, dilated=True, stride_depth=True), n_classes=3)
    report = load_vdt_checkpoint(path, seg)
    assert report.initialised and all(k.startswith("head.") for k in report.initialised)
    assert len(report.loaded) == 72 and sorted(report.unexpected) == ["fc.bias", "fc.weight"]

    new_classifier = vdt_resnet(10, num_classes=4)
    report = load_vdt_checkpoint(path, new_classifier, keep_classifier=True)  # other class count: fc is new
    assert report.initialised == ["fc.weight", "fc.bias"]

    same = vdt_resnet(10, num_classes=6)
    report = load_vdt_checkpoint(path, same, keep_classifier=True)
    assert not report.unexpected and "fc.weight" in report.loaded and len(report.loaded) == 74


def test_segmenter_checkpoint_drops_its_decoder(tmp_path):
    seg = vdt_segmenter(10, num_classes=4)
    torch.save({"network": seg.state_dict(), "trainer": {"epoch": torch.tensor(3)}}, tmp_path / "checkpoint_epoch=3.pt")
    report = load_vdt_checkpoint(tmp_path / "checkpoint_epoch=3.pt", vdt_resnet(10, num_classes=2))
    assert report.unexpected and all(k.startswith("decoder.") for k in report.unexpected)
    assert report.initialised == ["fc.weight", "fc.bias"]


def test_wrong_depth_names_both_architectures(pretrained):
    _, path = pretrained
    with pytest.raises(WeightTransferError, match="ResNet-10 with shortcut B.*Med3DResNet\\(depth=18"):
        load_vdt_checkpoint(path, Med3DResNet(18))
    with pytest.raises(FileNotFoundError, match="vdt_natural_image_pretraining"):
        load_vdt_checkpoint(path.parent / "absent.pt", Med3DResNet(10))
    with pytest.raises(TypeError, match="Med3DResNet"):
        load_vdt_checkpoint(path, torch.nn.Linear(2, 2))


def test_module_prefix_and_wrappers_are_unwrapped(pretrained):
    net, _ = pretrained
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}
    state, source = read_vdt_state_dict(wrapped)
    assert source == "<state dict>" and "encoder.conv1.weight" in state
    encoder, head = split_vdt_encoder(state)
    assert "conv1.weight" in encoder and sorted(head) == ["fc.bias", "fc.weight"]
    info = vdt_checkpoint_info(wrapped)
    assert (info["depth"], info["shortcut"], info["in_channels"], info["num_classes"]) == (10, "B", 1, 6)


def test_export_is_medicalnet_format_and_loads_on_the_med3d_path(pretrained, tmp_path):
    net, path = pretrained
    out = export_vdt_encoder(path, tmp_path / "encoder_medicalnet.pth")
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"state_dict"} and all(k.startswith("module.") for k in raw["state_dict"])
    info = medicalnet_checkpoint_info(out)
    assert (info["depth"], info["shortcut"], info["n_entries"]) == (10, "B", 72)
    assert info["variant_hint"] != "not published"  # the layout of MedicalNet's published resnet_10.pth

    fine_tune = Med3DSegmenter(Med3DResNet(10, dilated=True, stride_depth=True), n_classes=2)
    report = load_medicalnet_checkpoint(out, fine_tune)
    assert report.n_transferred == 72
    torch.testing.assert_close(fine_tune.encoder.layer4[0].conv2.weight, net.encoder.layer4[0].conv2.weight)
    # exporting from the network gives the same tensors
    again = torch.load(export_vdt_encoder(net, tmp_path / "again.pth"), weights_only=True)["state_dict"]
    assert all(torch.equal(again[k], v) for k, v in raw["state_dict"].items())
    # and the bare encoder file reads back as a VDT checkpoint
    encoder = vdt_encoder_from_checkpoint(out)
    assert encoder.stride_depth is False and encoder.depth == 10
