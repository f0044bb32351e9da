"""Helpers shared by the bundles of this project: locating a bundle, verifying its metadata offline, releasing it."""

from __future__ import annotations

import json
import os
import sys

from . import release
from .release import BundleRelease, BundleReleaseError, push_release_to_hf_hub, release_bundle

__all__ = [
    "SCHEMA_PATH", "REQUIRED_FILES", "HARNESS_SETTINGS", "locate_bundle_root", "verify_bundle_metadata",
    "release", "BundleRelease", "BundleReleaseError", "release_bundle", "push_release_to_hf_hub",
]  # fmt: skip

#: A copy of MONAI's bundle metadata schema, so that verification works offline.
SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "schema", "meta_schema_20240725.json")

#: Files every bundle of this project has (the MONAI bundle layout plus a multi-GPU config).
REQUIRED_FILES = (
    "LICENSE",
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
)

#: Top-level settings every ``train.json`` defines, so users (and the test harness) size any bundle the same way.
HARNESS_SETTINGS = (
    "bundle_root", "dataset_dir", "output_dir", "device", "seed", "amp", "max_epochs", "iterations_per_epoch",
    "val_interval", "batch_size", "num_workers", "cache_rate", "patch_size", "max_val_cases",
)  # fmt: skip


def locate_bundle_root(name: str) -> str:
    """Folder of the bundle ``name`` for a run started from the repository root or from the bundle itself.

    Order: the bundle that holds the ``--config_file`` of the running ``python -m monai.bundle`` command; the current
    folder if it is that bundle; ``./bundles/<name>``; else the current folder. ``--bundle_root`` always wins.
    """
    argv = sys.argv
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value:
            first = value.strip("[]\"' ").split(",")[0].strip("\"' ")
            configs = os.path.dirname(os.path.abspath(first))
            if os.path.basename(configs) == "configs" and os.path.exists(os.path.join(configs, "metadata.json")):
                return os.path.dirname(configs)
    cwd = os.getcwd()
    if os.path.exists(os.path.join(cwd, "configs", "metadata.json")):
        return cwd
    candidate = os.path.join(cwd, "bundles", name)
    return candidate if os.path.isdir(candidate) else cwd


def verify_bundle_metadata(bundle_dir: str) -> dict:
    """Validate ``configs/metadata.json`` against the local schema copy and check the version has a changelog entry.

    Returns the metadata. Raises ``ValueError`` with the reason when it is invalid.
    """
    from monai.bundle import verify_metadata

    meta_file = os.path.join(bundle_dir, "configs", "metadata.json")
    verify_metadata(meta_file=meta_file, filepath=SCHEMA_PATH)
    with open(meta_file, encoding="utf-8") as f:
        meta = json.load(f)
    if meta["version"] not in meta.get("changelog", {}):
        raise ValueError(f"{meta_file}: version {meta['version']} has no entry in 'changelog'")
    return meta
