"""Tests of monai_ext.networks.vdt (VDT 3D ResNet classifier and segmenter)."""

import pytest
import torch

from monai_ext.networks.med3d import Med3DResNet
from monai_ext.networks.vdt import (
    ShallowInputSafeConv3d,
    VDTClassifier,
    VDTSegmenter,
    make_stem_shallow_input_safe,
    vdt_resnet,
    vdt_segmenter,
)
from monai_ext.weights.medicalnet import MEDICALNET_ENTRY_COUNTS


@pytest.mark.parametrize("depth", [10, 18])
def test_classifier_takes_any_depth_and_has_encoder_and_fc_keys(depth):
    net = vdt_resnet(depth, num_classes=7).eval()
    assert net.encoder.stride_depth is False and net.encoder.dilated is False
    with torch.no_grad():
        assert net(torch.randn(2, 1, 3, 32, 32)).shape == (2, 7)
        assert net(torch.randn(1, 1, 9, 32, 40)).shape == (1, 7)
    keys = list(net.state_dict())
    assert [k for k in keys if not k.startswith("encoder.")] == ["fc.weight", "fc.bias"]
    assert sum(k.startswith("encoder.") for k in keys) == MEDICALNET_ENTRY_COUNTS[depth]


def test_no_striding_along_depth_keeps_the_three_slices_to_the_last_stage():
    net = vdt_resnet(10, num_classes=3)
    features = net.encoder.forward_features(torch.randn(1, 1, 3, 64, 64))
    assert [f.shape[2] for f in features] == [3, 3, 3, 3, 3]
    assert features[-1].shape[3:] == (2, 2)  # output stride 32 in-plane


def test_parameter_count_of_the_published_configuration():
    with torch.device("meta"):
        net = vdt_resnet(18, num_classes=1000)
    n = sum(p.numel() for p in net.parameters())
    # MedicalNet ResNet-18 encoder (32.99M) + fc 512 x 1000 + 1000
    assert abs(n - (32.99e6 + 513_000)) < 0.01e6


def test_segmenter_outputs_the_input_size_with_a_small_decoder():
    net = vdt_segmenter(10, num_classes=4)
    out = net(torch.randn(2, 1, 3, 32, 48))
    assert out.shape == (2, 4, 3, 32, 48)
    decoder = sum(p.numel() for n, p in net.named_parameters() if n.startswith("decoder."))
    encoder = sum(p.numel() for n, p in net.named_parameters() if n.startswith("encoder."))
    assert decoder < 0.02 * encoder
    assert {k.split(".")[0] for k in net.state_dict()} == {"encoder", "decoder"}
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="num_classes"):
        vdt_resnet(10, num_classes=0)
    with pytest.raises(ValueError, match="out_channels"):
        VDTClassifier(torch.nn.Identity(), num_classes=2)
    with pytest.raises(ValueError, match="forward_features"):
        VDTSegmenter(torch.nn.Conv3d(1, 4, 3), num_classes=2)


def test_bf16_training_step_on_depth3_volumes_gives_finite_gradients():
    torch.manual_seed(0)
    net = vdt_resnet(10, num_classes=5)
    assert isinstance(net.encoder.conv1, ShallowInputSafeConv3d)
    x = torch.randn(2, 1, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x)
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([1, 3])).backward()
    bad = [n for n, p in net.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"


def test_stem_swap_keeps_parameters_and_outputs():
    encoder = Med3DResNet(10, dilated=False, stride_depth=False).eval()
    x = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        before = encoder(x)
    weight = encoder.conv1.weight
    keys = list(encoder.state_dict())
    make_stem_shallow_input_safe(encoder)
    assert isinstance(encoder.conv1, ShallowInputSafeConv3d) and encoder.conv1.weight is weight
    assert list(encoder.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), before)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert encoder.conv1(x).dtype == torch.float32  # shallow input: computed outside autocast
        assert encoder.conv1(torch.randn(1, 1, 8, 16, 16)).dtype == torch.bfloat16


def test_classifier_traces_for_export():
    net = vdt_resnet(10, num_classes=3).eval()
    x = torch.randn(1, 1, 3, 32, 32)
    traced = torch.jit.trace(net, x)
    torch.testing.assert_close(traced(x), net(x))
