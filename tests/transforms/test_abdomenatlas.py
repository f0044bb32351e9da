"""Tests of monai_ext.transforms.abdomenatlas on small synthetic BDMAP folders."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, Orientationd, Spacingd

from monai_ext.data.abdomenatlas_classes import ABDOMENATLAS_1_0_CLASSES, ABDOMENATLAS_CLASSES, SUPREM_CLASSES_32
from monai_ext.transforms.abdomenatlas import (
    AssembleMultiHotLabel,
    AssembleMultiHotLabelD,
    AssembleMultiHotLabeld,
    class_order_map,
    remap_channels,
)

# permuted, flipped, anisotropic voxel axes with an offset: far from the 1 mm RAS a label without affine assumes
AFFINE = np.array([[0.0, 0.0, -3.0, 50.0], [-2.0, 0.0, 0.0, 20.0], [0.0, 1.2, 0.0, -10.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (20, 16, 12)


def _save(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _case(root: Path, masks: dict, name: str = "BDMAP_00000001", combined: np.ndarray | None = None) -> dict:
    """Write ct.nii.gz (bright where the liver is), the given masks and optionally combined_labels.nii.gz."""
    case = root / name
    (case / "segmentations").mkdir(parents=True)
    ct = np.full(SHAPE, -100.0, dtype=np.float32)
    if "liver" in masks:
        ct[masks["liver"] > 0] = 1000.0
    _save(ct, case / "ct.nii.gz")
    for cls, mask in masks.items():
        _save(mask.astype(np.uint8), case / "segmentations" / f"{cls}.nii.gz")
    item = {"image": str(case / "ct.nii.gz"), "label_dir": str(case / "segmentations"), "case": name}
    if combined is not None:
        _save(combined.astype(np.uint8), case / "combined_labels.nii.gz")
        item["combined_label"] = str(case / "combined_labels.nii.gz")
    return item


def _box(slices) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[slices] = 1
    return mask


LIVER = _box(np.s_[3:11, 4:12, 2:7])
SPLEEN = _box(np.s_[14:18, 1:4, 8:11])
AORTA = _box(np.s_[0:2, 0:2, 0:2])


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_channels_follow_requested_order_and_carry_ct_affine(tmp_path):
    item = _case(tmp_path, {"liver": LIVER, "spleen": SPLEEN, "aorta": AORTA})
    load = LoadImaged("image", ensure_channel_first=True)
    data = Compose([load, AssembleMultiHotLabeld(classes=("spleen", "liver"))])(item)
    label = data["label"]
    assert isinstance(label, MetaTensor) and label.shape == (2, *SHAPE) and label.dtype == torch.int8
    assert torch.equal(label[0], torch.from_numpy(SPLEEN).to(torch.int8))
    assert torch.equal(label[1], torch.from_numpy(LIVER).to(torch.int8))
    assert torch.allclose(label.affine, data["image"].affine)
    assert np.allclose(label.affine.numpy(), AFFINE)


def test_label_stays_aligned_after_orientation_and_spacing(tmp_path):
    item = _case(tmp_path, {"liver": LIVER, "spleen": SPLEEN})
    loaded = Compose([LoadImaged("image", ensure_channel_first=True), AssembleMultiHotLabeld(classes=("liver",))])(item)
    resample = Compose(
        [
            Orientationd(["image", "label"], axcodes="RAS", labels=None),
            Spacingd(["image", "label"], pixdim=1.5, mode=("bilinear", "nearest")),
        ]
    )
    out = resample(dict(loaded))
    bright, label = out["image"][0] > 450, out["label"][0] > 0
    assert out["image"].shape[1:] == out["label"].shape[1:]
    assert bright.sum() > 100 and _dice(bright, label) > 0.9

    # the reference code's bug: the same label without the CT's affine (treated as 1 mm RAS) misses the organ
    wrong = dict(loaded)
    wrong["label"] = MetaTensor(loaded["label"].as_tensor().clone(), affine=torch.eye(4, dtype=torch.float64))
    out_wrong = resample(wrong)
    assert out_wrong["label"].shape[1:] != out_wrong["image"].shape[1:]
    image_shape, label_shape = out_wrong["image"].shape[1:], out_wrong["label"].shape[1:]
    common = tuple(slice(0, min(a, b)) for a, b in zip(image_shape, label_shape))
    assert _dice(out_wrong["image"][0][common] > 450, out_wrong["label"][0][common] > 0) < 0.5


def test_reference_may_be_the_ct_path(tmp_path):
    item = _case(tmp_path, {"liver": LIVER})
    label = AssembleMultiHotLabelD(classes=("liver",))(item)["label"]
    assert label.shape == (1, *SHAPE) and np.allclose(label.affine.numpy(), AFFINE)
    assert np.allclose(np.asarray(label.meta["original_affine"]), AFFINE)


def test_missing_mask_error_names_case_and_class(tmp_path):
    item = _case(tmp_path, {"liver": LIVER}, name="BDMAP_00000042")
    with pytest.raises(FileNotFoundError, match=r"BDMAP_00000042.*'spleen'"):
        AssembleMultiHotLabeld(classes=("liver", "spleen"))(item)


def test_missing_mask_unknown_channel(tmp_path):
    masks = {c: (LIVER if c == "liver" else np.zeros(SHAPE, np.uint8)) for c in ABDOMENATLAS_1_0_CLASSES}
    item = _case(tmp_path, masks)  # an AbdomenAtlas 1.0 case: 9 masks
    label = AssembleMultiHotLabeld(missing="unknown", unknown_value=-1)(item)["label"]
    assert label.shape == (25, *SHAPE)
    assert torch.all(label[9:] == -1)  # classes 10..25 not annotated
    assert torch.equal(label[ABDOMENATLAS_CLASSES.index("liver")], torch.from_numpy(LIVER).to(torch.int8))
    assert set(torch.unique(label[:9]).tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="cannot be stored"):
        AssembleMultiHotLabel(missing="unknown", unknown_value=-1, dtype=torch.uint8)


def test_affine_mismatch_names_case_class_and_both_affines(tmp_path):
    item = _case(tmp_path, {"liver": LIVER})
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    _save(SPLEEN, Path(item["label_dir"]) / "spleen.nii.gz", affine=shifted)
    with pytest.raises(ValueError, match=r"BDMAP_00000001.*'spleen'") as error:
        AssembleMultiHotLabeld(classes=("liver", "spleen"))(item)
    assert "55." in str(error.value) and "50." in str(error.value)  # both translations are shown


def test_shape_mismatch_and_transformed_ct_are_refused(tmp_path):
    item = _case(tmp_path, {"liver": LIVER})
    _save(np.zeros((4, 4, 4), np.uint8), Path(item["label_dir"]) / "spleen.nii.gz")
    with pytest.raises(ValueError, match=r"'spleen'.*shape"):
        AssembleMultiHotLabeld(classes=("spleen",))(item)
    # a CT that was already reoriented no longer matches the masks on disk
    loaded = Compose([LoadImaged("image", ensure_channel_first=True), Orientationd("image", axcodes="RAS")])(item)
    with pytest.raises(ValueError, match="before"):
        AssembleMultiHotLabeld(classes=("liver",))(loaded)


def test_combined_labels_fallback(tmp_path):
    combined = np.zeros(SHAPE, np.uint8)
    combined[LIVER > 0] = ABDOMENATLAS_CLASSES.index("liver") + 1
    combined[SPLEEN > 0] = ABDOMENATLAS_CLASSES.index("spleen") + 1
    item = _case(tmp_path, {}, combined=combined)
    label = AssembleMultiHotLabeld(classes=("spleen", "liver", "rectum"))(item)["label"]
    assert torch.equal(label[0], torch.from_numpy(SPLEEN).to(torch.int8))
    assert torch.equal(label[1], torch.from_numpy(LIVER).to(torch.int8))
    assert label[2].sum() == 0  # annotated (AbdomenAtlas 1.1 map) but absent
    # without the datalist entry the file next to segmentations/ is found
    del item["combined_label"]
    assert torch.equal(AssembleMultiHotLabeld(classes=("spleen", "liver", "rectum"))(item)["label"], label)
    # an AbdomenAtlas 1.0 map only annotates 9 classes: rectum is unknown, not empty
    as_1_0 = AssembleMultiHotLabeld(
        classes=("liver", "rectum"), combined_classes=ABDOMENATLAS_1_0_CLASSES, missing="unknown"
    )(item)["label"]
    assert torch.equal(as_1_0[0], label[1]) and torch.all(as_1_0[1] == -1)
    with pytest.raises(FileNotFoundError, match="'rectum'"):
        AssembleMultiHotLabeld(classes=("rectum",), combined_classes=ABDOMENATLAS_1_0_CLASSES)(item)
    with pytest.raises(ValueError, match="index 8"):
        AssembleMultiHotLabeld(classes=("liver",), combined_classes=("aorta", "gall_bladder"))(item)


def test_no_labels_at_all(tmp_path):
    item = _case(tmp_path, {})
    with pytest.raises(FileNotFoundError, match=r"BDMAP_00000001.*none of the 25"):
        AssembleMultiHotLabeld()(item)


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="missing="):
        AssembleMultiHotLabel(missing="zero")
    with pytest.raises(ValueError, match="distinct"):
        AssembleMultiHotLabel(classes=("liver", "liver"))
    with pytest.raises(ValueError, match="one label"):
        AssembleMultiHotLabeld(keys=("label", "label2"))
    with pytest.raises(KeyError, match="image"):
        AssembleMultiHotLabeld()({"label_dir": str(tmp_path)})


def test_class_order_map_between_abdomenatlas_and_suprem():
    to_suprem = class_order_map(ABDOMENATLAS_CLASSES, SUPREM_CLASSES_32, allow_missing=True)
    assert to_suprem[0] == ABDOMENATLAS_CLASSES.index("spleen") == 7
    assert to_suprem[25:] == [-1] * 7  # tumours are not AbdomenAtlas classes
    to_atlas = class_order_map(SUPREM_CLASSES_32, ABDOMENATLAS_CLASSES)
    assert [SUPREM_CLASSES_32[i] for i in to_atlas] == list(ABDOMENATLAS_CLASSES)
    with pytest.raises(ValueError, match="kidney_tumor"):
        class_order_map(ABDOMENATLAS_CLASSES, SUPREM_CLASSES_32)
    with pytest.raises(ValueError, match="more than once"):
        class_order_map(("a", "a"), ("a",))


def test_remap_channels_weights_labels_and_round_trip():
    weight = torch.arange(32, dtype=torch.float32).reshape(32, 1, 1, 1, 1).repeat(1, 4, 1, 1, 1)
    atlas = remap_channels(weight, SUPREM_CLASSES_32, ABDOMENATLAS_CLASSES)
    assert atlas.shape == (25, 4, 1, 1, 1)
    assert atlas[ABDOMENATLAS_CLASSES.index("aorta"), 0].item() == SUPREM_CLASSES_32.index("aorta")
    back = remap_channels(atlas, ABDOMENATLAS_CLASSES, SUPREM_CLASSES_32, fill=0.0)
    assert torch.equal(back[:25], weight[:25]) and torch.all(back[25:] == 0)

    batch = torch.rand(2, 3, 4)
    swapped = remap_channels(batch, ("a", "b", "c"), ("c", "a"), dim=1)
    assert torch.equal(swapped, batch[:, [2, 0]])
    swapped[0, 0, 0] = 5.0
    assert batch[0, 2, 0] != 5.0  # a copy, not a view

    label = np.stack([np.zeros(3), np.ones(3)])
    assert np.array_equal(remap_channels(label, ("x", "y"), ("y", "z"), fill=-1), np.stack([np.ones(3), -np.ones(3)]))
    with pytest.raises(ValueError, match="3 entries"):
        remap_channels(batch, ("a", "b"), ("a",), dim=1)
