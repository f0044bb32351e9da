"""Tests of monai_ext.networks.inflated: torchvision/timm key names, FlexibleUNet registration, and the proofs that
the 3D networks carry the 2D weights (whole networks in eval mode, random BatchNorm statistics)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from monai.networks.nets import EfficientNetEncoder, FlexibleUNet, resnet18
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from monai_ext.networks.inflated import (
    EFFICIENTNET_SCALING,
    INFLATED_BACKBONES,
    RESNET_LAYOUTS,
    DepthPolicy,
    InflatedEfficientNetEncoder,
    InflatedFlexUNet,
    InflatedResNetEncoder,
    round_efficientnet_channels,
)
from monai_ext.weights.imagenet2d import (
    DEFAULT_IMAGENET_2D_WEIGHTS,
    IMAGENET_2D_WEIGHTS,
    WEIGHTS_DIR_ENV,
    load_2d_weights_into_3d,
)
from monai_ext.weights.inflate import (
    adapt_input_channels,
    expand_2d_network_to_3d,
    inflate_conv_weight,
    inflate_module,
    inflate_state_dict,
)
from monai_ext.weights.report import WeightTransferError

SMALL_DECODER = (32, 16, 16, 8, 8)

# Entry count and sha256 (first 16 hex digits) of the sorted "key:shape" lines of the real torchvision / timm state
# dicts without the classifier (torchvision 0.29 `resnetXX()` minus `fc.*`; timm 1.0.31 `efficientnet_bX` minus
# `conv_head.*`, `bn2.*`, `classifier.*`), and their parameter counts (published totals minus the head).
REFERENCE_LAYOUTS = {
    "resnet18": (120, "8c978ff63e1cde5f", 11_176_512),
    "resnet34": (216, "389ab3ea5d5f2bfa", 21_284_672),
    "resnet50": (318, "e1a41511a9760791", 23_508_032),
    "resnet101": (624, "21eee1863c4c35d8", 42_500_160),
    "resnet152": (930, "cb046e2686c40bb0", 58_143_808),
    "efficientnet-b0": (352, "f1e55b623ac9ed2f", 3_595_388),
    "efficientnet-b1": (500, "010fac5aea87d118", 6_101_024),
    "efficientnet-b2": (500, "c1c6aad01af39125", 7_202_562),
    "efficientnet-b3": (566, "81c3064a940ce68c", 10_103_336),
    "efficientnet-b4": (698, "33a3eb1e010c02b4", 16_742_216),
}
# published totals of the full 2D classifiers, for the head arithmetic below
PUBLISHED_TOTALS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "efficientnet-b0": 5_288_548,
    "efficientnet-b4": 19_341_616,
}


def build_encoder(architecture: str, **kwargs) -> nn.Module:
    cls = InflatedResNetEncoder if architecture.startswith("resnet") else InflatedEfficientNetEncoder
    return cls(architecture, **kwargs)


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-default running statistics and affine parameters, so that copying the buffers is tested."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(11)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def slices_as_batch(volume: torch.Tensor) -> torch.Tensor:
    """B x C x D x H x W -> (B*D) x C x H x W."""
    b, c, d, h, w = volume.shape
    return volume.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)


def batch_as_slices(images: torch.Tensor, depth: int) -> torch.Tensor:
    """(B*D) x C x H x W -> B x C x D x H x W."""
    n, c, h, w = images.shape
    return images.reshape(n // depth, depth, c, h, w).permute(0, 2, 1, 3, 4)


def layout_fingerprint(state: dict) -> tuple[int, str]:
    lines = sorted(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# layouts


@pytest.mark.parametrize("architecture", list(REFERENCE_LAYOUTS))
def test_2d_twin_has_exactly_the_torchvision_or_timm_layout(architecture):
    n_entries, digest, n_params = REFERENCE_LAYOUTS[architecture]
    with torch.device("meta"):
        encoder = build_encoder(architecture, spatial_dims=2, in_channels=3)
    assert layout_fingerprint(encoder.state_dict()) == (n_entries, digest)
    assert sum(p.numel() for p in encoder.parameters()) == n_params


def test_parameter_counts_match_the_published_classifiers():
    assert PUBLISHED_TOTALS["resnet18"] - REFERENCE_LAYOUTS["resnet18"][2] == 512 * 1000 + 1000  # fc
    assert PUBLISHED_TOTALS["resnet50"] - REFERENCE_LAYOUTS["resnet50"][2] == 2048 * 1000 + 1000
    for name, head in (("efficientnet-b0", 1280), ("efficientnet-b4", 1792)):
        width = EFFICIENTNET_SCALING[name][0]
        last = round_efficientnet_channels(320, width)
        assert round_efficientnet_channels(1280, width) == head
        head_params = last * head + 2 * head + head * 1000 + 1000  # conv_head, bn2 affine, classifier
        assert PUBLISHED_TOTALS[name] - REFERENCE_LAYOUTS[name][2] == head_params


def test_known_key_shapes():
    with torch.device("meta"):
        effnet = InflatedEfficientNetEncoder("efficientnet-b0", spatial_dims=2).state_dict()
        resnet = InflatedResNetEncoder("resnet18", spatial_dims=3).state_dict()
    assert effnet["blocks.0.0.se.conv_reduce.weight"].shape == (8, 32, 1, 1)
    assert effnet["blocks.1.0.se.conv_reduce.weight"].shape == (4, 96, 1, 1)
    assert effnet["blocks.6.0.conv_pwl.weight"].shape == (320, 1152, 1, 1)
    assert effnet["blocks.5.3.bn3.running_var"].shape == (192,)
    assert resnet["conv1.weight"].shape == (64, 3, 7, 7, 7)
    assert resnet["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1, 1)
    assert "layer2.0.downsample.0.bias" not in resnet and "layer1.0.downsample.0.weight" not in resnet
    assert "fc.weight" not in resnet


def test_depth_policy():
    flat = DepthPolicy(3, stride_depth=False, depth_kernels=False)
    assert flat.kernel(3) == (1, 3, 3) and flat.stride(2) == (1, 2, 2) and flat.squeeze_dims() == (3, 4)
    assert DepthPolicy(3).squeeze_dims() == (2, 3, 4) and DepthPolicy(2).kernel(7) == 7
    with torch.device("meta"):
        anisotropic = InflatedResNetEncoder("resnet18", stride_depth=False, depth_kernels=False).state_dict()
    assert anisotropic["conv1.weight"].shape == (64, 3, 1, 7, 7)
    with pytest.raises(ValueError, match="spatial_dims"):
        DepthPolicy(1)


def test_backbones_are_registered_for_flexible_unet():
    names = [f"inflated-{n}" for n in list(RESNET_LAYOUTS) + list(EFFICIENTNET_SCALING)]
    assert set(names) == set(INFLATED_BACKBONES)
    for name in names:
        assert FLEXUNET_BACKBONE.register_dict[name]["feature_number"] == 5
    monai_channels = dict(
        zip(EfficientNetEncoder.backbone_names, EfficientNetEncoder.num_channels_per_output(), strict=True)
    )
    for name in EFFICIENTNET_SCALING:
        assert FLEXUNET_BACKBONE.register_dict[f"inflated-{name}"]["feature_channel"] == monai_channels[name]
    assert FLEXUNET_BACKBONE.register_dict["inflated-resnet50"]["feature_channel"] == (64, 256, 512, 1024, 2048)


@pytest.mark.parametrize("backbone", ["inflated-resnet18", "inflated-efficientnet-b0"])
def test_flexible_unet_runs_in_2d_and_3d(backbone):
    net3 = FlexibleUNet(1, 3, backbone, spatial_dims=3, decoder_channels=SMALL_DECODER).eval()
    net2 = FlexibleUNet(1, 3, backbone, spatial_dims=2, decoder_channels=SMALL_DECODER).eval()
    with torch.no_grad():
        assert net3(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
        assert net2(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    assert list(net2.state_dict()) == list(net3.state_dict())  # same names: the 2D network and its 3D twin


def test_inflated_flex_unet_keeps_depth_and_rejects_contradictions():
    net = InflatedFlexUNet(1, 2, "inflated-resnet18", stride_depth=False, decoder_channels=SMALL_DECODER).eval()
    features = net.encoder(torch.randn(1, 1, 5, 32, 32))
    assert [f.shape[2] for f in features] == [5] * 5
    with torch.no_grad():
        assert net(torch.randn(1, 1, 5, 32, 32)).shape == (1, 2, 5, 32, 32)
    with pytest.raises(ValueError, match="unknown backbone"):
        InflatedFlexUNet(1, 2, "resnet18")
    with pytest.raises(ValueError, match="stride_depth=False"):
        InflatedFlexUNet(1, 2, "inflated-resnet18", depth_kernels=False)
    with pytest.raises(ValueError, match="pixelshuffle"):
        InflatedFlexUNet(1, 2, "inflated-resnet18", stride_depth=False, upsample="pixelshuffle")


@pytest.mark.parametrize("backbone", ["inflated-resnet18", "inflated-efficientnet-b0"])
def test_inflated_flex_unet_names_valid_patch_sizes(backbone):
    """A side that is not a multiple of 32 fails with the valid sizes, not with torch.cat's 'Sizes of tensors must
    match' deep in the decoder; the fine-tuning bundle checks its patch_size the same way when it starts."""
    from monai_ext.networks.transfer import check_patch_size

    net = InflatedFlexUNet(1, 2, backbone, decoder_channels=SMALL_DECODER).eval()
    assert net.size_divisor == (32, 32, 32)
    with pytest.raises(
        ValueError, match=r"multiple of 32.*\[32, 32, 32\] or \[64, 64, 64\].*--patch_size \"\[64,64,64\]\""
    ):
        net(torch.randn(1, 1, 48, 48, 48))
    with pytest.raises(ValueError, match="cannot take inputs of spatial size \\[48, 48, 48\\]"):
        check_patch_size(torch.nn.parallel.DataParallel(net), [48, 48, 48])
    check_patch_size(net, [64, 32, 96])
    flat = InflatedFlexUNet(1, 2, backbone, stride_depth=False, decoder_channels=SMALL_DECODER)
    assert flat.size_divisor == (1, 32, 32)
    check_patch_size(flat, [5, 32, 64])  # depth is not strided: any depth
    with pytest.raises(ValueError, match="height and width must be multiples of 32"):
        check_patch_size(flat, [5, 48, 64])
    assert InflatedFlexUNet(1, 2, backbone, spatial_dims=2, decoder_channels=SMALL_DECODER).size_divisor == (32, 32)


# ----------------------------------------------------------------------------------------------------------------
# proofs on whole networks


@pytest.mark.parametrize(
    "backbone, mode, depth_kernels, upsample",
    [
        ("inflated-resnet18", "center", True, "nontrainable"),
        ("inflated-resnet18", "2.5d", False, "nontrainable"),
        ("inflated-resnet18", "center", True, "deconv"),
        ("inflated-efficientnet-b0", "center", True, "nontrainable"),
        ("inflated-efficientnet-b0", "2.5d", False, "nontrainable"),
    ],
)
def test_center_and_2_5d_twins_equal_the_slice_wise_2d_network(backbone, mode, depth_kernels, upsample):
    torch.manual_seed(0)
    kwargs = {"decoder_channels": SMALL_DECODER, "upsample": upsample}
    net2 = randomise_batchnorm(FlexibleUNet(1, 3, backbone, spatial_dims=2, **kwargs)).eval()
    net3 = InflatedFlexUNet(1, 3, backbone, spatial_dims=3, stride_depth=False, depth_kernels=depth_kernels, **kwargs)
    report = expand_2d_network_to_3d(net2, net3.eval(), mode=mode)
    assert not report.missing and report.n_transferred == len(net3.state_dict())
    volume = torch.randn(1, 1, 4, 32, 32)
    with torch.no_grad():
        expected = batch_as_slices(net2(slices_as_batch(volume)), depth=4)
        result = net3(volume)
    assert expected.abs().max() > 0.05  # a meaningful output, not a collapsed one
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["inflated-resnet18", "inflated-efficientnet-b0"])
def test_average_reproduces_2d_output_on_a_repeated_slice(backbone):
    """I3D's argument, on the standard FlexibleUNet twin (depth strides included) with replicate padding."""
    torch.manual_seed(0)
    net2 = randomise_batchnorm(FlexibleUNet(1, 3, backbone, spatial_dims=2, decoder_channels=SMALL_DECODER)).eval()
    net3 = FlexibleUNet(1, 3, backbone, spatial_dims=3, decoder_channels=SMALL_DECODER).eval()
    report = inflate_module(net2, net3, mode="average")
    assert not report.missing
    for m in list(net2.modules()) + list(net3.modules()):
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.padding_mode = "replicate"
    image = torch.randn(1, 1, 32, 32)
    volume = image.unsqueeze(2).expand(1, 1, 32, 32, 32).contiguous()
    with torch.no_grad():
        expected = net2(image)
        result = net3(volume)
    torch.testing.assert_close(result, expected.unsqueeze(2).expand_as(result), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["inflated-resnet18", "inflated-efficientnet-b0"])
def test_summed_rgb_stem_equals_the_rgb_network_on_grey_input(backbone):
    torch.manual_seed(0)
    stem = "encoder." + INFLATED_BACKBONES[backbone][0].first_conv
    rgb2 = randomise_batchnorm(FlexibleUNet(3, 2, backbone, spatial_dims=2, decoder_channels=SMALL_DECODER)).eval()
    grey2 = FlexibleUNet(1, 2, backbone, spatial_dims=2, decoder_channels=SMALL_DECODER).eval()
    state, report = inflate_state_dict(rgb2.state_dict(), grey2, first_conv=stem)
    grey2.load_state_dict(state)
    assert report.adapted == {f"{stem}.weight": "input channels 3->1 (sum RGB)"}
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey2(image), rgb2(image.expand(2, 3, 32, 32)), atol=1e-5, rtol=1e-4)

    rgb3 = InflatedFlexUNet(3, 2, backbone, stride_depth=False, decoder_channels=SMALL_DECODER).eval()
    grey3 = InflatedFlexUNet(1, 2, backbone, stride_depth=False, decoder_channels=SMALL_DECODER).eval()
    inflate_module(rgb2, rgb3, mode="average")
    report = inflate_module(rgb2, grey3, mode="average", first_conv=stem)
    assert report.adapted[f"{stem}.weight"] == "inflated 2D->3D (average); input channels 3->1 (sum RGB)"
    volume = torch.randn(1, 1, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey3(volume), rgb3(volume.expand(1, 3, 4, 32, 32)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("architecture", ["resnet18", "efficientnet-b0"])
def test_torchvision_or_timm_checkpoint_loads_with_full_coverage(architecture, tmp_path):
    """A checkpoint generated with the exact published key names (classifier included) reaches every 3D entry."""
    torch.manual_seed(0)
    twin2d = randomise_batchnorm(build_encoder(architecture, spatial_dims=2, in_channels=3))
    checkpoint = dict(twin2d.state_dict())
    if architecture.startswith("resnet"):
        checkpoint.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})
    else:
        checkpoint.update({"conv_head.weight": torch.randn(1280, 320, 1, 1), "bn2.weight": torch.ones(1280)})
        checkpoint.update({"classifier.weight": torch.randn(1000, 1280), "classifier.bias": torch.randn(1000)})
    path = tmp_path / "weights.pth"
    torch.save(checkpoint, path)

    encoder = build_encoder(architecture, pretrained=path, spatial_dims=3, in_channels=1)
    report = encoder.weights_report
    state3 = encoder.state_dict()
    assert not report.missing and not report.initialised
    assert report.n_transferred == len(state3)
    assert set(report.unexpected) == set(checkpoint) - set(state3)
    stem = encoder.first_conv + ".weight"
    expected_stem = inflate_conv_weight(adapt_input_channels(checkpoint[stem], 1), state3[stem].shape, "average")
    torch.testing.assert_close(state3[stem], expected_stem)
    for key, value in state3.items():
        if key != stem and value.ndim <= 1:  # biases, norm parameters, running stats, num_batches_tracked
            torch.testing.assert_close(value, checkpoint[key], msg=key)
        elif key != stem:
            torch.testing.assert_close(value.sum(2), checkpoint[key], atol=1e-6, rtol=1e-5, msg=key)

    same_dim = build_encoder(architecture, pretrained=path, spatial_dims=2, in_channels=3)
    assert not same_dim.weights_report.adapted  # 2D: the weights copy as they are
    torch.testing.assert_close(same_dim.state_dict()[stem], checkpoint[stem])


def test_pretrained_true_resolves_the_table_through_flexible_unet(tmp_path, monkeypatch):
    torch.manual_seed(0)
    checkpoint = randomise_batchnorm(InflatedResNetEncoder("resnet18", spatial_dims=2)).state_dict()
    info = IMAGENET_2D_WEIGHTS[DEFAULT_IMAGENET_2D_WEIGHTS["resnet18"]]
    torch.save(checkpoint, tmp_path / info.filename)
    digest = hashlib.sha256((tmp_path / info.filename).read_bytes()).hexdigest()
    monkeypatch.setitem(IMAGENET_2D_WEIGHTS, info.name, dataclasses.replace(info, sha256_prefix=digest[:8]))
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))

    net = FlexibleUNet(1, 3, "inflated-resnet18", pretrained=True, spatial_dims=3, decoder_channels=SMALL_DECODER)
    report = net.encoder.weights_report
    assert report.source == str(tmp_path / info.filename)
    assert not report.missing and report.n_transferred == len(net.encoder.state_dict())
    torch.testing.assert_close(net.encoder.layer4[1].bn2.running_var, checkpoint["layer4.1.bn2.running_var"])


def test_pretrained_true_without_the_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        FlexibleUNet(1, 3, "inflated-efficientnet-b0", pretrained=True, spatial_dims=3)
    message = str(err.value)
    assert "efficientnet_b0_ra-3dd342df.pth" in message and str(tmp_path / "checkpoints") in message
    assert "https://github.com/rwightman/pytorch-image-models/releases" in message


# ----------------------------------------------------------------------------------------------------------------
# the coverage report catches broken transfers


@pytest.fixture(scope="module")
def resnet18_checkpoint() -> dict:
    return randomise_batchnorm(InflatedResNetEncoder("resnet18", spatial_dims=2)).state_dict()


def test_a_key_map_that_drops_layer3_is_caught(resnet18_checkpoint):
    encoder = InflatedResNetEncoder("resnet18", spatial_dims=3)
    with pytest.raises(WeightTransferError) as err:
        inflate_state_dict(resnet18_checkpoint, encoder, key_map={"layer3.": None}, first_conv="conv1")
    assert "layer3.0.conv1.weight" in str(err.value) and "layer3: 30" in str(err.value)


def test_a_renamed_key_is_caught_and_nothing_is_loaded(resnet18_checkpoint):
    encoder = InflatedResNetEncoder("resnet18", spatial_dims=3)
    before = encoder.conv1.weight.detach().clone()
    renamed = {k.replace("layer1.0.conv1.", "layer1.0.conv_1."): v for k, v in resnet18_checkpoint.items()}
    with pytest.raises(WeightTransferError) as err:
        load_2d_weights_into_3d(encoder, renamed)
    assert "layer1.0.conv1.weight" in str(err.value)
    torch.testing.assert_close(encoder.conv1.weight, before)  # no partial load


def test_a_different_depth_is_caught(resnet18_checkpoint):
    with pytest.raises(WeightTransferError, match="got no value"):
        load_2d_weights_into_3d(InflatedResNetEncoder("resnet34", spatial_dims=2), resnet18_checkpoint)
    resnet34_checkpoint = InflatedResNetEncoder("resnet34", spatial_dims=2).state_dict()
    with pytest.raises(WeightTransferError, match=r"no place in the target: layer1.2"):
        load_2d_weights_into_3d(InflatedResNetEncoder("resnet18", spatial_dims=2), resnet34_checkpoint)


def test_monai_resnet18_with_shortcut_a_cannot_take_torchvision_weights(resnet18_checkpoint):
    monai_net = resnet18(spatial_dims=3, n_input_channels=3, shortcut_type="A", feed_forward=False)
    with pytest.raises(WeightTransferError) as err:
        load_2d_weights_into_3d(monai_net, resnet18_checkpoint, first_conv="conv1", drop_source=("fc.",))
    assert "layer2.0.downsample.0.weight" in str(err.value)
    monai_b = resnet18(spatial_dims=3, n_input_channels=3, shortcut_type="B", feed_forward=False)  # bias_downsample
    with pytest.raises(WeightTransferError, match=r"layer2.0.downsample.0.bias"):
        load_2d_weights_into_3d(monai_b, resnet18_checkpoint, first_conv="conv1", drop_source=("fc.",))
