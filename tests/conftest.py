"""Test-session settings shared by every test module."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# built-in datasets are generated once into a cache folder of the repository (ignored by git) and reused
os.environ.setdefault("MONAI_EXT_DATA_CACHE", str(ROOT / ".cache" / "data"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
