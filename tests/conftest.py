"""Test-session settings shared by every test module."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# built-in datasets are generated once into a cache folder of the repository (ignored by git) and reused
os.environ.setdefault("MONAI_EXT_DATA_CACHE", str(ROOT / ".cache" / "data"))
# the read-only real data folders (Task04_Hippocampus, ACDC, hymenoptera_data): next to the repository, or where
# MONAI_EXT_SHARED_DATA says; tests that need them skip (with the reason) when they are absent
if "MONAI_EXT_SHARED_DATA" not in os.environ:
    for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            os.environ["MONAI_EXT_SHARED_DATA"] = str(candidate)
            break
SHARED_DATA = Path(os.environ.get("MONAI_EXT_SHARED_DATA", ROOT.parent / "shared" / "data"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
