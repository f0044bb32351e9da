"""Tests of monai_ext.transforms.variable_dimension (VDT: 2D images and masks as volumes, depth shuffling)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, PILReader
from monai.transforms import Compose, LoadImaged
from PIL import Image

from monai_ext.transforms.variable_dimension import (
    GREY_MEAN,
    GREY_STD,
    ImageToVolume,
    ImageToVolumeD,
    ImageToVolumed,
    MaskToVolume,
    MaskToVolumeDict,
    MaskToVolumed,
    PILRGBConverter,
    RandShuffleDepth,
    RandShuffleDepthd,
    colour_slice_order,
    image_to_volume_affine,
    permute_depth,
)


def _rgb(h: int = 5, w: int = 4) -> np.ndarray:
    """A (3, H, W) image whose R, G, B planes are constant 10, 20, 30 plus a pixel ramp."""
    ramp = np.arange(h * w, dtype=np.float32).reshape(h, w)
    return np.stack([10.0 + ramp, 20.0 + ramp, 30.0 + ramp])


# ---------------------------------------------------------------------------------------------------------------------
# ImageToVolume
# ---------------------------------------------------------------------------------------------------------------------
def test_image_to_volume_depth3_slices_are_colour_planes_with_one_grey_normalisation():
    img = _rgb()
    out = ImageToVolume(depth=3)(img)
    assert isinstance(out, np.ndarray) and out.shape == (1, 3, 5, 4) and out.dtype == np.float32
    expected = (img / 255.0 - GREY_MEAN) / GREY_STD
    np.testing.assert_allclose(out[0], expected, rtol=1e-6, atol=1e-6)


def test_image_to_volume_without_normalisation_only_scales():
    out = ImageToVolume(mean=None, std=None, scale=10.0)(torch.as_tensor(_rgb()))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "depth, mode, planes",
    [
        (6, "repeat", [0, 0, 1, 1, 2, 2]),
        (6, "stack", [0, 1, 2, 0, 1, 2]),
        (4, "repeat", [0, 0, 1, 2]),
        (5, "stack", [0, 1, 2, 0, 1]),
        (3, "stack", [0, 1, 2]),
    ],
)
def test_other_depths_repeat_or_stack_the_colour_planes(depth, mode, planes):
    assert colour_slice_order(depth, mode) == planes
    out = ImageToVolume(depth=depth, mode=mode, mean=None, std=None, scale=1.0)(_rgb())
    assert out.shape == (1, depth, 5, 4)
    np.testing.assert_array_equal(out[0, :, 0, 0], np.array([10.0, 20.0, 30.0])[planes])


def test_invalid_depth_or_mode_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        ImageToVolume(depth=2)
    with pytest.raises(ValueError, match="mode must be one of"):
        ImageToVolume(mode="interleave")
    with pytest.raises(ValueError, match="both mean and std"):
        ImageToVolume(mean=0.5, std=None)


def test_grey_input_is_replicated_and_alpha_is_dropped():
    grey = np.full((1, 3, 2), 51.0, dtype=np.float32)
    out = ImageToVolume(mean=None, std=None)(grey)
    np.testing.assert_allclose(out, 0.2)
    rgba = np.concatenate([_rgb(), np.full((1, 5, 4), 255.0, dtype=np.float32)])
    np.testing.assert_array_equal(ImageToVolume()(rgba), ImageToVolume()(_rgb()))
    no_channel = np.full((3, 2), 51.0, dtype=np.float32)
    np.testing.assert_array_equal(ImageToVolume()(no_channel), ImageToVolume()(grey))


def test_unsupported_channel_counts_raise_a_clear_error():
    with pytest.raises(ValueError, match="channel-last"):
        ImageToVolume()(np.zeros((8, 8, 3), dtype=np.float32).transpose(2, 0, 1).repeat(2, axis=0))
    with pytest.raises(ValueError, match="channel-first 2D image"):
        ImageToVolume()(np.zeros((1, 3, 8, 8), dtype=np.float32))


def test_metatensor_gets_a_3d_affine_with_depth_as_first_axis():
    affine2d = torch.tensor([[0.5, 0.0, 0.0, 7.0], [0.0, 2.0, 0.0, -3.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    img = MetaTensor(torch.as_tensor(_rgb()), affine=affine2d, meta={"filename_or_obj": "x.jpg"})
    out = ImageToVolume()(img)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.jpg"
    # voxel (d, i, j) -> (0.5 i + 7, 2 j - 3, d)
    world = out.affine @ torch.tensor([2.0, 1.0, 3.0, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(world[:3].numpy(), [7.5, 3.0, 2.0])
    three_by_three = image_to_volume_affine(np.array([[1.0, 0.0, 4.0], [0.0, 1.0, 5.0], [0.0, 0.0, 1.0]]), 2.5)
    np.testing.assert_allclose((three_by_three @ torch.tensor([2.0, 0.0, 0.0, 1.0], dtype=torch.float64))[:3], [4, 5, 5])


def test_dictionary_version_and_aliases():
    assert ImageToVolumeD is ImageToVolumed and MaskToVolumeDict is MaskToVolumed
    d = ImageToVolumed(keys="image", depth=6)({"image": _rgb(), "label": 3})
    assert d["image"].shape == (1, 6, 5, 4) and d["label"] == 3


# ---------------------------------------------------------------------------------------------------------------------
# RandShuffleDepth
# ---------------------------------------------------------------------------------------------------------------------
def test_shuffle_permutes_slices_and_is_reproducible():
    volume = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1).expand(1, 6, 2, 2).contiguous()
    t = RandShuffleDepth(prob=1.0)
    t.set_random_state(3)
    orders = []
    for _ in range(20):
        out = t(volume)
        order = out[0, :, 0, 0].long().tolist()
        assert sorted(order) == list(range(6))
        assert torch.equal(out, permute_depth(volume, order))
        orders.append(tuple(order))
    assert len(set(orders)) > 5, "a new order must be drawn for every sample"
    t.set_random_state(3)
    assert tuple(t(volume)[0, :, 0, 0].long().tolist()) == orders[0]


def test_shuffle_with_groups_keeps_runs_together_and_prob_zero_is_identity():
    volume = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    t = RandShuffleDepth(group_size=2)
    t.set_random_state(0)
    for _ in range(10):
        order = t(volume)[0, :, 0, 0].astype(int).tolist()
        assert all(order[i] % 2 == 0 and order[i + 1] == order[i] + 1 for i in (0, 2, 4))
    assert RandShuffleDepth(prob=0.0)(volume) is volume
    with pytest.raises(ValueError, match="multiple of group_size"):
        RandShuffleDepth(group_size=4)(volume)


def test_dictionary_shuffle_applies_one_draw_to_every_key():
    image = torch.arange(3, dtype=torch.float32).reshape(1, 3, 1, 1).repeat(1, 1, 4, 4)
    other = image * 10
    t = RandShuffleDepthd(keys=["image", "other"], prob=1.0)
    t.set_random_state(1)
    seen = set()
    for _ in range(12):
        d = t({"image": image, "other": other})
        torch.testing.assert_close(d["other"], d["image"] * 10)
        seen.add(tuple(d["image"][0, :, 0, 0].long().tolist()))
    assert len(seen) > 2
    with pytest.raises(ValueError, match="one depth"):
        t({"image": image, "other": torch.zeros(1, 4, 4, 4)})


def test_permute_depth_refuses_a_non_permutation():
    with pytest.raises(ValueError, match="not a permutation"):
        permute_depth(torch.zeros(1, 3, 2, 2), [0, 0, 1])


# ---------------------------------------------------------------------------------------------------------------------
# MaskToVolume
# ---------------------------------------------------------------------------------------------------------------------
def test_mask_to_volume_repeats_the_mask_and_keeps_values_and_dtype():
    mask = np.array([[[0, 1, 2], [3, 0, 1]]], dtype=np.uint8)
    out = MaskToVolume(depth=4)(mask)
    assert out.shape == (1, 4, 2, 3) and out.dtype == np.uint8
    for k in range(4):
        np.testing.assert_array_equal(out[0, k], mask[0])
    identical_rgb = np.repeat(mask, 3, axis=0)
    np.testing.assert_array_equal(MaskToVolume(depth=4)(identical_rgb), out)
    np.testing.assert_array_equal(MaskToVolume(depth=4)(mask[0]), out)


def test_mask_with_differing_channels_is_refused():
    colour_coded = np.stack([np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2))])
    with pytest.raises(ValueError, match="index map"):
        MaskToVolume()(colour_coded)


def test_image_and_mask_volumes_stay_aligned_through_the_shuffle():
    image = _rgb(6, 6)
    mask = (np.arange(36).reshape(1, 6, 6) % 3).astype(np.uint8)
    pipeline = Compose(
        [
            ImageToVolumed(keys="image", depth=3),
            MaskToVolumed(keys="label", depth=3),
            RandShuffleDepthd(keys=["image", "label"]),
        ]
    )
    pipeline.set_random_state(5)
    d = pipeline({"image": image, "label": mask})
    assert d["image"].shape == d["label"].shape[:1] + (3, 6, 6) == (1, 3, 6, 6)
    for k in range(3):
        np.testing.assert_array_equal(d["label"][0, k], mask[0])


# ---------------------------------------------------------------------------------------------------------------------
# Loading non-RGB files
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def odd_images(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    files = {}
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    files["rgb"] = str(tmp_path / "rgb.jpg")
    Image.fromarray(rgb).convert("L").save(tmp_path / "grey.jpg")
    files["grey"] = str(tmp_path / "grey.jpg")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    files["cmyk"] = str(tmp_path / "cmyk.jpg")
    rgba = Image.fromarray(np.dstack([rgb, np.full((40, 60), 255, dtype=np.uint8)]))
    rgba.save(tmp_path / "rgba.png")
    files["rgba"] = str(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "palette.png")
    files["palette"] = str(tmp_path / "palette.png")
    Image.fromarray((rng.integers(0, 65535, (40, 60))).astype(np.uint16)).save(tmp_path / "grey16.png")
    files["grey16"] = str(tmp_path / "grey16.png")
    return files


def test_every_image_mode_loads_as_rgb_and_becomes_a_volume(odd_images):
    load = LoadImaged("image", reader=PILReader(converter=PILRGBConverter()), ensure_channel_first=True, image_only=True)
    to_volume = ImageToVolumed("image")
    for name, path in odd_images.items():
        image = load({"image": path})["image"]
        assert image.shape == (3, 60, 40), name  # PILReader: (C, W, H)
        volume = to_volume({"image": image})["image"]
        assert volume.shape == (1, 3, 60, 40) and torch.isfinite(volume).all(), name
    palette = load({"image": odd_images["palette"]})["image"]
    assert float(palette.max()) > 16, "palette images must give colours, not palette indices"


def test_transparent_pixels_are_composited_onto_the_background():
    rgba = Image.new("RGBA", (4, 4), (200, 10, 10, 0))
    out = np.asarray(PILRGBConverter(background=(0, 0, 255))(rgba))
    np.testing.assert_array_equal(out[0, 0], [0, 0, 255])


def test_draft_decodes_large_jpegs_at_a_reduced_scale(tmp_path: Path):
    big = Image.fromarray(np.random.default_rng(1).integers(0, 255, (400, 640, 3), dtype=np.uint8))
    big.save(tmp_path / "big.jpg")
    reader = PILReader(converter=PILRGBConverter(draft_size=64))
    array, meta = reader.get_data(reader.read(str(tmp_path / "big.jpg")))
    assert array.shape[-1] == 3 and 64 <= min(array.shape[:2]) < 200  # 1/4 or 1/8 of 640 x 400, never below 64
    full = PILReader(converter=PILRGBConverter()).read(str(tmp_path / "big.jpg"))
    assert full.size == (640, 400)


def test_a_mode_pil_cannot_convert_names_the_problem():
    class _Odd:
        mode = "LAB"
        info: dict = {}
        filename = "strange.tif"

        def convert(self, mode):
            raise ValueError("conversion not supported")

    with pytest.raises(ValueError, match="strange.tif.*'LAB'"):
        PILRGBConverter()(_Odd())
