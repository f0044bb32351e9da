"""Griffe extension: render the reStructuredText markup of the docstrings as Markdown in the API reference.

The docstrings of ``monai_ext`` are Google style (``Args:`` / ``Returns:`` sections) but cross-reference objects the
Sphinx way (``:class:`~monai_ext.weights.report.LoadReport```, ``:func:`load_pretrained```) and sometimes end a
paragraph with ``::`` before a literal block. Markdown would show the role names literally. This extension, loaded by
mkdocstrings (``extensions:`` in ``mkdocs.yml``), rewrites the docstrings in memory (the source files are not
touched):

- a role whose target is a documented ``monai_ext`` object becomes a link to it (an optional autorefs reference:
  it renders as plain code when the object has no page, so it can never fail the strict build); relative names are
  looked up from the object, its class and its module, as Sphinx does; ``~`` keeps only the last component;
- a role to anything else (``monai.bundle.ConfigParser``, ``torch.nn.Module``) becomes inline code;
- ``text::`` at the end of a paragraph becomes ``text:`` (the indented block after it is a code block in Markdown
  too), and `` `text <url>`_ `` becomes a Markdown link.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|type):`([^`]+)`")
_LITERAL_MARKER = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)
_RST_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`__?")
_PACKAGE = "monai_ext"


def _lookup(scope: griffe.Object, dotted: str) -> str | None:
    """Full path of ``dotted`` seen from ``scope`` (a member, possibly imported), or None."""
    first, _, rest = dotted.partition(".")
    member = scope.members.get(first)
    if member is None:
        return None
    path = member.target_path if member.is_alias else member.path
    return f"{path}.{rest}" if rest else path


def _documented(pkg: griffe.Module, path: str) -> bool:
    if not path.startswith(_PACKAGE + ".") and path != _PACKAGE:
        return False
    if any(part.startswith("_") and not part.startswith("__") for part in path.split(".")):
        return False
    try:
        obj = pkg[path[len(_PACKAGE) + 1 :]] if path != _PACKAGE else pkg
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return not obj.is_alias


def _resolve(pkg: griffe.Module, obj: griffe.Object, target: str) -> str | None:
    if target.startswith(_PACKAGE + "."):
        candidates = [target]
    else:
        scopes = [obj] if obj.is_class or obj.is_module else []
        scopes += [s for s in (obj.parent, obj.module) if s is not None]
        candidates = [p for p in (_lookup(s, target) for s in scopes) if p]
    for path in candidates:
        if _documented(pkg, path):
            return path
        # a re-export (``monai_ext.bundle.release_bundle``): the object is documented where it is defined
        try:
            found = pkg[path[len(_PACKAGE) + 1 :]]
            if found.is_alias and _documented(pkg, found.target_path):
                return found.target_path
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError, ValueError):
            pass
    return None


def _rewrite(pkg: griffe.Module, obj: griffe.Object, text: str) -> str:
    def role(match: re.Match) -> str:
        raw = match.group(1).strip()
        short = raw.startswith("~")
        target = raw.lstrip("~.").removesuffix("()")
        title = target.rsplit(".", 1)[-1] if short else target
        if raw.endswith("()"):
            title += "()"
        path = _resolve(pkg, obj, target)
        if path is None:
            return f"`{title}`"
        return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'

    text = _ROLE.sub(role, text)
    text = _RST_LINK.sub(lambda m: f"[{m.group(1)}]({m.group(2)})", text)
    return _LITERAL_MARKER.sub(r"\1:", text)


class RstMarkup(griffe.Extension):
    """Rewrite the docstrings of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != _PACKAGE:
            return
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(pkg, obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
