"""Data: built-in synthetic datasets, datalist builders for public layouts, multi-domain composition, onboarding."""

from . import abdomenatlas_classes, builtin, datalists, multidomain, onboarding, synthetic, targets
from .builtin import builtin_dataset_dir, list_builtin_datasets
from .datalists import (
    DatalistError,
    DatalistReport,
    abdomenatlas_datalist,
    build_datalist,
    csv_datalist,
    decathlon_datalist,
    detect_layout,
    image_folder_datalist,
    image_mask_folder_datalist,
    image_mask_folder_labels,
    nnunet_datalist,
    read_decathlon_metadata,
    split_datalist,
    validate_datalist,
)
from .multidomain import MSD_3DSEG8_TASKS, domain_sampling_weights, multidomain_datalist
from .onboarding import DatasetOnboarding, onboard_dataset
from .targets import fine_tuning_target, label_fraction_subset

__all__ = [
    "abdomenatlas_classes", "builtin", "datalists", "multidomain", "onboarding", "synthetic", "targets",
    "builtin_dataset_dir", "list_builtin_datasets",
    "DatalistError", "DatalistReport", "abdomenatlas_datalist", "build_datalist", "csv_datalist", "decathlon_datalist",
    "detect_layout", "image_folder_datalist", "image_mask_folder_datalist", "image_mask_folder_labels",
    "nnunet_datalist", "read_decathlon_metadata", "split_datalist", "validate_datalist",
    "MSD_3DSEG8_TASKS", "domain_sampling_weights", "multidomain_datalist",
    "DatasetOnboarding", "onboard_dataset",
    "fine_tuning_target", "label_fraction_subset",
]  # fmt: skip
