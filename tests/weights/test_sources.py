"""Every source of the pre-trained table loads a generated checkpoint in its published format, through
``load_pretrained`` (the code path of the fine-tuning bundles), into both the segmentation and the classification
network of its architecture; nothing silently stays random, and the wrong architecture fails loudly."""

from __future__ import annotations

import pytest
import torch

from monai_ext.networks.inflated import INFLATED_BACKBONES
from monai_ext.networks.med3d import Med3DResNet
from monai_ext.networks.multidomain import MultiDomainSegmenter
from monai_ext.networks.suprem_backbones import suprem_backbone
from monai_ext.networks.transfer import (
    TRANSFER_ARCHITECTURES,
    EncoderClassifier,
    build_transfer_network,
    new_layer_prefixes,
)
from monai_ext.networks.vdt import vdt_resnet
from monai_ext.weights.medicalnet import export_medicalnet_checkpoint
from monai_ext.weights.report import WeightTransferError
from monai_ext.weights.sources import (
    NO_SOURCE,
    PRETRAINED_SOURCES,
    find_source_file,
    get_source,
    list_sources,
    load_pretrained,
    source_architecture,
)

LARGE = {"medicalnet-resnet101", "medicalnet-resnet152", "medicalnet-resnet200", "suprem-swinunetr"}
SUPREM_HEADS = {
    "module.organ_embedding": torch.randn(32, 512),
    "module.precls_conv.0.weight": torch.randn(8),
    "module.controller.weight": torch.randn(153, 256, 1, 1, 1),
}


def _write_published(source: str, folder) -> tuple[str, dict[str, torch.Tensor]]:
    """A checkpoint in the source's published format, and its encoder tensors by target key (``encoder.`` or plain)."""
    src = get_source(source)
    path = folder / str(src.filename)
    if src.family == "medicalnet":
        depth = int(src.architecture.removeprefix("med3d-resnet"))
        encoder = Med3DResNet(depth=depth, shortcut_type=src.architecture_kwargs.get("shortcut_type"))
        export_medicalnet_checkpoint(encoder, path)
        stored = torch.load(path, weights_only=True)
        assert set(stored) == {"state_dict"} and all(k.startswith("module.") for k in stored["state_dict"])
        return str(path), {"encoder." + k: v for k, v in encoder.state_dict().items()}
    if src.family == "suprem":
        backbone = src.architecture.removeprefix("suprem-")
        net = suprem_backbone(backbone, 32)
        prefix = "module." if backbone == "segresnet" else "module.backbone."
        state = {prefix + k: v for k, v in net.state_dict().items()}
        if backbone != "segresnet":
            state.update(SUPREM_HEADS)
        torch.save({"net": state, "epoch": 2100}, path)
        return str(path), dict(net.state_dict())
    if src.family == "imagenet2d":
        encoder_type, params, _ = INFLATED_BACKBONES[src.architecture]
        encoder_2d = encoder_type(model_name=params["model_name"], spatial_dims=2, in_channels=3)
        state = dict(encoder_2d.state_dict())
        if src.architecture.startswith("inflated-resnet"):
            state.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})
        else:
            state.update({"conv_head.weight": torch.randn(1280, 320, 1, 1), "classifier.weight": torch.randn(1000, 1280)})
        torch.save(state, path)
        return str(path), {"encoder." + k: v for k, v in encoder_2d.state_dict().items()}
    if src.family == "vdt":
        net = vdt_resnet(depth=18, num_classes=8)
        torch.save(net.state_dict(), path)
        return str(path), {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    raise AssertionError(source)


def _check_loaded(network, report, expected: dict[str, torch.Tensor], architecture: str, task: str):
    state = network.state_dict()
    new = new_layer_prefixes(architecture, task)
    transferred = set(report.loaded) | set(report.adapted)
    assert not report.missing
    # every entry outside the new layers carries a pre-trained value; the new layers are declared initialised
    outside = {k for k in state if not k.startswith(new)}
    assert outside <= transferred | {k for k in report.initialised if not k.startswith(new) and "num_batches" in k}
    assert {k for k in state if k.startswith(new)} <= set(report.initialised)
    checked = 0
    for key, value in expected.items():
        if key in state and key in report.loaded:
            assert torch.equal(state[key], value.to(state[key].dtype)), key
            checked += 1
    assert checked > 0


@pytest.mark.parametrize(
    "source",
    [pytest.param(s, marks=pytest.mark.slow) if s in LARGE else s for s in PRETRAINED_SOURCES if s != "bundle"],
)
@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_every_source_loads_its_published_format(source, task, tmp_path):
    path, expected = _write_published(source, tmp_path)
    architecture, kwargs = source_architecture(source, path)
    network = build_transfer_network(architecture, task, out_channels=3, **kwargs)
    report = load_pretrained(network, source, path)
    if get_source(source).family == "suprem" and task == "segmentation":
        expected = {k: v for k, v in expected.items() if not k.startswith(new_layer_prefixes(architecture, task))}
    elif get_source(source).family == "suprem":
        expected = {"encoder." + k: v for k, v in expected.items()}
    _check_loaded(network, report, expected, architecture, task)
    if get_source(source).family == "imagenet2d":  # the stem was summed over RGB to one channel
        assert any("input channels" in rule or "sum" in rule for rule in report.adapted.values())


def test_table_entries_are_complete():
    for src in list_sources():
        assert src.licence and src.key_format and src.description
        if src.family != "bundle":
            assert src.architecture in TRANSFER_ARCHITECTURES
        if src.url:
            assert src.url.startswith("https://") and src.url.endswith(str(src.filename))
    assert {s.family for s in list_sources()} == {"medicalnet", "suprem", "imagenet2d", "vdt", "bundle"}
    assert get_source("imagenet-resnet18").sha256 == "f37072fd"


def test_missing_file_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_EXT_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="huggingface.co/TencentMedicalNet/MedicalNet-Resnet10"):
        find_source_file("medicalnet-resnet10")
    with pytest.raises(FileNotFoundError, match="MrGiovanni/SuPreM"):
        find_source_file("suprem-segresnet")
    with pytest.raises(KeyError, match="unknown pre-trained source"):
        get_source("resnet10")


def test_file_found_in_weights_folder_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_EXT_WEIGHTS", str(tmp_path))
    path, _ = _write_published("medicalnet-resnet10", tmp_path)
    assert find_source_file("medicalnet-resnet10") == tmp_path / "resnet_10.pth"
    network = build_transfer_network("med3d-resnet10", "classification", 2)
    assert load_pretrained(network, "medicalnet-resnet10").n_transferred == 72 - 0


def test_wrong_architecture_fails_loudly(tmp_path):
    path, _ = _write_published("medicalnet-resnet10", tmp_path)
    network = build_transfer_network("med3d-resnet18", "segmentation", 3)
    with pytest.raises(WeightTransferError, match="depth|shortcut"):
        load_pretrained(network, "medicalnet-resnet18", path)
    with pytest.raises(ValueError, match="holds weights of a med3d-resnet10"):
        source_architecture("medicalnet-resnet10", path, architecture="med3d-resnet18")
    suprem_path, _ = _write_published("suprem-segresnet", tmp_path)
    with pytest.raises(WeightTransferError):
        load_pretrained(build_transfer_network("suprem-unet", "segmentation", 3), "suprem-unet", suprem_path)


def test_scratch_needs_an_architecture():
    with pytest.raises(ValueError, match="needs an architecture"):
        source_architecture(NO_SOURCE)
    assert source_architecture(NO_SOURCE, architecture="suprem-segresnet") == ("suprem-segresnet", {})


def test_multichannel_input_adapts_the_stem(tmp_path):
    path, expected = _write_published("medicalnet-resnet10", tmp_path)
    network = build_transfer_network("med3d-resnet10", "segmentation", 3, in_channels=4)
    report = load_pretrained(network, "medicalnet-resnet10", path)
    assert "encoder.conv1.weight" in report.adapted
    stem = network.state_dict()["encoder.conv1.weight"]
    assert torch.allclose(stem.sum(1, keepdim=True), expected["encoder.conv1.weight"], atol=1e-5)


# --- the "bundle" source: models/model.pt of this project's bundles, architecture read from the keys ---------------


def _bundle_models(kind: str, folder):
    if kind == "med3d":
        net = MultiDomainSegmenter(Med3DResNet(depth=10), {"TaskA": 3, "TaskB": 2})
    elif kind == "vdt":
        net = vdt_resnet(depth=18, num_classes=5)
    elif kind == "suprem":
        net = suprem_backbone("segresnet", 25)
    else:
        net = build_transfer_network("inflated-resnet18", "segmentation", 3, stride_depth=False,
                                     decoder_channels=(32, 16, 16, 8, 8))  # fmt: skip
    (folder / "models").mkdir()
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return net


@pytest.mark.parametrize(
    "kind, architecture",
    [("med3d", "med3d-resnet10"), ("vdt", "med3d-resnet18"), ("suprem", "suprem-segresnet"),
     ("crossdim", "inflated-resnet18")],
)  # fmt: skip
@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_bundle_source_reads_the_architecture_and_loads(kind, architecture, task, tmp_path):
    source_net = _bundle_models(kind, tmp_path)
    found, kwargs = source_architecture("bundle", tmp_path)  # a bundle folder: models/model.pt inside
    assert found == architecture
    network = build_transfer_network(found, task, out_channels=4, **kwargs)
    report = load_pretrained(network, "bundle", tmp_path)
    source_state = source_net.state_dict()
    if kind == "suprem":
        expected = {("encoder." + k if task == "classification" else k): v for k, v in source_state.items()}
        expected = {k: v for k, v in expected.items() if not k.startswith("conv_final.2.conv")}
    else:
        expected = {k: v for k, v in source_state.items() if k.startswith("encoder.")}
    if kind == "crossdim" and task == "segmentation":
        assert set(report.initialised) >= {k for k in network.state_dict() if k.startswith("decoder.")}
    _check_loaded(network, report, expected, architecture, task)


def test_bundle_source_refuses_unknown_networks(tmp_path):
    (tmp_path / "models").mkdir()
    torch.save({"weird.weight": torch.zeros(2)}, tmp_path / "models" / "model.pt")
    with pytest.raises(WeightTransferError, match="unknown network"):
        source_architecture("bundle", tmp_path)
    torch.save({"a": [1, 2]}, tmp_path / "models" / "model.pt")
    with pytest.raises(Exception):
        source_architecture("bundle", tmp_path)


def test_classifier_is_an_encoder_with_a_linear_head():
    net = build_transfer_network("med3d-resnet10", "classification", 3)
    assert isinstance(net, EncoderClassifier) and net.fc.out_features == 3
    assert net(torch.randn(2, 1, 16, 32, 32)).shape == (2, 3)
    net = build_transfer_network("suprem-segresnet", "classification", 2)
    assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2)
