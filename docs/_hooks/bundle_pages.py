"""MkDocs hook: one page per bundle, generated at build time from the bundle's own model card.

Every folder ``bundles/<name>/`` with a ``docs/README.md`` becomes the page ``bundles/<name>.md`` of the site, added to
the "Bundles" section of the nav after the overview page ``bundles/index.md`` (also generated: a table of all
bundles). The model card stays the single source of truth; nothing is copied into ``docs/``. A new bundle folder
therefore gets its page without any change to ``mkdocs.yml``.

Relative links and images of a model card are rewritten so that they resolve on the site:

- a file under ``docs/`` becomes a link to that page or file of the site;
- another bundle's ``docs/README.md`` (or the bundle folder itself) becomes a link to that bundle's page;
- any other file of the repository that is not Markdown (a figure, a config, ``data_license.txt``) is copied into
  the site under ``assets/repo/<path in the repository>`` and linked there;
- a target that does not exist, lies outside the repository or is a Markdown file outside ``docs/`` and ``bundles/``
  is reported as a warning, so ``mkdocs build --strict`` fails on it.

Links inside fenced code blocks are left alone. Anchors (``#...``) and queries are kept.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.bundle_pages")

BUNDLES_SECTION = "Bundles"
PAGE_DIR = "bundles"
ASSET_DIR = "assets/repo"
HOW_TO_RUN = "how-to/run_bundle.md"

# [text](target "title") and ![alt](target): the target is everything up to whitespace or the closing parenthesis.
_INLINE_LINK = re.compile(r"(\]\()(<[^>]+>|[^)\s]+)((?:\s+\"[^\"]*\")?\))")
# [label]: target "title"
_REFERENCE_LINK = re.compile(r"^( {0,3}\[[^\]]+\]:\s*)(<[^>]+>|\S+)(.*)$", re.MULTILINE)
# <img src="..."> and <a href="...">
_HTML_LINK = re.compile(r"((?:src|href)=\")([^\"]+)(\")")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _repo_root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _bundles(config) -> list[Path]:
    root = _repo_root(config) / "bundles"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "docs" / "README.md").is_file())


def _title(card: str, default: str) -> str:
    for line in card.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return default


def _metadata(bundle: Path) -> dict:
    try:
        return json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def on_config(config):
    """Add one nav entry per bundle to the "Bundles" section."""
    nav = config.nav or []
    section = None
    for item in nav:
        if isinstance(item, dict) and BUNDLES_SECTION in item:
            section = item[BUNDLES_SECTION]
            break
    if section is None:
        log.warning("bundle_pages: mkdocs.yml has no nav section %r; bundle pages are not in the nav", BUNDLES_SECTION)
        return config
    listed = {next(iter(e.values())) if isinstance(e, dict) else e for e in section}
    for bundle in _bundles(config):
        uri = f"{PAGE_DIR}/{bundle.name}.md"
        if uri not in listed:
            title = _title((bundle / "docs" / "README.md").read_text(encoding="utf-8"), bundle.name)
            section.append({title: uri})
    return config


class _Rewriter:
    """Rewrites the relative links of one model card for the page ``page_uri``."""

    def __init__(self, config, bundle: Path, page_uri: str, copies: dict[str, Path]):
        self.root = _repo_root(config)
        self.docs_dir = Path(config.docs_dir).resolve()
        self.card_dir = bundle / "docs"
        self.card = bundle / "docs" / "README.md"
        self.page_dir = posixpath.dirname(page_uri)
        self.copies = copies

    def _relative(self, site_uri: str) -> str:
        return posixpath.relpath(site_uri, self.page_dir or ".")

    def target(self, target: str) -> str:
        bracketed = target.startswith("<") and target.endswith(">")
        raw = target[1:-1] if bracketed else target
        if not raw or raw.startswith(("#", "/")) or _SCHEME.match(raw):
            return target
        path, sep, anchor = raw.partition("#")
        path, qsep, query = path.partition("?")
        suffix = (qsep + query) + (sep + anchor)
        resolved = (self.card_dir / path).resolve()
        where = f"{self.card.relative_to(self.root)}: link '{raw}'"
        try:
            repo_path = resolved.relative_to(self.root).as_posix()
        except ValueError:
            log.warning("bundle_pages: %s points outside the repository", where)
            return target
        if not resolved.exists():
            log.warning("bundle_pages: %s: %s does not exist", where, repo_path)
            return target
        new = self._site_uri(resolved, repo_path, where)
        if new is None:
            return target
        new = self._relative(new) + suffix
        return f"<{new}>" if bracketed else new

    def _site_uri(self, resolved: Path, repo_path: str, where: str) -> str | None:
        # a file of the documentation itself
        try:
            return resolved.relative_to(self.docs_dir).as_posix()
        except ValueError:
            pass
        # another bundle's model card, or a bundle folder: that bundle's page
        parts = Path(repo_path).parts
        if (
            len(parts) >= 2
            and parts[0] == "bundles"
            and (self.root / "bundles" / parts[1] / "docs" / "README.md").is_file()
        ):
            if parts[2:] in ((), ("docs", "README.md"), ("docs",)):
                return f"{PAGE_DIR}/{parts[1]}.md"
        if resolved.is_dir():
            log.warning("bundle_pages: %s is a folder; link a file or a bundle", where)
            return None
        if resolved.suffix.lower() in (".md", ".markdown"):
            log.warning("bundle_pages: %s is Markdown outside docs/: move it into docs/ or link the page there", where)
            return None
        uri = f"{ASSET_DIR}/{repo_path}"
        self.copies[uri] = resolved
        return uri

    def rewrite(self, text: str) -> str:
        out, block, fence = [], [], None

        def flush():
            if block:
                chunk = "".join(block)
                chunk = _INLINE_LINK.sub(lambda m: m.group(1) + self.target(m.group(2)) + m.group(3), chunk)
                chunk = _REFERENCE_LINK.sub(lambda m: m.group(1) + self.target(m.group(2)) + m.group(3), chunk)
                chunk = _HTML_LINK.sub(lambda m: m.group(1) + self.target(m.group(2)) + m.group(3), chunk)
                out.append(chunk)
                block.clear()

        for line in text.splitlines(keepends=True):
            match = _FENCE.match(line)
            if fence is None and match:
                flush()
                fence = match.group(1)
                out.append(line)
            elif fence is not None:
                out.append(line)
                if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                    fence = None
            else:
                block.append(line)
        flush()
        return "".join(out)


def _how_to_link(files: Files, text: str) -> str:
    """A sentence linking the how-to page on running bundles, when the site has it."""
    return f" {text} [Run a bundle](../{HOW_TO_RUN})." if files.get_file_from_path(HOW_TO_RUN) is not None else ""


def _header(bundle: Path, meta: dict, files: Files) -> str:
    configs = sorted(p.name for p in (bundle / "configs").glob("*.json")) if (bundle / "configs").is_dir() else []
    text = f"This page is the bundle's model card, `bundles/{bundle.name}/docs/README.md`"
    if meta.get("version"):
        text += f", version {meta['version']}"
    text += "."
    if configs:
        text += " Configs: " + ", ".join(f"`configs/{c}`" for c in configs) + "."
    text += _how_to_link(files, "How to run any bundle:")
    return f'\n!!! info "Bundle `bundles/{bundle.name}`"\n    {text}\n\n'


def _card_page(config, bundle: Path, files: Files, copies: dict[str, Path]) -> str:
    card = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    uri = f"{PAGE_DIR}/{bundle.name}.md"
    text = _Rewriter(config, bundle, uri, copies).rewrite(card)
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):  # the notice goes right after the title
        if line.startswith("# "):
            return "".join(lines[: i + 1]) + _header(bundle, _metadata(bundle), files) + "".join(lines[i + 1 :])
    return _header(bundle, _metadata(bundle), files) + text


def _overview(config, files: Files) -> str:
    rows = []
    for bundle in _bundles(config):
        card = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
        meta = _metadata(bundle)
        task = str(meta.get("task", "")).replace("|", "\\|")
        rows.append(
            f"| [{_title(card, bundle.name)}]({bundle.name}.md) | `bundles/{bundle.name}` | {task} | "
            f"{meta.get('version', '')} |"
        )
    return "\n".join(
        [
            "# Bundles",
            "",
            "Every recipe of this project is a standard MONAI bundle under `bundles/`. Each page below is the bundle's",
            "model card (`bundles/<name>/docs/README.md`): recipe, data, commands, outputs, measured figures and",
            "limitations." + _how_to_link(files, "What all bundles have in common:"),
            "",
            "| model card | folder | task | version |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def on_files(files: Files, config) -> Files:
    """Generate ``bundles/index.md`` and one page per bundle; copy the repository files the cards link to."""
    copies: dict[str, Path] = {}
    generated = {f"{PAGE_DIR}/index.md": _overview(config, files)}
    for bundle in _bundles(config):
        generated[f"{PAGE_DIR}/{bundle.name}.md"] = _card_page(config, bundle, files, copies)
    for uri, content in generated.items():
        existing = files.get_file_from_path(uri)
        if existing is not None and not existing.generated_by:
            log.warning("bundle_pages: docs/%s exists but is generated from the bundles: delete it", uri)
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))
    for uri, path in sorted(copies.items()):
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_serve(server, config, builder):
    """``mkdocs serve`` rebuilds when a model card or a bundle's metadata changes."""
    for bundle in _bundles(config):  # not models/ or logs/: a training run must not trigger rebuilds
        for sub in ("docs", "configs"):
            if (bundle / sub).is_dir():
                server.watch(str(bundle / sub))
    return server
