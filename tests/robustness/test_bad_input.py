"""The bad-input suite (issue #9, Robustness item 1).

Every bad input a user can meet, through the path where they meet it (datalist building and ``monai-ext datalist`` /
``onboard``; a bundle's transform pipeline, i.e. ``LoadImaged`` and this package's transforms inside a MONAI
``Dataset``; weight loading), gets an error of a clear type whose message names the offending file and says what to
do; no command leaves a half-written output. Every file is small and generated in ``tmp_path``.

Cases already covered through the same entry point elsewhere are not repeated here:

- ``read_volume_header``/``validate_datalist`` on a truncated ``.nii.gz``, a corrupt gzip body (``deep``), an
  uncompressed NIfTI named ``.nii.gz`` and a truncated ``.nii``: ``tests/data/test_datalists.py``
  (``test_truncated_nifti_is_detected``, ``test_corrupt_gzip_body_needs_deep``,
  ``test_not_gzip_and_uncompressed_truncation``);
- ``validate_datalist`` on an image/label shape or affine mismatch: ``test_label_shape_and_affine_mismatch``; with
  ``deep=True`` on NaN images and label value 7: ``test_deep_checks_values``;
- missing or empty folders for each builder: ``test_empty_and_missing_folders``, ``test_image_mask_folder_*``;
- ``abdomenatlas_datalist(classes=...)`` on a case without a class mask: ``test_abdomenatlas_datalist``;
- ``onboard_dataset`` on truncated, CRC-corrupt, shape-mismatched and label-7 cases (named in the report, left out of
  the datalist), and ``monai-ext onboard`` on an empty folder writing nothing: ``tests/data/test_onboarding.py``;
- ``load_medicalnet_checkpoint`` of a ResNet-18 file into a ResNet-10: ``tests/weights/test_medicalnet.py``
  (``test_wrong_depth_fails_naming_both``); SuPreM's ``allow_pickle``: ``tests/weights/test_suprem.py``;
- a corrupt resume checkpoint (``ResumableCheckpoint``): ``tests/engines/test_checkpoint.py``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose

from monai_ext.cli import main
from monai_ext.data.datalists import (
    DatalistError,
    abdomenatlas_datalist,
    build_datalist,
    read_volume_header,
    write_datalist,
)
from monai_ext.data.onboarding import DatasetOnboarding, onboard_dataset
from monai_ext.data.targets import fine_tuning_target
from monai_ext.networks.med3d import med3d_resnet
from monai_ext.networks.suprem_backbones import suprem_backbone
from monai_ext.transforms import (
    AssembleMultiHotLabeld,
    CheckedLoadImaged,
    CheckFinited,
    CheckLabelValuesd,
    CheckSameGridd,
    CheckSpatialDimsd,
)
from monai_ext.weights.imagenet2d import read_2d_state_dict
from monai_ext.weights.medicalnet import load_medicalnet_checkpoint
from monai_ext.weights.report import CheckpointFileError, WeightTransferError, convert_trusted_checkpoint
from monai_ext.weights.sources import load_pretrained, read_bundle_state_dict
from monai_ext.weights.vdt import read_vdt_state_dict

REPO = Path(__file__).resolve().parents[2]
SPACING = np.diag([0.8, 0.8, 2.5, 1.0])
#: exception types that say nothing about the input: a bad input must never surface as one of them
OPAQUE = (KeyError, IndexError, AttributeError, EOFError, TypeError)
#: what a clone without ``git lfs pull`` holds instead of a large file
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 57856\n".format("0" * 64)


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, SPACING if affine is None else affine), str(path))
    return path


def _image(seed: int = 0, shape=(12, 12, 6)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _label(shape=(12, 12, 6), value: int = 2) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[2:6, 2:6, 1:4] = 1
    label[7:10, 7:10, 2:5] = value
    return label


def _decathlon(root: Path, n: int = 3) -> Path:
    """A tiny valid Decathlon task: 3D CT volumes, labels 0 (background), 1, 2."""
    training = []
    for i in range(n):
        _save(root / "imagesTr" / f"case_{i}.nii.gz", _image(i))
        _save(root / "labelsTr" / f"case_{i}.nii.gz", _label())
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    meta = {
        "name": "Tiny",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "numTraining": n,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _named(error: BaseException) -> BaseException:
    """The error under MONAI's ``RuntimeError("applying transform ...")`` wrappers (what the user must read)."""
    while error.__cause__ is not None and str(error).startswith("applying transform"):
        error = error.__cause__
    return error


def _assert_clear(error: BaseException, kind: type | tuple, path: str | os.PathLike, *hints: str) -> str:
    """``error`` is of a clear type and its message names ``path`` and every hint; returns the message."""
    assert isinstance(error, kind) and not isinstance(error, OPAQUE), f"{type(error).__name__}: {error}"
    message = str(error)
    assert str(path) in message, f"{path} not named in: {message}"
    for hint in hints:
        assert hint in message, f"hint {hint!r} missing from: {message}"
    return message


def _pipeline_error(items: list[dict], transforms: list) -> BaseException:
    """Fetch the first item of a MONAI Dataset (as a bundle's data loader does) and return the named error, after
    checking that the full traceback a user sees holds it too."""
    with pytest.raises(RuntimeError) as raised:
        Dataset(items, Compose(transforms))[0]
    named = _named(raised.value)
    assert str(named) in "".join(traceback.format_exception(raised.value))
    return named


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# ----------------------------------------------------------------------------------------------------------------------
# Truncated or corrupt NIfTI / gzip, 0-byte files
# ----------------------------------------------------------------------------------------------------------------------
def _corrupt(kind: str, folder: Path) -> tuple[Path, str]:
    """A broken ``.nii.gz`` of ``kind`` and the hint its message must hold."""
    path = _save(folder / f"{kind}.nii.gz", _image())
    if kind == "truncated":  # the gzip cut in half (an interrupted download)
        return _truncate(path), "re-download or re-export it"
    if kind == "zero_bytes":
        path.write_bytes(b"")
        return path, "is empty (0 bytes)"
    if kind == "not_gzip":  # an error page saved under the file's name
        path.write_bytes(b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n" * 20)
        return path, "download saved an error page"
    if kind == "lfs_pointer":  # a clone without `git lfs pull`
        path.write_text(LFS_POINTER, encoding="utf-8")
        return path, "git lfs pull"
    if kind == "plain_nifti":  # uncompressed NIfTI named .nii.gz
        nib.save(nib.Nifti1Image(_image(), SPACING), str(folder / "plain.nii"))
        shutil.copy(folder / "plain.nii", path)
        return path, "rename it to .nii"
    raise AssertionError(kind)


CORRUPT = ["truncated", "zero_bytes", "not_gzip", "lfs_pointer", "plain_nifti"]


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_nifti_in_the_transform_pipeline(kind, tmp_path):
    path, hint = _corrupt(kind, tmp_path)
    named = _pipeline_error([{"image": str(path)}], [CheckedLoadImaged(keys="image", ensure_channel_first=True)])
    _assert_clear(named, DatalistError, path, hint)


@pytest.mark.parametrize("kind", ["zero_bytes", "not_gzip", "lfs_pointer"])  # the others: tests/data/test_datalists.py
def test_corrupt_nifti_at_datalist_time(kind, tmp_path):
    path, hint = _corrupt(kind, tmp_path)
    with pytest.raises(DatalistError) as raised:
        read_volume_header(path)
    _assert_clear(raised.value, DatalistError, path, hint)


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_nifti_through_cli_datalist_writes_nothing(kind, tmp_path, capsys):
    task = _decathlon(tmp_path / "Task01_Tiny")
    broken = task / "imagesTr" / "case_1.nii.gz"
    source, hint = _corrupt(kind, tmp_path)
    shutil.copy(source, broken)
    output = tmp_path / "datalist.json"
    code, _, err = _cli(["datalist", task, "-o", output], capsys)
    assert code == 2
    assert str(broken) in err and hint in err and "datalist.json not written" in err
    assert not output.exists()


# ----------------------------------------------------------------------------------------------------------------------
# Image/label shape or affine mismatch
# ----------------------------------------------------------------------------------------------------------------------
def _mismatched_label(kind: str, path: Path) -> tuple[Path, str]:
    if kind == "shape":
        return _save(path, _label(shape=(12, 12, 5))), "re-export it on the image's grid"
    shifted = SPACING.copy()
    shifted[:3, 3] = (6.0, 0.0, 0.0)  # 6 mm off; the tolerance is half the smallest spacing (0.4 mm)
    return _save(path, _label(), shifted), "copy the image affine"


@pytest.mark.parametrize("kind", ["shape", "affine"])
def test_pair_mismatch_stops_the_bundle_target(kind, tmp_path):
    task = _decathlon(tmp_path / "Task01_Tiny")
    label, hint = _mismatched_label(kind, task / "labelsTr" / "case_2.nii.gz")
    with pytest.raises(DatalistError) as raised:
        fine_tuning_target(task)  # what transfer_segmentation's train.json calls first
    _assert_clear(raised.value, DatalistError, label, f"{kind}_mismatch", hint)


@pytest.mark.parametrize("kind", ["shape", "affine"])
def test_pair_mismatch_in_the_transform_pipeline(kind, tmp_path):
    image = _save(tmp_path / "img.nii.gz", _image())
    label, _ = _mismatched_label(kind, tmp_path / "lab.nii.gz")
    hint = "re-export it on the grid of" if kind == "shape" else "copy the affine of"
    transforms = [
        CheckedLoadImaged(keys=["image", "label"], ensure_channel_first=True),
        CheckSameGridd(keys=["image", "label"]),
    ]
    named = _pipeline_error([{"image": str(image), "label": str(label)}], transforms)
    _assert_clear(named, DatalistError, label, str(image), hint)
    near = SPACING.copy()
    near[:3, 3] = (0.01, 0.0, 0.0)  # within tolerance: accepted
    close = _save(tmp_path / "close.nii.gz", _label(), near)
    item = Dataset([{"image": str(image), "label": str(close)}], Compose(transforms))[0]
    assert item["label"].shape == (1, 12, 12, 6)


# ----------------------------------------------------------------------------------------------------------------------
# A 2D NIfTI where a 3D volume is expected
# ----------------------------------------------------------------------------------------------------------------------
def test_2d_file_in_a_3d_dataset_at_datalist_time(tmp_path):
    task = _decathlon(tmp_path / "Task01_Tiny")
    flat = _save(task / "imagesTr" / "case_1.nii.gz", _image(shape=(12, 12)))
    _save(task / "labelsTr" / "case_1.nii.gz", _label()[..., 0])
    _, report = build_datalist(task)
    assert [(Path(p.path).name, p.kind) for p in report.errors] == [("case_1.nii.gz", "dimensions")]
    with pytest.raises(DatalistError) as raised:
        fine_tuning_target(task)
    _assert_clear(raised.value, DatalistError, flat, "2D file", "3D volumes are expected", "re-export the whole volume")


def test_2d_file_in_the_transform_pipeline(tmp_path):
    flat = _save(tmp_path / "slice.nii.gz", _image(shape=(12, 12)))
    transforms = [CheckedLoadImaged(keys="image", ensure_channel_first=True), CheckSpatialDimsd(keys="image")]
    named = _pipeline_error([{"image": str(flat)}], transforms)
    _assert_clear(named, DatalistError, flat, "2D data", "3D volumes are expected", "re-export the whole volume")


# ----------------------------------------------------------------------------------------------------------------------
# Label values outside the declared classes; NaN / inf intensities
# ----------------------------------------------------------------------------------------------------------------------
def test_label_value_outside_the_classes_through_cli_datalist_deep(tmp_path, capsys):
    task = _decathlon(tmp_path / "Task01_Tiny")
    bad = _save(task / "labelsTr" / "case_0.nii.gz", _label(value=7))
    output = tmp_path / "datalist.json"
    code, out, _ = _cli(["datalist", task, "-o", output], capsys)  # headers alone cannot see voxel values
    assert code == 0 and output.exists()
    output.unlink()
    code, _, err = _cli(["datalist", task, "--deep", "-o", output], capsys)
    assert code == 2 and not output.exists()
    assert str(bad) in err and "label values [7] are not declared" in err and "fix the labels" in err


def test_label_value_outside_the_classes_in_the_transform_pipeline(tmp_path):
    image = _save(tmp_path / "img.nii.gz", _image())
    bad = _save(tmp_path / "lab7.nii.gz", _label(value=7))
    transforms = [
        CheckedLoadImaged(keys=["image", "label"], ensure_channel_first=True),
        CheckLabelValuesd(keys="label", labels=3),
    ]
    named = _pipeline_error([{"image": str(image), "label": str(bad)}], transforms)
    _assert_clear(named, DatalistError, bad, "[7]", "declared classes [0, 1, 2]", "fix the label file")
    good = _save(tmp_path / "lab.nii.gz", _label())
    assert Dataset([{"image": str(image), "label": str(good)}], Compose(transforms))[0]["label"].max() == 2


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_intensities_in_the_transform_pipeline(value, tmp_path):
    array = _image()
    array[3, 3, 3] = value
    bad = _save(tmp_path / "bad.nii.gz", array)
    transforms = [CheckedLoadImaged(keys="image", ensure_channel_first=True), CheckFinited(keys="image")]
    named = _pipeline_error([{"image": str(bad)}], transforms)
    _assert_clear(named, DatalistError, bad, "1 non-finite values", "replace them")


def test_non_finite_intensities_are_named_by_onboarding(tmp_path):
    task = _decathlon(tmp_path / "Task01_Tiny")
    array = _image(1)
    array[0, 0, 0] = np.nan
    bad = _save(task / "imagesTr" / "case_1.nii.gz", array)
    onboarding = onboard_dataset(task)
    assert str(bad) not in [it["image"] for it in onboarding.datalist] and len(onboarding.datalist) == 2
    assert "NaN or infinite" in onboarding.excluded[str(bad)]
    (problem,) = [p for p in onboarding.validation.errors if p.kind == "non_finite"]
    assert problem.path == str(bad) and "replace them" in problem.message
    assert str(bad) in onboarding.to_markdown()


# ----------------------------------------------------------------------------------------------------------------------
# Empty or missing dataset folder, images without labels, a missing AbdomenAtlas mask
# ----------------------------------------------------------------------------------------------------------------------
def test_empty_dataset_folder_through_cli_datalist(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(["datalist", tmp_path / "empty", "-o", tmp_path / "dl.json"], capsys)
    assert code == 2 and not (tmp_path / "dl.json").exists()
    assert str(tmp_path / "empty") in err and "is empty" in err and "expected a Decathlon" in err


def test_missing_dataset_folder_stops_the_bundle_target(tmp_path):
    with pytest.raises(DatalistError) as raised:
        fine_tuning_target(tmp_path / "Task09_Nowhere")
    _assert_clear(raised.value, DatalistError, tmp_path / "Task09_Nowhere", "not found", "check dataset_dir")


def _unlabelled(kind: str, root: Path) -> tuple[Path, Path, str]:
    """A dataset with images but no labels: (dataset folder, path the error must name, hint)."""
    if kind == "decathlon_without_labelsTr":
        task = _decathlon(root / "Task01_Tiny")
        shutil.rmtree(task / "labelsTr")
        return task, task / "labelsTr" / "case_0.nii.gz", "re-extract the task or fix dataset.json"
    data = root / "Dataset001_Tiny"
    for i in range(2):
        _save(data / "imagesTr" / f"tiny_{i:03d}_0000.nii.gz", _image(i))
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}
    (data / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    if kind == "nnunet_empty_labelsTr":
        (data / "labelsTr").mkdir()
        return data, data / "labelsTr", "holds no label file ending in '.nii.gz'"
    return data, data / "labelsTr", "an nnU-Net v2 dataset has imagesTr/ and labelsTr/"


@pytest.mark.parametrize("kind", ["decathlon_without_labelsTr", "nnunet_empty_labelsTr", "nnunet_without_labelsTr"])
def test_images_without_labels(kind, tmp_path):
    folder, named, hint = _unlabelled(kind, tmp_path)
    with pytest.raises(DatalistError) as raised:
        build_datalist(folder)
    _assert_clear(raised.value, DatalistError, named, hint)


def test_abdomenatlas_case_missing_a_mask_in_the_transform_pipeline(tmp_path):
    case = tmp_path / "atlas" / "BDMAP_00000001"
    _save(case / "ct.nii.gz", _image())
    _save(case / "segmentations" / "aorta.nii.gz", (_label() == 1).astype(np.uint8))
    missing = case / "segmentations" / "liver.nii.gz"
    items = abdomenatlas_datalist(tmp_path / "atlas")  # partial labels: no class list checked here
    transforms = [  # as abdomenatlas_supervised_pretraining/configs/train.json with partial_labels false
        AssembleMultiHotLabeld(keys="label", classes=("aorta", "liver"), missing="error"),
        CheckedLoadImaged(keys="image", ensure_channel_first=True),
    ]
    named = _pipeline_error(items, transforms)
    _assert_clear(named, FileNotFoundError, missing, "BDMAP_00000001", "'liver'", "missing='unknown'")


# ----------------------------------------------------------------------------------------------------------------------
# A checkpoint of another architecture
# ----------------------------------------------------------------------------------------------------------------------
def _meta_state(build) -> dict[str, torch.Tensor]:
    """The entries of a network (right names and shapes) sharing one zero: a tiny file however large the network."""
    with torch.device("meta"):
        net = build()
    zero = torch.zeros(())
    return {k: zero.to(v.dtype).expand(v.shape) for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def foreign_checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("foreign")
    suprem = {"module.backbone." + k: v for k, v in _meta_state(lambda: suprem_backbone("unet", 32)).items()}
    torch.save({"net": suprem, "epoch": 2100}, folder / "supervised_suprem_unet_2100.pth")
    resnet50 = {"module." + k: v for k, v in _meta_state(lambda: med3d_resnet(50)).items()}
    torch.save({"state_dict": resnet50}, folder / "resnet_50.pth")
    return {"suprem-unet": folder / "supervised_suprem_unet_2100.pth", "resnet50": folder / "resnet_50.pth"}


def _snapshot(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in network.state_dict().items()}


def _unchanged(network: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in network.state_dict().items())


@pytest.mark.parametrize("entry", ["load_medicalnet_checkpoint", "load_pretrained"])
def test_suprem_unet_checkpoint_given_to_the_medicalnet_loader(entry, foreign_checkpoints):
    path = foreign_checkpoints["suprem-unet"]
    network = med3d_resnet(10)
    before = _snapshot(network)
    with pytest.raises(WeightTransferError) as raised:
        if entry == "load_pretrained":
            load_pretrained(network, "medicalnet-resnet10", path)
        else:
            load_medicalnet_checkpoint(path, network)
    _assert_clear(raised.value, WeightTransferError, path, "SuPreM unet checkpoint", "architecture 'suprem-unet'")
    assert _unchanged(network, before), "nothing may be loaded from a checkpoint of another architecture"


def test_resnet50_checkpoint_given_for_resnet10(foreign_checkpoints):
    # the direct loader on 18 -> 10: tests/weights/test_medicalnet.py; this is the bundles' entry point
    path = foreign_checkpoints["resnet50"]
    network = med3d_resnet(10)
    before = _snapshot(network)
    with pytest.raises(WeightTransferError) as raised:
        load_pretrained(network, "medicalnet-resnet10", path)
    _assert_clear(raised.value, WeightTransferError, path, "ResNet-50", "depth=10", "med3d_resnet(50", "resnet_10.pth")
    assert _unchanged(network, before)


# ----------------------------------------------------------------------------------------------------------------------
# A checkpoint that is not a plain tensor state dict, and corrupt checkpoint files
# ----------------------------------------------------------------------------------------------------------------------
MARKER = "unpickled.marker"


def _touch(path: str) -> str:
    Path(path).write_text("this code ran while the checkpoint was unpickled", encoding="utf-8")
    return path


class Opaque:
    """An arbitrary object pickled next to the weights (a config, a scheduler, a whole module ...)."""

    def __init__(self) -> None:
        self.settings = {"lr": 0.1}


class RunsOnLoad:
    """An object whose unpickling calls a function: what a malicious checkpoint does."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return _touch, (self.path,)


def _pickled(payload: str, folder: Path) -> Path:
    """A MedicalNet-layout ResNet-10 file (entries sharing one zero: a few kB) with one more pickled object."""
    weights = {f"module.{k}": v for k, v in _meta_state(lambda: med3d_resnet(10)).items()}
    extra = {"instance": Opaque(), "function": _touch, "runs_on_load": RunsOnLoad(str(folder / MARKER))}[payload]
    path = folder / f"resnet_10_{payload}.pth"
    torch.save({"state_dict": weights, "extra": extra}, path)
    return path


LOADERS = {
    "load_medicalnet_checkpoint": lambda path: load_medicalnet_checkpoint(path, med3d_resnet(10)),
    "load_pretrained medicalnet": lambda path: load_pretrained(med3d_resnet(10), "medicalnet-resnet10", path),
    "load_pretrained suprem": lambda path: load_pretrained(med3d_resnet(10), "suprem-segresnet", path),
    "read_vdt_state_dict": read_vdt_state_dict,
    "read_2d_state_dict": read_2d_state_dict,
    "read_bundle_state_dict": read_bundle_state_dict,
}


@pytest.mark.parametrize("payload", ["instance", "function", "runs_on_load"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_pickled_objects_are_refused_by_weights_only_loading(loader, payload, tmp_path):
    path = _pickled(payload, tmp_path)
    with pytest.raises(CheckpointFileError) as raised:  # a WeightTransferError, a RuntimeError
        LOADERS[loader](path)
    _assert_clear(
        raised.value, WeightTransferError, path, "is not a plain tensor state dict", "weights_only=True",
        "If you trust the file's source", "convert_trusted_checkpoint",
    )  # fmt: skip
    assert not (tmp_path / MARKER).exists(), "the pickled code must never run"


def test_checkpoint_info_cli_refuses_pickled_objects(tmp_path, capsys):
    path = _pickled("instance", tmp_path)
    code, _, err = _cli(["checkpoint-info", path], capsys)
    assert code == 2 and str(path) in err and "convert_trusted_checkpoint" in err


def test_a_trusted_checkpoint_converts_to_a_plain_state_dict(tmp_path):
    path = _pickled("instance", tmp_path)
    plain = convert_trusted_checkpoint(path, tmp_path / "resnet_10_plain.pth")
    assert all(isinstance(v, torch.Tensor) for v in torch.load(plain, weights_only=True).values())
    assert load_pretrained(med3d_resnet(10), "medicalnet-resnet10", plain).n_transferred == 72


@pytest.mark.parametrize(
    "kind, hint",
    [("truncated", "download it again"), ("zero_bytes", "download it again"), ("lfs_pointer", "git lfs pull"),
     ("not_a_checkpoint", "not a file written by torch.save")],
)  # fmt: skip
def test_corrupt_checkpoint_files(kind, hint, tmp_path):
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": _meta_state(lambda: med3d_resnet(10))}, path)
    if kind == "truncated":
        _truncate(path)
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "lfs_pointer":
        path.write_text(LFS_POINTER, encoding="utf-8")
    else:
        path.write_bytes(b"PK\x03\x04 not a zip archive, not a pickle" * 10)
    with pytest.raises(CheckpointFileError) as raised:
        load_pretrained(med3d_resnet(10), "medicalnet-resnet10", path)
    _assert_clear(raised.value, WeightTransferError, path, hint)


def test_every_torch_load_in_the_package_uses_weights_only():
    """Each ``torch.load(`` of ``monai_ext/`` passes ``weights_only=True``, except the two explicit trusted paths."""
    trusted = {("monai_ext/weights/report.py", "load_weights_file"), ("monai_ext/weights/report.py",
               "convert_trusted_checkpoint")}  # fmt: skip
    found, unsafe = 0, []
    for file in sorted((REPO / "monai_ext").rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for call in [n for n in ast.walk(function) if isinstance(n, ast.Call)]:
                f = call.func
                if not (isinstance(f, ast.Attribute) and f.attr == "load" and getattr(f.value, "id", "") == "torch"):
                    continue
                found += 1
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
                where = (file.relative_to(REPO).as_posix(), function.name)
                if not safe and where not in trusted:
                    unsafe.append(f"{where[0]}:{call.lineno} ({where[1]})")
    assert found >= 5 and not unsafe, f"torch.load without weights_only=True: {unsafe}"


# ----------------------------------------------------------------------------------------------------------------------
# No half-written output
# ----------------------------------------------------------------------------------------------------------------------
def test_failed_cli_datalist_keeps_the_previous_output(tmp_path, capsys):
    task = _decathlon(tmp_path / "Task01_Tiny")
    output = tmp_path / "datalist.json"
    assert _cli(["datalist", task, "-o", output], capsys)[0] == 0
    previous = output.read_text(encoding="utf-8")
    assert len(json.loads(previous)) == 3
    _truncate(task / "labelsTr" / "case_2.nii.gz")
    code, _, err = _cli(["datalist", task, "-o", output], capsys)
    assert code == 2 and str(task / "labelsTr" / "case_2.nii.gz") in err
    assert output.read_text(encoding="utf-8") == previous and _leftovers(tmp_path) == []


def test_write_datalist_is_atomic(tmp_path, monkeypatch):
    output = tmp_path / "datalist.json"
    write_datalist([{"image": "a.nii.gz"}], output)
    previous = output.read_text(encoding="utf-8")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_datalist([{"image": "b.nii.gz"}] * 1000, output)
    assert output.read_text(encoding="utf-8") == previous and _leftovers(tmp_path) == []


def test_failed_onboard_writes_neither_file(tmp_path, capsys, monkeypatch):
    task = _decathlon(tmp_path / "Task01_Tiny")
    output, report = tmp_path / "out" / "datalist.json", tmp_path / "out" / "report.md"

    def broken_report(self, datalist_path=None):
        raise RuntimeError("cannot render the report")

    monkeypatch.setattr(DatasetOnboarding, "to_markdown", broken_report)
    code, _, err = _cli(["onboard", task, "-o", output, "--report", report], capsys)
    assert code == 2 and "cannot render the report" in err
    assert not output.exists() and not report.exists()
    monkeypatch.undo()
    assert _cli(["onboard", task, "-o", output, "--report", report], capsys)[0] == 0
    assert len(json.loads(output.read_text(encoding="utf-8"))) == 3 and report.read_text(encoding="utf-8").startswith("# Onboarding report")


# ----------------------------------------------------------------------------------------------------------------------
# End to end: a bundle run on a dataset with one bad label
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bundle_run_names_a_label_value_outside_the_classes(tmp_path):
    """``transfer_segmentation`` on a Decathlon folder whose headers are sound (the datalist builder passes it) but
    one training label holds the value 7 of no declared class: the run fails while it caches the cases, before any
    training step, and the output names that label file and says what to fix."""
    import subprocess
    import sys

    from tests.bundles.test_bundles import _bundle_args, _bundle_copy, _env, _smoke

    task = _decathlon(tmp_path / "Task01_Tiny", n=5)
    bad = Path(fine_tuning_target(task)["training"][0]["label"])  # a case of the training split
    _save(bad, _label(value=7))
    bundle = REPO / "bundles" / "transfer_segmentation"
    copy = _bundle_copy(bundle, tmp_path)
    overrides = {**_smoke(bundle), "dataset_dir": str(task), "cache_rate": 1.0, "num_workers": 0}
    proc = subprocess.run(
        [sys.executable, *_bundle_args(copy, ["train.json"], overrides, tmp_path, "train")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the run must fail:\n{out[-3000:]}"
    assert "DatalistError" in out and str(bad) in out, out[-3000:]
    assert "label values [7] are not among the declared classes [0, 1, 2]" in out, out[-3000:]
    assert "fix the label file" in out and "monai-ext datalist" in out, out[-3000:]
    assert not (copy / "models" / "model.pt").exists() and not list((copy / "models").glob("checkpoint_epoch=*.pt"))
