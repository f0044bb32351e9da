"""The documentation site builds with MkDocs in strict mode, and covers every bundle and every public module.

MkDocs and mkdocstrings are part of the test setup (the ``docs`` extra, installed by ``scripts/setup.sh``); these
tests do not skip when they are missing: they fail, with the build log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOOKS = REPO / "docs" / "_hooks"


def _mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600,
    )  # fmt: skip


def _log(result: subprocess.CompletedProcess) -> str:
    return f"exit code {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _public_modules() -> list[str]:
    """Every module and package of monai_ext whose dotted name has no part starting with an underscore."""
    names = []
    for path in sorted((REPO / "monai_ext").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        names.append(".".join(parts))
    return names


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("docs") / "site"
    result = _mkdocs_build(REPO, site)
    print(_log(result))
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{_log(result)}"
    assert "WARNING" not in result.stdout + result.stderr, _log(result)
    return site


def test_site_has_a_page_per_bundle(site: Path):
    bundles = sorted(p.name for p in (REPO / "bundles").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert bundles
    overview = (site / "bundles" / "index.html").read_text(encoding="utf-8")
    for name in bundles:
        page = site / "bundles" / name / "index.html"
        assert page.is_file(), f"no page for bundles/{name} (does it have docs/README.md?)"
        title = next(
            line[2:].strip()
            for line in (REPO / "bundles" / name / "docs" / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("# ")
        )
        assert title.split("(")[0].strip() in page.read_text(encoding="utf-8")
        assert f'href="{name}/"' in overview, f"bundles/{name} is missing from the bundle overview"


def test_api_reference_documents_every_public_module(site: Path):
    html = "\n".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    missing = [m for m in _public_modules() if f'id="{m}"' not in html]
    assert not missing, f"modules without a '::: module' block in docs/api/*.md: {missing}"


def test_cli_reference_shows_every_subcommand(site: Path):
    text = (site / "cli" / "index.html").read_text(encoding="utf-8")
    cli = (REPO / "monai_ext" / "cli.py").read_text(encoding="utf-8")
    for name in re.findall(r'sub\.add_parser\("([\w-]+)"', cli):
        assert f"usage: monai-ext {name}" in text, f"the CLI page does not show 'monai-ext {name} --help'"


def test_benchmark_figures_are_shown(site: Path):
    figures = sorted((REPO / "docs" / "benchmarks").rglob("*.png"))
    assert figures
    pages = {p: p.read_text(encoding="utf-8") for p in site.rglob("*.html")}
    for figure in figures:
        uri = figure.relative_to(REPO / "docs").as_posix()
        assert (site / uri).is_file(), uri
        shown = any(
            (page.parent / src).resolve() == (site / uri).resolve()
            for page, text in pages.items()
            for src in re.findall(r'<img[^>]+src="([^"]+)"', text)
        )
        assert shown, f"docs/{uri} is not shown on any page"


def test_training_speed_page_is_in_the_site(site: Path):
    assert (site / "benchmarks" / "training_speed" / "index.html").is_file()


# --- the bundle-page hook on a small project of its own ---------------------------------------------------------


def _project(tmp_path: Path, card: str) -> Path:
    """A minimal repository: two pages, a bundle with a figure and configs, another bundle, both hooks."""
    root = tmp_path / "repo"
    (root / "docs" / "_hooks").mkdir(parents=True)
    for hook in ("bundle_pages.py", "cli_reference.py"):
        shutil.copy(HOOKS / hook, root / "docs" / "_hooks" / hook)
    (root / "docs" / "index.md").write_text("# Home\n\n[Bundles](bundles/index.md)\n", encoding="utf-8")
    (root / "docs" / "results.md").write_text("# Results\n\n## Table\n\nnumbers\n", encoding="utf-8")
    (root / "mkdocs.yml").write_text(
        textwrap.dedent(
            """\
            site_name: test
            docs_dir: docs
            hooks: [docs/_hooks/bundle_pages.py, docs/_hooks/cli_reference.py]
            exclude_docs: |
              _hooks/
            validation:
              omitted_files: warn
              absolute_links: warn
              unrecognized_links: warn
              anchors: warn
            nav:
              - index.md
              - results.md
              - Bundles:
                  - bundles/index.md
            """
        )
    , encoding="utf-8")
    new = root / "bundles" / "new_bundle"
    (new / "docs").mkdir(parents=True)
    (new / "configs").mkdir()
    (new / "configs" / "train.json").write_text("{}", encoding="utf-8")
    (new / "configs" / "metadata.json").write_text('{"version": "0.2.0", "task": "a test task"}', encoding="utf-8")
    (new / "docs" / "curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (new / "docs" / "README.md").write_text(card, encoding="utf-8")
    other = root / "bundles" / "other_bundle" / "docs"
    other.mkdir(parents=True)
    (other / "README.md").write_text("# Other bundle\n\nText.\n", encoding="utf-8")
    return root


GOOD_CARD = """\
# A new bundle

See [the results](../../../docs/results.md#table), [the other bundle](../../other_bundle/docs/README.md),
[its training config](../configs/train.json) and [below](#usage).

![a curve](curve.png)

## Usage

```bash
echo "[not a link](nowhere.md)"
```
"""


def test_bundle_pages_hook_picks_up_a_new_bundle_and_rewrites_its_links(tmp_path: Path):
    root = _project(tmp_path, GOOD_CARD)
    result = _mkdocs_build(root, tmp_path / "site")
    assert result.returncode == 0, _log(result)
    site = tmp_path / "site"
    page = (site / "bundles" / "new_bundle" / "index.html").read_text(encoding="utf-8")
    assert (site / "bundles" / "other_bundle" / "index.html").is_file()
    assert 'href="../../results/#table"' in page
    assert 'href="../other_bundle/"' in page
    assert 'href="../../assets/repo/bundles/new_bundle/configs/train.json"' in page
    assert (site / "assets" / "repo" / "bundles" / "new_bundle" / "configs" / "train.json").is_file()
    assert 'src="../../assets/repo/bundles/new_bundle/docs/curve.png"' in page
    assert (site / "assets" / "repo" / "bundles" / "new_bundle" / "docs" / "curve.png").is_file()
    assert "[not a link](nowhere.md)" in page  # code blocks are left alone
    assert "version 0.2.0" in page
    overview = (site / "bundles" / "index.html").read_text(encoding="utf-8")
    assert "A new bundle" in overview and "Other bundle" in overview and "a test task" in overview


@pytest.mark.parametrize(
    "link, message",
    [
        ("[gone](missing.md)", "does not exist"),
        ("[anchor](#no-such-heading)", "no-such-heading"),
        ("[outside](../../../../elsewhere.md)", "outside the repository"),
    ],
)
def test_bundle_pages_hook_fails_the_strict_build_on_a_broken_link(tmp_path: Path, link: str, message: str):
    root = _project(tmp_path, f"# A new bundle\n\n{link}\n")
    result = _mkdocs_build(root, tmp_path / "site")
    assert result.returncode != 0, _log(result)
    assert message in result.stdout + result.stderr, _log(result)
