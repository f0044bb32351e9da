"""Built-in synthetic datasets, generated on first use and cached on disk.

``builtin_dataset_dir("decathlon")`` returns a folder that holds real on-disk layouts (see
:mod:`monai_ext.data.synthetic`), so every bundle runs with no arguments and no download. The cache root is the
``cache_dir`` argument, else the environment variable ``MONAI_EXT_DATA_CACHE``, else ``~/.cache/monai_ext/data``.

A dataset is regenerated only when it is missing or when its stamp (generator version, number of cases, seed)
differs. Generation writes into a temporary sibling folder that is renamed into place only once complete, so an
interrupted run never leaves a half dataset that looks complete, and an exclusive lock file serialises concurrent
callers: a second process waits and then uses the first one's result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from monai_ext.data import synthetic

__all__ = [
    "BuiltinDatasetSpec",
    "BUILTIN_DATASETS",
    "CACHE_ENV_VAR",
    "STAMP_FILE",
    "builtin_dataset_dir",
    "default_cache_dir",
    "list_builtin_datasets",
]

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "MONAI_EXT_DATA_CACHE"
STAMP_FILE = ".monai_ext_dataset.json"
_STALE_LOCK_S = 3600.0


@dataclass(frozen=True)
class BuiltinDatasetSpec:
    """A named built-in dataset.

    Attributes:
        name: the name passed to :func:`builtin_dataset_dir`.
        description: one line for :func:`list_builtin_datasets`.
        version: generator version; increase it whenever the generator's output changes, so caches regenerate.
        generate: ``generate(out_dir, n_cases, seed)`` writes the dataset into ``out_dir`` (``n_cases`` None means
            the generator's default).
        n_meaning: what ``n_cases`` counts for this dataset (for messages and docs).
    """

    name: str
    description: str
    version: int
    generate: Callable[[str, int | None, int], object]
    n_meaning: str


def _generate_decathlon(out_dir: str, n_cases: int | None, seed: int) -> None:
    synthetic.write_decathlon_tasks(out_dir, n_cases=n_cases, seed=seed)


def _generate_abdomenatlas(out_dir: str, n_cases: int | None, seed: int) -> None:
    synthetic.write_abdomenatlas(out_dir, n_cases=8 if n_cases is None else n_cases, seed=seed)


def _generate_natural2d_classification(out_dir: str, n_cases: int | None, seed: int) -> None:
    synthetic.write_image_folder_classification(out_dir, n_per_class=40 if n_cases is None else n_cases, seed=seed)


def _generate_natural2d_segmentation(out_dir: str, n_cases: int | None, seed: int) -> None:
    synthetic.write_image_mask_segmentation(out_dir, n=120 if n_cases is None else n_cases, seed=seed)


def _generate_volume3d_classification(out_dir: str, n_cases: int | None, seed: int) -> None:
    synthetic.write_volume_classification(out_dir, n=60 if n_cases is None else n_cases, seed=seed)


BUILTIN_DATASETS: dict[str, BuiltinDatasetSpec] = {
    spec.name: spec
    for spec in (
        BuiltinDatasetSpec(
            "decathlon",
            "five synthetic Medical Segmentation Decathlon tasks (Task101-Task105: brain MR, liver CT, prostate MR, "
            "spleen CT, and the held-out kidney CT), one folder each",
            1, _generate_decathlon, "cases per task (default 16-24, per task)",
        ),
        BuiltinDatasetSpec(
            "abdomenatlas",
            "synthetic abdominal CTs in the AbdomenAtlas 1.1 layout (BDMAP_*/ct.nii.gz, 25 masks, combined labels)",
            1, _generate_abdomenatlas, "CT volumes (default 8)",
        ),
        BuiltinDatasetSpec(
            "natural2d_classification",
            "natural-image-like RGB JPEGs of 8 object classes in the ImageNet folder layout (train/, val/)",
            1, _generate_natural2d_classification, "training images per class (default 40)",
        ),
        BuiltinDatasetSpec(
            "natural2d_segmentation",
            "RGB images of discs, squares and triangles with index masks (images/, masks/, dataset.json)",
            1, _generate_natural2d_segmentation, "images (default 120)",
        ),
        BuiltinDatasetSpec(
            "volume3d_classification",
            "lung CT patches in 3 classes (no nodule, solid, spiculated): images/*.nii.gz and labels.csv",
            1, _generate_volume3d_classification, "volumes (default 60)",
        ),
    )
}  # fmt: skip


def list_builtin_datasets() -> dict[str, str]:
    """Names and one-line descriptions of the built-in datasets."""
    return {name: spec.description for name, spec in BUILTIN_DATASETS.items()}


def default_cache_dir() -> str:
    """The cache root: ``$MONAI_EXT_DATA_CACHE`` if set, else ``~/.cache/monai_ext/data``."""
    return os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "monai_ext", "data")


def builtin_dataset_dir(name: str, cache_dir: str | None = None, n_cases: int | None = None, seed: int = 0) -> str:
    """The folder of a built-in dataset, generated on first use.

    Args:
        name: one of :func:`list_builtin_datasets` (``"decathlon"``, ``"abdomenatlas"``,
            ``"natural2d_classification"``, ``"natural2d_segmentation"``, ``"volume3d_classification"``).
        cache_dir: cache root (default: :func:`default_cache_dir`).
        n_cases: size of the dataset (see :attr:`BuiltinDatasetSpec.n_meaning`; default: the generator's own).
            Non-default sizes or seeds get their own folder, ``<name>-n<n_cases>-seed<seed>``.
        seed: random seed of the generator.

    Returns:
        The dataset folder (for ``"decathlon"``, the folder that holds the ``Task10x_*`` folders).

    Raises:
        ValueError: an unknown name or a non-positive ``n_cases``.
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in dataset {name!r}: choose one of {sorted(BUILTIN_DATASETS)}.")
    if n_cases is not None and n_cases < 1:
        raise ValueError(f"n_cases must be positive, got {n_cases} for built-in dataset {name!r}.")
    spec = BUILTIN_DATASETS[name]
    root = Path(cache_dir or default_cache_dir()).expanduser()
    size = "default" if n_cases is None else n_cases
    key = name if n_cases is None and seed == 0 else f"{name}-n{size}-seed{seed}"
    final = root / key
    expected = {"name": name, "version": spec.version, "n_cases": n_cases, "seed": seed}
    if _stamp_matches(final, expected):
        return str(final)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".{key}.lock", key):
        if _stamp_matches(final, expected):  # another process generated it while we waited
            return str(final)
        for leftover in root.glob(f".{key}.tmp-*"):  # interrupted runs (only the lock holder generates)
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        logger.info(
            "monai_ext: generating built-in dataset %r (%s, version %d, n_cases=%s, seed=%d) into %s",
            name,
            spec.n_meaning,
            spec.version,
            n_cases,
            seed,
            final,
        )
        start = time.time()
        try:
            tmp.mkdir()
            spec.generate(str(tmp), n_cases, seed)
            stamp = dict(expected, created=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(time.time() - start, 1))
            (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=2), encoding="utf-8")
            old = None
            if final.exists():
                old = root / f".{key}.old-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return str(final)


def _stamp_matches(folder: Path, expected: dict) -> bool:
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(stamp.get(k) == v for k, v in expected.items())


@contextlib.contextmanager
def _exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock`` where available, else an ``O_CREAT | O_EXCL`` lock file)."""
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None
    if fcntl is not None:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("monai_ext: waiting for another process that is generating %r", what)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - os.path.getmtime(path) > _STALE_LOCK_S:
                    os.remove(path)  # left by a killed process
                    continue
            if not waited:
                logger.info("monai_ext: waiting for another process that is generating %r", what)
                waited = True
            time.sleep(0.5)
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
