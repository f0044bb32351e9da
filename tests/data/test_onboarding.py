"""Tests of ``monai_ext.data.onboarding`` and ``monai-ext onboard``: real folders (read-only, with a cap on the cases
whose voxels are read), generated data, and broken folders."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_ext.cli import main
from monai_ext.data.datalists import DatalistError
from monai_ext.data.onboarding import BUNDLE_DATASET_SETTINGS, onboard_dataset
from monai_ext.data.synthetic import write_abdomenatlas, write_decathlon_task

SHARED_DATA = Path(os.environ.get("MONAI_EXT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
HIPPOCAMPUS = SHARED_DATA / "Task04_Hippocampus"
ACDC = SHARED_DATA / "ACDC"
HYMENOPTERA = SHARED_DATA / "hymenoptera_data"
needs = {
    name: pytest.mark.skipif(not path.is_dir(), reason=f"real data folder {path} not available")
    for name, path in (("hippocampus", HIPPOCAMPUS), ("acdc", ACDC), ("hymenoptera", HYMENOPTERA))
}
BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _check_bundle_commands(markdown: str) -> int:
    """Every ``--setting`` of every bundle command in the report is a top-level entry of that bundle's train.json."""
    checked = 0
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        m = re.search(r"bundles/(\w+)/configs/train\.json", block)
        assert m, f"a command without a bundle config: {block}"
        assert m.group(1) in BUNDLE_DATASET_SETTINGS
        train = BUNDLES / m.group(1) / "configs" / "train.json"
        if not train.is_file():
            continue
        keys = set(json.loads(train.read_text(encoding="utf-8")))
        for setting in re.findall(r"--(\w+)", block):
            if setting != "config_file":
                assert setting in keys, f"--{setting} is not a setting of {train}"
                checked += 1
    return checked


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


# ----------------------------------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------------------------------
@needs["hippocampus"]
def test_cli_onboard_hippocampus(tmp_path, capsys):
    datalist, report = tmp_path / "hippo.json", tmp_path / "hippo.md"
    argv = ["onboard", str(HIPPOCAMPUS), "-o", str(datalist), "--report", str(report), "--max-cases", "5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "260 usable image/label pairs, 0 errors" in out and "verdict: ready" in out
    items = json.loads(datalist.read_text(encoding="utf-8"))
    assert len(items) == 260 and items[0]["image"].startswith(str(HIPPOCAMPUS))
    md = report.read_text(encoding="utf-8")
    assert "- Layout: **decathlon** (detected)" in md
    assert "- Classes: 0 background, 1 Anterior, 2 Posterior" in md
    assert "| usable image/label pairs (in the datalist) | 260 |" in md
    assert "Voxels read for 5 of 260 cases that passed the header checks (`--max-cases 5`)" in md
    assert re.search(r"\| 1 \| Anterior \| 5 of 5 \| \d+\.\d+% \|", md)
    assert "| 0 | MRI |" in md  # intensity row of the single channel
    assert "- Orientation (axis codes): RAS (260)" in md
    assert "- Data types on disk: float32 (205), uint8 (55)" in md
    assert f"'Task104_SynthSpleenCT', '{HIPPOCAMPUS}']" in md  # added as a new co-training domain
    assert f"--dataset_dir {HIPPOCAMPUS}" in md
    assert "this dataset is MR" in md  # not AbdomenAtlas material
    assert _check_bundle_commands(md) >= 2


@needs["acdc"]
def test_onboard_acdc_flags_identity_affines_and_uses_its_split(tmp_path):
    onboarding = onboard_dataset(ACDC, max_cases=3)
    assert onboarding.layout == "decathlon" and len(onboarding.datalist) == 200 and onboarding.n_cases_read == 3
    assert onboarding.class_names == {0: "background", 1: "right_ventricle", 2: "myocardium", 3: "left_ventricle"}
    assert onboarding.identity_affines() and not onboarding.spacing_outliers()
    assert onboarding.splits_file == str(ACDC / "splits.json")
    (channel,) = onboarding.intensities
    assert channel.minimum >= 0 and channel.maximum <= 1 and channel.n_images == 3
    md = onboarding.to_markdown()
    assert "**Every affine is the identity**" in md
    assert "Intensities lie in [0, 1]" in md
    assert "Its `splits.json` decides the train/val split." in md
    _check_bundle_commands(md)


@needs["hymenoptera"]
def test_onboard_image_folder(tmp_path):
    onboarding = onboard_dataset(HYMENOPTERA, max_cases=3)
    assert onboarding.layout == "image_folder" and onboarding.class_names == {0: "ants", 1: "bees"}
    assert not onboarding.is_volume and len(onboarding.datalist) > 200
    assert [c.channel for c in onboarding.intensities] == [0, 1, 2]  # RGB
    md = onboarding.to_markdown()
    assert "| 0 | ants |" in md and "bundles/transfer_classification" in md and "--train_split train" in md
    _check_bundle_commands(md)


# ----------------------------------------------------------------------------------------------------------------------
# Generated data
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spleen_task(tmp_path_factory) -> Path:
    return Path(write_decathlon_task(tmp_path_factory.mktemp("gen"), "Task104_SynthSpleenCT", n_cases=3))


def test_generated_ct_task_is_ready_and_fits_abdomenatlas(spleen_task, tmp_path):
    onboarding = onboard_dataset(spleen_task)
    assert onboarding.verdict() == "ready", onboarding.summary()
    assert len(onboarding.datalist) == 3 and onboarding.n_cases_read == 3
    assert set(onboarding.label_values[onboarding.datalist[0]["label"]]) <= {0, 1}
    assert onboarding.intensities[0].minimum <= -900
    md = onboarding.to_markdown()
    assert "Intensities look like CT Hounsfield units" in md
    assert "Classes of this dataset that are AbdomenAtlas classes: spleen." in md
    assert "--partial_labels True" in md
    assert _check_bundle_commands(md) >= 4
    path = onboarding.write_datalist(tmp_path / "sub" / "dl.json")
    assert json.loads(Path(path).read_text(encoding="utf-8")) == onboarding.datalist


def test_max_cases_limits_the_voxels_read(spleen_task):
    onboarding = onboard_dataset(spleen_task, max_cases=2)
    assert onboarding.n_cases_read == 2 and len(onboarding.label_values) == 2 and len(onboarding.datalist) == 3
    assert onboarding.intensities[0].n_images == 2


def test_generated_abdomenatlas_folder(tmp_path):
    root = Path(write_abdomenatlas(tmp_path / "atlas", n_cases=2, classes=("liver", "spleen", "kidney_left")))
    onboarding = onboard_dataset(root)
    assert onboarding.layout == "abdomenatlas"
    assert onboarding.class_names == {0: "background", 3: "kidney_left", 5: "liver", 8: "spleen"}
    assert not onboarding.undeclared and len(onboarding.datalist) == 2
    md = onboarding.to_markdown()
    assert "--classes \"['kidney_left', 'liver', 'spleen']\" --partial_labels True" in md
    _check_bundle_commands(md)


def test_generated_nnunet_dataset_with_an_image_without_label(tmp_path):
    root = tmp_path / "Dataset001_Tiny"
    rng = np.random.default_rng(0)
    def noise() -> np.ndarray:
        return rng.normal(size=(8, 8, 4)).astype(np.float32)

    for i in range(3):
        for c in range(2):
            _save(root / "imagesTr" / f"case{i}_{c:04d}.nii.gz", noise(), np.eye(4))
        _save(root / "labelsTr" / f"case{i}.nii.gz", (rng.uniform(size=(8, 8, 4)) * 3).astype(np.uint8), np.eye(4))
    _save(root / "imagesTr" / "lonely_0000.nii.gz", noise(), np.eye(4))
    meta = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 3,
            "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    onboarding = onboard_dataset(root)
    assert onboarding.layout == "nnunet" and len(onboarding.datalist) == 3
    assert [(c.channel, c.name) for c in onboarding.intensities] == [(0, "T1"), (1, "T2")]
    assert str(root / "imagesTr" / "lonely_0000.nii.gz") in onboarding.unpaired
    assert onboarding.verdict().startswith("usable after fixes")  # the bundles' datalist builder stops on it
    md = onboarding.to_markdown()
    assert "convert this nnU-Net v2 dataset first" in md and "--image_channel K" in md
    _check_bundle_commands(md)


def test_generated_2d_image_mask_folder(tmp_path):
    from monai_ext.data.synthetic import write_image_mask_segmentation

    onboarding = onboard_dataset(write_image_mask_segmentation(tmp_path / "shapes", n=4))
    assert not onboarding.is_volume and len(onboarding.datalist) == 4
    assert len(onboarding.intensities) == 3 and not onboarding.spacing_outliers()
    assert set(onboarding.label_voxels) <= {0, 1, 2, 3}
    md = onboarding.to_markdown()
    assert "2D images: the Med3D co-training" in md and "bundles/med3d_3dseg8_cotraining" not in md
    _check_bundle_commands(md)


@pytest.fixture()
def broken_task(spleen_task, tmp_path) -> Path:
    """The generated task plus one entry per kind of problem."""
    task = tmp_path / "Task999_Broken"
    shutil.copytree(spleen_task, task)
    meta = json.loads((task / "dataset.json").read_text(encoding="utf-8"))
    img0, lab0 = task / "imagesTr" / "spleen_001.nii.gz", task / "labelsTr" / "spleen_001.nii.gz"
    image, label = nib.load(img0), nib.load(lab0)
    affine, data, seg = image.affine, np.asarray(image.dataobj), np.asarray(label.dataobj)

    def add(case: str, image_array, label_array=None, case_affine=None, label_affine=None) -> None:
        a = affine if case_affine is None else case_affine
        _save(task / "imagesTr" / f"{case}.nii.gz", image_array, a)
        entry = {"image": f"./imagesTr/{case}.nii.gz"}
        if label_array is not None:
            _save(task / "labelsTr" / f"{case}.nii.gz", label_array, a if label_affine is None else label_affine)
            entry["label"] = f"./labelsTr/{case}.nii.gz"
        meta["training"].append(entry)

    add("truncated", data, seg)
    blob = (task / "imagesTr" / "truncated.nii.gz").read_bytes()
    (task / "imagesTr" / "truncated.nii.gz").write_bytes(blob[: len(blob) // 2])
    add("crc", data, seg)  # a flipped byte inside the stream: the header and size trailer still look fine
    raw = gzip.decompress((task / "imagesTr" / "crc.nii.gz").read_bytes())
    stream = bytearray(gzip.compress(raw))
    stream[len(stream) // 2] ^= 0xFF
    (task / "imagesTr" / "crc.nii.gz").write_bytes(bytes(stream))
    add("nolabel", data)
    add("badvalues", data, np.where(seg > 0, 7, 0).astype(np.uint8))
    add("shape", data, seg[:-4])
    stretched = affine.copy()
    stretched[:3, :3] *= 3.0
    add("spacing", data, seg, stretched)
    flipped = affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
    add("flipped", data, seg, flipped)
    add("bright", data.astype(np.float32) * 100.0, seg)  # scaled differently from the others
    _save(task / "imagesTr" / "unlisted.nii.gz", data, affine)  # an image dataset.json does not list
    _save(task / "labelsTr" / "orphan.nii.gz", seg, affine)  # a label no entry uses
    meta["numTraining"] = len(meta["training"])
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return task


def test_broken_task_names_every_problem_and_keeps_the_good_pairs(broken_task, tmp_path, capsys):
    t = broken_task
    onboarding = onboard_dataset(t)
    usable = sorted(Path(it["image"]).name for it in onboarding.datalist)
    assert usable == sorted(["spleen_001.nii.gz", "spleen_002.nii.gz", "spleen_003.nii.gz", "spacing.nii.gz",
                             "flipped.nii.gz", "bright.nii.gz"])  # fmt: skip
    excluded = {Path(p).name: why for p, why in onboarding.excluded.items()}
    assert set(excluded) == {"truncated.nii.gz", "crc.nii.gz", "nolabel.nii.gz", "badvalues.nii.gz", "shape.nii.gz"}
    unreadable = {Path(p.path).name for p in onboarding.unreadable}
    assert {"truncated.nii.gz", "crc.nii.gz"} <= unreadable
    assert onboarding.undeclared == {str(t / "labelsTr" / "badvalues.nii.gz"): [7]}
    assert str(t / "imagesTr" / "unlisted.nii.gz") in onboarding.unpaired
    assert str(t / "labelsTr" / "orphan.nii.gz") in onboarding.unpaired
    assert str(t / "imagesTr" / "nolabel.nii.gz") in onboarding.unpaired
    assert list(onboarding.spacing_outliers()) == [str(t / "imagesTr" / "spacing.nii.gz")]
    assert list(onboarding.orientation_outliers()) == [str(t / "imagesTr" / "flipped.nii.gz")]
    assert list(onboarding.intensity_outliers()) == [str(t / "imagesTr" / "bright.nii.gz")]
    assert onboarding.verdict().startswith("usable after fixes")

    report = tmp_path / "broken.md"
    assert main(["onboard", str(t), "-o", str(tmp_path / "broken.json"), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "unreadable:" in out and "undeclared label values:" in out
    assert len(json.loads((tmp_path / "broken.json").read_text(encoding="utf-8"))) == 6
    md = report.read_text(encoding="utf-8")
    for needle in (
        f"`{t / 'imagesTr' / 'truncated.nii.gz'}` (corrupt)",
        f"`{t / 'imagesTr' / 'crc.nii.gz'}` (corrupt)",
        f"`{t / 'imagesTr' / 'unlisted.nii.gz'}`: image on disk that dataset.json does not list",
        f"`{t / 'labelsTr' / 'orphan.nii.gz'}`: label on disk that no entry of dataset.json uses",
        f"`{t / 'labelsTr' / 'shape.nii.gz'}` (shape_mismatch)",
        f"`{t / 'labelsTr' / 'badvalues.nii.gz'}`: [7]",
        "| 7 | **not declared** |",
        f"`{t / 'imagesTr' / 'spacing.nii.gz'}`: (",
        f"`{t / 'imagesTr' / 'flipped.nii.gz'}`: RPS",
        f"`{t / 'imagesTr' / 'bright.nii.gz'}`: 4.",
        "- Data types on disk: int16 (5), float32 (1)",
        "stop on the errors listed above",
    ):
        assert needle in md, needle


def test_empty_and_unknown_folders_are_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatalistError, match="is empty"):
        onboard_dataset(tmp_path / "empty")
    assert main(["onboard", str(tmp_path / "empty"), "-o", str(tmp_path / "dl.json")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "dl.json").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DatalistError, match="no known dataset layout"):
        onboard_dataset(tmp_path / "other")
    with pytest.raises(ValueError, match="max_cases"):
        onboard_dataset(tmp_path / "other", max_cases=-1)


def test_bundle_settings_named_in_reports_exist_in_the_bundles():
    checked = 0
    for name, spec in BUNDLE_DATASET_SETTINGS.items():
        train = BUNDLES / name / "configs" / "train.json"
        if not train.is_file():
            continue
        keys = set(json.loads(train.read_text(encoding="utf-8")))
        missing = [s for s in spec["settings"] if s not in keys]
        assert not missing, f"{name}: {missing} are not settings of {train}"
        checked += 1
    assert checked >= 3
