"""Tests of the datalist builders and validation, on the real data folders and on broken inputs."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_ext.data import datalists as dl
from monai_ext.data.datalists import DatalistError, DatalistWarning

SHARED_DATA = Path(os.environ.get("MONAI_EXT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
HIPPOCAMPUS = SHARED_DATA / "Task04_Hippocampus"
ACDC = SHARED_DATA / "ACDC"
HYMENOPTERA = SHARED_DATA / "hymenoptera_data"
needs = {
    name: pytest.mark.skipif(not path.is_dir(), reason=f"real data folder {path} not available")
    for name, path in (("hippocampus", HIPPOCAMPUS), ("acdc", ACDC), ("hymenoptera", HYMENOPTERA))
}


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _make_decathlon(root: Path, n: int = 3, labels: dict | None = None) -> Path:
    """A tiny valid Decathlon task."""
    rng = np.random.default_rng(0)
    training = []
    for i in range(n):
        _save(root / "imagesTr" / f"case_{i}.nii.gz", rng.normal(size=(8, 8, 4)).astype(np.float32))
        _save(root / "labelsTr" / f"case_{i}.nii.gz", (rng.uniform(size=(8, 8, 4)) * 3).astype(np.uint8))
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    meta = {
        "name": "Tiny",
        "description": "test",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": labels or {"0": "background", "1": "a", "2": "b"},
        "numTraining": n,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def _edit_json(task: Path, **changes) -> None:
    meta = json.loads((task / "dataset.json").read_text(encoding="utf-8"))
    meta.update(changes)
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------------------------------
@needs["hippocampus"]
def test_real_hippocampus():
    items = dl.decathlon_datalist(HIPPOCAMPUS)
    assert len(items) == 260 and all(os.path.isabs(it["image"]) and os.path.isabs(it["label"]) for it in items)
    assert items[0]["case"] == "hippocampus_001"
    meta = dl.read_decathlon_metadata(HIPPOCAMPUS)
    assert meta["labels"] == {0: "background", 1: "Anterior", 2: "Posterior"} and meta["modality"] == {0: "MRI"}
    assert meta["num_classes"] == 3 and meta["num_channels"] == 1 and "training" not in meta
    datalist, report = dl.build_datalist(HIPPOCAMPUS)
    assert report.layout == "decathlon" and report.n_items == report.n_pairs == 260 and report.ok
    assert report.spacing_summary()["median"] == (1.0, 1.0, 1.0)
    assert "260 items, 260 image/label pairs, 0 errors" in report.summary()
    dtypes = {dl.read_volume_header(it["image"]).dtype for it in datalist}
    assert dtypes == {"uint8", "float32"}, "the real folder mixes uint8 and float32 images"
    deep = dl.validate_datalist(datalist[:6], deep=True, labels=meta["labels"])
    assert deep.ok and deep.n_pairs == 6


@needs["acdc"]
def test_real_acdc():
    datalist, report = dl.build_datalist(ACDC)
    assert report.n_pairs == 200 and report.ok
    assert report.labels == {0: "background", 1: "right_ventricle", 2: "myocardium", 3: "left_ventricle"}
    header = dl.read_volume_header(datalist[0]["image"])
    np.testing.assert_array_equal(header.affine, np.eye(4))
    shapes = report.shape_summary()
    assert shapes["max"][2] <= 18 and shapes["min"][0] >= 150, "few slices, large in-plane: anisotropic"

    def by_patient(item):
        return item["case"].split("_")[0]

    train, val = dl.split_datalist(datalist, val_fraction=0.2, seed=0, group_key=by_patient)
    assert len(train) + len(val) == 200 and len(val) == 40
    assert not {by_patient(i) for i in train} & {by_patient(i) for i in val}, "a patient on both sides"
    assert dl.split_datalist(datalist, 0.2, 0, by_patient) == (train, val)


@needs["hymenoptera"]
def test_real_hymenoptera():
    with pytest.warns(DatalistWarning, match="imageNotFound.gif"):
        train, classes = dl.image_folder_datalist(HYMENOPTERA, "train")
    val, val_classes = dl.image_folder_datalist(HYMENOPTERA, "val", classes=classes)
    assert classes == val_classes == ["ants", "bees"]
    # 245 training files, one of which is a GIF placeholder ("imageNotFound.gif") that is not an image of the set
    assert len(train) == 244 and len(val) == 153
    assert sum(it["label"] == 0 for it in train) == 123 and sum(it["label"] == 1 for it in val) == 83
    assert {it["class_name"] for it in train} == {"ants", "bees"}
    _, report = dl.build_datalist(HYMENOPTERA)
    assert report.layout == "image_folder" and report.n_pairs == 244
    assert [p.kind for p in report.warnings] == ["skipped"] and report.ok
    header = dl.read_volume_header(train[0]["image"])
    assert header.format == "image2d" and header.n_channels == 3


# ----------------------------------------------------------------------------------------------------------------------
# Decathlon: broken inputs
# ----------------------------------------------------------------------------------------------------------------------
def test_decathlon_valid_and_unlisted_image_warns(tmp_path):
    task = _make_decathlon(tmp_path / "Task01_Tiny")
    assert [it["case"] for it in dl.decathlon_datalist(task)] == ["case_0", "case_1", "case_2"]
    shutil.copy(task / "imagesTr" / "case_0.nii.gz", task / "imagesTr" / "case_9.nii.gz")
    (task / "imagesTr" / "._case_0.nii.gz").write_bytes(b"AppleDouble")  # macOS metadata files are ignored
    with pytest.warns(DatalistWarning, match="case_9.nii.gz") as record:
        dl.decathlon_datalist(task)
    assert not any("._case_0" in str(w.message) for w in record)
    assert dl.detect_layout(task) == "decathlon"


def test_decathlon_missing_file_is_named(tmp_path):
    task = _make_decathlon(tmp_path / "Task01_Tiny")
    os.remove(task / "labelsTr" / "case_1.nii.gz")
    with pytest.raises(DatalistError, match=r"labelsTr/case_1\.nii\.gz.*not found"):
        dl.decathlon_datalist(task)
    with pytest.raises(DatalistError, match="case_1"):
        dl.build_datalist(task)


def test_decathlon_json_that_lies(tmp_path):
    task = _make_decathlon(tmp_path / "Task01_Tiny")
    _edit_json(task, numTraining=5)
    with pytest.raises(DatalistError, match="numTraining is 5 but the 'training' list has 3"):
        dl.decathlon_datalist(task)
    assert len(dl.decathlon_datalist(task, check=False)) == 3
    _edit_json(
        task,
        numTraining=4,
        training=json.loads((task / "dataset.json").read_text(encoding="utf-8"))["training"]
        + [{"image": "./imagesTr/ghost.nii.gz", "label": "./labelsTr/ghost.nii.gz"}],
    )
    with pytest.raises(DatalistError, match="ghost.nii.gz"):
        dl.decathlon_datalist(task)


def test_decathlon_entry_without_label(tmp_path):
    task = _make_decathlon(tmp_path / "Task01_Tiny")
    meta = json.loads((task / "dataset.json").read_text(encoding="utf-8"))
    del meta["training"][2]["label"]
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DatalistError, match=r"no_label.*case_2"):
        dl.decathlon_datalist(task)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatalistError, match=r"empty\b.*expected a Decathlon"):
        dl.build_datalist(tmp_path / "empty")
    with pytest.raises(DatalistError, match=r"dataset\.json not found.*Decathlon.*builtin_dataset_dir"):
        dl.decathlon_datalist(tmp_path / "empty")
    with pytest.raises(DatalistError, match=r"nowhere not found: expected the Medical Segmentation Decathlon layout"):
        dl.decathlon_datalist(tmp_path / "nowhere")
    with pytest.raises(DatalistError, match="no BDMAP_"):
        dl.abdomenatlas_datalist(tmp_path / "empty")
    with pytest.raises(DatalistError, match="holds no class folder"):
        dl.image_folder_datalist(tmp_path / "empty", split=None)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("nothing here", encoding="utf-8")
    with pytest.raises(DatalistError, match="no known dataset layout"):
        dl.build_datalist(tmp_path / "junk")


# ----------------------------------------------------------------------------------------------------------------------
# Validation: corrupt files, missing labels, mismatches
# ----------------------------------------------------------------------------------------------------------------------
def test_truncated_nifti_is_detected(tmp_path):
    path = _save(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32))
    label = _save(tmp_path / "lab.nii.gz", np.zeros((16, 16, 8), np.uint8))
    assert dl.read_volume_header(path).shape == (16, 16, 8)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatalistError, match="truncated or corrupt"):
        dl.read_volume_header(path)
    report = dl.validate_datalist([{"image": path, "label": label}])
    assert [p.kind for p in report.errors] == ["corrupt"] and report.errors[0].path == path and report.n_pairs == 0
    with pytest.raises(DatalistError, match="img.nii.gz"):
        report.raise_if_errors()


def test_corrupt_gzip_body_needs_deep(tmp_path):
    """A flipped byte inside the compressed stream keeps the size trailer: only a full read finds it."""
    path = _save(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(32, 32, 16)).astype(np.float32))
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    assert dl.validate_datalist([{"image": path}]).ok
    deep = dl.validate_datalist([{"image": path}], deep=True)
    assert [p.kind for p in deep.errors] == ["corrupt"]


def test_not_gzip_and_uncompressed_truncation(tmp_path):
    plain = _save(tmp_path / "img.nii", np.ones((8, 8, 8), np.float32))
    fake = tmp_path / "fake.nii.gz"
    shutil.copy(plain, fake)
    with pytest.raises(DatalistError, match="not gzip-compressed"):
        dl.read_volume_header(fake)
    data = Path(plain).read_bytes()
    Path(plain).write_bytes(data[:-100])
    with pytest.raises(DatalistError, match="truncated"):
        dl.read_volume_header(plain)
    (tmp_path / "garbage.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 10))
    with pytest.raises(DatalistError, match="unreadable NIfTI header"):
        dl.read_volume_header(tmp_path / "garbage.nii.gz")


def test_missing_file_and_image_without_label(tmp_path):
    a = _save(tmp_path / "a.nii.gz", np.zeros((8, 8, 4), np.float32))
    b = _save(tmp_path / "b.nii.gz", np.zeros((8, 8, 4), np.float32))
    la = _save(tmp_path / "la.nii.gz", np.zeros((8, 8, 4), np.uint8))
    report = dl.validate_datalist(
        [
            {"image": a, "label": la},
            {"image": b},
            {"image": str(tmp_path / "gone.nii.gz"), "label": la},
        ]
    )
    kinds = {(Path(p.path).name, p.kind) for p in report.errors}
    assert kinds == {("b.nii.gz", "no_label"), ("gone.nii.gz", "missing")}
    assert report.n_pairs == 1 and report.n_items == 3
    assert "b.nii.gz" in report.summary() and "gone.nii.gz" in report.summary()
    assert dl.validate_datalist([{"image": a}, {"image": b}]).ok, "unlabelled data is fine when no entry has a label"
    assert dl.validate_datalist([{"image": a, "label": la}], read_headers=False).ok


def test_label_shape_and_affine_mismatch(tmp_path):
    image = _save(tmp_path / "img.nii.gz", np.zeros((8, 8, 4), np.float32), np.diag([0.8, 0.8, 2.5, 1.0]))
    wrong_shape = _save(tmp_path / "lab1.nii.gz", np.zeros((8, 8, 5), np.uint8), np.diag([0.8, 0.8, 2.5, 1.0]))
    shifted = np.diag([0.8, 0.8, 2.5, 1.0])
    shifted[:3, 3] = (5.0, 0.0, 0.0)
    wrong_affine = _save(tmp_path / "lab2.nii.gz", np.zeros((8, 8, 4), np.uint8), shifted)
    close = np.diag([0.8, 0.8, 2.5, 1.0])
    close[:3, 3] = (0.01, 0.0, 0.0)
    fine = _save(tmp_path / "lab3.nii.gz", np.zeros((8, 8, 4), np.uint8), close)
    report = dl.validate_datalist([{"image": image, "label": x} for x in (wrong_shape, wrong_affine, fine)])
    assert {(Path(p.path).name, p.kind) for p in report.errors} == {
        ("lab1.nii.gz", "shape_mismatch"),
        ("lab2.nii.gz", "affine_mismatch"),
    }
    assert report.n_pairs == 1
    assert report.spacing_summary()["max"] == pytest.approx((0.8, 0.8, 2.5))


def test_deep_checks_values(tmp_path):
    image = np.zeros((8, 8, 4), np.float32)
    image[0, 0, 0] = np.nan
    nan_image = _save(tmp_path / "nan.nii.gz", image)
    good_image = _save(tmp_path / "good.nii.gz", np.zeros((8, 8, 4), np.float32))
    label = np.zeros((8, 8, 4), np.uint8)
    label[1, 1, 1] = 7
    bad_label = _save(tmp_path / "lab7.nii.gz", label)
    float_label = _save(tmp_path / "labf.nii.gz", np.full((8, 8, 4), 0.5, np.float32))
    ok_label = _save(tmp_path / "labok.nii.gz", np.ones((8, 8, 4), np.float32))  # float32 but integral: fine
    datalist = [
        {"image": nan_image, "label": ok_label},
        {"image": good_image, "label": bad_label},
        {"image": good_image, "label": float_label},
        {"image": good_image, "label": ok_label},
    ]
    assert dl.validate_datalist(datalist, labels={0: "bg", 1: "fg"}).ok, "headers alone cannot see values"
    report = dl.validate_datalist(datalist, deep=True, labels={0: "bg", 1: "fg"})
    assert {(Path(p.path).name, p.kind) for p in report.errors} == {
        ("nan.nii.gz", "non_finite"),
        ("lab7.nii.gz", "label_values"),
        ("labf.nii.gz", "label_values"),
    }
    assert report.n_pairs == 1


# ----------------------------------------------------------------------------------------------------------------------
# nnU-Net v2
# ----------------------------------------------------------------------------------------------------------------------
def _make_nnunet(root: Path, cases=("la_003", "la_004"), channels=2) -> Path:
    for case in cases:
        for c in range(channels):
            _save(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", np.full((6, 6, 4), c + 1, np.float32))
        _save(root / "labelsTr" / f"{case}.nii.gz", np.zeros((6, 6, 4), np.uint8))
    meta = {
        "channel_names": {str(c): f"mod{c}" for c in range(channels)},
        "labels": {"background": 0, "heart": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def test_nnunet_valid_channels_in_order(tmp_path):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    root = _make_nnunet(tmp_path / "Dataset027_Tiny")
    items = dl.nnunet_datalist(root)
    assert [it["case"] for it in items] == ["la_003", "la_004"]
    assert [os.path.basename(p) for p in items[0]["image"]] == ["la_003_0000.nii.gz", "la_003_0001.nii.gz"]
    assert dl.read_nnunet_metadata(root)["label_names"] == {0: "background", 1: "heart"}
    assert dl.detect_layout(root) == "nnunet"
    data = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])(items[0])
    assert data["image"].shape == (2, 6, 6, 4) and data["label"].shape == (1, 6, 6, 4)
    assert float(data["image"][0].mean()) == 1.0 and float(data["image"][1].mean()) == 2.0
    _, report = dl.build_datalist(root)
    assert report.layout == "nnunet" and report.n_pairs == 2 and report.ok


def test_nnunet_missing_channel_and_unlabelled_case(tmp_path):
    root = _make_nnunet(tmp_path / "Dataset027_Tiny")
    os.remove(root / "imagesTr" / "la_004_0001.nii.gz")
    with pytest.raises(DatalistError, match=r"la_004_0001\.nii\.gz.*case 'la_004' lacks this channel"):
        dl.nnunet_datalist(root)
    root = _make_nnunet(tmp_path / "Dataset028_Tiny")
    _save(root / "imagesTr" / "la_009_0000.nii.gz", np.zeros((6, 6, 4), np.float32))
    with pytest.raises(DatalistError, match=r"case 'la_009' has images but no labelsTr/la_009\.nii\.gz"):
        dl.nnunet_datalist(root)
    root = _make_nnunet(tmp_path / "Dataset029_Tiny")
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    del meta["file_ending"]
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DatalistError, match="lacks \\['file_ending'\\]"):
        dl.nnunet_datalist(root)


# ----------------------------------------------------------------------------------------------------------------------
# ITK formats: NRRD, MetaImage, DICOM series
# ----------------------------------------------------------------------------------------------------------------------
def _itk_volume(itk, array_zyx: np.ndarray, spacing, origin):
    image = itk.image_from_array(np.ascontiguousarray(array_zyx))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    return image


def _write_dicom_series(itk, folder: Path, array_zyx: np.ndarray, spacing, origin) -> None:
    """One DICOM file per slice, sharing a series UID, with positions along z (GDCM)."""
    folder.mkdir(parents=True)
    for k, plane in enumerate(array_zyx):
        image = itk.image_from_array(np.ascontiguousarray(plane))
        image.SetSpacing([float(spacing[0]), float(spacing[1])])
        meta = image.GetMetaDataDictionary()
        meta["0020|000e"] = "1.2.826.0.1.3680043.2.1125.1.4242"
        meta["0020|000d"] = "1.2.826.0.1.3680043.2.1125.1.4243"
        meta["0020|0032"] = "\\".join(f"{v:g}" for v in (origin[0], origin[1], origin[2] + k * spacing[2]))
        meta["0020|0037"] = "1\\0\\0\\0\\1\\0"
        meta["0018|0050"] = f"{spacing[2]:g}"
        meta["0020|0013"] = str(k + 1)
        meta["0008|0060"] = "CT"
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        itk.imwrite(image, str(folder / f"slice_{k:03d}.dcm"), imageio=io)


def test_itk_formats_round_trip(tmp_path):
    itk = pytest.importorskip("itk")
    from monai.transforms import LoadImage

    spacing, origin = (0.7, 0.8, 2.5), (10.0, 20.0, 30.0)
    zyx = (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 50).astype(np.int16)  # x=7, y=6, z=5
    expected_ras = np.diag([-0.7, -0.8, 2.5, 1.0])
    expected_ras[:3, 3] = (-10.0, -20.0, 30.0)  # ITK geometry is LPS; headers are reported in RAS
    paths = {}
    for ext in (".nrrd", ".mha"):
        paths[ext] = str(tmp_path / f"vol{ext}")
        itk.imwrite(_itk_volume(itk, zyx, spacing, origin), paths[ext])
    paths["dicom"] = str(tmp_path / "series")
    _write_dicom_series(itk, Path(paths["dicom"]), zyx, spacing, origin)
    for kind, path in paths.items():
        header = dl.read_volume_header(path)
        assert header.shape == (7, 6, 5), kind
        np.testing.assert_allclose(header.spacing, spacing, rtol=1e-5, err_msg=kind)
        np.testing.assert_allclose(header.affine, expected_ras, atol=1e-4, err_msg=kind)
        assert header.dtype == "short"
        loaded = LoadImage(image_only=True, reader="ITKReader")(path)
        np.testing.assert_array_equal(np.asarray(loaded), zyx.transpose(2, 1, 0), err_msg=kind)
        np.testing.assert_allclose(np.asarray(loaded.affine), expected_ras, atol=1e-4, err_msg=kind)
    assert dl.read_volume_header(paths["dicom"]).n_files == 5
    # a DICOM image with an NRRD label on the same grid is a valid pair; deep reading works for all three
    report = dl.validate_datalist(
        [{"image": paths["dicom"], "label": paths[".nrrd"]}, {"image": paths[".mha"], "label": paths[".nrrd"]}],
        deep=True,
    )
    assert report.ok and report.n_pairs == 2, report.summary()


def test_itk_unreadable_and_empty_dicom_folder(tmp_path):
    pytest.importorskip("itk")
    (tmp_path / "broken.mha").write_text("this is not a MetaImage header", encoding="utf-8")
    with pytest.raises(DatalistError, match="broken.mha: unreadable image"):
        dl.read_volume_header(tmp_path / "broken.mha")
    (tmp_path / "no_dicom").mkdir()
    (tmp_path / "no_dicom" / "readme.txt").write_text("empty", encoding="utf-8")
    with pytest.raises(DatalistError, match="no DICOM series found"):
        dl.read_volume_header(tmp_path / "no_dicom")


# ----------------------------------------------------------------------------------------------------------------------
# AbdomenAtlas, image folders, CSV
# ----------------------------------------------------------------------------------------------------------------------
def _make_atlas(root: Path, cases=("BDMAP_00000001", "BDMAP_00000002")) -> Path:
    for case in cases:
        _save(root / case / "ct.nii.gz", np.zeros((6, 6, 4), np.int16))
        combined = np.zeros((6, 6, 4), np.uint8)
        combined[1:3, 1:3, 1:3] = 1
        _save(root / case / "combined_labels.nii.gz", combined)
        for k, name in enumerate(("aorta", "gall_bladder"), start=1):
            _save(root / case / "segmentations" / f"{name}.nii.gz", (combined == k).astype(np.uint8))
    return root


def test_abdomenatlas_datalist(tmp_path):
    root = _make_atlas(tmp_path / "atlas")
    items = dl.abdomenatlas_datalist(root, classes=("aorta", "gall_bladder"))
    assert [it["case"] for it in items] == ["BDMAP_00000001", "BDMAP_00000002"]
    assert set(items[0]) == {"image", "label_dir", "combined_label", "case"}
    assert items[0]["label_dir"].endswith("BDMAP_00000001/segmentations")
    _, report = dl.build_datalist(root)
    assert report.layout == "abdomenatlas" and report.n_pairs == 2 and report.ok
    with pytest.raises(DatalistError, match=r"BDMAP_00000002 has no mask for class 'liver'"):
        dl.abdomenatlas_datalist(root, classes=("aorta", "liver"))
    os.remove(root / "BDMAP_00000002" / "ct.nii.gz")
    with pytest.raises(DatalistError, match="case BDMAP_00000002 has no ct.nii.gz"):
        dl.abdomenatlas_datalist(root)


def test_abdomenatlas_mask_on_another_grid(tmp_path):
    root = _make_atlas(tmp_path / "atlas", cases=("BDMAP_00000001",))
    _save(root / "BDMAP_00000001" / "segmentations" / "aorta.nii.gz", np.zeros((6, 6, 5), np.uint8))
    _, report = dl.build_datalist(root)
    assert [(Path(p.path).name, p.kind) for p in report.errors] == [("aorta.nii.gz", "shape_mismatch")]


def test_image_folder_extensions_and_class_indices(tmp_path):
    root = tmp_path / "imgs"
    for split, cls, name in (
        ("train", "cat", "a.JPEG"),
        ("train", "cat", "b.png"),
        ("train", "dog", "c.jpg"),
        ("train", "dog", "d.bmp"),
        ("train", "dog", "e.jpeg"),
        ("val", "dog", "f.jpg"),
    ):
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 9), (200, 10, 10)).save(root / split / cls / name)
    (root / "train" / "dog" / "notes.txt").write_text("not an image", encoding="utf-8")
    with pytest.warns(DatalistWarning, match="notes.txt"):
        train, classes = dl.image_folder_datalist(root, "train")
    assert classes == ["cat", "dog"] and len(train) == 5
    assert {os.path.basename(i["image"]): i["label"] for i in train} == {
        "a.JPEG": 0,
        "b.png": 0,
        "c.jpg": 1,
        "d.bmp": 1,
        "e.jpeg": 1,
    }
    with pytest.warns(DatalistWarning, match="class 'cat' has no folder"):
        val, _ = dl.image_folder_datalist(root, "val", classes=classes)
    assert val[0]["label"] == 1, "indices follow the training classes, not the val folders"
    (root / "val" / "bird").mkdir()
    with pytest.raises(DatalistError, match=r"\['bird'\].*not in the given classes"):
        dl.image_folder_datalist(root, "val", classes=classes)
    (root / "train" / "fish").mkdir()
    with pytest.raises(DatalistError, match="fish holds no image"):
        dl.image_folder_datalist(root, "train")
    assert dl.detect_layout(root) == "image_folder"


def test_csv_datalist(tmp_path):
    _save(tmp_path / "data" / "images" / "v1.nii.gz", np.zeros((6, 6, 6), np.int16))
    _save(tmp_path / "data" / "images" / "v2.nii.gz", np.zeros((6, 6, 6), np.int16))
    (tmp_path / "data" / "labels.csv").write_text("image,label,site\nimages/v1.nii.gz,1,A\nimages/v2.nii.gz,0,B\n", encoding="utf-8")
    items = dl.csv_datalist(tmp_path / "data" / "labels.csv")
    assert items[0] == {"image": str(tmp_path / "data" / "images" / "v1.nii.gz"), "label": 1, "site": "A"}
    assert dl.detect_layout(tmp_path / "data") == "csv"
    _, report = dl.build_datalist(tmp_path / "data")
    assert report.layout == "csv" and report.n_pairs == 2 and report.ok
    with pytest.raises(DatalistError, match=r"no column \['target'\] \(columns: \['image', 'label', 'site'\]\)"):
        dl.csv_datalist(tmp_path / "data" / "labels.csv", label_col="target")
    (tmp_path / "data" / "labels.csv").write_text("image,label\nimages/v3.nii.gz,1\n", encoding="utf-8")
    _, report = dl.build_datalist(tmp_path / "data" / "labels.csv")
    assert [p.kind for p in report.errors] == ["missing"] and "v3.nii.gz" in report.errors[0].path


# ----------------------------------------------------------------------------------------------------------------------
# Splitting and reports
# ----------------------------------------------------------------------------------------------------------------------
def test_split_datalist():
    data = [{"image": f"p{i // 3}_{i % 3}.nii.gz", "patient": f"p{i // 3}"} for i in range(30)]
    train, val = dl.split_datalist(data, val_fraction=0.2, seed=1)
    assert len(val) == 6 and len(train) == 24 and sorted(map(str, train + val)) == sorted(map(str, data))
    assert dl.split_datalist(data, 0.2, seed=1) == (train, val)
    assert dl.split_datalist(data, 0.2, seed=2)[1] != val
    assert train == [d for d in data if d in train], "entries keep their order"
    train, val = dl.split_datalist(data, 0.2, seed=1, group_key="patient")
    assert len(val) == 6 and not {d["patient"] for d in train} & {d["patient"] for d in val}
    assert dl.split_datalist(data, 0.0)[1] == []
    assert len(dl.split_datalist(data[:2], 0.01)[1]) == 1, "at least one validation entry"
    with pytest.raises(ValueError, match="val_fraction"):
        dl.split_datalist(data, 1.0)
    with pytest.raises(ValueError, match="no group key 'site'"):
        dl.split_datalist(data, 0.2, group_key="site")


def test_report_summary_and_raise(tmp_path):
    task = _make_decathlon(tmp_path / "Task01_Tiny")
    _save(task / "labelsTr" / "case_1.nii.gz", np.zeros((8, 8, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid folder raises no warning
        datalist, report = dl.build_datalist(task)
    assert len(datalist) == 3 and report.n_pairs == 2 and not report.ok
    text = report.summary()
    assert text.startswith(f"decathlon at {task}: 3 items, 2 image/label pairs, 1 errors, 0 warnings")
    assert "shape: min (8, 8, 4)" in text and "shape_mismatch" in text
    with pytest.raises(DatalistError, match="1 problem"):
        report.raise_if_errors()


# ----------------------------------------------------------------------------------------------------------------------
# 2D segmentation: images/ + masks/ folders (COCO-style index-map PNGs)
# ----------------------------------------------------------------------------------------------------------------------
def _make_image_mask(root: Path, n: int = 3, with_json: bool = True) -> Path:
    """A tiny valid images/ + masks/ folder: JPEG and PNG images, grey and palette masks with values 0-2."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        rgb = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "images" / (f"img_{i}.jpg" if i % 2 else f"img_{i}.png"))
        mask = Image.fromarray((rng.uniform(size=(10, 12)) * 3).astype(np.uint8), mode="L")
        if i == 1:  # a palette PNG (VOC style): the indices are the classes
            mask = mask.convert("P")
        mask.save(root / "masks" / f"img_{i}.png")
    if with_json:
        labels = {"0": "background", "1": "cat", "2": "dog"}
        (root / "dataset.json").write_text(json.dumps({"name": "tiny2d", "labels": labels}), encoding="utf-8")
    return root


def test_image_mask_folder_valid(tmp_path):
    root = _make_image_mask(tmp_path / "seg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid folder raises no warning
        items = dl.image_mask_folder_datalist(root, labels=range(3))
    assert [it["case"] for it in items] == ["img_0", "img_1", "img_2"]
    assert items[1] == {
        "image": str(root / "images" / "img_1.jpg"),
        "label": str(root / "masks" / "img_1.png"),
        "case": "img_1",
    }
    assert dl.image_mask_folder_labels(root) == ["background", "cat", "dog"]
    assert dl.detect_layout(root) == "image_mask_folder"  # a dataset.json without a 'training' list
    _, report = dl.build_datalist(root)
    assert report.labels == {0: "background", 1: "cat", 2: "dog"} and report.ok
    os.remove(root / "dataset.json")
    assert dl.detect_layout(root) == "image_mask_folder", "images/ + masks/ is not an ImageNet folder of 2 classes"
    datalist, report = dl.build_datalist(root)
    assert report.layout == "image_mask_folder" and report.n_pairs == 3 and report.ok and len(datalist) == 3
    assert report.shape_summary()["median"] == (12, 10)
    with pytest.raises(DatalistError, match=r"dataset\.json not found.*--class_names"):
        dl.image_mask_folder_labels(root)
    # sub-folders per split (COCO: images/train2017, masks/train2017)
    split = _make_image_mask(tmp_path / "coco", n=2, with_json=False)
    (split / "images" / "train2017").mkdir()
    (split / "masks" / "train2017").mkdir()
    for name in ("img_0.png", "img_1.jpg"):
        shutil.move(split / "images" / name, split / "images" / "train2017" / name)
    for name in ("img_0.png", "img_1.png"):
        shutil.move(split / "masks" / name, split / "masks" / "train2017" / name)
    items = dl.image_mask_folder_datalist(split, "images/train2017", "masks/train2017")
    assert [it["case"] for it in items] == ["img_0", "img_1"]


def test_image_mask_folder_missing_and_empty(tmp_path):
    with pytest.raises(DatalistError, match=r"nowhere not found.*image\+mask.*natural2d_segmentation"):
        dl.image_mask_folder_datalist(tmp_path / "nowhere")
    (tmp_path / "seg" / "images").mkdir(parents=True)
    with pytest.raises(DatalistError, match=r"seg/masks not found: an image\+mask folder has images/ and masks/"):
        dl.image_mask_folder_datalist(tmp_path / "seg")
    (tmp_path / "seg" / "masks").mkdir()
    with pytest.raises(DatalistError, match=r"seg/images holds no image"):
        dl.image_mask_folder_datalist(tmp_path / "seg")
    Image.new("RGB", (4, 4)).save(tmp_path / "seg" / "images" / "a.png")
    with pytest.raises(DatalistError, match=r"seg/masks holds no mask.*masks/0001\.png"):
        dl.image_mask_folder_datalist(tmp_path / "seg")


def test_image_mask_folder_unpaired_and_skipped_files_are_named(tmp_path):
    root = _make_image_mask(tmp_path / "seg", n=4)
    os.remove(root / "masks" / "img_2.png")
    with pytest.raises(DatalistError, match=r"images/img_2\.png: this image has no mask .*masks/img_2\.png"):
        dl.image_mask_folder_datalist(root)
    os.remove(root / "images" / "img_2.png")
    os.remove(root / "images" / "img_3.jpg")
    (root / "images" / "notes.txt").write_text("not an image", encoding="utf-8")
    with pytest.warns(DatalistWarning) as record:
        items = dl.image_mask_folder_datalist(root)
    messages = " ".join(str(w.message) for w in record)
    assert "img_3.png" in messages and "no image of the same name" in messages and "notes.txt" in messages
    assert [it["case"] for it in items] == ["img_0", "img_1"]
    # many unpaired images: the first ones are named, the rest counted
    for i in range(10, 20):
        Image.new("RGB", (12, 10)).save(root / "images" / f"extra_{i}.png")
    with pytest.raises(DatalistError, match=r"extra_10\.png: this image has no mask(.|\n)*5 more image\(s\)"):
        dl.image_mask_folder_datalist(root)


def test_image_mask_folder_broken_files(tmp_path):
    root = _make_image_mask(tmp_path / "seg", n=3)
    (root / "masks" / "img_0.png").write_bytes(b"not a png at all")
    with pytest.raises(DatalistError, match=r"masks/img_0\.png: unreadable image"):
        dl.image_mask_folder_datalist(root)
    Image.new("RGB", (12, 10), (255, 0, 0)).save(root / "masks" / "img_0.png")  # a colour-coded mask
    with pytest.raises(DatalistError, match=r"masks/img_0\.png: the mask has 3 channels .*not one index map"):
        dl.image_mask_folder_datalist(root)
    Image.new("L", (8, 8)).save(root / "masks" / "img_0.png")  # another size than its image
    with pytest.raises(DatalistError, match=r"masks/img_0\.png: label shape \(8, 8\) differs from image shape"):
        dl.image_mask_folder_datalist(root)
    assert len(dl.image_mask_folder_datalist(root, check=False)) == 3, "check=False only pairs the files"
    Image.new("L", (12, 10), 255).save(root / "masks" / "img_0.png")  # COCO/VOC "unlabelled" value
    assert len(dl.image_mask_folder_datalist(root)) == 3, "values are only checked against declared labels"
    with pytest.raises(DatalistError, match=r"masks/img_0\.png: label values \[255\] are not declared"):
        dl.image_mask_folder_datalist(root, labels={0: "background", 1: "cat", 2: "dog"})
    Image.new("L", (12, 10)).save(root / "masks" / "img_0.png")
    Image.new("L", (12, 10)).save(root / "masks" / "img_1.jpg")  # lossy mask, and two files of one case
    with pytest.raises(DatalistError, match=r"one case name, several files(.|\n)*lossless"):
        dl.image_mask_folder_datalist(root)


def test_image_mask_folder_labels_must_be_indices(tmp_path):
    root = _make_image_mask(tmp_path / "seg", n=1)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "2": "dog"}}), encoding="utf-8")
    with pytest.raises(DatalistError, match=r"label values \[0, 2\] are not 0\.\.1"):
        dl.image_mask_folder_labels(root)
    (root / "dataset.json").write_text(json.dumps({"name": "no labels"}), encoding="utf-8")
    with pytest.raises(DatalistError, match="has no 'labels'"):
        dl.image_mask_folder_labels(root)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "cat": 1}}), encoding="utf-8")  # nnU-Net style
    assert dl.image_mask_folder_labels(root) == ["background", "cat"]
