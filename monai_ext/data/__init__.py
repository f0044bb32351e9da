"""Data: built-in synthetic datasets, datalist builders for public layouts, multi-domain composition."""

from . import abdomenatlas_classes, builtin, datalists, multidomain, synthetic
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
    nnunet_datalist,
    read_decathlon_metadata,
    split_datalist,
    validate_datalist,
)
from .multidomain import MSD_3DSEG8_TASKS, domain_sampling_weights, multidomain_datalist

__all__ = [
    "abdomenatlas_classes", "builtin", "datalists", "multidomain", "synthetic",
    "builtin_dataset_dir", "list_builtin_datasets",
    "DatalistError", "DatalistReport", "abdomenatlas_datalist", "build_datalist", "csv_datalist", "decathlon_datalist",
    "detect_layout", "image_folder_datalist", "nnunet_datalist", "read_decathlon_metadata", "split_datalist",
    "validate_datalist", "MSD_3DSEG8_TASKS", "domain_sampling_weights", "multidomain_datalist",
]  # fmt: skip
