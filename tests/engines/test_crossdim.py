"""Tests of monai_ext.engines.crossdim: stage two of dimensional transfer (2D network -> 3D twin), its safeguards,
the automatic stage one, and the proof on a real Hippocampus volume that the stage-one -> stage-two path transfers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.transforms import SpatialPad
from torch import nn

from monai_ext.engines import crossdim
from monai_ext.engines.crossdim import (
    INITIALISATIONS,
    InitialiseFrom2D,
    expand_stage_one_network,
    initialise_network,
    run_stage_one,
    slice_wise_output,
    stage_one_command,
    verify_slice_wise_equivalence,
)
from monai_ext.networks.inflated import InflatedFlexUNet, InflatedResNetEncoder
from monai_ext.transforms.slices import volume_to_slices
from monai_ext.weights.report import CheckpointFileError, WeightTransferError
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "crossdim_2d_to_3d_segmentation"
HIPPOCAMPUS = SHARED_DATA / "Task04_Hippocampus"  # found by tests/conftest.py (MONAI_EXT_SHARED_DATA)
SMALL_DECODER = (32, 16, 16, 8, 8)


class TinyTwin(nn.Module):
    """A two-layer segmentation network built for 2D or 3D with the same key names, for the expansion logic."""

    def __init__(self, spatial_dims: int, out_channels: int = 3, depth_kernel: int = 3, depth_stride: int = 1):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if spatial_dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        kernel = 3 if spatial_dims == 2 else (depth_kernel, 3, 3)
        padding = 1 if spatial_dims == 2 else (depth_kernel // 2, 1, 1)
        stride = 1 if spatial_dims == 2 else (depth_stride, 1, 1)
        self.conv1 = conv(1, 4, kernel, padding=padding, stride=stride)
        self.bn1 = norm(4)
        self.head = conv(4, out_channels, kernel, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn1(self.conv1(x))))


def trained_like(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-default weights and BatchNorm statistics, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(7)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
    return net


def saved_2d(tmp_path: Path, net2: nn.Module) -> Path:
    path = tmp_path / "model_2d.pt"
    torch.save(net2.state_dict(), path)
    return path


@pytest.fixture
def stage_one(tmp_path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    net2 = trained_like(TinyTwin(2))
    return net2, saved_2d(tmp_path, net2)


def test_slice_wise_output_applies_the_2d_network_to_every_slice():
    net = nn.Conv2d(1, 2, 3, padding=1)
    volume = torch.randn(2, 1, 3, 8, 8)
    out = slice_wise_output(net, volume)
    assert out.shape == (2, 2, 3, 8, 8)
    torch.testing.assert_close(out[1, :, 2], net(volume[1:2, :, 2])[0])


def test_expansion_covers_everything_and_reproduces_the_2d_network(stage_one):
    net2, path = stage_one
    net3 = TinyTwin(3)
    report = expand_stage_one_network(TinyTwin(2), net3, path, mode="center")
    assert report.n_transferred == len(net3.state_dict()) and not report.missing and not report.initialised
    assert set(report.adapted.values()) == {"inflated 2D->3D (center)"} and report.source == str(path)
    torch.testing.assert_close(net3.bn1.running_var, net2.bn1.running_var)
    volume = torch.randn(2, 1, 5, 9, 7)
    with torch.no_grad():
        expected = slice_wise_output(net2.eval(), volume)
        result = net3.eval()(volume)
    assert expected.abs().max() > 0.05
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-4)


def test_a_corrupt_or_foreign_stage_one_file_is_named(stage_one, tmp_path):
    _, path = stage_one
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointFileError, match=f"{path}.*download it again"):
        expand_stage_one_network(TinyTwin(2), TinyTwin(3), path, mode="center")
    foreign = tmp_path / "other_2d.pt"
    torch.save(nn.Conv2d(1, 4, 3).state_dict(), foreign)
    with pytest.raises(WeightTransferError, match=str(foreign)):
        expand_stage_one_network(TinyTwin(2), TinyTwin(3), foreign, mode="center")


def test_2_5d_expansion_needs_depth_one_kernels(stage_one):
    _, path = stage_one
    report = expand_stage_one_network(TinyTwin(2), TinyTwin(3, depth_kernel=1), path, mode="2.5d")
    assert set(report.adapted.values()) == {"inflated 2D->3D (2.5d)"}
    with pytest.raises(WeightTransferError, match="2.5d"):
        expand_stage_one_network(TinyTwin(2), TinyTwin(3), path, mode="2.5d")


def test_a_twin_that_strides_along_depth_is_caught(stage_one):
    _, path = stage_one
    with pytest.raises(WeightTransferError, match="stride_depth=False"):
        expand_stage_one_network(TinyTwin(2), TinyTwin(3, depth_stride=2), path, mode="center")
    # average inflation makes no slice-wise promise: the expansion itself is complete and accepted
    striding = TinyTwin(3, depth_stride=2)
    report = expand_stage_one_network(TinyTwin(2), striding, path, mode="average")
    assert report.n_transferred == len(striding.state_dict())


def test_the_real_striding_flexible_unet_twin_is_caught(stage_one, tmp_path):
    net2 = InflatedFlexUNet(1, 3, "inflated-resnet18", spatial_dims=2, decoder_channels=SMALL_DECODER)
    path = saved_2d(tmp_path, trained_like(net2))
    striding = InflatedFlexUNet(1, 3, "inflated-resnet18", spatial_dims=3, decoder_channels=SMALL_DECODER)
    with pytest.raises(WeightTransferError, match="stride_depth=False"):
        expand_stage_one_network(net2, striding, path, mode="center")


def test_verification_reports_the_largest_difference():
    torch.manual_seed(0)
    net2, net3 = trained_like(TinyTwin(2)), TinyTwin(3)
    with pytest.raises(WeightTransferError, match="does not reproduce"):
        verify_slice_wise_equivalence(net2, net3)  # net3 was never expanded
    crossdim.expand_2d_network_to_3d(net2, net3, mode="center")
    assert verify_slice_wise_equivalence(net2, net3) < 1e-5
    assert net3.training and net2.training  # training flags restored


def test_missing_stage_one_model_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="Run stage one first") as err:
        initialise_network(TinyTwin(3), "expand_2d", network_2d=TinyTwin(2), model_2d_path=tmp_path / "model_2d.pt")
    assert "train_2d.json" in str(err.value) and "scratch" in str(err.value)


def test_a_stage_one_file_of_another_network_is_refused(tmp_path):
    path = saved_2d(tmp_path, TinyTwin(2, out_channels=2))
    net3 = TinyTwin(3, out_channels=3)
    before = net3.head.weight.detach().clone()
    with pytest.raises(WeightTransferError, match="head"):
        initialise_network(net3, "expand_2d", network_2d=TinyTwin(2, out_channels=3), model_2d_path=path)
    torch.testing.assert_close(net3.head.weight, before)


def test_scratch_and_imagenet_initialisations(tmp_path):
    torch.manual_seed(0)
    net3 = InflatedFlexUNet(
        1, 3, "inflated-resnet18", spatial_dims=3, stride_depth=False, decoder_channels=SMALL_DECODER
    )
    before = {k: v.clone() for k, v in net3.state_dict().items()}
    assert initialise_network(net3, "scratch", record_path=tmp_path / "scratch.json") is net3
    assert all(torch.equal(before[k], v) for k, v in net3.state_dict().items())
    assert json.loads((tmp_path / "scratch.json").read_text(encoding="utf-8")) == {"init": "scratch", "mode": "center"}

    checkpoint = dict(trained_like(InflatedResNetEncoder("resnet18", spatial_dims=2)).state_dict())
    checkpoint.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})  # torchvision layout
    torch.save(checkpoint, tmp_path / "resnet18.pth")
    record = tmp_path / "imagenet.json"
    initialise_network(net3, "imagenet_2d", pretrained_2d_path=tmp_path / "resnet18.pth", record_path=record)
    torch.testing.assert_close(net3.encoder.conv1.weight[:, :, 3], checkpoint["conv1.weight"].sum(1, keepdim=True))
    assert net3.encoder.conv1.weight[:, :, 0].abs().max() == 0  # center inflation
    key = "decoder.blocks.0.convs.conv_0.conv.weight"
    assert torch.equal(net3.state_dict()[key], before[key])  # the decoder keeps its random initialisation
    written = json.loads(record.read_text(encoding="utf-8"))
    assert written["init"] == "imagenet_2d" and written["unused_source_keys"] == ["fc.weight", "fc.bias"]
    assert written["loaded"] + written["adapted"] == len(net3.encoder.state_dict())

    net2 = InflatedFlexUNet(1, 3, "inflated-resnet18", spatial_dims=2, decoder_channels=SMALL_DECODER)  # stage one
    initialise_network(net2, "imagenet_2d", pretrained_2d_path=tmp_path / "resnet18.pth")
    torch.testing.assert_close(net2.encoder.layer4[1].bn2.running_var, checkpoint["layer4.1.bn2.running_var"])

    with pytest.raises(ValueError, match="unknown init"):
        initialise_network(net3, "kinetics")
    with pytest.raises(ValueError, match="needs network_2d"):
        initialise_network(net3, "expand_2d")
    assert INITIALISATIONS == ("expand_2d", "imagenet_2d", "scratch")


def test_handler_initialises_at_start_but_not_after_resuming(stage_one):
    net2, path = stage_one
    net3 = TinyTwin(3)
    engine = Engine(lambda e, b: None)
    InitialiseFrom2D(nn.DataParallel(net3), "expand_2d", network_2d=TinyTwin(2), model_2d_path=path).attach(engine)
    engine.run([0], max_epochs=1)
    torch.testing.assert_close(net3.bn1.running_mean, net2.bn1.running_mean)  # the wrapped module was initialised

    resumed = TinyTwin(3)
    before = resumed.bn1.running_mean.clone()
    engine = Engine(lambda e, b: None)
    engine.state.iteration = 5  # what ResumableCheckpoint leaves after loading a checkpoint
    InitialiseFrom2D(resumed, "expand_2d", network_2d=TinyTwin(2), model_2d_path=path)(engine)
    torch.testing.assert_close(resumed.bn1.running_mean, before)
    with pytest.raises(ValueError, match="inflation mode"):
        InitialiseFrom2D(net3, "expand_2d", mode="acs")
    with pytest.raises(ValueError, match="unknown init"):
        InitialiseFrom2D(net3, "random")


def test_stage_one_runs_automatically_when_its_model_is_missing(tmp_path, monkeypatch):
    net2, net3 = trained_like(TinyTwin(2)), TinyTwin(3)
    model_path = tmp_path / "models" / "model_2d.pt"
    calls = []

    def fake_run(command, env, check):
        args = json.loads(Path(command[command.index("--args_file") + 1]).read_text(encoding="utf-8"))
        calls.append((command, args, env))
        model_path.parent.mkdir(parents=True)
        torch.save(net2.state_dict(), args["model_2d_path"])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(crossdim.subprocess, "run", fake_run)
    monkeypatch.setenv("LOCAL_RANK", "0")
    settings = {"dataset_dir": "/data/Task04_Hippocampus", "patch_size": [16, 64, 64], "max_epochs": 3}
    initialise_network(
        net3, "expand_2d", network_2d=TinyTwin(2), model_2d_path=model_path, stage_one_settings=settings,
        bundle_root=tmp_path,
    )  # fmt: skip
    (command, args, env), = calls
    assert command[command.index("--config_file") + 1] == json.dumps(
        [str(tmp_path / "configs" / "train.json"), str(tmp_path / "configs" / "train_2d.json")]
    )
    assert args == {**settings, "bundle_root": str(tmp_path), "model_2d_path": str(model_path)}
    assert "LOCAL_RANK" not in env
    torch.testing.assert_close(net3.bn1.running_var, net2.bn1.running_var)

    monkeypatch.setattr(crossdim.subprocess, "run", lambda command, env, check: subprocess.CompletedProcess(command, 1))
    with pytest.raises(RuntimeError, match="stage one failed") as err:
        run_stage_one(tmp_path, settings, tmp_path / "other.pt")
    assert "--args_file" in str(err.value)
    assert stage_one_command(tmp_path)[1:4] == ["-m", "monai.bundle", "run"]


def test_bundle_stage_one_path_transfers_on_a_real_hippocampus_volume(tmp_path):
    """The bundle's own preprocessing and networks, on real data: after stage one (2D network with statistics from
    slices of the volume) and the expansion stage two performs, the 3D network gives the slice-wise 2D output."""
    if not (HIPPOCAMPUS / "dataset.json").exists():
        pytest.skip(f"real data not available at {HIPPOCAMPUS}")
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["dataset_dir"] = str(HIPPOCAMPUS)
    parser["bundle_root"] = str(tmp_path)
    assert parser.get_parsed_content("num_classes") == 3
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    case = parser.get_parsed_content("datalist")["validation"][0]
    volume = preprocessing(case)["image"]  # 1 x S x R x A (axcodes SRA: axial slices first)
    volume = SpatialPad([-1, 64, 64])(volume).as_tensor().unsqueeze(0)
    assert volume.shape[:2] == (1, 1) and volume.shape[2] >= 30 and volume.shape[3:] == (64, 64)

    torch.manual_seed(0)
    net2 = parser.get_parsed_content("network_2d_def", instantiate=True)
    for module in net2.modules():  # BatchNorm statistics of the real slices, as after training
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one pass sets them exactly
    with torch.no_grad():
        net2.train()(volume_to_slices(volume))
    path = saved_2d(tmp_path, net2)
    net3 = parser.get_parsed_content("network_def")
    fresh2 = parser.get_parsed_content("network_2d_def", lazy=False)  # a new 2D container for the file
    assert fresh2 is not net2 and type(net3) is type(net2)
    initialise_network(net3, "expand_2d", network_2d=fresh2, model_2d_path=path, mode="center")
    with torch.no_grad():
        expected = slice_wise_output(net2.eval(), volume)
        result = net3.eval()(volume)
    assert expected.std() > 1e-3  # a meaningful, non-constant output
    torch.testing.assert_close(result, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(result.argmax(1), expected.argmax(1))
