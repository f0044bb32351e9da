import os
import json
from pathlib import Path

import pytest

from monai_ext.cli import main

HIPPO = Path(os.environ.get("MONAI_EXT_SHARED_DATA", "")) / "Task04_Hippocampus"


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "decathlon" in out and "abdomenatlas" in out


@pytest.mark.skipif(not HIPPO.exists(), reason="shared real data not available")
def test_datalist_on_real_hippocampus(tmp_path, capsys):
    out_file = tmp_path / "dl.json"
    assert main(["datalist", str(HIPPO), "-o", str(out_file)]) == 0
    assert len(json.loads(out_file.read_text(encoding="utf-8"))) == 260
    assert "260 image/label pairs" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["datalist", str(tmp_path / "absent")]) == 2
    assert "not found" in capsys.readouterr().err


def test_verify_bundle(capsys, repo_root):
    assert main(["verify-bundle", str(repo_root / "bundles" / "med3d_3dseg8_cotraining")]) == 0
    assert "metadata valid" in capsys.readouterr().out
