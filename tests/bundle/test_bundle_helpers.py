import json
import sys

import pytest

from monai_ext.bundle import locate_bundle_root, verify_bundle_metadata


def _bundle(root, name="b"):
    (root / name / "configs").mkdir(parents=True)
    (root / name / "configs" / "metadata.json").write_text("{}", encoding="utf-8")
    return root / name


def test_root_from_config_file_argument(tmp_path, monkeypatch):
    b = _bundle(tmp_path)
    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", "--config_file", str(b / "configs" / "train.json")])
    assert locate_bundle_root("b") == str(b)
    files = json.dumps([str(b / "configs" / "train.json"), str(b / "configs" / "evaluate.json")])
    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", f"--config_file={files}"])
    assert locate_bundle_root("b") == str(b)


def test_root_from_working_directory(tmp_path, monkeypatch):
    b = _bundle(tmp_path / "bundles")
    monkeypatch.setattr(sys, "argv", ["python"])
    monkeypatch.chdir(tmp_path)
    assert locate_bundle_root("b") == str(b)  # repository root
    monkeypatch.chdir(b)
    assert locate_bundle_root("b") == str(b)  # inside the bundle


def test_metadata_without_changelog_entry_is_refused(tmp_path, repo_root):
    meta = json.loads((repo_root / "bundles/med3d_3dseg8_cotraining/configs/metadata.json").read_text(encoding="utf-8"))
    b = _bundle(tmp_path)
    meta["version"] = "9.9.9"
    (b / "configs" / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match="9.9.9"):
        verify_bundle_metadata(str(b))
    del meta["task"]
    (b / "configs" / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match="task"):
        verify_bundle_metadata(str(b))
