import os
"""Multi-domain datalists for Med3D co-training, on the real Hippocampus and ACDC folders and on built-in data."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_ext.data.datalists import DatalistError
from monai_ext.data.multidomain import (
    domain_sampling_weights,
    load_domains,
    median_spacing,
    multidomain_datalist,
    save_domains,
    volume_spacing_ras,
)

SHARED = Path(os.environ.get("MONAI_EXT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
HIPPO, ACDC = SHARED / "Task04_Hippocampus", SHARED / "ACDC"
needs_real = pytest.mark.skipif(not (HIPPO.exists() and ACDC.exists()), reason="shared real data not available")


def _task(root: Path, name: str, spacings, labels=("background", "organ")) -> Path:
    task = root / name
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    training = []
    for i, sp in enumerate(spacings):
        affine = np.diag([*sp, 1.0])
        img = np.random.default_rng(i).normal(size=(8, 9, 10)).astype(np.float32)
        lab = (img > 1).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, affine), task / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), task / "labelsTr" / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {
        "name": name, "modality": {"0": "CT"}, "labels": {str(i): l for i, l in enumerate(labels)},
        "numTraining": len(training), "numTest": 0, "training": training, "test": [],
    }  # fmt: skip
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return task


def test_spacing_is_reported_in_ras_axis_order(tmp_path):
    affine = np.array([[0, 0, 3.0, 0], [-0.5, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]])  # voxel axes permuted
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine), tmp_path / "v.nii.gz")
    assert volume_spacing_ras(str(tmp_path / "v.nii.gz")) == (3.0, 0.5, 2.0)


def test_items_carry_domain_and_their_own_datasets_median_spacing(tmp_path):
    _task(tmp_path, "TaskA", [(1, 1, 1), (1, 1, 3), (1, 1, 2), (1, 1, 2), (1, 1, 2)])
    _task(tmp_path, "TaskB", [(2, 2, 5)] * 4, labels=("background", "a", "b"))
    dl = multidomain_datalist(str(tmp_path), ["TaskA", "TaskB"], val_fraction=0.25, seed=1)
    assert [d["name"] for d in dl["domains"]] == ["TaskA", "TaskB"]
    assert [d["num_classes"] for d in dl["domains"]] == [2, 3]
    assert dl["domains"][0]["spacing"] == [1.0, 1.0, 2.0] and dl["domains"][1]["spacing"] == [2.0, 2.0, 5.0]
    for item in dl["training"] + dl["validation"]:
        assert item["target_spacing"] == dl["domains"][item["domain"]]["spacing"]
        assert item["domain_name"] == dl["domains"][item["domain"]]["name"]
    assert len(dl["training"]) + len(dl["validation"]) == 9
    # the first validation cases cover every dataset (interleaved), so max_val_cases keeps all domains
    assert {it["domain"] for it in dl["validation"][:2]} == {0, 1}
    # same seed, same split
    again = multidomain_datalist(str(tmp_path), ["TaskA", "TaskB"], val_fraction=0.25, seed=1)
    assert [it["image"] for it in again["validation"]] == [it["image"] for it in dl["validation"]]


def test_balanced_sampling_gives_each_dataset_the_same_share():
    items = [{"domain": 0}] * 30 + [{"domain": 1}] * 10
    w = np.array(domain_sampling_weights(items, "balanced"))
    assert w[:30].sum() == pytest.approx(0.5) and w[30:].sum() == pytest.approx(0.5)
    w = np.array(domain_sampling_weights(items, "proportional"))
    assert w[:30].sum() == pytest.approx(0.75)
    w = np.array(domain_sampling_weights(items, "temperature", temperature=1e6))
    assert w[:30].sum() == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="balanced"):
        domain_sampling_weights(items, "uniformish")


def test_missing_task_folder_says_what_to_do(tmp_path):
    with pytest.raises(DatalistError, match="dataset_dir"):
        multidomain_datalist(str(tmp_path), ["Task01_BrainTumour"])
    with pytest.raises(DatalistError, match="at least one"):
        multidomain_datalist(str(tmp_path), [])


def test_domains_round_trip(tmp_path):
    _task(tmp_path, "TaskA", [(1, 1, 1)] * 3)
    dl = multidomain_datalist(str(tmp_path), ["TaskA"], val_fraction=0.34)
    path = save_domains(dl["domains"], str(tmp_path / "models" / "domains.json"))
    back = load_domains(path)
    assert back[0]["name"] == "TaskA" and back[0]["labels"] == {0: "background", 1: "organ"}
    with pytest.raises(FileNotFoundError, match="Train first"):
        load_domains(str(tmp_path / "absent.json"))


@needs_real
def test_real_hippocampus_and_acdc_as_two_domains():
    dl = multidomain_datalist("/", [str(HIPPO), str(ACDC)], val_fraction=0.2, seed=0)
    hippo, acdc = dl["domains"]
    assert hippo["num_classes"] == 3 and acdc["num_classes"] == 4
    assert hippo["spacing"] == [1.0, 1.0, 1.0]  # 1 mm isotropic
    assert acdc["spacing"] == [1.0, 1.0, 1.0]  # the affines of this copy are identities
    assert hippo["num_training"] + hippo["num_validation"] == 260
    # ACDC has its own patient-level splits.json: 140 train / 20 val volumes, no patient on both sides
    assert (acdc["num_training"], acdc["num_validation"]) == (140, 20)
    patients = lambda items: {Path(i["image"]).name.split("_")[0] for i in items if i["domain"] == 1}
    assert not patients(dl["training"]) & patients(dl["validation"])


def test_median_spacing_of_empty_dataset_is_an_error():
    with pytest.raises(DatalistError):
        median_spacing([])
