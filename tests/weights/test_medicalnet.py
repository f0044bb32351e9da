"""Tests for monai_ext.weights.medicalnet on files laid out exactly like the published MedicalNet checkpoints."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from monai.networks import nets

from monai_ext.networks.med3d import MED3D_ARCHITECTURES, med3d_resnet
from monai_ext.networks.multidomain import Med3DSegmenter, MultiDomainSegmenter
from monai_ext.weights.medicalnet import (
    MEDICALNET_ENTRY_COUNTS,
    MEDICALNET_WEIGHTS,
    adapt_first_conv_channels,
    export_medicalnet_checkpoint,
    load_into_monai_resnet,
    load_medicalnet_checkpoint,
    medicalnet_checkpoint_info,
    to_monai_resnet_state_dict,
)
from monai_ext.weights.report import WeightTransferError

PUBLISHED_COUNTS = {10: 72, 18: 102, 34: 198, 50: 318, 101: 624, 152: 930, 200: 1218}


def _published_state(depth: int, seed: int) -> OrderedDict:
    """A random encoder's entries under the published key names (``module.`` prefix), non-trivial BN buffers."""
    torch.manual_seed(seed)
    encoder = med3d_resnet(depth)
    state = OrderedDict()
    for key, value in encoder.state_dict().items():
        if key.endswith("running_mean") or key.endswith("running_var"):
            value = torch.rand_like(value) + 0.5
        elif key.endswith("num_batches_tracked"):
            value = torch.tensor(seed + 7)
        state[f"module.{key}"] = value.clone()
    return state


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[int, tuple[Path, OrderedDict]]:
    """Files ``resnet_{10,18,34,50}.pth`` written as MedicalNet did: ``{"state_dict": {"module." + key: tensor}}``."""
    folder = tmp_path_factory.mktemp("medicalnet")
    files = {}
    for seed, depth in enumerate((10, 18, 34, 50)):
        state = _published_state(depth, seed)
        path = folder / f"resnet_{depth}.pth"
        torch.save({"state_dict": state}, path)
        files[depth] = (path, state)
    return files


def _assert_values_arrived(model_state: dict, source: OrderedDict, prefix: str = "") -> None:
    for key, value in source.items():
        assert torch.equal(model_state[prefix + key[len("module.") :]], value), key


def test_published_files_have_published_entry_counts(published):
    for depth, (path, _) in published.items():
        content = torch.load(path, weights_only=True)
        assert list(content) == ["state_dict"]
        assert len(content["state_dict"]) == PUBLISHED_COUNTS[depth]
        assert all(k.startswith("module.") for k in content["state_dict"])


def test_entry_count_table_and_large_depths_on_meta():
    assert MEDICALNET_ENTRY_COUNTS == PUBLISHED_COUNTS
    for depth in (101, 152, 200):
        with torch.device("meta"):
            encoder = med3d_resnet(depth)
        assert len(encoder.state_dict()) == PUBLISHED_COUNTS[depth]
        info = medicalnet_checkpoint_info({"module." + k: v for k, v in encoder.state_dict().items()})
        assert (info["depth"], info["shortcut"], info["n_entries"]) == (depth, "B", PUBLISHED_COUNTS[depth])
        assert info["variant_hint"] == "3dseg8"


def test_weights_table():
    assert MEDICALNET_WEIGHTS[(50, "3dseg8")].filename == "resnet_50.pth"
    assert MEDICALNET_WEIGHTS[(18, "23dataset")].filename == "resnet_18_23dataset.pth"
    assert MEDICALNET_WEIGHTS[(200, "3dseg8")].hf_repo_id == "TencentMedicalNet/MedicalNet-Resnet200"
    assert (101, "23dataset") not in MEDICALNET_WEIGHTS
    assert all(w.shortcut_type == MED3D_ARCHITECTURES[d][2] for (d, _), w in MEDICALNET_WEIGHTS.items())


@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_load_published_file_values_arrive(published, depth):
    path, source = published[depth]
    encoder = med3d_resnet(depth)
    report = load_medicalnet_checkpoint(path, encoder)
    assert len(report.loaded) == PUBLISHED_COUNTS[depth]
    assert not (report.missing or report.unexpected or report.adapted or report.initialised)
    _assert_values_arrived(encoder.state_dict(), source)


def test_wrong_depth_fails_naming_both(published):
    with pytest.raises(WeightTransferError) as error:
        load_medicalnet_checkpoint(published[18][0], med3d_resnet(10))
    message = str(error.value)
    assert "ResNet-18" in message and "depth=10" in message and "resnet_10.pth" in message
    with pytest.raises(WeightTransferError, match=r"ResNet-50 .*depth=34"):
        load_medicalnet_checkpoint(published[50][0], med3d_resnet(34))


def test_wrong_shortcut_fails(published):
    with pytest.raises(WeightTransferError) as error:
        load_medicalnet_checkpoint(published[18][0], med3d_resnet(18, shortcut_type="B"))
    assert "shortcut A" in str(error.value) and "shortcut_type='B'" in str(error.value)


def test_non_strict_loads_the_matching_part(published, caplog):
    encoder = med3d_resnet(18)
    report = load_medicalnet_checkpoint(published[10][0], encoder, strict=False)
    assert "conv1.weight" in report.loaded and "layer1.1.conv1.weight" in report.missing
    assert "layer2.0.downsample.0.weight" in report.unexpected
    assert torch.equal(encoder.conv1.weight, published[10][1]["module.conv1.weight"])
    assert "ResNet-10" in caplog.text


def test_unprefixed_and_bare_state_dicts_load(published, tmp_path):
    _, source = published[10]
    stripped = {k[len("module.") :]: v for k, v in source.items()}
    path = tmp_path / "stripped.pth"
    torch.save({"state_dict": stripped}, path)
    encoder = med3d_resnet(10)
    assert len(load_medicalnet_checkpoint(path, encoder).loaded) == 72
    _assert_values_arrived(encoder.state_dict(), source)
    torch.save(dict(source), tmp_path / "bare.pth")
    encoder = med3d_resnet(10)
    assert len(load_medicalnet_checkpoint(tmp_path / "bare.pth", encoder).loaded) == 72
    _assert_values_arrived(encoder.state_dict(), source)
    encoder = med3d_resnet(10)
    assert len(load_medicalnet_checkpoint(stripped, encoder).loaded) == 72
    _assert_values_arrived(encoder.state_dict(), source)


def test_head_keys_are_dropped_and_reported(published, tmp_path):
    _, source = published[10]
    with_head = OrderedDict(source)
    with_head["module.conv_seg.0.weight"] = torch.randn(512, 32, 2, 2, 2)
    with_head["module.conv_seg.6.weight"] = torch.randn(2, 32, 1, 1, 1)
    with_head["module.fc.weight"] = torch.randn(3, 512)
    path = tmp_path / "resnet_10_with_head.pth"
    torch.save({"state_dict": with_head}, path)
    encoder = med3d_resnet(10)
    report = load_medicalnet_checkpoint(path, encoder)
    assert sorted(report.unexpected) == ["conv_seg.0.weight", "conv_seg.6.weight", "fc.weight"]
    assert len(report.loaded) == 72
    info = medicalnet_checkpoint_info(path)
    assert info["n_entries"] == 72 and info["head_keys"] == ["conv_seg.0.weight", "conv_seg.6.weight", "fc.weight"]


def test_load_into_segmenters_reports_heads_initialised(published):
    path, source = published[10]
    segmenter = Med3DSegmenter(med3d_resnet(10), n_classes=3)
    head_before = {k: v.clone() for k, v in segmenter.head.state_dict().items()}
    report = load_medicalnet_checkpoint(path, segmenter)
    assert len(report.loaded) == 72 and all(k.startswith("encoder.") for k in report.loaded)
    assert report.initialised and all(k.startswith("head.") for k in report.initialised)
    _assert_values_arrived(segmenter.state_dict(), source, prefix="encoder.")
    assert all(torch.equal(v, head_before[k]) for k, v in segmenter.head.state_dict().items())

    multi = MultiDomainSegmenter(med3d_resnet(10), {"a": 2, "b": 3})
    report = load_medicalnet_checkpoint(path, multi)
    assert len(report.loaded) == 72
    assert {k.split(".")[1] for k in report.initialised} == {"a", "b"}
    _assert_values_arrived(multi.state_dict(), source, prefix="encoder.")
    with pytest.raises(TypeError, match="Med3DResNet"):
        load_medicalnet_checkpoint(path, torch.nn.Linear(2, 2))


def test_round_trip_export_load(tmp_path):
    torch.manual_seed(5)
    original = MultiDomainSegmenter(med3d_resnet(18), {"a": 2})
    path = export_medicalnet_checkpoint(original, tmp_path / "out" / "resnet_18.pth")
    content = torch.load(path, weights_only=True)
    assert list(content) == ["state_dict"] and len(content["state_dict"]) == 102
    assert all(k.startswith("module.") and isinstance(v, torch.Tensor) for k, v in content["state_dict"].items())
    copy = med3d_resnet(18)
    load_medicalnet_checkpoint(path, copy)
    for key, value in original.encoder.state_dict().items():
        assert torch.equal(copy.state_dict()[key], value), key


def test_multi_channel_adaptation(published):
    path, source = published[10]
    grey = med3d_resnet(10).eval()
    load_medicalnet_checkpoint(path, grey)
    colour = med3d_resnet(10, in_channels=3).eval()
    report = load_medicalnet_checkpoint(path, colour)
    assert list(report.adapted) == ["conv1.weight"] and "1/3" in report.adapted["conv1.weight"]
    assert len(report.loaded) == 71
    assert torch.allclose(colour.conv1.weight, source["module.conv1.weight"].repeat(1, 3, 1, 1, 1) / 3)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(colour(x.repeat(1, 3, 1, 1, 1)), grey(x), atol=1e-4)
    with pytest.raises(WeightTransferError, match="in_channels=3"):
        adapt_first_conv_channels(torch.randn(64, 3, 7, 7, 7), 2)


def test_checkpoint_info(published, tmp_path):
    info = medicalnet_checkpoint_info(published[34][0])
    assert (info["depth"], info["shortcut"], info["n_entries"], info["block"]) == (34, "A", 198, "basic")
    assert info["variant_hint"] == "3dseg8" and info["module_prefix"] and info["in_channels"] == 1
    renamed = tmp_path / "resnet_50_23dataset.pth"
    renamed.write_bytes(published[50][0].read_bytes())
    assert medicalnet_checkpoint_info(renamed)["variant_hint"] == "23dataset"
    assert medicalnet_checkpoint_info(dict(published[10][1]))["variant_hint"] == "3dseg8 or 23dataset"
    modified = {k: v for k, v in published[18][1].items()}
    modified["module.layer2.0.downsample.0.weight"] = torch.zeros(128, 64, 1, 1, 1)
    assert medicalnet_checkpoint_info(modified)["variant_hint"] == "not published"


def test_missing_file_says_where_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="TencentMedicalNet/MedicalNet-Resnet50"):
        load_medicalnet_checkpoint(tmp_path / "resnet_50.pth", med3d_resnet(10))


def test_not_a_state_dict_is_an_error():
    with pytest.raises(WeightTransferError, match="not tensors"):
        load_medicalnet_checkpoint({"state_dict": {"conv1.weight": [1, 2]}}, med3d_resnet(10))


@pytest.mark.parametrize("depth", sorted(PUBLISHED_COUNTS))
def test_monai_key_layout_all_depths(depth):
    _, _, shortcut = MED3D_ARCHITECTURES[depth]
    with torch.device("meta"):
        encoder = med3d_resnet(depth)
        reference = getattr(nets, f"resnet{depth}")(
            n_input_channels=1, conv1_t_stride=2, shortcut_type=shortcut, bias_downsample=False, feed_forward=False
        )
    converted = to_monai_resnet_state_dict(encoder)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()
    }


@pytest.mark.parametrize("depth", [10, 18, 50])
def test_load_into_monai_resnet_strict(published, depth):
    path, source = published[depth]
    model, report = load_into_monai_resnet(path, depth)
    assert isinstance(model, nets.ResNet) and model.fc is None
    assert len(report.loaded) == PUBLISHED_COUNTS[depth]
    _assert_values_arrived(model.state_dict(), source)
    encoder = med3d_resnet(depth)
    load_medicalnet_checkpoint(path, encoder)
    from_module, _ = load_into_monai_resnet(encoder, depth)
    _assert_values_arrived(from_module.state_dict(), source)


def test_load_into_monai_resnet_wrong_depth(published):
    with pytest.raises(WeightTransferError, match=r"ResNet-18.*resnet10"):
        load_into_monai_resnet(published[18][0], 10)
