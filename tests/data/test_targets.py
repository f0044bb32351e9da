"""Fine-tuning targets: fixed validation split, nested label-fraction subsets, class names from the dataset."""

import os

import pytest

from tests.conftest import SHARED_DATA

from monai_ext.data.builtin import builtin_dataset_dir
from monai_ext.data.datalists import DatalistError
from monai_ext.data.targets import fine_tuning_target, label_fraction_subset


def test_subsets_are_nested_and_seeded():
    items = [{"image": str(i)} for i in range(40)]
    small, mid, full = (label_fraction_subset(items, f, seed=3) for f in (0.1, 0.25, 1.0))
    assert len(small) == 4 and len(mid) == 10 and full == items
    assert all(it in mid for it in small)
    assert label_fraction_subset(items, 0.25, seed=4) != mid
    assert len(label_fraction_subset(items[:3], 0.01)) == 1
    with pytest.raises(ValueError, match="label_fraction"):
        label_fraction_subset(items, 0.0)


def test_segmentation_target_keeps_validation_fixed():
    task = os.path.join(builtin_dataset_dir("decathlon"), "Task105_SynthKidneyCT")
    full = fine_tuning_target(task, label_fraction=1.0, subset_seed=0)
    quarter = fine_tuning_target(task, label_fraction=0.25, subset_seed=1)
    assert full["validation"] == quarter["validation"] and full["class_names"] == ["background", "kidney", "lesion"]
    assert len(quarter["training"]) == -(-len(full["training"]) // 4)
    assert all(item in full["training"] for item in quarter["training"])
    assert full["layout"] == "decathlon" and full["num_classes"] == 3


def test_classification_target_reads_classes_json():
    target = fine_tuning_target(builtin_dataset_dir("volume3d_classification"), max_val_cases=5)
    assert target["class_names"] == ["no_nodule", "solid_nodule", "spiculated_nodule"]
    assert len(target["validation"]) == 5 and isinstance(target["training"][0]["label"], int)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(DatalistError):
        fine_tuning_target(tmp_path)


@pytest.mark.skipif(not (SHARED_DATA / "Task04_Hippocampus").is_dir(), reason="real data not found (MONAI_EXT_SHARED_DATA)")
def test_real_hippocampus_target():
    target = fine_tuning_target(SHARED_DATA / "Task04_Hippocampus", label_fraction=0.1)
    assert target["class_names"] == ["background", "Anterior", "Posterior"]
    assert len(target["validation"]) == 52 and len(target["training"]) == 21
