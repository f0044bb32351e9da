"""Tests of the synthetic dataset generators and of the built-in dataset cache."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_ext.data import builtin, synthetic
from monai_ext.data.abdomenatlas_classes import ABDOMENATLAS_1_0_CLASSES, ABDOMENATLAS_CLASSES
from monai_ext.data.datalists import decathlon_datalist

N_CASES = 2
_ORIGINAL_SPECS = dict(builtin.BUILTIN_DATASETS)


def _array(path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def decathlon_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("decathlon")
    synthetic.write_decathlon_tasks(root, n_cases=N_CASES, seed=0)
    return root


@pytest.fixture(scope="module")
def atlas_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("atlas")
    synthetic.write_abdomenatlas(root, n_cases=2, seed=0)
    return root


# ----------------------------------------------------------------------------------------------------------------------
# Decathlon tasks
# ----------------------------------------------------------------------------------------------------------------------
def test_task_table_contract():
    names = set(synthetic.SYNTHETIC_DECATHLON_TASKS)
    assert names == {
        "Task101_SynthBrainMR",
        "Task102_SynthLiverCT",
        "Task103_SynthProstateMR",
        "Task104_SynthSpleenCT",
        "Task105_SynthKidneyCT",
    }
    classes = {n: len(s.labels) for n, s in synthetic.SYNTHETIC_DECATHLON_TASKS.items()}
    assert classes == {
        "Task101_SynthBrainMR": 3,
        "Task102_SynthLiverCT": 3,
        "Task103_SynthProstateMR": 3,
        "Task104_SynthSpleenCT": 2,
        "Task105_SynthKidneyCT": 3,
    }
    assert synthetic.HELD_OUT_TASK == "Task105_SynthKidneyCT"
    assert synthetic.HELD_OUT_TASK not in synthetic.PRETRAINING_TASKS
    assert {s.modality for s in synthetic.SYNTHETIC_DECATHLON_TASKS.values()} == {"CT", "MRI"}
    assert all(16 <= s.n_cases <= 24 for s in synthetic.SYNTHETIC_DECATHLON_TASKS.values())


@pytest.mark.parametrize("name", sorted(synthetic.SYNTHETIC_DECATHLON_TASKS))
def test_decathlon_dataset_json(decathlon_root, name):
    spec = synthetic.SYNTHETIC_DECATHLON_TASKS[name]
    task = decathlon_root / name
    meta = json.loads((task / "dataset.json").read_text(encoding="utf-8"))
    required = {
        "name",
        "description",
        "tensorImageSize",
        "modality",
        "labels",
        "numTraining",
        "numTest",
        "training",
        "test",
    }
    assert required <= set(meta)
    assert meta["tensorImageSize"] == "3D"
    assert meta["modality"] == {"0": spec.modality}
    assert meta["labels"] == {str(i): n for i, n in enumerate(spec.labels)} and meta["labels"]["0"] == "background"
    assert meta["numTraining"] == len(meta["training"]) == N_CASES
    assert meta["numTest"] == 0 and meta["test"] == []
    for entry in meta["training"]:
        assert entry["image"].startswith("./imagesTr/") and entry["label"].startswith("./labelsTr/")
        assert os.path.basename(entry["image"]) == os.path.basename(entry["label"])
        assert (task / entry["image"]).is_file() and (task / entry["label"]).is_file()
    assert sorted(os.listdir(task / "imagesTr")) == sorted(os.path.basename(e["image"]) for e in meta["training"])


@pytest.mark.parametrize("name", sorted(synthetic.SYNTHETIC_DECATHLON_TASKS))
def test_decathlon_loads_with_monai(decathlon_root, name):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    spec = synthetic.SYNTHETIC_DECATHLON_TASKS[name]
    load = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])
    seen: set[int] = set()
    for item in decathlon_datalist(decathlon_root / name):
        data = load(item)
        image, label = data["image"], data["label"]
        assert image.shape[0] == 1 and label.shape == image.shape
        assert all(40 <= s <= 72 for s in image.shape[1:3]) and 24 <= image.shape[3] <= 72
        np.testing.assert_allclose(image.pixdim.numpy(), spec.spacing, rtol=1e-5)
        np.testing.assert_allclose(label.affine.numpy(), image.affine.numpy())
        values = set(np.unique(label.numpy()).astype(int).tolist())
        assert values <= set(range(len(spec.labels)))
        seen |= values
        assert nib.load(item["label"]).get_data_dtype() == np.uint8
        assert nib.load(item["image"]).get_data_dtype() == np.dtype(spec.dtype)
    assert seen == set(range(len(spec.labels))), f"{name}: some declared label never occurs ({seen})"


def test_affines_spacing_and_orientation(decathlon_root):
    prostate = nib.load(str(next((decathlon_root / "Task103_SynthProstateMR" / "imagesTr").iterdir())))
    np.testing.assert_allclose(prostate.header.get_zooms(), (0.8, 0.8, 2.5), rtol=1e-5)
    brain = nib.load(str(next((decathlon_root / "Task101_SynthBrainMR" / "imagesTr").iterdir())))
    np.testing.assert_allclose(brain.header.get_zooms(), (1.0, 1.0, 1.0))
    spleen = nib.load(str(next((decathlon_root / "Task104_SynthSpleenCT" / "imagesTr").iterdir())))
    assert np.all(np.diag(spleen.affine)[:3] * [-1, -1, 1] > 0), "Task104 is written with an LPS-like affine"
    assert nib.aff2axcodes(spleen.affine) == ("L", "P", "S") and nib.aff2axcodes(brain.affine) == ("R", "A", "S")
    assert spleen.header["qform_code"] == 1 and spleen.header["sform_code"] == 1


def test_ct_and_mr_intensity_ranges(decathlon_root):
    for name, spec in synthetic.SYNTHETIC_DECATHLON_TASKS.items():
        case = min((decathlon_root / name / "imagesTr").iterdir())
        image = _array(case).astype(np.float32)
        label = _array(decathlon_root / name / "labelsTr" / case.name)
        if spec.modality == "CT":
            assert image.min() <= -950, f"{name}: air around the body"
            assert np.mean((image > -160) & (image < -40)) > 0.03, f"{name}: fat"
            assert np.any(image > 400) and image.max() <= 3071, f"{name}: bone"
            organ = np.median(image[label == 1])
            assert 20 <= organ <= 200, f"{name}: soft-tissue organ HU {organ}"
        else:
            assert image.min() >= 0, f"{name}: MR intensities are positive"
            assert np.percentile(image, 99) > 50, f"{name}: MR intensities are on an arbitrary positive scale"
            inside = image[label > 0].mean()
            assert inside > np.percentile(image, 10), f"{name}: labelled tissue is not background"


def test_decathlon_determinism(tmp_path):
    a = synthetic.write_decathlon_task(tmp_path / "a", "Task105_SynthKidneyCT", n_cases=1, seed=3)
    b = synthetic.write_decathlon_task(tmp_path / "b", "Task105_SynthKidneyCT", n_cases=1, seed=3)
    c = synthetic.write_decathlon_task(tmp_path / "c", "Task105_SynthKidneyCT", n_cases=1, seed=4)
    for sub in ("imagesTr/kidney_001.nii.gz", "labelsTr/kidney_001.nii.gz"):
        np.testing.assert_array_equal(_array(Path(a) / sub), _array(Path(b) / sub))
        assert nib.load(str(Path(a) / sub)).affine.tolist() == nib.load(str(Path(b) / sub)).affine.tolist()
    assert not np.array_equal(
        _array(Path(a) / "imagesTr/kidney_001.nii.gz"), _array(Path(c) / "imagesTr/kidney_001.nii.gz")
    )
    # case i does not depend on how many cases are written
    d = synthetic.write_decathlon_task(tmp_path / "d", "Task103_SynthProstateMR", n_cases=2, seed=3)
    e = synthetic.write_decathlon_task(tmp_path / "e", "Task103_SynthProstateMR", n_cases=1, seed=3)
    np.testing.assert_array_equal(
        _array(Path(d) / "imagesTr/prostate_001.nii.gz"), _array(Path(e) / "imagesTr/prostate_001.nii.gz")
    )


def test_custom_task_spec_and_errors(tmp_path):
    spec = dataclasses.replace(
        synthetic.SYNTHETIC_DECATHLON_TASKS["Task104_SynthSpleenCT"],
        name="Task204_Pancreas",
        labels=("background", "pancreas"),
        structure_labels=(("pancreas", 1),),
        spacing=(2.2, 2.2, 3.0),
        shape=(64, 56, 40),
        focus="kidneys",
    )
    task = synthetic.write_decathlon_task(tmp_path, spec, n_cases=1)
    label = nib.load(os.path.join(task, "labelsTr", "spleen_001.nii.gz"))
    np.testing.assert_allclose(label.header.get_zooms(), (2.2, 2.2, 3.0), rtol=1e-5)
    assert set(np.unique(np.asanyarray(label.dataobj))) == {0, 1}
    with pytest.raises(ValueError, match="unknown synthetic task"):
        synthetic.write_decathlon_task(tmp_path, "Task999_Nothing")
    with pytest.raises(ValueError, match="n_cases"):
        synthetic.write_decathlon_task(tmp_path, "Task101_SynthBrainMR", n_cases=0)
    with pytest.raises(ValueError, match="Task101_SynthBrainMR is MRI, not CT"):
        synthetic.write_decathlon_task(tmp_path, "Task101_SynthBrainMR", "CT", 1, 0)
    task = synthetic.write_decathlon_task(tmp_path, "Task103_SynthProstateMR", "MRI", 1, 0)
    assert json.loads(Path(task, "dataset.json").read_text(encoding="utf-8"))["modality"] == {"0": "MRI"}


# ----------------------------------------------------------------------------------------------------------------------
# AbdomenAtlas
# ----------------------------------------------------------------------------------------------------------------------
def test_abdomenatlas_layout_and_consistency(atlas_root):
    cases = sorted(p.name for p in atlas_root.iterdir())
    assert cases == ["BDMAP_00000001", "BDMAP_00000002"]
    present: set[int] = set()
    for case in cases:
        folder = atlas_root / case
        ct = nib.load(str(folder / "ct.nii.gz"))
        assert ct.get_data_dtype() == np.int16
        assert nib.aff2axcodes(ct.affine) == ("L", "P", "S")
        np.testing.assert_allclose(ct.header.get_zooms(), (1.7, 1.7, 2.5), rtol=1e-5)
        hu = np.asanyarray(ct.dataobj)
        assert hu.min() <= -950 and hu.max() >= 400
        combined_img = nib.load(str(folder / "combined_labels.nii.gz"))
        combined = np.asanyarray(combined_img.dataobj)
        assert combined.dtype == np.uint8 and combined.shape == hu.shape
        assert np.array_equal(combined_img.affine, ct.affine)
        assert combined.max() <= len(ABDOMENATLAS_CLASSES)
        masks = sorted(os.listdir(folder / "segmentations"))
        assert masks == sorted(f"{c}.nii.gz" for c in ABDOMENATLAS_CLASSES)
        for k, name in enumerate(ABDOMENATLAS_CLASSES, start=1):
            mask_img = nib.load(str(folder / "segmentations" / f"{name}.nii.gz"))
            mask = np.asanyarray(mask_img.dataobj)
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
            assert np.array_equal(mask_img.affine, ct.affine), f"{case}/{name} does not share the CT affine"
            np.testing.assert_array_equal(mask, combined == k, err_msg=f"{case}/{name} vs combined label {k}")
        present |= set(np.unique(combined).tolist())
    major = {
        ABDOMENATLAS_CLASSES.index(c) + 1
        for c in ("aorta", "kidney_left", "kidney_right", "liver", "spleen", "postcava", "pancreas", "stomach")
    }
    assert major <= present


def test_abdomenatlas_relative_positions(atlas_root):
    """Liver on the patient's right of the spleen, kidneys posterior to the stomach, in world (RAS) coordinates."""
    folder = atlas_root / "BDMAP_00000001"
    affine = nib.load(str(folder / "ct.nii.gz")).affine

    def centroid(name):
        mask = np.asanyarray(nib.load(str(folder / "segmentations" / f"{name}.nii.gz")).dataobj)
        assert mask.any(), name
        return nib.affines.apply_affine(affine, np.argwhere(mask).mean(0))

    assert centroid("liver")[0] > centroid("spleen")[0]  # RAS: +x is the patient's right
    assert centroid("kidney_right")[0] > centroid("kidney_left")[0]
    assert centroid("kidney_left")[1] < centroid("stomach")[1]  # posterior
    assert centroid("aorta")[1] > centroid("kidney_left")[1] - 40


def test_abdomenatlas_loads_with_monai_and_subset(atlas_root, tmp_path):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    folder = atlas_root / "BDMAP_00000002"
    data = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])(
        {"image": str(folder / "ct.nii.gz"), "label": str(folder / "combined_labels.nii.gz")}
    )
    np.testing.assert_allclose(data["image"].affine.numpy(), data["label"].affine.numpy())
    assert data["image"].shape == data["label"].shape
    synthetic.write_abdomenatlas(tmp_path, n_cases=1, seed=1, classes=ABDOMENATLAS_1_0_CLASSES, shape=(56, 48, 40))
    masks = os.listdir(tmp_path / "BDMAP_00000001" / "segmentations")
    assert len(masks) == 9
    assert _array(tmp_path / "BDMAP_00000001" / "combined_labels.nii.gz").max() <= 9
    with pytest.raises(ValueError, match="unknown AbdomenAtlas classes"):
        synthetic.write_abdomenatlas(tmp_path, n_cases=1, classes=("liver", "brain"))


def test_abdomenatlas_determinism(tmp_path):
    synthetic.write_abdomenatlas(tmp_path / "a", n_cases=1, seed=5, shape=(48, 48, 32))
    synthetic.write_abdomenatlas(tmp_path / "b", n_cases=1, seed=5, shape=(48, 48, 32))
    synthetic.write_abdomenatlas(tmp_path / "c", n_cases=1, seed=6, shape=(48, 48, 32))
    a, b, c = (_array(tmp_path / x / "BDMAP_00000001" / "ct.nii.gz") for x in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------------------------------------------------
# 2D sets and the 3D classification set
# ----------------------------------------------------------------------------------------------------------------------
def test_image_folder_classification(tmp_path):
    classes = ["red_disc", "blue_square", "striped_ball", "checker_tile"]
    root = Path(
        synthetic.write_image_folder_classification(
            tmp_path / "a", 4, seed=1, size_range=(40, 80), classes=classes, n_val_per_class=2
        )
    )
    sizes = set()
    for split, n in (("train", 4), ("val", 2)):
        assert sorted(os.listdir(root / split)) == sorted(classes)
        for c in classes:
            files = sorted(os.listdir(root / split / c))
            assert len(files) == n and all(f.endswith(".JPEG") for f in files)
            for f in files:
                with Image.open(root / split / c / f) as im:
                    assert im.format == "JPEG" and im.mode == "RGB"
                    assert 40 <= min(im.size) and max(im.size) <= 80
                    sizes.add(im.size)
    assert len(sizes) > 5, "image sizes vary"
    again = Path(
        synthetic.write_image_folder_classification(
            tmp_path / "b", 4, seed=1, size_range=(40, 80), classes=classes, n_val_per_class=2
        )
    )
    other = Path(
        synthetic.write_image_folder_classification(
            tmp_path / "c", 4, seed=2, size_range=(40, 80), classes=classes, n_val_per_class=2
        )
    )
    f = "train/red_disc/red_disc_0001.JPEG"
    assert np.array_equal(np.asarray(Image.open(root / f)), np.asarray(Image.open(again / f)))
    assert Image.open(root / f).size != Image.open(other / f).size or not np.array_equal(
        np.asarray(Image.open(root / f)), np.asarray(Image.open(other / f))
    )
    with pytest.raises(ValueError, match="unknown image classes"):
        synthetic.write_image_folder_classification(tmp_path / "d", 1, classes=["unicorn"])


def test_image_folder_classes_differ_in_colour(tmp_path):
    """The object colour of a class is recognisable: red discs are redder than blue squares on average."""
    root = Path(
        synthetic.write_image_folder_classification(
            tmp_path, 6, seed=0, classes=["red_disc", "blue_square"], n_val_per_class=0
        )
    )

    def redness(c):
        arrays = [np.asarray(Image.open(p), dtype=float) for p in sorted((root / "train" / c).iterdir())]
        return np.mean([np.percentile(a[..., 0] - a[..., 2], 95) for a in arrays])

    assert redness("red_disc") > redness("blue_square") + 40


def test_image_mask_segmentation(tmp_path):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    root = Path(synthetic.write_image_mask_segmentation(tmp_path, n=6, seed=0, size=(64, 48)))
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert meta["labels"] == {"0": "background", "1": "disc", "2": "square", "3": "triangle"}
    assert meta["numTraining"] == len(meta["training"]) == 6
    seen = set()
    load = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])
    for entry in decathlon_datalist(root):
        with Image.open(entry["image"]) as im, Image.open(entry["label"]) as mask:
            assert im.mode == "RGB" and mask.mode == "L" and im.size == mask.size == (64, 48)
            values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= {0, 1, 2, 3} and len(values) >= 2
        seen |= values
        data = load(entry)
        assert data["image"].shape == (3, 64, 48) and data["label"].shape == (1, 64, 48)
    assert seen == {0, 1, 2, 3}


def test_volume_classification(tmp_path):
    root = Path(synthetic.write_volume_classification(tmp_path, n=6, seed=0, shape=(32, 32, 32)))
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "label"]
    labels = [int(r[1]) for r in rows[1:]]
    assert sorted(labels) == [0, 0, 1, 1, 2, 2]
    assert json.loads((root / "classes.json").read_text(encoding="utf-8")) == {
        "0": "no_nodule",
        "1": "solid_nodule",
        "2": "spiculated_nodule",
    }
    for rel, label in ((r[0], int(r[1])) for r in rows[1:]):
        img = nib.load(str(root / rel))
        assert img.shape == (32, 32, 32) and img.get_data_dtype() == np.int16
        hu = np.asanyarray(img.dataobj)
        assert np.median(hu) < -600, "lung parenchyma"
        if label > 0:  # a nodule covers the centre of the patch
            assert hu[15:17, 15:17, 15:17].mean() > -300
    again = Path(synthetic.write_volume_classification(tmp_path / "again", n=6, seed=0, shape=(32, 32, 32)))
    np.testing.assert_array_equal(_array(root / rows[1][0]), _array(again / rows[1][0]))


# ----------------------------------------------------------------------------------------------------------------------
# Built-in dataset cache
# ----------------------------------------------------------------------------------------------------------------------
def _counting_spec(name: str, version: int, calls: list, fail: bool = False) -> builtin.BuiltinDatasetSpec:
    """The built-in spec of ``name`` with another version and a generator that records its calls (or fails)."""
    original = _ORIGINAL_SPECS[name]

    def generate(out_dir, n_cases, seed):
        calls.append(out_dir)
        if fail:
            Path(out_dir, "partial.txt").write_text("half a dataset", encoding="utf-8")
            raise RuntimeError("interrupted")
        original.generate(out_dir, n_cases, seed)

    return dataclasses.replace(original, version=version, generate=generate)


def test_builtin_list_and_errors(tmp_path):
    assert set(builtin.list_builtin_datasets()) == {
        "decathlon",
        "abdomenatlas",
        "natural2d_classification",
        "natural2d_segmentation",
        "volume3d_classification",
    }
    with pytest.raises(ValueError, match="unknown built-in dataset"):
        builtin.builtin_dataset_dir("imagenet", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="n_cases"):
        builtin.builtin_dataset_dir("abdomenatlas", cache_dir=str(tmp_path), n_cases=0)


def test_builtin_generated_once_then_cached(tmp_path, monkeypatch, caplog):
    name = "volume3d_classification"
    calls: list = []
    spec = builtin.BUILTIN_DATASETS[name]
    monkeypatch.setitem(builtin.BUILTIN_DATASETS, name, _counting_spec(name, spec.version, calls))
    with caplog.at_level(logging.INFO, logger="monai_ext.data.builtin"):
        first = builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path), n_cases=3)
    assert len(calls) == 1 and sum("generating built-in dataset" in r.message for r in caplog.records) == 1
    stamp = json.loads(Path(first, builtin.STAMP_FILE).read_text(encoding="utf-8"))
    assert stamp["version"] == spec.version and stamp["n_cases"] == 3 and stamp["seed"] == 0
    assert Path(first, "labels.csv").is_file() and len(os.listdir(Path(first, "images"))) == 3
    mtime = os.stat(Path(first, builtin.STAMP_FILE)).st_mtime_ns
    second = builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path), n_cases=3)
    assert second == first and len(calls) == 1
    assert os.stat(Path(first, builtin.STAMP_FILE)).st_mtime_ns == mtime
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]
    # a different size is another dataset, in its own folder
    third = builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path), n_cases=4)
    assert third != first and len(calls) == 2 and Path(first).is_dir()


def test_builtin_version_change_regenerates(tmp_path, monkeypatch):
    name = "natural2d_segmentation"
    calls: list = []
    monkeypatch.setitem(builtin.BUILTIN_DATASETS, name, _counting_spec(name, 1, calls))
    path = builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path), n_cases=2)
    Path(path, "stale_marker").write_text("from version 1", encoding="utf-8")
    monkeypatch.setitem(builtin.BUILTIN_DATASETS, name, _counting_spec(name, 2, calls))
    again = builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path), n_cases=2)
    assert again == path and len(calls) == 2
    assert json.loads(Path(path, builtin.STAMP_FILE).read_text(encoding="utf-8"))["version"] == 2
    assert not Path(path, "stale_marker").exists(), "the old version was replaced, not merged"
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_builtin_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    name = "volume3d_classification"
    calls: list = []
    monkeypatch.setitem(builtin.BUILTIN_DATASETS, name, _counting_spec(name, 1, calls, fail=True))
    with pytest.raises(RuntimeError, match="interrupted"):
        builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path), n_cases=2)
    assert not Path(tmp_path, f"{name}-n2-seed0").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    # a killed process leaves a temporary folder: it never looks complete and is cleaned up next time
    Path(tmp_path, f".{name}-n2-seed0.tmp-999-dead").mkdir()
    monkeypatch.setitem(builtin.BUILTIN_DATASETS, name, _counting_spec(name, 1, calls))
    path = builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path), n_cases=2)
    assert Path(path, builtin.STAMP_FILE).is_file() and len(calls) == 2
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_builtin_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(builtin.CACHE_ENV_VAR, str(tmp_path / "env_cache"))
    assert builtin.default_cache_dir() == str(tmp_path / "env_cache")
    path = builtin.builtin_dataset_dir("natural2d_segmentation", n_cases=1, seed=2)
    assert Path(path).parent == tmp_path / "env_cache" and Path(path).name == "natural2d_segmentation-n1-seed2"
    monkeypatch.delenv(builtin.CACHE_ENV_VAR)
    assert builtin.default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "monai_ext", "data")


@pytest.mark.skipif(sys.platform == "win32", reason="starts the two callers with fork")
def test_builtin_concurrent_callers_generate_once(tmp_path, monkeypatch):
    """Two processes ask for the same missing dataset at once: one generates, the other waits and reuses it."""
    name = "volume3d_classification"
    original = _ORIGINAL_SPECS[name]
    record = tmp_path / "generations.txt"

    def slow_generate(out_dir, n_cases, seed):
        with open(record, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for both callers to overlap
        original.generate(out_dir, n_cases, seed)

    monkeypatch.setitem(builtin.BUILTIN_DATASETS, name, dataclasses.replace(original, generate=slow_generate))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()

    def caller():
        barrier.wait()
        try:
            results.put(builtin.builtin_dataset_dir(name, cache_dir=str(tmp_path / "cache"), n_cases=3))
        except Exception as e:  # reported to the parent
            results.put(repr(e))

    procs = [ctx.Process(target=caller) for _ in range(2)]
    for p in procs:
        p.start()
    paths = {results.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(paths) == 1, paths
    assert len(record.read_text(encoding="utf-8").splitlines()) == 1, "the dataset was generated more than once"
    folder = Path(paths.pop())
    assert len(os.listdir(folder / "images")) == 3 and (folder / builtin.STAMP_FILE).is_file()
    assert not [p for p in os.listdir(tmp_path / "cache") if ".tmp-" in p]


def test_builtin_decathlon_holds_five_valid_tasks(tmp_path):
    root = Path(builtin.builtin_dataset_dir("decathlon", cache_dir=str(tmp_path), n_cases=1))
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(synthetic.SYNTHETIC_DECATHLON_TASKS)
    for name in synthetic.SYNTHETIC_DECATHLON_TASKS:
        assert len(decathlon_datalist(root / name)) == 1
