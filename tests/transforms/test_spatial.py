import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_ext.transforms.spatial import SpacingFromKeyd


def _item(spacing_in, target):
    affine = np.diag([*spacing_in, 1.0])
    image = MetaTensor(torch.rand(1, 20, 20, 10), affine=affine)
    label = MetaTensor((torch.rand(1, 20, 20, 10) > 0.5).float(), affine=affine)
    return {"image": image, "label": label, "target_spacing": target}


def test_each_item_is_resampled_to_its_own_target_spacing():
    t = SpacingFromKeyd(keys=["image", "label"], mode=["bilinear", "nearest"])
    a = t(_item((1.0, 1.0, 2.0), [1.0, 1.0, 1.0]))
    b = t(_item((1.0, 1.0, 2.0), [2.0, 2.0, 2.0]))
    assert a["image"].shape[1:] == (20, 20, 19) and b["image"].shape[1:] == (10, 10, 10)
    np.testing.assert_allclose(a["image"].pixdim, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(b["label"].pixdim, [2.0, 2.0, 2.0])
    assert set(torch.unique(a["label"]).tolist()) <= {0.0, 1.0}  # nearest keeps label values


def test_missing_target_spacing_says_what_to_do():
    item = _item((1.0, 1.0, 1.0), [1, 1, 1])
    del item["target_spacing"]
    with pytest.raises(KeyError, match="multidomain_datalist"):
        SpacingFromKeyd(keys="image")(item)
