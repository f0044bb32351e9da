"""Class lists of AbdomenAtlas 1.0/1.1 and of the released SuPreM checkpoints.

AbdomenAtlas 1.1 (Li, Zhou et al., ICLR 2024, arXiv:2501.11253): 25 classes; file names under ``segmentations/`` and
indices 1..25 of ``combined_labels.nii.gz`` follow :data:`ABDOMENATLAS_CLASSES`. AbdomenAtlas 1.0 has the first 9.
The released SuPreM checkpoints use the 32-class order of the CLIP-Driven Universal Model (:data:`SUPREM_CLASSES_32`).
"""

from __future__ import annotations

__all__ = ["ABDOMENATLAS_CLASSES", "ABDOMENATLAS_1_0_CLASSES", "SUPREM_CLASSES_32", "PSEUDO_TUMOUR_CLASSES"]

ABDOMENATLAS_CLASSES: tuple[str, ...] = (
    "aorta", "gall_bladder", "kidney_left", "kidney_right", "liver", "pancreas", "postcava", "spleen", "stomach",
    "adrenal_gland_left", "adrenal_gland_right", "bladder", "celiac_trunk", "colon", "duodenum", "esophagus",
    "femur_left", "femur_right", "hepatic_vessel", "intestine", "lung_left", "lung_right",
    "portal_vein_and_splenic_vein", "prostate", "rectum",
)  # fmt: skip

ABDOMENATLAS_1_0_CLASSES: tuple[str, ...] = ABDOMENATLAS_CLASSES[:9]

PSEUDO_TUMOUR_CLASSES: tuple[str, ...] = (
    "kidney_tumor", "liver_tumor", "pancreas_tumor", "hepatic_vessel_tumor", "lung_tumor", "colon_tumor", "kidney_cyst",
)  # fmt: skip

SUPREM_CLASSES_32: tuple[str, ...] = (
    "spleen", "kidney_right", "kidney_left", "gall_bladder", "esophagus", "liver", "stomach", "aorta", "postcava",
    "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right", "adrenal_gland_left", "duodenum",
    "hepatic_vessel", "lung_right", "lung_left", "colon", "intestine", "rectum", "bladder", "prostate", "femur_left",
    "femur_right", "celiac_trunk",
) + PSEUDO_TUMOUR_CLASSES  # fmt: skip

assert len(ABDOMENATLAS_CLASSES) == 25 and len(SUPREM_CLASSES_32) == 32
