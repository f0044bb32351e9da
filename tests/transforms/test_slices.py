"""Tests of monai_ext.transforms.slices: slices of volumes for stage one of dimensional transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, SpatialPadd

from monai_ext.transforms.slices import (
    RandForegroundSlice,
    RandForegroundSliced,
    RandForegroundSliceD,
    foreground_slice_indices,
    slices_to_volume,
    take_slice,
    volume_to_slices,
)


def labelled_volume(depth: int = 6, foreground: tuple[int, ...] = (1, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose slice ``i`` along axis 0 holds the value ``i`` everywhere, and a label with foreground only in
    the slices listed."""
    image = torch.arange(depth, dtype=torch.float32).view(1, depth, 1, 1).expand(1, depth, 5, 4).clone()
    label = torch.zeros(1, depth, 5, 4, dtype=torch.uint8)
    for i in foreground:
        label[0, i, 2, 1] = 2
    return image, label


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_take_slice_removes_the_axis_for_arrays_and_tensors(axis):
    volume = np.random.default_rng(0).random((2, 4, 5, 6)).astype(np.float32)
    expected = np.take(volume, 3, axis=axis + 1)
    np.testing.assert_array_equal(take_slice(volume, axis, 3), expected)
    np.testing.assert_array_equal(take_slice(torch.from_numpy(volume), axis, -1).numpy(), np.take(volume, -1, axis + 1))


def test_take_slice_moves_the_origin_of_a_meta_tensor():
    affine = torch.tensor(
        [[2.0, 0, 0, 10], [0, 3.0, 0, 20], [0, 0, 4.0, 30], [0, 0, 0, 1]], dtype=torch.float64
    )  # voxel sizes 2, 3, 4
    volume = MetaTensor(torch.randn(1, 4, 5, 6), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    out = take_slice(volume, 2, 3)
    assert isinstance(out, MetaTensor) and out.shape == (1, 4, 5)
    expected = torch.tensor([[2.0, 0, 10], [0, 3.0, 20], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(out.affine, expected)  # world axis 2 dropped; its offset (30 + 3 * 4) is not in-plane
    out0 = take_slice(volume, 0, 2)
    torch.testing.assert_close(out0.affine, torch.tensor([[3.0, 0, 20], [0, 4.0, 30], [0, 0, 1]], dtype=torch.float64))
    assert out0.meta["filename_or_obj"] == "case.nii.gz"
    torch.testing.assert_close(out0.as_tensor(), volume.as_tensor()[:, 2])


def test_take_slice_rejects_bad_axes_and_indices():
    with pytest.raises(ValueError, match="out of range"):
        take_slice(torch.zeros(1, 3, 4, 4), 0, 3)
    with pytest.raises(ValueError, match="not a spatial axis"):
        take_slice(torch.zeros(1, 3, 4, 4), 3, 0)


def test_foreground_slice_indices():
    _, label = labelled_volume(foreground=(1, 4))
    foreground, background = foreground_slice_indices(label, 0)
    assert foreground.tolist() == [1, 4] and background.tolist() == [0, 2, 3, 5]
    foreground, background = foreground_slice_indices(label, 1)  # the voxel sits at index 2 of axis 1
    assert foreground.tolist() == [2] and background.tolist() == [0, 1, 3, 4]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_to_slices_and_back(axis):
    volume = torch.randn(2, 3, 4, 5, 6)
    slices = volume_to_slices(volume, axis)
    depth = volume.shape[axis + 2]
    assert slices.shape[0] == 2 * depth and slices.shape[1] == 3
    first_volume_slice_1 = volume[0].select(axis + 1, 1)  # C x ... of slice 1 of volume 0
    torch.testing.assert_close(slices[1], first_volume_slice_1)
    torch.testing.assert_close(slices[depth], volume[1].select(axis + 1, 0))
    torch.testing.assert_close(slices_to_volume(slices, depth, axis), volume)
    with pytest.raises(ValueError, match="cannot stack"):
        slices_to_volume(slices[:-1], depth, axis)


def test_rand_foreground_slice_prefers_foreground_and_respects_the_weights():
    image, label = labelled_volume(depth=8, foreground=(2, 5))
    only_foreground = RandForegroundSlice(axis=0, num_samples=50, pos=1, neg=0)
    only_foreground.set_random_state(0)
    picked = {int(s[0, 0, 0]) for s in only_foreground(image, label)}
    assert picked == {2, 5}  # both foreground slices come up, nothing else
    only_background = RandForegroundSlice(axis=0, num_samples=50, pos=0, neg=1).set_random_state(0)
    picked = {int(s[0, 0, 0]) for s in only_background(image, label)}
    assert picked == {0, 1, 3, 4, 6, 7}
    mixed = RandForegroundSlice(axis=0, num_samples=3000, pos=2, neg=1).set_random_state(0)
    values = np.array([int(s[0, 0, 0]) for s in mixed(image, label)])
    assert abs(np.isin(values, [2, 5]).mean() - 2 / 3) < 0.03


def test_rand_foreground_slice_falls_back_to_any_slice_and_is_reproducible():
    image, label = labelled_volume(depth=5, foreground=())
    slicer = RandForegroundSlice(axis=0, num_samples=40, pos=1, neg=0).set_random_state(3)
    first = [int(s[0, 0, 0]) for s in slicer(image, label)]
    assert set(first) == {0, 1, 2, 3, 4}  # no foreground: every slice is a candidate
    again = RandForegroundSlice(axis=0, num_samples=40, pos=1, neg=0).set_random_state(3)
    assert [int(s[0, 0, 0]) for s in again(image, label)] == first
    assert [int(s[0, 0, 0]) for s in slicer(image, randomize=False)] == first  # reuses the drawn indices
    with pytest.raises(ValueError, match="pos and neg"):
        RandForegroundSlice(pos=0, neg=0)
    with pytest.raises(RuntimeError, match="no slice indices"):
        RandForegroundSlice()(image, randomize=False)


def test_dictionary_version_slices_every_key_alike_and_keeps_other_entries():
    image, label = labelled_volume(depth=7, foreground=(3,))
    transform = RandForegroundSliced(["image", "label"], label_key="label", num_samples=4, pos=1, neg=0)
    transform.set_random_state(0)
    out = transform({"image": image, "label": label, "case": "a"})
    assert len(out) == 4 and RandForegroundSliceD is RandForegroundSliced
    for item in out:
        assert item["image"].shape == (1, 5, 4) and item["label"].shape == (1, 5, 4)
        assert int(item["image"][0, 0, 0]) == 3 and int(item["label"].max()) == 2 and item["case"] == "a"
    with pytest.raises(KeyError, match="seg"):
        RandForegroundSliced(["image"], label_key="seg")({"image": image})


def test_slices_flatten_into_a_2d_batch_through_a_dataloader():
    image, label = labelled_volume(depth=6, foreground=(1, 2, 3))
    transform = Compose(
        [
            RandForegroundSliced(["image", "label"], label_key="label", num_samples=3, pos=2, neg=1),
            SpatialPadd(["image", "label"], spatial_size=(8, 8)),
        ]
    ).set_random_state(0)
    data = [{"image": image.clone(), "label": label.clone()} for _ in range(2)]
    batch = next(iter(DataLoader(Dataset(data, transform), batch_size=2, num_workers=0)))
    assert batch["image"].shape == (6, 1, 8, 8) and batch["label"].shape == (6, 1, 8, 8)
