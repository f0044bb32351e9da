"""Datalists for public on-disk layouts, with a validation report.

A datalist is what MONAI datasets take: a list of dicts with absolute paths under ``image`` and ``label`` (plus
optional keys such as ``case``). Builders exist for the Medical Segmentation Decathlon (:func:`decathlon_datalist`),
nnU-Net v2 raw datasets (:func:`nnunet_datalist`), AbdomenAtlas (:func:`abdomenatlas_datalist`), ImageNet-style
image folders (:func:`image_folder_datalist`), 2D segmentation folders of images and index-map masks
(:func:`image_mask_folder_datalist`) and CSV files (:func:`csv_datalist`); :func:`build_datalist` detects the layout
and returns the datalist with a :class:`DatalistReport` from :func:`validate_datalist`.

Volumes may be NIfTI (``.nii``, ``.nii.gz``, read with nibabel), NRRD, MetaImage (``.mha``, ``.mhd``) or a DICOM
series (a folder of slices), read with ITK; 2D images are read with Pillow. Validation reads headers only (fast): a
truncated ``.nii.gz`` is caught by the gzip trailer, and ``deep=True`` loads every array to check finite values and
label values against the declared labels.

Every problem raises :class:`DatalistError` (a ``ValueError``) naming the file and saying what to do; problems that
do not stop training (files on disk that no list mentions, skipped non-image files) are :class:`DatalistWarning`.
A dataset that declares 3D volumes (Decathlon ``tensorImageSize``, AbdomenAtlas) refuses 2D files.
:func:`write_datalist` writes a datalist atomically (never a half-written file).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import struct
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DatalistError",
    "DatalistWarning",
    "DatalistProblem",
    "DatalistReport",
    "VolumeHeader",
    "IMAGE_EXTENSIONS",
    "VOLUME_EXTENSIONS",
    "read_volume_header",
    "read_decathlon_metadata",
    "read_nnunet_metadata",
    "decathlon_datalist",
    "nnunet_datalist",
    "abdomenatlas_datalist",
    "image_folder_datalist",
    "MASK_EXTENSIONS",
    "image_mask_folder_datalist",
    "image_mask_folder_labels",
    "csv_datalist",
    "detect_layout",
    "build_datalist",
    "validate_datalist",
    "declared_spatial_dims",
    "write_text_atomic",
    "write_datalist",
    "split_datalist",
]

#: 2D image files accepted in image folders (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
#: mask files accepted in image+mask folders: lossless formats only (JPEG compression changes label values at edges).
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp")
#: volume files (a folder is read as a DICOM series).
VOLUME_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_LAYOUTS = ("decathlon", "nnunet", "abdomenatlas", "image_folder", "image_mask_folder", "csv")
_SYNTHETIC_HINT = "or use a built-in synthetic stand-in: `monai-ext data generate {0}` (Python: monai_ext.data.builtin.builtin_dataset_dir({0!r}))"
_MAX_LISTED = 5


class DatalistError(ValueError):
    """A dataset folder, list or file is missing, inconsistent or unreadable."""


class DatalistWarning(UserWarning):
    """Something worth knowing about a dataset that does not stop training (e.g. an unlisted image)."""


@dataclass
class DatalistProblem:
    """One problem found in a dataset.

    Attributes:
        path: the file or folder concerned.
        kind: ``missing``, ``unreadable``, ``corrupt``, ``no_label``, ``dimensions`` (a 2D file where volumes are
            expected), ``shape_mismatch``, ``affine_mismatch``, ``non_finite``, ``label_values``, ``inconsistent``
            (list vs disk), ``unlisted`` or ``skipped``.
        message: what is wrong and what to do.
        severity: ``"error"`` or ``"warning"``.
    """

    path: str
    kind: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity} [{self.kind}] {self.path}: {self.message}"


@dataclass
class VolumeHeader:
    """What a file header says about an image, without reading its voxels.

    Attributes:
        path: the file (or DICOM folder).
        format: ``nifti``, ``nrrd``, ``metaimage``, ``dicom``, ``image2d`` or ``itk``.
        shape: spatial shape in array index order (x, y[, z]), as MONAI's readers return it.
        n_channels: channels or components per voxel (4D NIfTI, RGB images).
        spacing: voxel size per spatial axis (mm; 1.0 for 2D images).
        affine: 4x4 voxel-to-world matrix in RAS (NIfTI convention; ITK's LPS is converted).
        dtype: on-disk data type.
        n_files: number of files read (slices of a DICOM series, else 1).
    """

    path: str
    format: str
    shape: tuple[int, ...]
    n_channels: int
    spacing: tuple[float, ...]
    affine: np.ndarray
    dtype: str
    n_files: int = 1


@dataclass
class DatalistReport:
    """What :func:`validate_datalist` found.

    Attributes:
        layout: the layout the datalist came from (empty if unknown).
        root: the dataset folder or file.
        n_items: number of datalist entries.
        n_pairs: entries whose image and label (file or class value) were both found usable (for a datalist without
            labels: entries whose image is usable).
        problems: every problem found, errors and warnings.
        shapes: spatial shape of each image whose header was read.
        spacings: voxel spacing of each image whose header was read.
        labels: declared label values -> names, when known.
    """

    layout: str = ""
    root: str = ""
    n_items: int = 0
    n_pairs: int = 0
    problems: list[DatalistProblem] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    spacings: list[tuple[float, ...]] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[DatalistProblem]:
        """Problems that make the datalist unusable."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[DatalistProblem]:
        """Problems worth knowing about that do not stop training."""
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """True when there is no error."""
        return not self.errors

    def shape_summary(self) -> dict[str, tuple[float, ...]]:
        """Per-axis ``min``, ``median`` and ``max`` of the image shapes (empty if no header was read)."""
        return _axis_summary(self.shapes)

    def spacing_summary(self) -> dict[str, tuple[float, ...]]:
        """Per-axis ``min``, ``median`` and ``max`` of the voxel spacings (empty if no header was read)."""
        return _axis_summary(self.spacings)

    def summary(self, max_problems: int = 20) -> str:
        """Readable text: counts, shape and spacing ranges, then the problems (errors first)."""
        head = (
            f"{self.layout or 'datalist'} at {self.root or '<memory>'}: {self.n_items} items, {self.n_pairs} "
            f"image/label pairs, {len(self.errors)} errors, {len(self.warnings)} warnings"
        )
        lines = [head]
        for what, stats in (("shape", self.shape_summary()), ("spacing (mm)", self.spacing_summary())):
            if stats:
                fmt = (lambda v: f"{v:g}") if what == "shape" else (lambda v: f"{v:.3g}")
                text = ", ".join(f"{k} ({', '.join(fmt(v) for v in stats[k])})" for k in ("min", "median", "max"))
                lines.append(f"  {what}: {text}")
        ordered = self.errors + self.warnings
        lines += [f"  {p}" for p in ordered[:max_problems]]
        if len(ordered) > max_problems:
            lines.append(f"  ... and {len(ordered) - max_problems} more problems")
        return "\n".join(lines)

    def raise_if_errors(self) -> DatalistReport:
        """Raise :class:`DatalistError` with the summary if any error was found; return ``self`` otherwise."""
        if self.errors:
            raise DatalistError(f"{len(self.errors)} problem(s) in the dataset:\n{self.summary()}")
        return self


def _axis_summary(values: Sequence[tuple]) -> dict[str, tuple[float, ...]]:
    if not values:
        return {}
    ndim = min(len(v) for v in values)
    arr = np.array([v[:ndim] for v in values], dtype=float)
    return {"min": tuple(arr.min(0)), "median": tuple(np.median(arr, 0)), "max": tuple(arr.max(0))}


# ----------------------------------------------------------------------------------------------------------------------
# Headers
# ----------------------------------------------------------------------------------------------------------------------
def _suffix(path: str | os.PathLike) -> str:
    name = os.fspath(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def _is_volume_file(name: str) -> bool:
    return not name.startswith(".") and _suffix(name) in VOLUME_EXTENSIONS


def _import_itk():
    try:
        import itk
    except ImportError as e:  # pragma: no cover - itk is a dependency of monai_ext
        raise DatalistError("reading NRRD, MetaImage and DICOM needs ITK: pip install itk") from e
    return itk


def read_volume_header(path: str | os.PathLike, check_integrity: bool = True) -> VolumeHeader:
    """Read the header of an image file (or a DICOM series folder) without loading its voxels.

    Args:
        path: a NIfTI, NRRD, MetaImage, 2D image (PNG/JPEG/BMP) or other ITK-readable file, or a DICOM folder.
        check_integrity: for NIfTI, also check that the file holds all the voxels the header declares (for ``.gz``:
            the gzip trailer; a full decompression only when the trailer is inconclusive).

    Returns:
        The header.

    Raises:
        DatalistError: the file does not exist, cannot be read, or is truncated.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DatalistError(f"{p} not found: check the dataset folder or the path in the datalist.")
    if os.path.isdir(p):
        return _dicom_header(p)
    if os.path.getsize(p) == 0:
        raise DatalistError(
            f"{p} is empty (0 bytes): the download, copy or export failed; re-download or re-export it."
        )
    suffix = _suffix(p)
    if suffix in (".nii", ".nii.gz"):
        return _nifti_header(p, check_integrity)
    if suffix in IMAGE_EXTENSIONS or suffix in (".gif", ".tif", ".tiff"):
        return _image2d_header(p)
    return _itk_header(p)


def _nifti_header(path: str, check_integrity: bool) -> VolumeHeader:
    import nibabel as nib

    if path.lower().endswith(".gz"):
        with open(path, "rb") as f:
            head = f.read(352)
        if head[:2] != b"\x1f\x8b":
            raise DatalistError(_not_gzip_message(path, head))
    try:
        img = nib.load(path)
    except Exception as e:
        raise DatalistError(
            f"{path}: unreadable NIfTI header ({type(e).__name__}: {e}); the file is corrupt, truncated or not NIfTI: "
            "re-download or re-export it."
        ) from e
    shape = tuple(int(s) for s in img.shape)
    dtype = img.get_data_dtype()
    if check_integrity:
        expected = int(img.dataobj.offset) + int(np.prod(shape)) * dtype.itemsize
        _check_nifti_size(path, expected)
    affine = np.asarray(img.affine, dtype=float)
    spatial = shape[:3]
    return VolumeHeader(
        path=path,
        format="nifti",
        shape=spatial,
        n_channels=int(np.prod(shape[3:])) if len(shape) > 3 else 1,
        spacing=tuple(float(v) for v in np.linalg.norm(affine[:3, : len(spatial)], axis=0)),
        affine=affine,
        dtype=str(dtype),
    )


def _not_gzip_message(path: str, head: bytes) -> str:
    """Why a ``.nii.gz`` file that is not gzip-compressed cannot be read, and what to do about it."""
    sizeof_hdr = {int.from_bytes(head[:4], order) for order in ("little", "big")} if len(head) >= 4 else set()
    if sizeof_hdr & {348, 540}:  # the first field of a NIfTI-1 (348) or NIfTI-2 (540) header
        return (
            f"{path} is not gzip-compressed: it is an uncompressed NIfTI named .nii.gz; rename it to .nii or gzip it."
        )
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return f"{path} is a Git LFS pointer, not the image: fetch the file itself (git lfs pull) or re-download it."
    start = head[:16].decode("latin-1").encode("unicode_escape").decode("ascii")
    return (
        f"{path} is not gzip-compressed and not NIfTI either (it starts with '{start}'; an HTML page or text here "
        "means the download saved an error page): re-download or re-export it."
    )


def _check_nifti_size(path: str, expected: int, full: bool = False) -> None:
    """Raise if the (possibly gzipped) NIfTI file holds fewer bytes than its header declares.

    With ``full``, a ``.gz`` file is decompressed to its end, which also verifies its CRC (a corrupt byte inside the
    stream leaves the size trailer intact and may even decompress, so only the checksum reveals it).
    """
    if not path.lower().endswith(".gz"):
        size = os.path.getsize(path)
        if size < expected:
            raise DatalistError(
                f"{path} is truncated: {size} bytes on disk, the header declares {expected}; "
                "re-download or re-export it."
            )
        return
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]
    if isize == expected % 2**32 and not full:  # the gzip trailer records the uncompressed size (mod 2^32)
        return
    try:  # a multi-member gzip file has no single trailer: decompress to be sure
        total = 0
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatalistError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}): the download or copy was interrupted; "
            "re-download or re-export it."
        ) from e
    if total < expected:
        raise DatalistError(
            f"{path} is truncated: {total} bytes after decompression, the header declares {expected}; "
            "re-download or re-export it."
        )


def _image2d_header(path: str) -> VolumeHeader:
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height, bands, mode = im.size[0], im.size[1], len(im.getbands()), im.mode
    except Exception as e:
        raise DatalistError(f"{path}: unreadable image ({type(e).__name__}: {e}); re-download or re-export it.") from e
    return VolumeHeader(path, "image2d", (width, height), bands, (1.0, 1.0), np.eye(4), mode)


def _itk_affine_ras(spacing: Sequence[float], origin: Sequence[float], direction: np.ndarray) -> np.ndarray:
    """Voxel-to-world affine in RAS from ITK's LPS geometry (padded to 3D)."""
    n = len(spacing)
    lps = np.eye(4)
    lps[:n, :n] = direction[:n, :n] * np.asarray(spacing, dtype=float)[None, :]
    lps[:n, 3] = origin[:n]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _itk_header(path: str) -> VolumeHeader:
    itk = _import_itk()
    try:
        io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
        if io is None:
            raise RuntimeError("no ITK ImageIO recognises this file")
        io.SetFileName(path)
        io.ReadImageInformation()
    except Exception as e:
        raise DatalistError(
            f"{path}: unreadable image ({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e) else e}); "
            "use NIfTI, NRRD, MetaImage or a DICOM folder, or re-export the file."
        ) from e
    nd = io.GetNumberOfDimensions()
    spacing = [float(io.GetSpacing(i)) for i in range(nd)]
    direction = np.array([list(io.GetDirection(i)) for i in range(nd)], dtype=float).T
    fmt = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}.get(_suffix(path), "itk")
    return VolumeHeader(
        path=path,
        format=fmt,
        shape=tuple(int(io.GetDimensions(i)) for i in range(nd)),
        n_channels=int(io.GetNumberOfComponents()),
        spacing=tuple(spacing),
        affine=_itk_affine_ras(spacing, [float(io.GetOrigin(i)) for i in range(nd)], direction),
        dtype=str(io.GetComponentTypeAsString(io.GetComponentType())),
    )


def _dicom_files(folder: str) -> list[str]:
    """Slices of the first DICOM series in ``folder``, sorted along the slice normal (as ITK/MONAI read them)."""
    itk = _import_itk()
    names = itk.GDCMSeriesFileNames.New()
    names.SetDirectory(folder)
    uids = names.GetSeriesUIDs()
    if not uids:
        raise DatalistError(
            f"{folder}: no DICOM series found in this folder (a volume folder must hold the .dcm slices of one "
            "series); check the path."
        )
    return list(names.GetFileNames(uids[0]))


def _dicom_header(folder: str) -> VolumeHeader:
    itk = _import_itk()
    files = _dicom_files(folder)
    infos = []
    for f in (files[0], files[-1]):
        io = itk.GDCMImageIO.New()
        try:
            io.SetFileName(f)
            io.ReadImageInformation()
        except Exception as e:
            raise DatalistError(f"{f}: unreadable DICOM slice ({type(e).__name__}); re-export the series.") from e
        infos.append(io)
    first, last = infos
    spacing = [float(first.GetSpacing(i)) for i in range(3)]
    origin = np.array([float(first.GetOrigin(i)) for i in range(3)])
    direction = np.array([list(first.GetDirection(i)) for i in range(3)], dtype=float).T
    if len(files) > 1:
        step = (np.array([float(last.GetOrigin(i)) for i in range(3)]) - origin) / (len(files) - 1)
        spacing[2] = float(np.linalg.norm(step)) or spacing[2]
        if np.linalg.norm(step) > 0:
            direction[:, 2] = step / np.linalg.norm(step)
    return VolumeHeader(
        path=folder,
        format="dicom",
        shape=(int(first.GetDimensions(0)), int(first.GetDimensions(1)), len(files)),
        n_channels=int(first.GetNumberOfComponents()),
        spacing=tuple(spacing),
        affine=_itk_affine_ras(spacing, origin, direction),
        dtype=str(first.GetComponentTypeAsString(first.GetComponentType())),
        n_files=len(files),
    )


def _load_array(header: VolumeHeader) -> np.ndarray:
    """All voxels of a file, for ``deep`` validation (raises DatalistError when they cannot be read)."""
    try:
        if header.format == "nifti":
            import nibabel as nib

            img = nib.load(header.path)
            _check_nifti_size(
                header.path,
                int(img.dataobj.offset) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize,
                full=True,
            )
            return np.asanyarray(img.dataobj)
        if header.format == "image2d":
            from PIL import Image

            with Image.open(header.path) as im:
                im.load()
                return np.asarray(im)
        itk = _import_itk()
        source = _dicom_files(header.path) if header.format == "dicom" else header.path
        return np.asarray(itk.array_from_image(itk.imread(source)))
    except DatalistError:
        raise
    except Exception as e:
        raise DatalistError(
            f"{header.path}: the voxels cannot be read ({type(e).__name__}: {e}); the file is truncated or corrupt: "
            "re-download or re-export it."
        ) from e


# ----------------------------------------------------------------------------------------------------------------------
# Layout readers
# ----------------------------------------------------------------------------------------------------------------------
def _read_json(path: Path, layout: str, hint_name: str) -> dict:
    if not path.is_file():
        raise DatalistError(
            f"{path} not found: expected the {layout} layout in {path.parent}; check dataset_dir (currently "
            f"{path.parent}) {_SYNTHETIC_HINT.format(hint_name)}."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DatalistError(f"{path} is not valid JSON ({e}); fix or re-download it.") from e


def _resolve(folder: Path, rel: str) -> str:
    return os.path.normpath(rel if os.path.isabs(rel) else os.path.join(folder, rel))


def _case_name(path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    for ext in sorted(VOLUME_EXTENSIONS + IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _require_folder(folder: Path, layout: str, expected: str, hint_name: str) -> None:
    if not folder.is_dir():
        raise DatalistError(
            f"dataset folder {folder} not found: expected the {layout} layout ({expected}); check dataset_dir "
            f"(currently {folder}) {_SYNTHETIC_HINT.format(hint_name)}."
        )


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_MAX_LISTED])
    return shown + (f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else "")


def _raise_or_warn(problems: list[DatalistProblem], stacklevel: int = 3) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatalistError("\n".join(str(p) for p in errors))
    for p in problems:
        warnings.warn(DatalistWarning(str(p)), stacklevel=stacklevel + 1)


def _int_keyed(mapping: Mapping) -> dict[int, str]:
    """``{"0": "background"}`` (Decathlon) or ``{"background": 0}`` (nnU-Net) -> ``{0: "background"}``."""
    out = {}
    for k, v in mapping.items():
        if isinstance(v, int) and not str(k).lstrip("-").isdigit():
            out[int(v)] = str(k)
        elif str(k).lstrip("-").isdigit():
            out[int(k)] = str(v)
    return dict(sorted(out.items()))


def read_decathlon_metadata(task_dir: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a Decathlon task: every ``dataset.json`` entry except the file lists.

    Args:
        task_dir: the task folder (holding ``dataset.json``).

    Returns:
        The entries with ``labels`` and ``modality`` keyed by int (``{0: "background", 1: ...}``), plus
        ``num_classes`` and ``num_channels``.

    Raises:
        DatalistError: ``dataset.json`` is missing or not valid JSON.
    """
    meta = _read_json(Path(task_dir) / "dataset.json", "Medical Segmentation Decathlon", "decathlon")
    out = {k: v for k, v in meta.items() if k not in ("training", "test")}
    out["labels"] = _int_keyed(meta.get("labels", {}))
    out["modality"] = _int_keyed(meta.get("modality", {}))
    out["num_classes"] = len(out["labels"])
    out["num_channels"] = max(1, len(out["modality"]))
    return out


def _decathlon(task_dir: str | os.PathLike, section: str, check: bool) -> tuple[list[dict], list[DatalistProblem]]:
    root = Path(task_dir).expanduser().absolute()
    _require_folder(root, "Medical Segmentation Decathlon", "imagesTr/, labelsTr/, dataset.json", "decathlon")
    json_path = root / "dataset.json"
    meta = _read_json(json_path, "Medical Segmentation Decathlon", "decathlon")
    if section not in meta:
        sections = [k for k in meta if isinstance(meta[k], list)]
        raise DatalistError(f"{json_path} has no {section!r} list (it has {sections}): pass section= one of them.")
    entries = meta[section]
    problems: list[DatalistProblem] = []
    items: list[dict] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise DatalistError(f"{json_path}: entry {i} of {section!r} has no 'image': {entry!r}; fix dataset.json.")
        item = {k: _resolve(root, v) if k in ("image", "label") and isinstance(v, str) else v for k, v in entry.items()}
        item.setdefault("case", _case_name(item["image"]))
        items.append(item)
        if section == "training" and "label" not in entry:
            problems.append(DatalistProblem(item["image"], "no_label", f"entry {i} of {json_path} has no label."))
    if not check:
        return items, problems
    count_key = {"training": "numTraining", "test": "numTest"}.get(section)
    if count_key in meta and meta[count_key] != len(entries):
        problems.append(
            DatalistProblem(
                str(json_path),
                "inconsistent",
                f"{count_key} is {meta[count_key]} but the {section!r} list has {len(entries)} "
                "entries: the file was edited or belongs to another release; fix it.",
            )
        )
    counts: dict[str, int] = {}
    for it in items:
        counts[it["image"]] = counts.get(it["image"], 0) + 1
    dupes = [p for p, n in counts.items() if n > 1]
    if dupes:
        problems.append(DatalistProblem(str(json_path), "inconsistent", f"images listed twice: {_listing(dupes)}."))
    listed = [p for it in items for k, p in it.items() if k in ("image", "label") and isinstance(p, str)]
    missing = [p for p in listed if not os.path.exists(p)]
    for p in missing:
        problems.append(
            DatalistProblem(
                p,
                "missing",
                f"listed in {json_path} but not found: the extraction is incomplete or dataset.json does not "
                f"belong to {root}; re-extract the task or fix dataset.json.",
            )
        )
    image_dir = root / ("imagesTr" if section == "training" else "imagesTs")
    if image_dir.is_dir():
        on_disk = {os.path.normpath(image_dir / n) for n in os.listdir(image_dir) if _is_volume_file(n)}
        unlisted = sorted(on_disk - {it["image"] for it in items})
        if unlisted:
            problems.append(
                DatalistProblem(
                    str(image_dir),
                    "unlisted",
                    f"{len(unlisted)} image(s) on disk are not in the {section!r} list of dataset.json and will "
                    f"not be used: {_listing(unlisted)}.",
                    "warning",
                )
            )
    return items, problems


def decathlon_datalist(task_dir: str | os.PathLike, section: str = "training", check: bool = True) -> list[dict]:
    """Datalist of a Medical Segmentation Decathlon task folder.

    Paths in ``dataset.json`` (``./imagesTr/x.nii.gz``) are resolved against ``task_dir``. Entries are
    ``{"image", "label", "case"}`` (``test`` entries have no label).

    Args:
        task_dir: the task folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        section: the list to read, ``"training"`` or ``"test"``.
        check: check that every listed file exists, that ``numTraining``/``numTest`` match the lists, and warn about
            images in ``imagesTr``/``imagesTs`` that the list does not mention.

    Returns:
        The datalist.

    Raises:
        DatalistError: missing folder or ``dataset.json``, a listed file that does not exist (named), a count that
            does not match, a training entry without label.
    """
    items, problems = _decathlon(task_dir, section, check)
    _raise_or_warn(problems)
    return items


def read_nnunet_metadata(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``dataset.json`` of an nnU-Net v2 raw dataset, with ``labels`` also given as ``label_names``
    (``{0: "background", ...}``, region labels left out) and ``num_channels``.

    Raises:
        DatalistError: ``dataset.json`` is missing, not valid JSON, or lacks ``channel_names``, ``labels`` or
            ``file_ending``.
    """
    path = Path(dataset_dir) / "dataset.json"
    meta = _read_json(path, "nnU-Net v2 raw", "decathlon")
    missing = [k for k in ("channel_names", "labels", "file_ending") if k not in meta]
    if missing:
        raise DatalistError(
            f"{path} lacks {missing}: an nnU-Net v2 dataset.json needs channel_names, labels and "
            "file_ending; fix it (nnU-Net v1 datasets use the Decathlon layout)."
        )
    meta["label_names"] = _int_keyed({k: v for k, v in meta["labels"].items() if isinstance(v, int)})
    meta["num_channels"] = len(meta["channel_names"])
    return meta


def _nnunet(dataset_dir: str | os.PathLike, check: bool) -> tuple[list[dict], list[DatalistProblem]]:
    root = Path(dataset_dir).expanduser().absolute()
    _require_folder(
        root, "nnU-Net v2 raw", "imagesTr/<case>_0000<ext>, labelsTr/<case><ext>, dataset.json", "decathlon"
    )
    meta = read_nnunet_metadata(root)
    ending = meta["file_ending"]
    channels = sorted(int(c) for c in meta["channel_names"])
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise DatalistError(
                f"{d} not found: an nnU-Net v2 dataset has imagesTr/ and labelsTr/; check dataset_dir "
                f"(currently {root})."
            )
    cases = sorted(n[: -len(ending)] for n in os.listdir(labels_dir) if n.endswith(ending) and not n.startswith("."))
    if not cases:
        raise DatalistError(
            f"{labels_dir} holds no label file ending in {ending!r} (file_ending of dataset.json): "
            "check the folder or file_ending."
        )
    pattern = re.compile(rf"^(.*)_(\d{{4}}){re.escape(ending)}$")
    image_channels: dict[str, set[int]] = {}
    for n in os.listdir(images_dir):
        m = pattern.match(n)
        if m and not n.startswith("."):
            image_channels.setdefault(m.group(1), set()).add(int(m.group(2)))
    problems: list[DatalistProblem] = []
    items = []
    for case in cases:
        files = [str(images_dir / f"{case}_{c:04d}{ending}") for c in channels]
        absent = [f for c, f in zip(channels, files) if c not in image_channels.get(case, set())]
        for f in absent:
            problems.append(
                DatalistProblem(
                    f,
                    "missing",
                    f"case {case!r} lacks this channel file (channel_names "
                    f"declares {len(channels)} channels): add it or remove the case's label.",
                )
            )
        items.append({"image": files, "label": str(labels_dir / f"{case}{ending}"), "case": case})
    for case in sorted(set(image_channels) - set(cases)):
        problems.append(
            DatalistProblem(
                str(images_dir / f"{case}_0000{ending}"),
                "no_label",
                f"case {case!r} has images but no labelsTr/{case}{ending}: add the label or "
                "move the images to imagesTs.",
            )
        )
    for case, chans in sorted(image_channels.items()):
        extra = sorted(chans - set(channels))
        if extra:
            problems.append(
                DatalistProblem(
                    str(images_dir / f"{case}_{extra[0]:04d}{ending}"),
                    "inconsistent",
                    f"channel(s) {extra} of case {case!r} are not declared in channel_names "
                    f"({sorted(meta['channel_names'])}): fix dataset.json or the file name.",
                )
            )
    if check and "numTraining" in meta and meta["numTraining"] != len(cases):
        problems.append(
            DatalistProblem(
                str(root / "dataset.json"),
                "inconsistent",
                f"numTraining is {meta['numTraining']} but labelsTr holds {len(cases)} cases: "
                "fix dataset.json or restore the missing cases.",
            )
        )
    return items, problems


def nnunet_datalist(dataset_dir: str | os.PathLike, check: bool = True) -> list[dict]:
    """Datalist of an nnU-Net v2 raw dataset (``DatasetXXX_Name``).

    Every case of ``labelsTr/<case><file_ending>`` gives ``{"image": [channel files in channel order], "label",
    "case"}``; channel files are ``imagesTr/<case>_<XXXX><file_ending>`` for each key of ``channel_names``.

    Args:
        dataset_dir: the dataset folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        check: also check ``numTraining`` against the number of cases.

    Returns:
        The datalist (``image`` is always a list, even with one channel; MONAI's ``LoadImaged`` stacks it).

    Raises:
        DatalistError: a missing channel (naming the case and file), images without label, undeclared channels,
            a wrong ``numTraining``, or a missing folder or ``dataset.json``.
    """
    items, problems = _nnunet(dataset_dir, check)
    _raise_or_warn(problems)
    return items


def abdomenatlas_datalist(root: str | os.PathLike, classes: Sequence[str] | None = None) -> list[dict]:
    """Datalist of an AbdomenAtlas folder (``BDMAP_*/ct.nii.gz``, ``segmentations/<class>.nii.gz``).

    Args:
        root: the folder holding the ``BDMAP_*`` case folders.
        classes: class names whose masks must exist in every case (default: not checked).

    Returns:
        ``{"image": ct, "label_dir": segmentations folder, "combined_label": combined_labels.nii.gz, "case"}`` per
        case; ``label_dir`` and ``combined_label`` only where they exist.

    Raises:
        DatalistError: no ``BDMAP_*`` folder, or a case without ``ct.nii.gz``, without any label, or without the
            mask of a requested class (each named).
    """
    folder = Path(root).expanduser().absolute()
    expected = "BDMAP_xxxxxxxx/ct.nii.gz, segmentations/<class>.nii.gz, combined_labels.nii.gz"
    _require_folder(folder, "AbdomenAtlas", expected, "abdomenatlas")
    cases = sorted(d for d in folder.iterdir() if d.is_dir() and d.name.startswith("BDMAP_"))
    if not cases:
        raise DatalistError(
            f"no BDMAP_* case folder in {folder}: expected the AbdomenAtlas layout ({expected}); "
            f"check the path {_SYNTHETIC_HINT.format('abdomenatlas')}."
        )
    problems: list[DatalistProblem] = []
    items = []
    for case in cases:
        ct, seg, combined = case / "ct.nii.gz", case / "segmentations", case / "combined_labels.nii.gz"
        if not ct.is_file():
            problems.append(
                DatalistProblem(
                    str(ct), "missing", f"case {case.name} has no ct.nii.gz: re-download the case or remove its folder."
                )
            )
            continue
        item: dict[str, Any] = {"image": str(ct)}
        if seg.is_dir():
            item["label_dir"] = str(seg)
        if combined.is_file():
            item["combined_label"] = str(combined)
        if len(item) == 1:
            problems.append(
                DatalistProblem(
                    str(case),
                    "no_label",
                    f"case {case.name} has neither segmentations/ nor combined_labels.nii.gz: re-download the labels.",
                )
            )
        for name in classes or ():
            if not (seg / f"{name}.nii.gz").is_file():
                problems.append(
                    DatalistProblem(
                        str(seg / f"{name}.nii.gz"),
                        "missing",
                        f"case {case.name} has no mask for class {name!r}: re-download the labels or drop the class.",
                    )
                )
        item["case"] = case.name
        items.append(item)
    _raise_or_warn(problems)
    return items


def _image_folder(
    root: str | os.PathLike, split: str | None, classes: Sequence[str] | None
) -> tuple[list[dict], list[str], list[DatalistProblem]]:
    base = Path(root).expanduser().absolute()
    folder = base / split if split else base
    expected = f"{'<split>/' if split else ''}<class>/<image> with {', '.join(IMAGE_EXTENSIONS)} files"
    _require_folder(folder, "ImageNet image folder", expected, "natural2d_classification")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DatalistError(f"{folder} holds no class folder: expected the ImageNet layout ({expected}).")
    names = list(classes) if classes is not None else found
    unknown = [c for c in found if c not in names]
    if unknown:
        raise DatalistError(
            f"class folder(s) {unknown} in {folder} are not in the given classes {names}: pass the "
            "training split's classes or remove the folders."
        )
    problems: list[DatalistProblem] = []
    items: list[dict] = []
    skipped: list[str] = []
    for index, name in enumerate(names):
        class_dir = folder / name
        if not class_dir.is_dir():
            problems.append(
                DatalistProblem(str(class_dir), "missing", f"class {name!r} has no folder in this split.", "warning")
            )
            continue
        files = sorted(f for f in os.listdir(class_dir) if not f.startswith("."))
        images = [f for f in files if _suffix(f) in IMAGE_EXTENSIONS]
        skipped += [str(class_dir / f) for f in files if f not in images]
        if not images:
            raise DatalistError(
                f"class folder {class_dir} holds no image ({', '.join(IMAGE_EXTENSIONS)}): add images "
                "or remove the folder."
            )
        items += [{"image": str(class_dir / f), "label": index, "class_name": name} for f in images]
    if skipped:
        problems.append(
            DatalistProblem(
                str(folder),
                "skipped",
                f"{len(skipped)} file(s) are not "
                f"{'/'.join(IMAGE_EXTENSIONS)} images and were left out: {_listing(skipped)}.",
                "warning",
            )
        )
    return items, names, problems


def image_folder_datalist(
    root: str | os.PathLike, split: str | None = "train", classes: Sequence[str] | None = None
) -> tuple[list[dict], list[str]]:
    """Datalist of an ImageNet-style folder ``<root>/<split>/<class>/<image>``.

    Args:
        root: the dataset folder.
        split: the split sub-folder (``"train"``, ``"val"``); None reads class folders directly under ``root``.
        classes: class names in index order; pass the training split's list when reading another split so that
            indices agree (default: the sorted class folders).

    Returns:
        ``[{"image": path, "label": class index, "class_name": name}, ...]`` and the class list. Files with other
        extensions (e.g. a ``.gif``) are left out with a :class:`DatalistWarning`.

    Raises:
        DatalistError: a missing or empty folder, a class folder without images, or a folder not in ``classes``.
    """
    items, names, problems = _image_folder(root, split, classes)
    _raise_or_warn(problems)
    return items, names


def _stems(folder: Path, extensions: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Files of ``folder`` with one of ``extensions`` grouped by case name, and the other (skipped) files."""
    by_case: dict[str, list[str]] = {}
    skipped: list[str] = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if name.startswith(".") or path.is_dir():
            continue
        if _suffix(name) in extensions:
            by_case.setdefault(_case_name(name), []).append(str(path))
        else:
            skipped.append(str(path))
    return by_case, skipped


def _image_mask_folder(
    root: str | os.PathLike, image_dir: str, mask_dir: str
) -> tuple[list[dict], list[DatalistProblem]]:
    base = Path(root).expanduser().absolute()
    expected = f"{image_dir}/<case>.jpg|.png and {mask_dir}/<case>.png index maps"
    _require_folder(base, "image+mask folder", expected, "natural2d_segmentation")
    images_dir, masks_dir = base / image_dir, base / mask_dir
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatalistError(
                f"{folder} not found: an image+mask folder has {image_dir}/ and {mask_dir}/ side by side ({expected}); "
                f"check dataset_dir (currently {base}) {_SYNTHETIC_HINT.format('natural2d_segmentation')}."
            )
    images, skipped_images = _stems(images_dir, IMAGE_EXTENSIONS)
    masks, skipped_masks = _stems(masks_dir, IMAGE_EXTENSIONS)
    if not images:
        raise DatalistError(f"{images_dir} holds no image ({', '.join(IMAGE_EXTENSIONS)}): add the images.")
    if not masks:
        raise DatalistError(
            f"{masks_dir} holds no mask ({', '.join(MASK_EXTENSIONS)}): add one index-map PNG per image, named as "
            "the image (images/0001.jpg -> masks/0001.png)."
        )
    problems: list[DatalistProblem] = []
    for files in [f for f in images.values() if len(f) > 1] + [f for f in masks.values() if len(f) > 1]:
        problems.append(
            DatalistProblem(files[0], "inconsistent", f"one case name, several files ({_listing(files)}): keep one.")
        )
    lossy = [f[0] for f in masks.values() if _suffix(f[0]) not in MASK_EXTENSIONS]
    for path in lossy:
        problems.append(
            DatalistProblem(
                path,
                "label_values",
                "a mask must be lossless (PNG or BMP): JPEG compression changes label values at object edges; "
                "export the mask as a PNG index map.",
            )
        )
    unpaired = sorted(c for c in images if c not in masks)
    for case in unpaired[:_MAX_LISTED]:
        problems.append(
            DatalistProblem(
                images[case][0],
                "no_label",
                f"this image has no mask {masks_dir / (case + '.png')}: add the mask or remove the image.",
            )
        )
    if len(unpaired) > _MAX_LISTED:
        problems.append(
            DatalistProblem(
                str(images_dir),
                "no_label",
                f"{len(unpaired) - _MAX_LISTED} more image(s) have no mask of the same name in {masks_dir}: "
                f"{_listing([images[c][0] for c in unpaired[_MAX_LISTED:]])}.",
            )
        )
    orphans = sorted(masks[c][0] for c in masks if c not in images)
    if orphans:
        problems.append(
            DatalistProblem(
                str(masks_dir),
                "unlisted",
                f"{len(orphans)} mask(s) have no image of the same name and will not be used: {_listing(orphans)}.",
                "warning",
            )
        )
    skipped = skipped_images + skipped_masks
    if skipped:
        problems.append(
            DatalistProblem(
                str(base),
                "skipped",
                f"{len(skipped)} file(s) are not images and were left out: {_listing(skipped)}.",
                "warning",
            )
        )
    items = [
        {"image": images[case][0], "label": masks[case][0], "case": case} for case in sorted(images) if case in masks
    ]
    return items, problems


def image_mask_folder_datalist(
    root: str | os.PathLike,
    image_dir: str = "images",
    mask_dir: str = "masks",
    labels: Mapping[int, str] | Iterable[int] | None = None,
    check: bool = True,
) -> list[dict]:
    """Datalist of a 2D segmentation folder: ``<root>/images/<case>.<ext>`` with ``<root>/masks/<case>.png``.

    The layout of COCO-style semantic segmentation exports (and of the built-in ``natural2d_segmentation``): one
    image (JPEG, PNG or BMP) and one mask of the same name per case, the mask an index map (one integer class per
    pixel: grey ``L``, palette ``P`` whose indices are the classes, or 16-bit grey). Images and masks are paired by
    file name without extension.

    Args:
        root: the dataset folder.
        image_dir: sub-folder of the images, relative to ``root`` (e.g. ``"images/train2017"``).
        mask_dir: sub-folder of the masks, relative to ``root``.
        labels: the declared label values (a mapping value -> name, or the values). When given, every mask is read and
            its values must be among them: e.g. COCO's and VOC's 255 "unlabelled" pixels must be mapped to a class
            first. None skips this (slow on large sets) check.
        check: read every image and mask header: the files must be readable images, each mask one channel (not a
            colour-coded RGB mask) of its image's size.

    Returns:
        ``[{"image": path, "label": mask path, "case": name}, ...]`` sorted by case name. Masks without an image and
        non-image files are left out with a :class:`DatalistWarning`.

    Raises:
        DatalistError: a missing or empty folder; an image without mask, a JPEG mask, two files of one case name,
            an unreadable file, a colour-coded mask, a mask of another size than its image, or (with ``labels``) mask
            values that are not declared. Every problem names its file.
    """
    items, problems = _image_mask_folder(root, image_dir, mask_dir)
    if check or labels is not None:
        declared = None
        if labels is not None:
            declared = {int(v) for v in (labels.keys() if isinstance(labels, Mapping) else labels)}
        bad = {p.path for p in problems if p.severity == "error"}
        usable = [it for it in items if it["image"] not in bad and it["label"] not in bad]
        report = validate_datalist(usable, read_headers=True)  # readable files, mask size = image size
        problems += report.problems
        bad = {p.path for p in report.errors}
        for item in usable:
            if item["label"] in bad or item["image"] in bad:
                continue
            mask = read_volume_header(item["label"])
            if mask.n_channels > 1:
                problems.append(
                    DatalistProblem(
                        mask.path,
                        "label_values",
                        f"the mask has {mask.n_channels} channels (mode {mask.dtype}), not one index map: convert "
                        "a colour-coded mask to one integer class per pixel (a grey or palette PNG).",
                    )
                )
            elif declared is not None:
                _deep_label_ok(mask, declared, problems)
    _raise_or_warn(problems)
    return items


def image_mask_folder_labels(root: str | os.PathLike) -> list[str]:
    """The class names of an image+mask folder in index order, from the ``labels`` of ``<root>/dataset.json``.

    ``labels`` is ``{"0": "background", "1": "disc", ...}`` (Decathlon style, as the built-in
    ``natural2d_segmentation`` writes it) or ``{"background": 0, ...}`` (nnU-Net style).

    Raises:
        DatalistError: no ``dataset.json`` or no ``labels`` in it (the message says what to write), or label values
            that are not ``0 .. n-1``.
    """
    path = Path(root).expanduser().absolute() / "dataset.json"
    example = '{"labels": {"0": "background", "1": "person", ...}}'
    if not path.is_file():
        raise DatalistError(
            f"{path} not found: the class names of an image+mask folder come from its dataset.json; write one "
            f"({example}) or give the names in index order (bundle: --class_names \"['background', 'person']\")."
        )
    meta = _read_json(path, "image+mask folder", "natural2d_segmentation")
    names = _int_keyed(meta.get("labels", {}))
    if not names:
        raise DatalistError(f"{path} has no 'labels' ({example}): add them or give the class names in index order.")
    if sorted(names) != list(range(len(names))):
        raise DatalistError(
            f"{path}: label values {sorted(names)} are not 0..{len(names) - 1}: a mask must hold the class index; "
            "renumber the labels (and the masks)."
        )
    return [names[i] for i in range(len(names))]


def _parse_cell(value: str, folder: Path) -> Any:
    text = value.strip()
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        pass
    if _suffix(text) in VOLUME_EXTENSIONS + IMAGE_EXTENSIONS:
        return _resolve(folder, text)
    return text


def csv_datalist(csv_path: str | os.PathLike, image_col: str = "image", label_col: str | None = "label") -> list[dict]:
    """Datalist from a CSV file with one row per sample.

    Image paths are resolved relative to the CSV's folder. Labels become ``int`` or ``float`` when they are
    numbers, absolute paths when they name an image file, and stay strings otherwise. Other columns are kept as
    strings.

    Args:
        csv_path: the CSV file (with a header row).
        image_col: the column of image paths (stored under ``image``).
        label_col: the column of labels (stored under ``label``); None for unlabelled data.

    Returns:
        The datalist.

    Raises:
        DatalistError: a missing file, a missing column (the message lists the columns found), or no row.
    """
    path = Path(csv_path).expanduser().absolute()
    if not path.is_file():
        raise DatalistError(
            f"{path} not found: check the CSV path {_SYNTHETIC_HINT.format('volume3d_classification')}."
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        wanted = [c for c in (image_col, label_col) if c is not None]
        absent = [c for c in wanted if c not in columns]
        if absent:
            raise DatalistError(f"{path} has no column {absent} (columns: {columns}): pass image_col=/label_col=.")
        rows = list(reader)
    if not rows:
        raise DatalistError(f"{path} has a header but no row: add one row per sample.")
    items = []
    for row in rows:
        item: dict[str, Any] = {"image": _resolve(path.parent, row[image_col].strip())}
        if label_col is not None:
            item["label"] = _parse_cell(row[label_col], path.parent)
        item.update({k: v for k, v in row.items() if k not in (image_col, label_col) and k is not None})
        items.append(item)
    return items


# ----------------------------------------------------------------------------------------------------------------------
# Layout detection and validation
# ----------------------------------------------------------------------------------------------------------------------
def detect_layout(path: str | os.PathLike) -> str:
    """The layout of a dataset folder or file: ``decathlon``, ``nnunet``, ``abdomenatlas``, ``image_folder``,
    ``image_mask_folder`` (``images/`` + ``masks/``), ``csv``.

    Raises:
        DatalistError: the path does not exist, is empty, or matches no known layout.
    """
    p = Path(path).expanduser().absolute()
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "csv"
        raise DatalistError(f"{p} is a file but not a CSV: pass a dataset folder or a CSV file.")
    if not p.is_dir():
        raise DatalistError(f"{p} not found: check dataset_dir (currently {p}).")
    entries = [e for e in p.iterdir() if not e.name.startswith(".")]
    if not entries:
        raise DatalistError(
            f"{p} is empty: expected a Decathlon or nnU-Net folder (dataset.json), AbdomenAtlas "
            "(BDMAP_* folders), an ImageNet folder (<split>/<class>/<image>) or a CSV file."
        )
    if (p / "dataset.json").is_file():
        try:
            meta = json.loads((p / "dataset.json").read_text(encoding="utf-8"))
        except ValueError as e:
            raise DatalistError(f"{p / 'dataset.json'} is not valid JSON ({e}); fix or re-download it.") from e
        if "channel_names" in meta:
            return "nnunet"
        if "training" in meta:
            return "decathlon"
    if any(e.is_dir() and e.name.startswith("BDMAP_") for e in entries):
        return "abdomenatlas"
    if (p / "images").is_dir() and (p / "masks").is_dir():
        return "image_mask_folder"
    if _looks_like_image_folder(p / "train") or _looks_like_image_folder(p):
        return "image_folder"
    if [e for e in entries if e.suffix.lower() == ".csv"]:
        return "csv"
    raise DatalistError(
        f"no known dataset layout in {p}: expected one of {', '.join(_LAYOUTS)} (a dataset.json with "
        "'training' or 'channel_names', BDMAP_* folders, <split>/<class>/<image> folders, images/ + masks/ folders, "
        "or a CSV)."
    )


def _looks_like_image_folder(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    return any(
        d.is_dir() and not d.name.startswith(".") and any(_suffix(f) in IMAGE_EXTENSIONS for f in os.listdir(d))
        for d in folder.iterdir()
    )


def _csv_in(folder: Path) -> Path:
    if folder.is_file():
        return folder
    csvs = sorted(folder.glob("*.csv"))
    if (folder / "labels.csv").is_file():
        return folder / "labels.csv"
    if len(csvs) != 1:
        raise DatalistError(f"{folder} holds {len(csvs)} CSV files ({[c.name for c in csvs]}): pass the CSV itself.")
    return csvs[0]


def build_datalist(
    path: str | os.PathLike,
    layout: str = "auto",
    split: str | None = None,
    read_headers: bool = True,
    deep: bool = False,
) -> tuple[list[dict], DatalistReport]:
    """Build the datalist of a dataset folder (or CSV) and validate it.

    Args:
        path: a Decathlon task folder, nnU-Net v2 dataset folder, AbdomenAtlas folder, ImageNet-style folder or CSV.
        layout: ``"auto"`` (see :func:`detect_layout`) or one of ``decathlon``, ``nnunet``, ``abdomenatlas``,
            ``image_folder``, ``image_mask_folder``, ``csv``.
        split: Decathlon section (default ``"training"``) or image-folder split (default ``"train"``).
        read_headers: read image headers to check shapes, affines and integrity (see :func:`validate_datalist`).
        deep: also load every array (finite values, label values against the declared labels).

    Returns:
        The datalist and its report (the report's errors are not raised: call ``report.raise_if_errors()``).

    Raises:
        DatalistError: no known layout, or a problem that prevents building the list at all (missing
            ``dataset.json``, listed files that do not exist, missing channels, ...).
    """
    p = Path(path).expanduser().absolute()
    kind = detect_layout(p) if layout == "auto" else layout
    labels: dict[int, str] = {}
    spatial_dims = None
    if kind == "decathlon":
        items, problems = _decathlon(p, split or "training", check=True)
        _raise_or_warn([q for q in problems if q.severity == "error"])
        meta = read_decathlon_metadata(p)
        labels, spatial_dims = meta["labels"], declared_spatial_dims(meta)
    elif kind == "nnunet":
        items, problems = _nnunet(p, check=True)
        _raise_or_warn([q for q in problems if q.severity == "error"])
        labels = read_nnunet_metadata(p)["label_names"]
    elif kind == "abdomenatlas":
        items, problems, spatial_dims = abdomenatlas_datalist(p), [], 3
    elif kind == "image_folder":
        split = split if split is not None else ("train" if (p / "train").is_dir() else None)
        items, names, problems = _image_folder(p, split, None)
        labels = dict(enumerate(names))
    elif kind == "image_mask_folder":
        items, problems = _image_mask_folder(p, "images", "masks")
        _raise_or_warn([q for q in problems if q.severity == "error"])
        if (p / "dataset.json").is_file():
            labels = dict(enumerate(image_mask_folder_labels(p)))
    elif kind == "csv":
        items, problems = csv_datalist(_csv_in(p)), []
    else:
        raise DatalistError(f"unknown layout {layout!r}: use 'auto' or one of {_LAYOUTS}.")
    report = validate_datalist(
        items, read_headers=read_headers, deep=deep, labels=labels or None, spatial_dims=spatial_dims
    )
    report.layout, report.root = kind, str(p)
    report.problems = problems + report.problems
    return items, report


def validate_datalist(
    datalist: Sequence[Mapping[str, Any]],
    read_headers: bool = True,
    deep: bool = False,
    labels: Mapping[int, str] | Iterable[int] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    affine_tolerance_mm: float | None = None,
    spatial_dims: int | None = None,
) -> DatalistReport:
    """Check every entry of a datalist and summarise shapes and spacings.

    Per entry: the image exists (a list of channel files: each, with equal shapes) and is readable; the entry has a
    label (a file, a class value, or ``label_dir``/``combined_label`` for AbdomenAtlas); a label file has the image's
    spatial shape and an affine that puts its corners within ``affine_tolerance_mm`` of the image's.

    Args:
        datalist: the entries.
        read_headers: read headers (shapes, spacings, affines, NIfTI truncation); False only checks that files exist.
        deep: load every array: images must be finite, labels integral and within ``labels`` (when given).
        labels: declared label values (a mapping value -> name, or the values).
        image_key: key of the image path(s).
        label_key: key of the label (path or class value).
        affine_tolerance_mm: largest distance between image and label grid corners (default: half the smallest
            voxel spacing).
        spatial_dims: the number of spatial dimensions every image must have (e.g. 3 for a volume dataset, where a
            2D file is an error); None does not check.

    Returns:
        The report (call ``raise_if_errors()`` to stop on errors).
    """
    report = DatalistReport(n_items=len(datalist))
    declared = None if labels is None else {int(v) for v in (labels.keys() if isinstance(labels, Mapping) else labels)}
    if isinstance(labels, Mapping):
        report.labels = {int(k): str(v) for k, v in labels.items()}
    any_label = any(label_key in it or "label_dir" in it or "combined_label" in it for it in datalist)
    for item in datalist:
        if _validate_item(
            item, report, read_headers, deep, declared, image_key, label_key, any_label, affine_tolerance_mm,
            spatial_dims,
        ):
            report.n_pairs += 1
    return report


def _validate_item(
    item, report, read_headers, deep, declared, image_key, label_key, any_label, tol, spatial_dims=None
) -> bool:
    problems = report.problems
    if image_key not in item:
        problems.append(DatalistProblem(str(item), "missing", f"entry has no {image_key!r} key."))
        return False
    images = item[image_key] if isinstance(item[image_key], (list, tuple)) else [item[image_key]]
    headers = [_checked_header(str(p), read_headers, problems) for p in images]
    if any(h is False for h in headers):
        return False
    image = headers[0]
    if read_headers:
        for h in headers[1:]:
            if h.shape != image.shape:
                problems.append(
                    DatalistProblem(
                        h.path,
                        "shape_mismatch",
                        f"channel shape {h.shape} differs from "
                        f"{image.path} {image.shape}: the channels must share one grid.",
                    )
                )
                return False
        if not _dims_ok(image, spatial_dims, problems):
            return False
        report.shapes.append(image.shape)
        report.spacings.append(image.spacing)
        if deep and not _deep_image_ok(image, problems):
            return False
    label_files = _label_files(item, label_key)
    has_class = label_key in item and not label_files[: 1 if _is_path_like(item[label_key]) else 0]
    if not label_files and not has_class:
        if any_label or label_key in item:
            problems.append(
                DatalistProblem(
                    str(images[0]),
                    "no_label",
                    "this image has no label while others do: add its label or remove the entry.",
                )
            )
            return False
        return True
    if has_class:
        value = item[label_key]
        if value is None or (
            declared is not None and isinstance(value, (int, np.integer)) and int(value) not in declared
        ):
            problems.append(
                DatalistProblem(
                    str(images[0]),
                    "label_values",
                    f"class label {value!r} is not one of the declared labels {sorted(declared or [])}.",
                )
            )
            return False
        return True
    ok = True
    for path in label_files:
        lab = _checked_header(path, read_headers, problems)
        if lab is False:
            ok = False
            continue
        if not read_headers:
            continue
        if lab.shape != image.shape:
            problems.append(
                DatalistProblem(
                    path,
                    "shape_mismatch",
                    f"label shape {lab.shape} differs from image shape "
                    f"{image.shape} ({image.path}): the label belongs to another image or was "
                    "resampled; re-export it on the image's grid.",
                )
            )
            ok = False
            continue
        distance = _corner_distance(image, lab)
        limit = tol if tol is not None else 0.5 * min(image.spacing)
        if distance > limit:
            problems.append(
                DatalistProblem(
                    path,
                    "affine_mismatch",
                    f"label grid is {distance:.3g} mm away from the "
                    f"image grid ({image.path}; tolerance {limit:.3g} mm): fix the label "
                    "header (copy the image affine) or resample it.",
                )
            )
            ok = False
            continue
        if deep and not _deep_label_ok(lab, declared, problems):
            ok = False
    return ok


def _label_files(item: Mapping[str, Any], label_key: str) -> list[str]:
    files = []
    value = item.get(label_key)
    if _is_path_like(value):
        files += [os.fspath(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if "combined_label" in item:
        files.append(os.fspath(item["combined_label"]))
    if "label_dir" in item and os.path.isdir(item["label_dir"]):
        files += sorted(os.path.join(item["label_dir"], f) for f in os.listdir(item["label_dir"]) if _is_volume_file(f))
    return files


def _is_path_like(value: Any) -> bool:
    """A label that names files (a path, or a list of paths) rather than a class value."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_path_like(v) for v in value)
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str):
        return False
    return _suffix(value) in VOLUME_EXTENSIONS + IMAGE_EXTENSIONS or os.sep in value or os.path.exists(value)


def _checked_header(path: str, read_headers: bool, problems: list[DatalistProblem]) -> VolumeHeader | bool:
    if not os.path.exists(path):
        problems.append(DatalistProblem(path, "missing", "file not found: check the dataset folder or the datalist."))
        return False
    if not read_headers:
        return True
    try:
        return read_volume_header(path)
    except DatalistError as e:
        kind = "corrupt" if "truncated" in str(e) or "corrupt" in str(e) else "unreadable"
        problems.append(DatalistProblem(path, kind, str(e).replace(f"{path}: ", "").replace(f"{path} ", "")))
        return False


def declared_spatial_dims(metadata: Mapping[str, Any]) -> int | None:
    """Spatial dimensions a Decathlon ``dataset.json`` declares (``tensorImageSize`` "3D" or "4D": 3), else None."""
    size = str(metadata.get("tensorImageSize", "")).strip().upper()
    return 3 if size in ("3D", "4D") else None


def _dims_ok(header: VolumeHeader, spatial_dims: int | None, problems: list[DatalistProblem]) -> bool:
    """False (and a ``dimensions`` problem) when an image has another number of spatial dimensions than expected."""
    if spatial_dims is None or len(header.shape) == spatial_dims:
        return True
    problems.append(
        DatalistProblem(
            header.path,
            "dimensions",
            f"a {len(header.shape)}D file (shape {header.shape}) where {spatial_dims}D volumes are expected: "
            "re-export the whole volume (was a single slice saved?) or remove the entry.",
        )
    )
    return False


def _corner_distance(a: VolumeHeader, b: VolumeHeader) -> float:
    """Largest distance (mm) between the world positions of the grid corners under two affines."""
    return _affine_corner_distance(a.affine, b.affine, a.shape)


def _affine_corner_distance(a: np.ndarray, b: np.ndarray, spatial_shape: Sequence[int]) -> float:
    """Largest distance (mm) between the world positions of the corners of a grid of ``spatial_shape`` under the
    4x4 affines ``a`` and ``b``."""
    shape = list(spatial_shape[:3]) + [1] * (3 - len(spatial_shape[:3]))
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.linalg.norm((corners @ a.T - corners @ b.T)[:, :3], axis=1)))


def _deep_image_ok(header: VolumeHeader, problems: list[DatalistProblem]) -> bool:
    try:
        arr = _load_array(header)
    except DatalistError as e:
        problems.append(DatalistProblem(header.path, "corrupt", str(e)))
        return False
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        problems.append(
            DatalistProblem(
                header.path,
                "non_finite",
                f"{int((~np.isfinite(arr)).sum())} NaN/inf "
                "voxels: fix the export or replace them (e.g. with the minimum).",
            )
        )
        return False
    return True


def _deep_label_ok(header: VolumeHeader, declared: set[int] | None, problems: list[DatalistProblem]) -> bool:
    try:
        arr = _load_array(header)
    except DatalistError as e:
        problems.append(DatalistProblem(header.path, "corrupt", str(e)))
        return False
    values = np.unique(arr)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        problems.append(
            DatalistProblem(
                header.path,
                "label_values",
                "the label holds non-integer values: it was interpolated (resample labels with nearest neighbour).",
            )
        )
        return False
    extra = sorted({int(v) for v in values} - declared) if declared is not None else []
    if extra:
        problems.append(
            DatalistProblem(
                header.path,
                "label_values",
                f"label values {extra} are not declared "
                f"({sorted(declared)}): fix the labels or the dataset's label list.",
            )
        )
        return False
    return True


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------
def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``.

    A failure (or an interrupted run) leaves no partial file and never truncates an existing ``path``; the temporary
    file is removed on error.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, out)
    finally:
        if partial.exists():
            partial.unlink()
    return str(out)


def write_datalist(datalist: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write a datalist as a JSON list (as ``monai-ext datalist -o`` and ``monai-ext onboard`` do), atomically.

    The JSON text is built before anything is opened and written through :func:`write_text_atomic`, so an error
    leaves no half-written file.

    Returns:
        The path written.
    """
    return write_text_atomic(path, json.dumps(list(datalist), indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------------------------------
def split_datalist(
    datalist: Sequence[dict],
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | Callable[[dict], Hashable] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Split a datalist into training and validation parts, deterministically and optionally by group.

    Groups (e.g. all frames of one patient) stay on one side. Groups are ordered by their string value, shuffled
    with ``seed`` and moved to validation until it holds ``round(val_fraction * len(datalist))`` entries (at least
    one group when ``val_fraction > 0`` and there are two groups or more). Entries keep their original order.

    Args:
        datalist: the entries.
        val_fraction: target fraction of entries in validation, in [0, 1).
        seed: random seed of the shuffle.
        group_key: a key of the entries, or a function of an entry, giving its group (default: each entry alone).

    Returns:
        ``(train, val)``.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1) or an entry without the group key.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")

    def group_of(i: int, item: dict) -> Hashable:
        if group_key is None:
            return i
        if callable(group_key):
            return group_key(item)
        if group_key not in item:
            raise ValueError(f"entry {i} has no group key {group_key!r} (keys: {sorted(item)}).")
        return item[group_key]

    groups: dict[Hashable, list[int]] = {}
    for i, item in enumerate(datalist):
        groups.setdefault(group_of(i, item), []).append(i)
    order = sorted(groups, key=lambda g: (str(type(g)), str(g)))
    order = [order[k] for k in np.random.default_rng(seed).permutation(len(order))]
    target = round(val_fraction * len(datalist))
    if val_fraction > 0 and len(order) > 1:
        target = max(target, 1)
    val_idx: set[int] = set()
    for g in order:
        if len(val_idx) >= target:
            break
        if len(val_idx) + len(groups[g]) <= len(datalist) - 1:  # never empty the training part
            val_idx.update(groups[g])
    train = [it for i, it in enumerate(datalist) if i not in val_idx]
    val = [it for i, it in enumerate(datalist) if i in val_idx]
    return train, val
