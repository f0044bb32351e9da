"""MkDocs hook: the ``monai-ext`` help texts, taken from ``monai_ext/cli.py`` at build time.

A line ``<!-- monai-ext-help -->`` in a page is replaced by the top-level help, ``<!-- monai-ext-help: NAME -->`` by
the help of the subcommand NAME, each in a code block. The parser is built from the module file alone (its imports
at module level are the standard library's), so the build needs neither torch nor MONAI. An unknown subcommand, or a
subcommand the page does not show, is a warning (an error under ``mkdocs build --strict``).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.cli_reference")

_MARKER = re.compile(r"^<!-- monai-ext-help(?::\s*([\w-]+))? -->\s*$", re.MULTILINE)
_CLI_PAGE = "cli.md"


def _parser(config) -> argparse.ArgumentParser:
    path = Path(config.config_file_path).resolve().parent / "monai_ext" / "cli.py"
    spec = importlib.util.spec_from_file_location("_monai_ext_cli_for_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps at $COLUMNS: make the page independent of the terminal
    try:
        return parser.format_help().rstrip()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def on_page_markdown(markdown: str, page, config, files):
    if not _MARKER.search(markdown):
        return markdown
    parser = _parser(config)
    commands = _subcommands(parser)
    shown = set()

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return f"```text\n{_help(parser)}\n```"
        if name not in commands:
            log.warning(
                "cli_reference: %s asks for the help of 'monai-ext %s', which does not exist", page.file.src_uri, name
            )
            return match.group(0)
        shown.add(name)
        return f"```text\n{_help(commands[name])}\n```"

    markdown = _MARKER.sub(replace, markdown)
    if page.file.src_uri == _CLI_PAGE:
        for name in sorted(set(commands) - shown):
            log.warning(
                "cli_reference: %s does not show 'monai-ext %s': add <!-- monai-ext-help: %s -->", _CLI_PAGE, name, name
            )
    return markdown
