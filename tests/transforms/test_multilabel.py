"""Tests of monai_ext.transforms.multilabel: index maps from per-class probabilities and per-class mask files."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_ext.transforms.multilabel import (
    MultiLabelToIndexMap,
    MultiLabelToIndexMapd,
    SaveClassMasks,
    SaveClassMasksd,
    case_name_from_path,
)

AFFINE = np.array([[-1.7, 0.0, 0.0, 60.0], [0.0, -1.7, 0.0, 50.0], [0.0, 0.0, 2.5, -7.0], [0.0, 0.0, 0.0, 1.0]])


def test_case_name_from_path():
    assert case_name_from_path("/data/AbdomenAtlas/BDMAP_00000007/ct.nii.gz") == "BDMAP_00000007"
    assert case_name_from_path("/data/imagesTs/liver_001.nii.gz") == "liver_001"
    assert case_name_from_path("scan.nrrd") == "scan"


def test_index_map_takes_most_probable_class_above_threshold():
    probs = torch.zeros(3, 2, 2, 1)
    probs[:, 0, 0, 0] = torch.tensor([0.9, 0.6, 0.1])  # class 1 wins
    probs[:, 0, 1, 0] = torch.tensor([0.6, 0.2, 0.95])  # class 3 wins although class 1 is also above 0.5
    probs[:, 1, 0, 0] = torch.tensor([0.5, 0.4, 0.3])  # nothing strictly above 0.5 -> background
    probs[:, 1, 1, 0] = torch.tensor([0.1, 0.7, 0.2])
    out = MultiLabelToIndexMap(threshold=0.5)(probs)
    assert out.shape == (1, 2, 2, 1) and out.dtype == torch.uint8
    assert out[0, :, :, 0].tolist() == [[1, 3], [0, 2]]


def test_index_map_keeps_meta_and_refuses_too_many_classes():
    probs = MetaTensor(torch.rand(4, 3, 3, 3), affine=torch.as_tensor(AFFINE))
    out = MultiLabelToIndexMap()(probs)
    assert isinstance(out, MetaTensor) and torch.allclose(out.affine, probs.affine)
    with pytest.raises(ValueError, match="int16"):
        MultiLabelToIndexMap()(torch.rand(300, 2, 2, 2))
    with pytest.raises(ValueError, match="per-class probabilities"):
        MultiLabelToIndexMap()(torch.rand(5))


def test_index_map_dict_writes_output_key():
    probs = torch.eye(2)[:, :, None, None].expand(2, 2, 3, 3)
    d = MultiLabelToIndexMapd("pred", output_keys="combined")({"pred": probs})
    assert set(d) == {"pred", "combined"} and d["combined"][0, :, 0, 0].tolist() == [1, 2]
    with pytest.raises(ValueError, match="output_keys"):
        MultiLabelToIndexMapd(["a", "b"], output_keys="c")


def test_save_class_masks_writes_one_file_per_class_with_the_affine(tmp_path: Path):
    classes = ("liver", "spleen")
    masks = torch.zeros(2, 4, 5, 6)
    masks[0, :2] = 1
    masks[1, 3:] = 1
    meta = {"filename_or_obj": "/data/BDMAP_00000009/ct.nii.gz"}
    masks = MetaTensor(masks, affine=torch.as_tensor(AFFINE), meta=meta)
    index = MultiLabelToIndexMap()(masks)
    written = SaveClassMasks(classes, tmp_path)(masks, index_map=index)
    assert sorted(p.name for p in written) == ["combined_labels.nii.gz", "liver.nii.gz", "spleen.nii.gz"]
    for c, name in enumerate(classes):
        img = nib.load(tmp_path / "BDMAP_00000009" / f"{name}.nii.gz")
        assert img.shape == (4, 5, 6) and img.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(img.dataobj), masks[c].numpy().astype(np.uint8))
    combined = np.asarray(nib.load(tmp_path / "BDMAP_00000009" / "combined_labels.nii.gz").dataobj)
    assert combined[0].max() == 1 and combined[3].max() == 2 and combined[2].max() == 0


def test_save_class_masks_dict_uses_case_key_and_checks_channels(tmp_path: Path):
    masks = MetaTensor(torch.ones(2, 3, 3, 3), affine=torch.as_tensor(AFFINE))
    item = {"pred": masks, "case": "case_a"}
    out = SaveClassMasksd("pred", ["a", "b"], tmp_path)(item)
    assert out["pred"] is masks
    assert (tmp_path / "case_a" / "a.nii.gz").is_file() and (tmp_path / "case_a" / "b.nii.gz").is_file()
    with pytest.raises(ValueError, match="3 classes"):
        SaveClassMasks(["a", "b", "c"], tmp_path)(masks, case="x")
    with pytest.raises(ValueError, match="no case name"):
        SaveClassMasks(["a", "b"], tmp_path)(torch.ones(2, 3, 3, 3))
    with pytest.raises(ValueError, match="distinct"):
        SaveClassMasks(["a", "a"], tmp_path)
    with pytest.raises(ValueError, match="also a class name"):
        SaveClassMasks(["combined_labels"], tmp_path)
