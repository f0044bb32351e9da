"""Turn a bundle folder with trained weights into a release that others can download, check and load.

:func:`release_bundle` (CLI: ``monai-ext release BUNDLE_DIR -o OUT_DIR``) writes ``OUT_DIR/<name>/`` and
``OUT_DIR/<name>_v<version>.zip``:

- a copy of the bundle (configs, docs, LICENSE, any ``scripts/``) without training checkpoints, logs or evaluation
  outputs; of ``models/`` only ``model.pt``, the small files the configs read next to it (``domains.json``,
  ``network.json``, ``classes.json``, ...) and ``model_metrics.json`` are kept;
- ``models/model.pt``: the weights as a plain tensor state dict, checked to load with ``torch.load(weights_only=True)``
  into the bundle's ``network_def`` (built with :class:`monai.bundle.ConfigParser` from the released configs, so the
  release is known to be self-contained);
- ``models/model.ts``: TorchScript traced through MONAI's export path (:func:`monai.bundle.ckpt_export`, i.e.
  :func:`monai.networks.utils.convert_to_torchscript` with ``use_trace=True``), on an input of the shape that
  ``network_data_format.inputs.image`` declares (symbolic sizes such as ``"16*n"`` taken with ``n = 1``); its output
  is compared with the eager network's;
- ``configs/metadata.json`` with the next version (patch bump unless given), a changelog entry and ``eval_metrics``
  filled from the figures measured for these weights (``models/model_metrics.json`` of
  :class:`~monai_ext.engines.checkpoint.BestModelSaver`, or a given JSON/CSV file); it is validated offline with
  :func:`monai_ext.bundle.verify_bundle_metadata`;
- ``large_files.yml``: path, URL (to fill in once the files are hosted), SHA-256 of every weight file, in the format of
  :func:`monai.bundle.download_large_files`;
- the zip, whose single top-level folder is the bundle name: extracted into a folder ``D``, it is what
  ``monai.bundle.load(name=<name>, bundle_dir=D, ...)`` reads without downloading anything.

:func:`push_release_to_hf_hub` uploads a release with :func:`monai.bundle.push_to_hf_hub` (network and
``huggingface_hub`` needed); ``dry_run=True`` lists what it would upload and needs neither.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BundleReleaseError",
    "BundleRelease",
    "EXCLUDED_FOLDERS",
    "SIDE_FILE_SUFFIXES",
    "WEIGHT_SUFFIXES",
    "bump_version",
    "resolve_spatial_shape",
    "read_eval_metrics",
    "load_plain_state_dict",
    "build_bundle_network",
    "check_weights_fit",
    "sha256_of",
    "write_large_files",
    "release_bundle",
    "push_release_to_hf_hub",
]

logger = logging.getLogger(__name__)

#: Top-level folders of a bundle that a release never copies (training state, logs, evaluation outputs).
EXCLUDED_FOLDERS: tuple[str, ...] = ("models", "logs", "eval", "runs", "checkpoints", "__pycache__")
#: Files of ``models/`` copied as they are: the small descriptions the configs read next to the weights.
SIDE_FILE_SUFFIXES: tuple[str, ...] = (".json", ".txt", ".yaml", ".yml", ".csv", ".md")
#: Files that count as weights: listed in ``large_files.yml``, stored uncompressed in the zip.
WEIGHT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ts", ".ckpt", ".onnx", ".safetensors", ".bin")

_MODEL_FILE = "models/model.pt"
_TORCHSCRIPT_FILE = "models/model.ts"
_METRICS_FILE = "models/model_metrics.json"
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_SHAPE_EXPR = re.compile(r"^[\d\snp*+\-()]+$")
_MAX_LISTED = 6


class BundleReleaseError(ValueError):
    """A bundle cannot be released as it is: the message says what is wrong and what to do."""


@dataclass
class BundleRelease:
    """What :func:`release_bundle` wrote.

    Attributes:
        name: bundle name (the top-level folder of the zip).
        version: the released version.
        previous_version: the version of the source bundle.
        bundle_dir: the released bundle folder (``OUT_DIR/<name>``).
        zip_path: ``OUT_DIR/<name>_v<version>.zip``.
        large_files: relative path -> SHA-256 of every weight file (as in ``large_files.yml``).
        eval_metrics: the figures written into the metadata.
        torchscript: path of ``models/model.ts`` (None when released without it).
        input_shape: the input the TorchScript module was traced and checked with.
        torchscript_max_abs_diff: largest difference between TorchScript and eager outputs on that input.
        excluded: files of the source bundle that were left out (relative paths).
        warnings: things worth knowing that did not stop the release.
    """

    name: str
    version: str
    previous_version: str
    bundle_dir: str
    zip_path: str
    large_files: dict[str, str] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    torchscript: str | None = None
    input_shape: tuple[int, ...] | None = None
    torchscript_max_abs_diff: float | None = None
    excluded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Readable text: version, files, checksums, figures, what was left out."""
        lines = [
            f"released {self.name} {self.previous_version} -> {self.version}",
            f"  bundle: {self.bundle_dir}",
            f"  zip:    {self.zip_path}",
        ]
        lines += [f"  {path}  sha256 {digest}" for path, digest in self.large_files.items()]
        if self.torchscript:
            lines.append(
                f"  TorchScript traced on input {list(self.input_shape or ())}, max |ts - eager| = "
                f"{self.torchscript_max_abs_diff:.3g}"
            )
        else:
            lines.append("  no TorchScript (released with --no-torchscript)")
        figures = ", ".join(f"{k} = {v:.4g}" for k, v in self.eval_metrics.items())
        lines.append(f"  eval_metrics: {figures}")
        if self.excluded:
            lines.append(f"  left out: {_listing(self.excluded)} (release a file too with --include PATH)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


# ----------------------------------------------------------------------------------------------------------------------
# Small pure helpers
# ----------------------------------------------------------------------------------------------------------------------
def bump_version(version: str, part: str = "patch") -> str:
    """The next ``MAJOR.MINOR.PATCH`` version.

    Args:
        version: the current version, e.g. ``"0.1.0"``.
        part: ``"major"``, ``"minor"`` or ``"patch"``.

    Returns:
        The bumped version (``"0.1.0"`` -> ``"0.1.1"`` for a patch bump).

    Raises:
        BundleReleaseError: ``version`` is not ``MAJOR.MINOR.PATCH`` or ``part`` is unknown.
    """
    m = _SEMVER.match(str(version).strip())
    if not m:
        raise BundleReleaseError(
            f"version {version!r} is not MAJOR.MINOR.PATCH: pass the new version explicitly (--version X.Y.Z)."
        )
    major, minor, patch = (int(g) for g in m.groups())
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    if part == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise BundleReleaseError(f"unknown version part {part!r}: use 'major', 'minor' or 'patch'.")


def resolve_spatial_shape(shape: Sequence[int | str], n: int = 1, p: int = 1, any_size: int = 1) -> tuple[int, ...]:
    """Concrete sizes of a metadata ``spatial_shape`` such as ``["16*n", "16*n", 8]``.

    Integers stay; strings are evaluated with ``n`` and ``p`` (``"32*n"``, ``"2**p"``, ``"n"``) and ``"*"`` becomes
    ``any_size``, the convention of MONAI's ``verify_net_in_out``.

    Args:
        shape: the ``spatial_shape`` entry of ``network_data_format``.
        n: value of ``n``.
        p: value of ``p``.
        any_size: size used for ``"*"``.

    Returns:
        The sizes.

    Raises:
        BundleReleaseError: an entry that is neither an integer nor an expression of ``n`` and ``p``.
    """
    sizes = []
    for item in shape:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise BundleReleaseError(
                f"spatial_shape entry {item!r} is neither an integer nor an expression of n and p."
            )
        if isinstance(item, int):
            sizes.append(item)
        elif item.strip() == "*":
            sizes.append(int(any_size))
        else:
            try:
                if not _SHAPE_EXPR.match(item):
                    raise ValueError("only digits, n, p and + - * ( ) are allowed")
                sizes.append(int(eval(item, {"__builtins__": {}}, {"n": int(n), "p": int(p)})))  # vetted by the regex
            except Exception as e:
                raise BundleReleaseError(
                    f"spatial_shape entry {item!r} is not an expression of n and p such as '16*n' ({e}): fix "
                    "network_data_format in configs/metadata.json or pass input_shape."
                ) from e
    return tuple(sizes)


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_eval_metrics(path: str | os.PathLike) -> tuple[dict[str, float], dict[str, Any]]:
    """Read the evaluation figures of a set of weights.

    Accepted formats: the ``model_metrics.json`` of :class:`~monai_ext.engines.checkpoint.BestModelSaver`
    (``{"metric_name", "metrics": {...}, "epoch", ...}``), a flat JSON ``{"name": value}``, or the two-column
    ``metric,value`` CSV of :func:`monai_ext.engines.metrics.write_metrics_table` (``eval/metrics.csv``).

    Args:
        path: the file.

    Returns:
        The scalar figures (name -> float; lists and text are left out) and the record's other entries (e.g.
        ``metric_name``, ``epoch``).

    Raises:
        FileNotFoundError: the file does not exist.
        BundleReleaseError: the file cannot be parsed or holds no number.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found.")
    provenance: dict[str, Any] = {}
    try:
        if p.suffix.lower() == ".csv":
            import csv

            with open(p, newline="", encoding="utf-8") as f:
                raw = {row["metric"]: row["value"] for row in csv.DictReader(f)}
        else:
            record = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(record, Mapping):
                raise ValueError("expected a JSON object")
            if isinstance(record.get("metrics"), Mapping):
                raw = dict(record["metrics"])
                provenance = {k: v for k, v in record.items() if k != "metrics"}
            else:
                raw = dict(record)
    except (ValueError, KeyError) as e:
        raise BundleReleaseError(
            f"{p}: cannot read evaluation figures ({type(e).__name__}: {e}); expected the model_metrics.json of the "
            "best-model saver, a JSON object {name: value} or a metric,value CSV."
        ) from e
    figures = {}
    for name, value in raw.items():
        if isinstance(value, bool):
            continue
        try:
            figures[str(name)] = float(value)
        except (TypeError, ValueError):
            continue
    if not figures:
        raise BundleReleaseError(f"{p} holds no numeric figure (entries: {sorted(raw)}).")
    return figures, provenance


# ----------------------------------------------------------------------------------------------------------------------
# Weights and network
# ----------------------------------------------------------------------------------------------------------------------
def load_plain_state_dict(path: str | os.PathLike, key_in_ckpt: str | None = None) -> dict[str, torch.Tensor]:
    """Load weights with ``torch.load(weights_only=True)`` and check that they are a flat ``{name: tensor}`` dict.

    Args:
        path: the weights file.
        key_in_ckpt: for a nested checkpoint (``{"network": state_dict, "optimizer": ...}``), the entry to take.

    Returns:
        The state dict.

    Raises:
        FileNotFoundError: the file does not exist.
        BundleReleaseError: ``weights_only`` loading refuses the file (a pickled module, numpy objects, ...), or the
            content is not a flat dict of tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleReleaseError(
            f"{p} is not a plain tensor state dict: torch.load(weights_only=True) refuses it ({reason}). Save the "
            "weights with torch.save(network.state_dict(), path), never the module or objects holding numpy arrays."
        ) from e
    if key_in_ckpt:
        if not isinstance(obj, Mapping) or key_in_ckpt not in obj:
            keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise BundleReleaseError(f"{p} has no entry {key_in_ckpt!r} (it holds {keys}).")
        obj = obj[key_in_ckpt]
    if not isinstance(obj, Mapping):
        raise BundleReleaseError(f"{p} holds a {type(obj).__name__}, not a state dict {{name: tensor}}.")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        nested = [k for k in not_tensors if isinstance(obj[k], Mapping)]
        hint = (
            f" It looks like a training checkpoint: pass key_in_ckpt (--key-in-ckpt) naming the network's entry, "
            f"one of {nested}."
            if nested
            else ""
        )
        raise BundleReleaseError(
            f"{p} is not a plain tensor state dict: entries {_listing(not_tensors)} are not tensors.{hint}"
        )
    return {str(k): v for k, v in obj.items()}


def build_bundle_network(
    bundle_dir: str | os.PathLike, config_file: str = "configs/inference.json", net_id: str = "network_def"
) -> torch.nn.Module:
    """Instantiate a bundle's network with :class:`monai.bundle.ConfigParser`, with ``bundle_root`` = ``bundle_dir``.

    Args:
        bundle_dir: the bundle folder (files the config reads next to the weights are taken from its ``models/``).
        config_file: the config defining ``net_id``, relative to ``bundle_dir``.
        net_id: the network's ID in the config.

    Returns:
        The network (randomly initialised, on the CPU).

    Raises:
        BundleReleaseError: the config is missing or the network cannot be built (the cause is named).
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir)
    config_path = root / config_file
    if not config_path.is_file():
        raise BundleReleaseError(f"{config_path} not found: a release needs the config that defines {net_id!r}.")
    parser = ConfigParser()
    parser.read_config(str(config_path))
    if (root / "configs" / "metadata.json").is_file():
        parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    if net_id not in parser:
        raise BundleReleaseError(f"{config_path} defines no {net_id!r}: name the network's ID with net_id.")
    try:
        net = parser.get_parsed_content(net_id, instantiate=True)
    except Exception as e:
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise BundleReleaseError(
            f"cannot build {net_id!r} of {config_path} ({type(cause).__name__}: {cause}); files the config reads "
            f"next to the weights (e.g. models/domains.json, models/network.json) must be in {root / 'models'}."
        ) from e
    if not isinstance(net, torch.nn.Module):
        raise BundleReleaseError(f"{net_id!r} of {config_path} is a {type(net).__name__}, not a torch.nn.Module.")
    return net.cpu()


def check_weights_fit(
    network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "the weights"
) -> None:
    """Check that ``state_dict`` has exactly the network's keys with the same shapes.

    Raises:
        BundleReleaseError: naming the missing keys, the unexpected keys and the shape mismatches.
    """
    expected = network.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} in the file vs {tuple(expected[k].shape)} in the network"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (in the network, not in the file): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (in the file, not in the network): {_listing(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
    raise BundleReleaseError(
        f"{source} do not fit the bundle's network_def: " + "; ".join(parts) + ". The weights come from another "
        "architecture or another configuration (depth, classes, models/network.json or models/domains.json): "
        "release them with the bundle that trained them."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Files of the release
# ----------------------------------------------------------------------------------------------------------------------
def write_large_files(
    bundle_dir: str | os.PathLike, files: Sequence[str], url_base: str | None = None, filename: str = "large_files.yml"
) -> str:
    """Write ``large_files.yml`` for :func:`monai.bundle.download_large_files`.

    Every entry has ``path`` (relative to the bundle), ``url`` (``<url_base>/<file name>``, or empty for the user to
    fill in once the file is hosted), ``hash_val`` (SHA-256) and ``hash_type: sha256``. A file already present with
    the right hash is not downloaded again, so the file also lets anyone check a copy offline.

    Args:
        bundle_dir: the bundle folder.
        files: paths relative to ``bundle_dir``.
        url_base: where the files will be hosted (optional).
        filename: name of the file written in ``bundle_dir``.

    Returns:
        The path written.
    """
    root = Path(bundle_dir)
    lines = [
        "# Weights kept out of version control. Fill in each url once the file is hosted, then anyone can fetch and",
        "# check them with: python -m monai.bundle download_large_files --bundle_path <bundle folder>",
        "large_files:",
    ]
    for rel in files:
        url = f"{url_base.rstrip('/')}/{Path(rel).name}" if url_base else ""
        lines += [
            f"  - path: {json.dumps(rel)}",
            f"    url: {json.dumps(url)}",
            f"    hash_val: {json.dumps(sha256_of(root / rel))}",
            '    hash_type: "sha256"',
        ]
    out = root / filename
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(out)


def _copy_bundle(src: Path, dst: Path, include: Sequence[str]) -> tuple[list[str], list[str]]:
    """Copy ``src`` to ``dst`` without training outputs; return (copied extra weight files, excluded files)."""
    excluded: list[str] = []

    def ignore(folder: str, names: list[str]) -> list[str]:
        here = Path(folder)
        dropped = []
        for n in names:
            rel = (here / n).relative_to(src).as_posix()
            top_level = here == src
            if n.startswith(".") or n == "__pycache__" or n.endswith(".pyc"):
                dropped.append(n)
            elif top_level and (n in EXCLUDED_FOLDERS or n.startswith("large_files.")):
                dropped.append(n)
                if n not in ("models", "__pycache__") and not n.startswith("large_files."):
                    excluded.append(rel + "/")
        return dropped

    shutil.copytree(src, dst, ignore=ignore)
    models = src / "models"
    (dst / "models").mkdir(exist_ok=True)
    extra_weights = []
    wanted = {Path(p).as_posix() for p in include}
    for path in sorted(models.rglob("*")) if models.is_dir() else []:
        rel = path.relative_to(src).as_posix()
        if path.is_dir() or rel == _MODEL_FILE or path.name.startswith("."):
            continue
        side_file = path.parent == models and path.suffix.lower() in SIDE_FILE_SUFFIXES
        if side_file or rel in wanted:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)
            if path.suffix.lower() in WEIGHT_SUFFIXES:
                extra_weights.append(rel)
        else:
            excluded.append(rel)
    absent = sorted(wanted - {Path(p).relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()})
    if absent:
        raise BundleReleaseError(f"files to include not found in {src}: {absent}.")
    return extra_weights, excluded


def _zip_bundle(bundle_dir: Path, zip_path: Path) -> None:
    """Zip ``bundle_dir`` with its name as the single top-level folder (weights stored, text deflated)."""
    tmp = zip_path.with_name(f".{zip_path.name}.tmp{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for path in sorted(bundle_dir.rglob("*")):
                if path.is_file():
                    arcname = f"{bundle_dir.name}/{path.relative_to(bundle_dir).as_posix()}"
                    stored = path.suffix.lower() in WEIGHT_SUFFIXES
                    zf.write(path, arcname, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        os.replace(tmp, zip_path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for k in sorted(value) for t in _outputs(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _outputs(v)]
    return []


def _export_torchscript(
    bundle: Path, network: torch.nn.Module, input_shape: Sequence[int], config_file: str, net_id: str
) -> float:
    """Trace ``network_def`` through ``monai.bundle.ckpt_export`` and compare the module with the eager network.

    Returns:
        The largest absolute difference between the TorchScript and eager outputs.
    """
    from monai.bundle import ckpt_export
    from monai.data import load_net_with_metadata

    ckpt_export(
        net_id=net_id,
        filepath=str(bundle / _TORCHSCRIPT_FILE),
        ckpt_file=str(bundle / _MODEL_FILE),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / config_file),
        use_trace=True,
        input_shape=list(input_shape),
        bundle_root=str(bundle),
    )
    module, _, _ = load_net_with_metadata(str(bundle / _TORCHSCRIPT_FILE), map_location="cpu")
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    network.eval()
    with torch.no_grad():
        eager, traced = _outputs(network(x)), _outputs(module(x))
    if len(eager) != len(traced) or any(a.shape != b.shape for a, b in zip(eager, traced)):
        raise RuntimeError(
            f"the TorchScript module returns {[tuple(t.shape) for t in traced]}, the network "
            f"{[tuple(t.shape) for t in eager]}"
        )
    diff = max((float((a.float() - b.float()).abs().max()) for a, b in zip(eager, traced)), default=0.0)
    scale = max((float(a.float().abs().max()) for a in eager), default=0.0)
    if diff > 1e-4 * max(1.0, scale):
        raise RuntimeError(f"TorchScript and eager outputs differ by up to {diff:.3g} on input {list(input_shape)}")
    return diff


def _updated_metadata(
    meta: dict, version: str, figures: dict[str, float], provenance: dict, notes: str | None
) -> tuple[dict, list[str]]:
    """Metadata with the new version first in the changelog, the measured figures and the running versions."""
    import monai
    import numpy

    problems = []
    declared = set(meta.get("eval_metrics", {}) or {})
    not_measured = sorted(declared - set(figures))
    if not_measured:
        problems.append(
            f"metadata declared eval_metrics {not_measured} that the evaluation figures do not contain; they are "
            f"replaced by the measured ones ({sorted(figures)})."
        )
    key = provenance.get("metric_name")
    shown = {key: figures[key]} if key in figures else figures
    text = ", ".join(f"{k} = {v:.4f}" for k, v in shown.items())
    if "epoch" in provenance:
        text += f" (epoch {provenance['epoch']})"
    entry = f"{notes.strip()}; " if notes and notes.strip() else "trained weights released; "
    entry += f"evaluation: {text}"
    out = dict(meta)
    out["version"] = version
    out["changelog"] = {version: entry, **{k: v for k, v in meta.get("changelog", {}).items() if k != version}}
    out["eval_metrics"] = dict(figures)
    out["monai_version"] = monai.__version__.split("+")[0]
    out["pytorch_version"] = torch.__version__.split("+")[0]
    out["numpy_version"] = numpy.__version__
    return out, problems


def _semver_key(version: str) -> tuple[int, ...] | None:
    m = _SEMVER.match(version)
    return tuple(int(g) for g in m.groups()) if m else None


# ----------------------------------------------------------------------------------------------------------------------
# Release
# ----------------------------------------------------------------------------------------------------------------------
def release_bundle(
    bundle_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    version: str | None = None,
    notes: str | None = None,
    eval_metrics: str | os.PathLike | None = None,
    torchscript: bool = True,
    name: str | None = None,
    config_file: str = "configs/inference.json",
    net_id: str = "network_def",
    input_shape: Sequence[int] | None = None,
    key_in_ckpt: str | None = None,
    include: Sequence[str] = (),
    url_base: str | None = None,
    overwrite: bool = False,
) -> BundleRelease:
    """Release a bundle with trained weights (see the module docstring for what is written).

    The release is assembled in a temporary folder next to ``OUT_DIR/<name>`` and moved there only once every check
    passed, so a failed release leaves nothing behind.

    Args:
        bundle_dir: the bundle folder with ``models/model.pt``.
        output_dir: where ``<name>/`` and ``<name>_v<version>.zip`` are written (not inside ``bundle_dir``).
        version: the new version (default: the metadata's version with the patch number bumped).
        notes: text of the changelog entry (the evaluation figures are appended).
        eval_metrics: file of the figures measured for these weights (default: ``models/model_metrics.json``).
        torchscript: also export ``models/model.ts``; with False no TorchScript is written.
        name: bundle name (default: the folder name of ``bundle_dir``).
        config_file: the config defining the network, relative to the bundle.
        net_id: the network's ID in that config.
        input_shape: input of the trace, ``[1, C, *spatial]`` (default: from ``network_data_format.inputs.image``).
        key_in_ckpt: entry of ``model.pt`` holding the state dict, for a nested checkpoint.
        include: further files of the bundle to release (relative paths, e.g. ``models/encoder_medicalnet.pth``);
            weight files among them are listed in ``large_files.yml``.
        url_base: where the weight files will be hosted, for the ``url`` entries of ``large_files.yml``.
        overwrite: replace an existing ``OUT_DIR/<name>`` and zip of the same version.

    Returns:
        What was written.

    Raises:
        FileNotFoundError: no bundle, no ``models/model.pt`` or no evaluation figures (each message says how to
            produce them).
        BundleReleaseError: weights that are not a tensor state dict or do not fit ``network_def``, a version already
            released, a failed TorchScript export (pass ``torchscript=False``), invalid metadata, an existing output.
    """
    from monai_ext.bundle import verify_bundle_metadata

    src = Path(bundle_dir).expanduser().resolve()
    out_root = Path(output_dir).expanduser().resolve()
    meta_path = src / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {src} is not a MONAI bundle folder (configs/metadata.json).")
    name = name or src.name
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise BundleReleaseError(f"invalid bundle name {name!r}: use a plain folder name.")
    if out_root == src or src in out_root.parents:
        raise BundleReleaseError(f"the output folder {out_root} is inside the bundle {src}: choose another folder.")
    model_path = src / _MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(
            f"{model_path} not found: a release needs trained weights. Train the bundle first "
            f"(python -m monai.bundle run --config_file {src / 'configs' / 'train.json'}; its best-model saver writes "
            f"{_MODEL_FILE} and {_METRICS_FILE}), or copy the weights there as a plain state dict."
        )
    state = load_plain_state_dict(model_path, key_in_ckpt)

    metrics_path = Path(eval_metrics).expanduser() if eval_metrics is not None else src / _METRICS_FILE
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"no evaluation figures for these weights: {metrics_path} not found. The best-model saver writes "
            f"{_METRICS_FILE} during training; otherwise evaluate the weights (python -m monai.bundle run "
            f"--config_file \"['{src / 'configs' / 'train.json'}','{src / 'configs' / 'evaluate.json'}']\") and "
            "pass the figures with --eval-metrics FILE (JSON {name: value} or the metric,value CSV of evaluate.json)."
        )
    figures, provenance = read_eval_metrics(metrics_path)
    warnings_: list[str] = []
    if eval_metrics is None and model_path.stat().st_mtime > metrics_path.stat().st_mtime + 60:
        warnings_.append(
            f"{model_path} is newer than {metrics_path}: the figures may belong to earlier weights; evaluate these "
            "weights and pass --eval-metrics."
        )

    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    previous = str(meta.get("version", ""))
    new_version = str(version).strip() if version else bump_version(previous)
    if not _SEMVER.match(new_version):
        raise BundleReleaseError(f"version {new_version!r} is not MAJOR.MINOR.PATCH.")
    if new_version in meta.get("changelog", {}) or new_version == previous:
        raise BundleReleaseError(
            f"version {new_version} is already in the changelog of {meta_path}: pass a new one with --version."
        )
    if _semver_key(previous) and _semver_key(new_version) <= _semver_key(previous):
        raise BundleReleaseError(f"version {new_version} is not after the bundle's version {previous}.")

    final_dir = out_root / name
    zip_path = out_root / f"{name}_v{new_version}.zip"
    for existing in (final_dir, zip_path):
        if existing.exists() and not overwrite:
            raise BundleReleaseError(f"{existing} already exists: remove it, choose another -o, or pass --overwrite.")
    out_root.mkdir(parents=True, exist_ok=True)
    staging = out_root / f".{name}.partial{os.getpid()}" / name
    if staging.parent.exists():
        shutil.rmtree(staging.parent)
    try:
        extra_weights, excluded = _copy_bundle(src, staging, include)
        if key_in_ckpt:  # the extracted state dict; otherwise the trained file itself, so its hash stays the same
            torch.save(state, staging / _MODEL_FILE)
        else:
            shutil.copy2(model_path, staging / _MODEL_FILE)
        load_plain_state_dict(staging / _MODEL_FILE)  # the released file itself passes weights_only
        network = build_bundle_network(staging, config_file, net_id)  # from the release: proves it self-contained
        check_weights_fit(network, state, source=str(model_path))
        network.load_state_dict(state, strict=True)

        new_meta, meta_warnings = _updated_metadata(meta, new_version, figures, provenance, notes)
        warnings_ += meta_warnings
        (staging / "configs" / "metadata.json").write_text(json.dumps(new_meta, indent=4) + "\n", encoding="utf-8")

        weights = [_MODEL_FILE]
        shape: tuple[int, ...] | None = None
        diff = None
        if torchscript:
            if input_shape is not None:
                shape = tuple(int(s) for s in input_shape)
            else:
                image = new_meta.get("network_data_format", {}).get("inputs", {}).get("image", {})
                if "spatial_shape" not in image:
                    raise BundleReleaseError(
                        f"{meta_path} has no network_data_format.inputs.image.spatial_shape to trace with: add it, "
                        "pass input_shape, or release with --no-torchscript."
                    )
                shape = (1, int(image.get("num_channels", 1)), *resolve_spatial_shape(image["spatial_shape"]))
            try:
                diff = _export_torchscript(staging, network, shape, config_file, net_id)
            except Exception as e:
                raise BundleReleaseError(
                    f"TorchScript export through monai.bundle.ckpt_export (torch.jit.trace on input {list(shape)}) "
                    f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}. Fix the "
                    "network or the input shape (network_data_format.inputs.image), or pass --no-torchscript to "
                    "release without models/model.ts."
                ) from e
            weights.append(_TORCHSCRIPT_FILE)
        weights += extra_weights
        write_large_files(staging, weights, url_base)
        try:
            verify_bundle_metadata(str(staging))
        except Exception as e:
            raise BundleReleaseError(f"the released metadata does not validate: {e}") from e

        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(staging, final_dir)
    finally:
        if staging.parent.exists():
            shutil.rmtree(staging.parent)
    _zip_bundle(final_dir, zip_path)
    release = BundleRelease(
        name=name,
        version=new_version,
        previous_version=previous,
        bundle_dir=str(final_dir),
        zip_path=str(zip_path),
        large_files={rel: sha256_of(final_dir / rel) for rel in weights},
        eval_metrics=figures,
        torchscript=str(final_dir / _TORCHSCRIPT_FILE) if torchscript else None,
        input_shape=shape,
        torchscript_max_abs_diff=diff,
        excluded=excluded,
        warnings=warnings_,
    )
    for w in warnings_:
        logger.warning(w)
    logger.info(f"released {name} {previous} -> {new_version}: {zip_path}")
    return release


# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face Hub
# ----------------------------------------------------------------------------------------------------------------------
def _release_folder(release_dir: str | os.PathLike) -> Path:
    root = Path(release_dir).expanduser().resolve()
    if (root / "configs" / "metadata.json").is_file():
        return root
    children = sorted(root.iterdir()) if root.is_dir() else []
    candidates = [d for d in children if (d / "configs" / "metadata.json").is_file()]
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"{root} is not a released bundle folder (configs/metadata.json) and holds "
        f"{len(candidates)} of them: pass the folder written by `monai-ext release` (OUT_DIR/<name>)."
    )


def push_release_to_hf_hub(
    release_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = True,
    tag_version: bool = True,
    tag_as_latest_version: bool = False,
    dry_run: bool = False,
    **upload_folder_kwargs: Any,
) -> list[str] | Any:
    """Upload a released bundle to the Hugging Face Hub with :func:`monai.bundle.push_to_hf_hub`.

    MONAI creates the repository if needed, copies ``docs/README.md`` to ``README.md`` as the model card, uploads
    the folder and tags the commit with the bundle version. Others then fetch it with
    ``monai.bundle.download(name=<name>, source="huggingface_hub", repo=repo_id, bundle_dir=...)``.

    Args:
        release_dir: the released bundle folder (``OUT_DIR/<name>``), or ``OUT_DIR`` when it holds one bundle.
        repo_id: ``"user_or_org/repo_name"``.
        token: Hugging Face token (default: the stored login).
        private: create the repository as private.
        tag_version: tag the upload with the metadata's version.
        tag_as_latest_version: also tag it ``latest_version`` (what ``download`` takes without a version).
        dry_run: only check the release and return the files that would be uploaded (no network, no
            ``huggingface_hub`` needed).
        upload_folder_kwargs: passed on to ``HfApi.upload_folder`` (e.g. ``commit_message``).

    Returns:
        With ``dry_run``: the relative paths that would be uploaded (``README.md`` included, which MONAI writes from
        ``docs/README.md``). Otherwise what ``monai.bundle.push_to_hf_hub`` returns (the commit's URL).

    Raises:
        BundleReleaseError: an invalid ``repo_id`` or metadata.
        FileNotFoundError: no released bundle at ``release_dir``.
        RuntimeError: ``huggingface_hub`` is not installed.
    """
    from monai_ext.bundle import verify_bundle_metadata

    if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo_id or ""):
        raise BundleReleaseError(f"repo_id {repo_id!r} is not of the form 'user_or_org/repo_name'.")
    bundle = _release_folder(release_dir)
    try:
        meta = verify_bundle_metadata(str(bundle))
    except Exception as e:
        raise BundleReleaseError(
            f"{bundle}: metadata does not validate ({e}); release it with `monai-ext release`."
        ) from e
    files = sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(bundle).parts)
    )
    if (bundle / "docs" / "README.md").is_file() and "README.md" not in files:
        files = sorted(files + ["README.md"])
    if dry_run:
        logger.info(f"would upload {len(files)} files of {bundle} (version {meta['version']}) to {repo_id}")
        return files
    from monai.utils import optional_import

    _, has_hub = optional_import("huggingface_hub")
    if not has_hub:
        raise RuntimeError("pushing to the Hugging Face Hub needs huggingface_hub: pip install huggingface_hub")
    from monai.bundle import push_to_hf_hub

    started = time.time()
    result = push_to_hf_hub(
        repo=repo_id,
        name=bundle.name,
        bundle_dir=str(bundle.parent),
        token=token,
        private=private,
        version=meta["version"] if tag_version else None,
        tag_as_latest_version=tag_as_latest_version,
        **upload_folder_kwargs,
    )
    logger.info(f"pushed {bundle} to {repo_id} in {time.time() - started:.0f} s")
    return result
