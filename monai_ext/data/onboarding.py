"""Onboard a dataset: a clean datalist, a readable Markdown report, and the settings to train on it.

:func:`onboard_dataset` (CLI: ``monai-ext onboard PATH -o datalist.json --report report.md``) builds on
:mod:`monai_ext.data.datalists`: it detects the layout (Decathlon, nnU-Net v2, AbdomenAtlas, image folder, CSV),
pairs images with labels, reads every header (NIfTI, NRRD/MetaImage, DICOM series, 2D images) and, for at most
``max_cases`` cases spread over the list, the voxels. Unlike :func:`~monai_ext.data.datalists.build_datalist` it does
not stop at the first broken file: every problem is named in the report and the entries it affects (unreadable
files, NaN/inf intensities, undeclared label values, 2D files in a 3D dataset, ...) are left out of the datalist.

The report (:meth:`DatasetOnboarding.to_markdown`) lists the layout, the pairs found, unreadable and unpaired files,
the label values seen per label folder (and those outside the declared classes), spacing and orientation outliers
(spacing far from the median, axis codes other than the majority's), intensity ranges per channel, the class names,
and how to use the dataset with this repository's bundles: as a new domain of the Med3D co-training (``tasks``), as
the target of a fine-tuning bundle (``dataset_dir``), or as extra AbdomenAtlas pre-training data. The setting names
are those of the bundles' ``configs/train.json`` (:data:`BUNDLE_DATASET_SETTINGS`; a test checks them).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.abdomenatlas_classes import ABDOMENATLAS_CLASSES
from monai_ext.data.datalists import (
    DatalistError,
    DatalistProblem,
    DatalistReport,
    VolumeHeader,
    _decathlon,
    _image_folder,
    _is_volume_file,
    _load_array,
    _nnunet,
    build_datalist,
    declared_spatial_dims,
    detect_layout,
    read_decathlon_metadata,
    read_nnunet_metadata,
    read_volume_header,
    validate_datalist,
    write_datalist,
    write_text_atomic,
)

__all__ = [
    "BUNDLE_DATASET_SETTINGS",
    "ChannelIntensity",
    "DatasetOnboarding",
    "onboard_dataset",
]

#: Bundles of this repository that take a dataset: the layouts they read and the ``configs/train.json`` settings the
#: report names (a test checks that every name exists in the bundle's ``train.json``).
BUNDLE_DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    "med3d_3dseg8_cotraining": {
        "use": "new domain of the Med3D multi-domain co-training",
        "layouts": ("decathlon",),
        "settings": ("dataset_dir", "tasks", "image_channel", "max_cases_per_task"),
    },
    "transfer_segmentation": {
        "use": "target of a segmentation fine-tuning",
        "layouts": ("decathlon", "nnunet", "image_mask_folder"),
        "settings": ("dataset_dir", "layout", "spacing", "image_channel", "label_fraction", "max_val_cases"),
    },
    "crossdim_2d_to_3d_segmentation": {
        "use": "target of the 2D-to-3D fine-tuning",
        "layouts": ("decathlon",),
        "settings": ("dataset_dir",),
    },
    "transfer_classification": {
        "use": "target of a classification fine-tuning",
        "layouts": ("image_folder", "csv"),
        "settings": ("dataset_dir", "class_names"),
    },
    "abdomenatlas_supervised_pretraining": {
        "use": "extra AbdomenAtlas (SuPreM) pre-training data",
        "layouts": ("abdomenatlas",),
        "settings": ("dataset_dir", "classes", "partial_labels", "hu_window"),
    },
    "vdt_natural_image_pretraining": {
        "use": "VDT 2D-image pre-training data",
        "layouts": ("image_folder",),
        "settings": ("dataset_dir", "train_split", "val_split"),
    },
}

#: The built-in synthetic tasks the co-training uses by default (kept when a domain is added).
_DEFAULT_COTRAINING_TASKS = (
    "Task101_SynthBrainMR", "Task102_SynthLiverCT", "Task103_SynthProstateMR", "Task104_SynthSpleenCT",
)  # fmt: skip
_MAX_LISTED = 40
_ATLAS_COMMAND = (
    "python -m monai.bundle run --config_file bundles/abdomenatlas_supervised_pretraining/configs/train.json \\"
)
_MAX_VOXELS_SAMPLED = 1_000_000
_ERROR_KINDS_UNREADABLE = ("unreadable", "corrupt", "missing")
_ERROR_KINDS_UNPAIRED = ("no_label", "unlisted")
_ERROR_KINDS_GEOMETRY = ("shape_mismatch", "affine_mismatch")


@dataclass
class ChannelIntensity:
    """Intensity figures of one image channel over the sampled images.

    Attributes:
        channel: channel index.
        name: modality or channel name (from the dataset's metadata, else ``channel <i>``).
        n_images: images read.
        minimum: smallest value seen.
        maximum: largest value seen.
        p0_5: median over the images of their 0.5th percentile.
        p50: median over the images of their median.
        p99_5: median over the images of their 99.5th percentile.
        mean: mean of the per-image means.
        std: mean of the per-image standard deviations.
        p99_5_range: smallest and largest per-image 99.5th percentile (a wide range means inconsistent scaling).
    """

    channel: int
    name: str
    n_images: int
    minimum: float
    maximum: float
    p0_5: float
    p50: float
    p99_5: float
    mean: float
    std: float
    p99_5_range: tuple[float, float]


@dataclass
class DatasetOnboarding:
    """Everything :func:`onboard_dataset` found about a dataset.

    Attributes:
        root: the dataset folder (or CSV).
        layout: the layout read.
        layout_detected: True when the layout was detected (``layout="auto"``).
        metadata: descriptive entries of the dataset's ``dataset.json`` (name, description, licence, ...).
        class_names: label value -> class name (declared classes).
        modalities: channel -> modality or channel name.
        datalist: the usable entries (written by :meth:`write_datalist`).
        n_listed: entries the layout lists (usable or not).
        validation: the header checks of every listed entry (:func:`~monai_ext.data.datalists.validate_datalist`),
            with the layout's own problems.
        excluded: image path -> why the entry was left out of the datalist.
        unpaired: file -> what it lacks (images without label, labels without image).
        headers: image path -> header, for the usable entries.
        label_values: label file -> values it holds (for the cases whose voxels were read).
        label_voxels: label value -> share of the voxels of the files read that hold it.
        undeclared: label file -> values outside the declared classes.
        n_cases_read: cases whose voxels were read.
        n_voxel_candidates: cases that passed the header checks (those ``max_cases`` samples from).
        max_cases: the limit given (None: all cases).
        intensities: per-channel intensity figures.
        image_p99_5: image -> 99.5th percentile of its first channel (for the cases whose voxels were read).
        spacing_ratio: a spacing more than this factor away from the median on some axis is an outlier.
        splits_file: the dataset's ``splits.json`` if it has one.
    """

    root: str
    layout: str
    layout_detected: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    modalities: dict[int, str] = field(default_factory=dict)
    datalist: list[dict] = field(default_factory=list)
    n_listed: int = 0
    validation: DatalistReport = field(default_factory=DatalistReport)
    excluded: dict[str, str] = field(default_factory=dict)
    unpaired: dict[str, str] = field(default_factory=dict)
    headers: dict[str, VolumeHeader] = field(default_factory=dict)
    label_values: dict[str, list[int | float]] = field(default_factory=dict)
    label_voxels: dict[int | float, float] = field(default_factory=dict)
    undeclared: dict[str, list[int | float]] = field(default_factory=dict)
    n_cases_read: int = 0
    n_voxel_candidates: int = 0
    max_cases: int | None = None
    intensities: list[ChannelIntensity] = field(default_factory=list)
    image_p99_5: dict[str, float] = field(default_factory=dict)
    spacing_ratio: float = 2.0
    splits_file: str | None = None

    # ------------------------------------------------------------------------------------------------------------------
    # Derived figures
    # ------------------------------------------------------------------------------------------------------------------
    @property
    def is_volume(self) -> bool:
        """True for 3D data (volumes with a spacing and an orientation)."""
        return any(h.format != "image2d" for h in self.headers.values())

    @property
    def unreadable(self) -> list[DatalistProblem]:
        """Files that are missing, unreadable or corrupt."""
        return [p for p in self.validation.problems if p.kind in _ERROR_KINDS_UNREADABLE]

    def spacing_outliers(self) -> dict[str, tuple[float, ...]]:
        """Image -> spacing, for spacings more than ``spacing_ratio`` away from the median on some axis."""
        if not self.is_volume or not self.headers:
            return {}
        spacings = {p: h.spacing[:3] for p, h in self.headers.items()}
        ndim = min(len(s) for s in spacings.values())
        median = np.median(np.array([s[:ndim] for s in spacings.values()]), axis=0)
        out = {}
        for path, s in spacings.items():
            ratio = np.asarray(s[:ndim], dtype=float) / np.maximum(median, 1e-12)
            if np.any(ratio > self.spacing_ratio) or np.any(ratio < 1.0 / self.spacing_ratio):
                out[path] = tuple(float(v) for v in s)
        return out

    def orientations(self) -> dict[str, str]:
        """Image -> axis codes of its affine (e.g. ``RAS``), for 3D data."""
        if not self.is_volume:
            return {}
        import nibabel as nib

        return {p: "".join(nib.orientations.aff2axcodes(h.affine)) for p, h in self.headers.items()}

    def majority_orientation(self) -> str | None:
        """The most common axis codes (None for 2D data)."""
        codes = Counter(self.orientations().values())
        return codes.most_common(1)[0][0] if codes else None

    def orientation_outliers(self) -> dict[str, str]:
        """Image -> axis codes, for images whose codes differ from the majority's."""
        majority = self.majority_orientation()
        return {p: c for p, c in self.orientations().items() if c != majority}

    def intensity_outliers(self, factor: float = 10.0) -> dict[str, float]:
        """Image -> 99.5th percentile (first channel), for images more than ``factor`` away from the median one."""
        values = {p: v for p, v in self.image_p99_5.items() if v > 0}
        if len(values) < 3:
            return {}
        median = float(np.median(list(values.values())))
        return {p: v for p, v in values.items() if v > factor * median or v < median / factor}

    def identity_affines(self) -> bool:
        """True when every volume's affine is the identity (the voxel spacing was probably lost upstream)."""
        affines = [h.affine for h in self.headers.values()]
        return self.is_volume and bool(affines) and all(np.allclose(a, np.eye(4)) for a in affines)

    def absent_classes(self) -> dict[int, int]:
        """Declared foreground class -> number of label files read that do not contain it."""
        out = {}
        for value in self.class_names:
            if value == 0:
                continue
            missing = sum(1 for values in self.label_values.values() if value not in values)
            if missing:
                out[value] = missing
        return out

    def modality_kind(self) -> str:
        """``"CT"``, ``"MR"``, ``"2D"`` or ``"unknown"``, from the declared modality names."""
        if not self.is_volume:
            return "2D"
        names = " ".join(self.modalities.values()).upper()
        if "CT" in names.split() or names.startswith("CT"):
            return "CT"
        if "MR" in names or "T1" in names or "T2" in names or "FLAIR" in names or "ADC" in names:
            return "MR"
        return "unknown"

    def verdict(self) -> str:
        """One line: ready, ready with warnings, or the number of problems to fix."""
        n_err = len(self.validation.errors)
        if not self.datalist:
            return "not usable: no image/label pair passed the checks"
        if n_err:
            return f"usable after fixes: {n_err} error(s); the datalist leaves out {len(self.excluded)} entry(ies)"
        if self.validation.warnings or self.spacing_outliers() or self.orientation_outliers() or self.unpaired:
            return "ready, with warnings to read"
        return "ready"

    # ------------------------------------------------------------------------------------------------------------------
    # Output
    # ------------------------------------------------------------------------------------------------------------------
    def write_datalist(self, path: str | os.PathLike) -> str:
        """Write the usable entries as a JSON list (as ``monai-ext datalist -o`` does), atomically."""
        return write_datalist(self.datalist, path)

    def write_report(self, path: str | os.PathLike, datalist_path: str | None = None) -> str:
        """Write :meth:`to_markdown` to ``path``, atomically."""
        return write_text_atomic(path, self.to_markdown(datalist_path))

    def write(self, datalist_path: str | os.PathLike, report_path: str | os.PathLike) -> tuple[str, str]:
        """Write the datalist and the report (``monai-ext onboard``): both texts are built before either file is
        written, and each file is written atomically, so a failure leaves no half-written output."""
        report_text = self.to_markdown(str(datalist_path))
        datalist_text = json.dumps(self.datalist, indent=2, default=str) + "\n"
        return write_text_atomic(datalist_path, datalist_text), write_text_atomic(report_path, report_text)

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.layout} dataset at {self.root}: {self.n_listed} entries listed, {len(self.datalist)} usable "
            f"image/label pairs, {len(self.validation.errors)} errors, {len(self.validation.warnings)} warnings",
            f"  verdict: {self.verdict()}",
        ]
        for label, items in (
            ("unreadable", [f"{p.path} ({p.kind})" for p in self.unreadable]),
            ("unpaired", list(self.unpaired)),
            ("undeclared label values", [f"{p} {v}" for p, v in self.undeclared.items()]),
            ("spacing outliers", list(self.spacing_outliers())),
            ("orientation outliers", [f"{p} {c}" for p, c in self.orientation_outliers().items()]),
        ):
            if items:
                shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
                lines.append(f"  {label}: {shown}")
        return "\n".join(lines)

    def to_markdown(self, datalist_path: str | None = None) -> str:
        """The report, in Markdown."""
        md: list[str] = []
        title = self.metadata.get("name") or Path(self.root).name
        md += [f"# Onboarding report: {title}", ""]
        md += [f"- Folder: `{self.root}`"]
        md += [f"- Layout: **{self.layout}** ({'detected' if self.layout_detected else 'given'})"]
        for key in ("description", "reference", "licence", "release", "tensorImageSize"):
            if self.metadata.get(key):
                md.append(f"- {key}: {self.metadata[key]}")
        if self.modalities:
            md.append("- Channels: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.modalities.items())))
        if self.class_names:
            md.append("- Classes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.class_names.items())))
        if datalist_path:
            md.append(f"- Datalist written: `{datalist_path}` ({len(self.datalist)} entries)")
        if self.splits_file:
            md.append(f"- Split file: `{self.splits_file}` (the co-training bundle uses its train/val split)")
        md += ["", f"**Verdict: {self.verdict()}.**", ""]
        md += self._files_section() + self._geometry_section() + self._labels_section()
        md += self._intensity_section() + self._usage_section()
        return "\n".join(md).rstrip() + "\n"

    def _files_section(self) -> list[str]:
        v = self.validation
        kinds = Counter(p.kind for p in v.problems)
        md = ["## Files", "", "| | count |", "|---|---:|"]
        md.append(f"| entries listed by the layout | {self.n_listed} |")
        md.append(f"| usable image/label pairs (in the datalist) | {len(self.datalist)} |")
        md.append(f"| entries left out | {len(self.excluded)} |")
        md.append(f"| missing, unreadable or corrupt files | {sum(kinds[k] for k in _ERROR_KINDS_UNREADABLE)} |")
        md.append(f"| unpaired files | {len(self.unpaired)} |")
        md.append(f"| image/label grid mismatches | {sum(kinds[k] for k in _ERROR_KINDS_GEOMETRY)} |")
        md.append("")
        if self.unreadable:
            md += ["### Missing, unreadable or corrupt files", ""]
            md += _bullets(f"`{p.path}` ({p.kind}): {p.message}" for p in self.unreadable)
        if self.unpaired:
            md += ["### Unpaired files", ""]
            md += _bullets(f"`{path}`: {why}" for path, why in self.unpaired.items())
        geometry = [p for p in v.problems if p.kind in _ERROR_KINDS_GEOMETRY]
        if geometry:
            md += ["### Image/label mismatches", ""]
            md += _bullets(f"`{p.path}` ({p.kind}): {p.message}" for p in geometry)
        shown_elsewhere = _ERROR_KINDS_UNREADABLE + _ERROR_KINDS_GEOMETRY + _ERROR_KINDS_UNPAIRED
        others = [
            p
            for p in v.problems
            if p.kind not in shown_elsewhere and not (p.kind == "label_values" and p.path in self.undeclared)
        ]
        if others:
            md += ["### Other findings", ""]
            md += _bullets(str(p) for p in others)
        if self.excluded:
            md += ["### Entries left out of the datalist", ""]
            md += _bullets(f"`{path}`: {why}" for path, why in self.excluded.items())
        return md

    def _geometry_section(self) -> list[str]:
        if not self.headers:
            return []
        md = ["## Geometry", ""]
        usable = DatalistReport(
            shapes=[h.shape for h in self.headers.values()], spacings=[h.spacing for h in self.headers.values()]
        )
        shapes, spacings = usable.shape_summary(), usable.spacing_summary()
        if shapes:
            md.append(
                "- Shape (array axes) min / median / max: "
                + " / ".join(_fmt_tuple(shapes[k], "g") for k in ("min", "median", "max"))
            )
        if not self.is_volume:
            channels = Counter(h.n_channels for h in self.headers.values())
            md += ["- 2D images; channels per image: " + ", ".join(f"{c} ({n})" for c, n in channels.items()), ""]
            return md
        if spacings:
            md.append(
                "- Spacing (mm) min / median / max: "
                + " / ".join(_fmt_tuple(spacings[k], ".3g") for k in ("min", "median", "max"))
            )
        anisotropy = float(np.max(spacings["median"]) / max(np.min(spacings["median"]), 1e-12)) if spacings else 1.0
        if anisotropy >= 3:
            md.append(f"- Median spacing is anisotropic ({anisotropy:.1f}x between axes).")
        orient = Counter(self.orientations().values())
        md.append("- Orientation (axis codes): " + ", ".join(f"{c} ({n})" for c, n in orient.most_common()))
        channels = Counter(h.n_channels for h in self.headers.values())
        md.append("- Channels per image: " + ", ".join(f"{c} ({n} images)" for c, n in sorted(channels.items())))
        dtypes = Counter(h.dtype for h in self.headers.values())
        md.append("- Data types on disk: " + ", ".join(f"{t} ({n})" for t, n in dtypes.most_common()))
        if self.identity_affines():
            md.append(
                "- **Every affine is the identity**: the voxel spacing and orientation were probably lost upstream; "
                "spacings are then 1 mm and resampling to a target spacing changes nothing."
            )
        md.append("")
        outliers = self.spacing_outliers()
        md += [f"### Spacing outliers (more than {self.spacing_ratio:g}x from the median on an axis)", ""]
        md += _bullets(f"`{p}`: {_fmt_tuple(s, '.3g')}" for p, s in outliers.items()) if outliers else ["None.", ""]
        off = self.orientation_outliers()
        md += [f"### Orientation outliers (majority {self.majority_orientation()})", ""]
        md += _bullets(f"`{p}`: {c}" for p, c in off.items()) if off else ["None.", ""]
        return md

    def _labels_section(self) -> list[str]:
        md = ["## Labels", ""]
        if not self.is_volume and self.layout in ("image_folder", "csv"):
            counts = Counter(it.get("label") for it in self.datalist)
            md += ["| class | name | images |", "|---:|---|---:|"]
            md += [f"| {k} | {self.class_names.get(k, '')} | {n} |" for k, n in sorted(counts.items(), key=str)]
            return md + [""]
        limited = self.max_cases is not None and self.n_cases_read < self.n_voxel_candidates
        md.append(
            f"Voxels read for {self.n_cases_read} of {self.n_voxel_candidates} cases that passed the header checks"
            + (f" (`--max-cases {self.max_cases}`); the labels of the other cases were only checked through their "
               "headers." if limited else ".")
        )
        md.append("")
        if self.label_values:
            by_value: Counter = Counter(v for values in self.label_values.values() for v in values)
            md += ["| value | declared name | label files containing it | share of voxels |", "|---:|---|---:|---:|"]
            for value in sorted(set(by_value) | set(self.class_names)):
                name = self.class_names.get(value, "**not declared**" if self.class_names else "")
                share = self.label_voxels.get(value, 0.0)
                files = f"{by_value.get(value, 0)} of {len(self.label_values)}"
                md.append(f"| {value:g} | {name} | {files} | {share:.3%} |")
            md.append("")
            folders: dict[str, set] = {}
            for path, values in self.label_values.items():
                folders.setdefault(str(Path(path).parent), set()).update(values)
            md += ["Values per label folder:", ""]
            md += _bullets(f"`{f}`: {sorted(v)}" for f, v in sorted(folders.items()))
        if self.undeclared:
            md += [f"### Values outside the declared classes {sorted(self.class_names)}", ""]
            md += _bullets(f"`{p}`: {v}" for p, v in self.undeclared.items())
        absent = self.absent_classes()
        if absent:
            md += ["### Declared classes missing from some label files", ""]
            md += _bullets(
                f"{v} {self.class_names.get(v, '')}: absent from {n} of {len(self.label_values)} files read"
                for v, n in absent.items()
            )
        return md

    def _intensity_section(self) -> list[str]:
        if not self.intensities:
            return []
        md = [
            "## Intensities",
            "",
            f"From {self.intensities[0].n_images} image(s); percentiles are medians over the images (up to "
            f"{_MAX_VOXELS_SAMPLED:,} voxels sampled per image).",
            "",
            "| channel | name | min | p0.5 | p50 | p99.5 | max | mean | std | per-image p99.5 range |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for c in self.intensities:
            md.append(
                f"| {c.channel} | {c.name} | {c.minimum:.4g} | {c.p0_5:.4g} | {c.p50:.4g} | {c.p99_5:.4g} | "
                f"{c.maximum:.4g} | {c.mean:.4g} | {c.std:.4g} | {c.p99_5_range[0]:.4g} to {c.p99_5_range[1]:.4g} |"
            )
        md.append("")
        for c in self.intensities:
            low, high = c.p99_5_range
            if c.n_images > 1 and low > 0 and high / low > 10:
                md += [
                    f"Channel {c.channel}: the per-image 99.5th percentile ranges from {low:.4g} to {high:.4g}, so the "
                    "images are scaled differently: normalise each image on its own (the bundles clip to per-image "
                    "percentiles and z-score each volume).",
                    "",
                ]
        outliers = self.intensity_outliers()
        if outliers:
            median = float(np.median(list(self.image_p99_5.values())))
            md += [f"### Intensity outliers (99.5th percentile more than 10x from the median, {median:.4g})", ""]
            md += _bullets(f"`{p}`: {v:.4g}" for p, v in outliers.items())
        first = self.intensities[0]
        if first.minimum >= 0 and first.maximum <= 1.0:
            md += ["Intensities lie in [0, 1]: the images were rescaled before release (no HU, no raw MR values).", ""]
        elif first.minimum <= -900 and self.modality_kind() in ("CT", "unknown"):
            md += ["Intensities look like CT Hounsfield units (minimum near -1000).", ""]
        return md

    def _usage_section(self) -> list[str]:
        md = ["## How to use it", ""]
        if self.validation.errors or self.undeclared:
            md += [
                "The bundles build their own datalist from the folder and stop on the errors listed above "
                "(the co-training and fine-tuning bundles do not use the datalist written here): fix them first.",
                "",
            ]
        if self.layout in ("decathlon", "nnunet", "image_mask_folder") and not self.is_volume:
            md += self._finetuning_usage()
            md += [
                "2D images: the Med3D co-training, the 2D-to-3D bundle and the AbdomenAtlas pre-training take 3D "
                "volumes.",
                "",
            ]
        elif self.layout == "decathlon":
            md += self._cotraining_usage() + self._finetuning_usage() + self._abdomenatlas_usage()
        elif self.layout == "nnunet":
            md += [
                "### As a new domain of the Med3D co-training (`bundles/med3d_3dseg8_cotraining`)",
                "",
                "The co-training reads the Decathlon layout (`dataset.json` with a `training` list, one file per case, "
                "several channels as one 4D NIfTI): convert this nnU-Net v2 dataset first, then onboard the converted "
                "folder again.",
                "",
            ]
            md += self._finetuning_usage() + self._abdomenatlas_usage()
        elif self.layout == "image_mask_folder":
            md += self._finetuning_usage()
        elif self.layout == "abdomenatlas":
            md += self._abdomenatlas_usage()
        elif self.layout in ("image_folder", "csv"):
            md += self._classification_usage()
        return md

    def _channel_note(self) -> list[str]:
        multi = max((h.n_channels for h in self.headers.values()), default=1) > 1 or len(self.modalities) > 1
        if not multi:
            return []
        return [
            "The images have several channels: the bundles read `in_channels` channel(s) starting at `image_channel` "
            "(default 0); add `--image_channel K` to train on channel K.",
            "",
        ]

    def _cotraining_usage(self) -> list[str]:
        root = Path(self.root)
        spacing = f" ({_fmt_tuple(self._median_spacing_ras(), '.3g')} mm, RAS order)" if self.is_volume else ""
        md = [
            "### As a new domain of the Med3D co-training (`bundles/med3d_3dseg8_cotraining`)",
            "",
            "`tasks` lists task folders, by name under `dataset_dir` (default: the built-in synthetic tasks) or as "
            "absolute paths. Keep the current tasks and add this one:",
            "",
            "```bash",
            "python -m monai.bundle run --config_file bundles/med3d_3dseg8_cotraining/configs/train.json \\",
            f'  --tasks "{_py_list([*_DEFAULT_COTRAINING_TASKS, str(root)])}"',
            "```",
            "",
            f"It gets its own segmentation branch of {len(self.class_names)} outputs, and the bundle resamples it to "
            f"its own median spacing{spacing}. To co-train on real tasks only, point `--dataset_dir` at the folder "
            f"that holds them and list their names: `--dataset_dir {root.parent} --tasks \"['{root.name}', ...]\"`. "
            "`--max_cases_per_task N` gives a quick first run."
            + (" Its `splits.json` decides the train/val split." if self.splits_file else ""),
            "",
        ]
        return md + self._channel_note()

    def _finetuning_usage(self) -> list[str]:
        md = [
            "### As the target of a fine-tuning bundle (`bundles/transfer_segmentation`)",
            "",
            "```bash",
            "python -m monai.bundle run --config_file bundles/transfer_segmentation/configs/train.json \\",
            f"  --dataset_dir {self.root}",
            "```",
            "",
            f"`dataset_dir` is this folder (`--layout {self.layout}` if detection should be skipped); the classes "
            f"({len(self.class_names)}: {', '.join(self.class_names.values())}) come from the dataset. "
            "`--label_fraction 0.1` trains on a tenth of the training cases, `--max_val_cases N` shortens validation.",
        ]
        if self.is_volume and (self._anisotropy() >= 3 or self.spacing_outliers()):
            md[-1] += (
                " The bundle does not resample unless told: this dataset's spacing varies or is anisotropic, so pass "
                f"`--spacing \"{[round(s, 3) for s in self._median_spacing_ras()]}\"` (the median spacing, RAS order)."
            )
        md.append("")
        if self.layout == "decathlon" and self.is_volume:
            md += [
                "The 2D-to-3D bundle takes the same setting: `python -m monai.bundle run --config_file "
                f"bundles/crossdim_2d_to_3d_segmentation/configs/train.json --dataset_dir {self.root}`.",
                "",
            ]
        return md + self._channel_note()

    def _classification_usage(self) -> list[str]:
        md = [
            "### As the target of a fine-tuning bundle (`bundles/transfer_classification`)",
            "",
            "```bash",
            "python -m monai.bundle run --config_file bundles/transfer_classification/configs/train.json \\",
            f"  --dataset_dir {self.root}",
            "```",
            "",
            f"The {len(self.class_names) or 'class'} classes come from the dataset; `--class_names` overrides them.",
            "",
        ]
        if self.layout == "image_folder":
            md += [
                "### As 2D pre-training data of the VDT bundle (`bundles/vdt_natural_image_pretraining`)",
                "",
                "```bash",
                "python -m monai.bundle run --config_file bundles/vdt_natural_image_pretraining/configs/train.json \\",
                f"  --dataset_dir {self.root} --train_split train --val_split val",
                "```",
                "",
            ]
        return md

    def _abdomenatlas_usage(self) -> list[str]:
        md = ["### As extra AbdomenAtlas pre-training data (`bundles/abdomenatlas_supervised_pretraining`)", ""]
        if self.layout == "abdomenatlas":
            present = [n for v, n in self.class_names.items() if v != 0]
            known = [c for c in present if c in ABDOMENATLAS_CLASSES]
            new = [c for c in present if c not in ABDOMENATLAS_CLASSES]
            md += [
                "```bash",
                _ATLAS_COMMAND,
                f'  --dataset_dir {self.root} --classes "{_py_list(known + new)}" --partial_labels True',
                "```",
                "",
                "`--partial_labels True` marks the masks a case lacks as unknown (ignored by the loss) instead of "
                "failing; drop it when every case has every mask."
                + (f" Classes not in AbdomenAtlas 1.1 ({', '.join(new)}) become extra output channels." if new else ""),
                "",
            ]
            return md
        if self.modality_kind() != "CT":
            md += [
                f"Not as it is: this dataset is {self.modality_kind()}, and the bundle expects CT in Hounsfield "
                "units (it windows intensities to `hu_window`, [-175, 250] HU by default).",
                "",
            ]
            return md
        names = {v: n for v, n in self.class_names.items() if v != 0}
        matches = {n: _atlas_name(n) for n in names.values()}
        known = [a for a in matches.values() if a]
        unmatched = [n for n, a in matches.items() if not a]
        md += [
            "The bundle reads one folder of AbdomenAtlas cases (`dataset_dir`): write each case of this dataset as "
            "`BDMAP_<id>/ct.nii.gz` with one binary mask per class, `segmentations/<class>.nii.gz`, on the CT's grid, "
            "next to the AbdomenAtlas cases, then train with the classes and partial labels:",
            "",
            "```bash",
            _ATLAS_COMMAND,
            f'  --dataset_dir /path/to/atlas_and_this_dataset --classes "{_py_list(list(ABDOMENATLAS_CLASSES))}" '
            "--partial_labels True",
            "```",
            "",
            f"Classes of this dataset that are AbdomenAtlas classes: {', '.join(known) or 'none'}."
            + (
                f" Not AbdomenAtlas classes: {', '.join(unmatched)} (add them to `--classes` as new channels, or "
                "leave their masks out)."
                if unmatched
                else ""
            )
            + " With `--partial_labels True` the classes this dataset does not annotate are ignored by the loss.",
            "",
        ]
        return md

    def _median_spacing_ras(self) -> tuple[float, ...]:
        spacings = []
        for h in self.headers.values():
            columns = h.affine[:3, :3]
            zooms = np.sqrt((columns**2).sum(axis=0))
            spacing = np.empty(3)
            spacing[np.abs(columns).argmax(axis=0)] = zooms
            spacings.append(spacing)
        return tuple(float(s) for s in np.median(np.array(spacings), axis=0)) if spacings else ()

    def _anisotropy(self) -> float:
        s = DatalistReport(spacings=[h.spacing for h in self.headers.values()]).spacing_summary()
        return float(np.max(s["median"]) / max(np.min(s["median"]), 1e-12)) if s and self.is_volume else 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def _bullets(lines: Any) -> list[str]:
    lines = list(lines)
    out = [f"- {line}" for line in lines[:_MAX_LISTED]]
    if len(lines) > _MAX_LISTED:
        out.append(f"- ... and {len(lines) - _MAX_LISTED} more")
    return out + [""]


def _fmt_tuple(values: Sequence[float], fmt: str) -> str:
    return "(" + ", ".join(format(float(v), fmt) for v in values) + ")"


def _py_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(repr(str(v)) for v in values) + "]"


def _atlas_name(name: str) -> str | None:
    """The AbdomenAtlas class a dataset's class name denotes (``"Gallbladder"`` -> ``gall_bladder``), if any."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    aliases = {"gallbladder": "gall_bladder", "ivc": "postcava", "inferior_vena_cava": "postcava"}
    key = aliases.get(key, key)
    return key if key in ABDOMENATLAS_CLASSES else None


def _image_paths(item: Mapping[str, Any]) -> list[str]:
    image = item.get("image")
    return [str(p) for p in (image if isinstance(image, (list, tuple)) else [image])] if image is not None else []


def _label_paths(item: Mapping[str, Any]) -> list[str]:
    label = item.get("label")
    if isinstance(label, (str, os.PathLike)) and not str(label).lstrip("-").isdigit():
        return [str(label)]
    if isinstance(label, (list, tuple)) and label and all(isinstance(v, (str, os.PathLike)) for v in label):
        return [str(v) for v in label]
    if "label_dir" in item and os.path.isdir(item["label_dir"]):
        return sorted(str(Path(item["label_dir"]) / f) for f in os.listdir(item["label_dir"]) if _is_volume_file(f))
    if "combined_label" in item:
        return [str(item["combined_label"])]
    return []


def _without_path(error: Exception, path: str) -> str:
    return str(error).replace(f"{path}: ", "").replace(f"{path} ", "")


def _sample_indices(n: int, max_cases: int | None) -> list[int]:
    if max_cases is None or n <= max_cases:
        return list(range(n))
    if max_cases <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, int(max_cases))})


# ----------------------------------------------------------------------------------------------------------------------
# Layout scans (reporting, not raising)
# ----------------------------------------------------------------------------------------------------------------------
def _scan_decathlon(root: Path, onboarding: DatasetOnboarding) -> tuple[list[dict], list[DatalistProblem]]:
    meta = read_decathlon_metadata(root)
    onboarding.metadata = {k: v for k, v in meta.items() if isinstance(v, (str, int, float))}
    onboarding.class_names = dict(meta["labels"])
    onboarding.modalities = dict(meta["modality"])
    items, problems = _decathlon(root, "training", check=True)
    # name every unpaired file (the layout check summarises unlisted images in one line)
    problems = [p for p in problems if p.kind != "unlisted"]
    listed_images = {p for it in items for p in _image_paths(it)}
    listed_labels = {p for it in items for p in _label_paths(it)}
    for folder, listed, what in (
        ("imagesTr", listed_images, "image on disk that dataset.json does not list (no label): it is not used"),
        ("labelsTr", listed_labels, "label on disk that no entry of dataset.json uses (no image)"),
    ):
        d = root / folder
        if d.is_dir():
            for name in sorted(os.listdir(d)):
                path = os.path.normpath(d / name)
                if _is_volume_file(name) and path not in listed:
                    onboarding.unpaired[path] = what
    for it in items:
        if "label" not in it:
            onboarding.unpaired[_image_paths(it)[0]] = "entry of dataset.json without label"
    return items, problems


def _scan_nnunet(root: Path, onboarding: DatasetOnboarding) -> tuple[list[dict], list[DatalistProblem]]:
    meta = read_nnunet_metadata(root)
    onboarding.metadata = {k: v for k, v in meta.items() if isinstance(v, (str, int, float))}
    onboarding.class_names = dict(meta["label_names"])
    onboarding.modalities = {int(k): str(v) for k, v in meta["channel_names"].items()}
    items, problems = _nnunet(root, check=True)
    for p in problems:  # kept as errors too: build_datalist, and so the bundles, stop on them
        if p.kind == "no_label":
            onboarding.unpaired[p.path] = p.message
    return items, problems


def _scan_abdomenatlas(root: Path, onboarding: DatasetOnboarding) -> tuple[list[dict], list[DatalistProblem]]:
    items: list[dict] = []
    problems: list[DatalistProblem] = []
    names: set[str] = set()
    for case in sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("BDMAP_")):
        ct, seg, combined = case / "ct.nii.gz", case / "segmentations", case / "combined_labels.nii.gz"
        if not ct.is_file():
            problems.append(DatalistProblem(str(case), "missing", "case folder without ct.nii.gz."))
            continue
        item: dict[str, Any] = {"image": str(ct), "case": case.name}
        if seg.is_dir():
            item["label_dir"] = str(seg)
            names.update(f[: -len(".nii.gz")] for f in os.listdir(seg) if f.endswith(".nii.gz"))
        if combined.is_file():
            item["combined_label"] = str(combined)
        if len(item) == 2:
            onboarding.unpaired[str(ct)] = "case without segmentations/ or combined_labels.nii.gz"
        items.append(item)
    # values as in combined_labels.nii.gz: index k is ABDOMENATLAS_CLASSES[k - 1]; other names are numbered after them
    new = sorted(n for n in names if n not in ABDOMENATLAS_CLASSES)
    onboarding.class_names = {0: "background"}
    onboarding.class_names.update({ABDOMENATLAS_CLASSES.index(n) + 1: n for n in names if n in ABDOMENATLAS_CLASSES})
    onboarding.class_names.update({len(ABDOMENATLAS_CLASSES) + 1 + i: n for i, n in enumerate(new)})
    onboarding.class_names = dict(sorted(onboarding.class_names.items()))
    onboarding.modalities = {0: "CT"}
    return items, problems


def _scan_image_folder(root: Path, onboarding: DatasetOnboarding) -> tuple[list[dict], list[DatalistProblem]]:
    split = "train" if (root / "train").is_dir() else None
    items, names, problems = _image_folder(root, split, None)
    onboarding.class_names = dict(enumerate(names))
    return items, problems


# ----------------------------------------------------------------------------------------------------------------------
# Voxel statistics
# ----------------------------------------------------------------------------------------------------------------------
def _channel_arrays(header: VolumeHeader, array: np.ndarray) -> list[np.ndarray]:
    if header.n_channels > 1 and array.ndim > len(header.shape):
        return [np.take(array, c, axis=-1) for c in range(array.shape[-1])]
    return [array]


def _stats(array: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    flat = np.asarray(array, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return {}
    sample = flat if flat.size <= _MAX_VOXELS_SAMPLED else rng.choice(flat, _MAX_VOXELS_SAMPLED, replace=False)
    p0_5, p50, p99_5 = np.percentile(sample, [0.5, 50, 99.5])
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "p0_5": float(p0_5),
        "p50": float(p50),
        "p99_5": float(p99_5),
        "mean": float(sample.mean()),
        "std": float(sample.std()),
    }


def _finite_ok(path: str, array: np.ndarray, problems: list[DatalistProblem]) -> bool:
    """False (and a ``non_finite`` problem naming the file) when a floating-point image holds NaN or inf voxels."""
    if array.dtype.kind not in "fc":
        return True
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if not bad:
        return True
    problems.append(
        DatalistProblem(
            path,
            "non_finite",
            f"{bad} NaN/inf voxels: training on them gives a NaN loss; fix the export or replace them (e.g. with the "
            "image minimum) and save the file again.",
        )
    )
    return False


def _read_voxels(onboarding: DatasetOnboarding, max_cases: int | None, seed: int) -> None:
    """Label values and intensity figures of at most ``max_cases`` usable cases, spread over the list."""
    rng = np.random.default_rng(seed)
    per_channel: dict[int, list[dict[str, float]]] = {}
    voxel_counts: Counter = Counter()
    total_voxels = 0
    declared = set(onboarding.class_names)
    names = {n: v for v, n in onboarding.class_names.items()}
    onboarding.n_voxel_candidates = len(onboarding.datalist)
    failed: list[str] = []
    non_finite: list[str] = []
    bad_labels: list[str] = []
    for index in _sample_indices(len(onboarding.datalist), max_cases):
        item = onboarding.datalist[index]
        ok = True
        channel = 0
        for path in _image_paths(item):
            header = onboarding.headers.get(path) or read_volume_header(path)
            try:
                array = _load_array(header)
            except DatalistError as e:
                onboarding.validation.problems.append(DatalistProblem(path, "corrupt", _without_path(e, path)))
                failed.append(_image_paths(item)[0])
                ok = False
                break
            if not _finite_ok(path, array, onboarding.validation.problems):
                non_finite.append(_image_paths(item)[0])
                ok = False
                break
            for plane in _channel_arrays(header, array):
                stats = _stats(plane, rng)
                if stats:
                    per_channel.setdefault(channel, []).append(stats)
                    if channel == 0:
                        onboarding.image_p99_5[path] = stats["p99_5"]
                channel += 1
        label_files = _label_paths(item) if onboarding.layout not in ("image_folder", "csv") else []
        for path in label_files if ok else []:
            try:
                array = _load_array(read_volume_header(path))
            except DatalistError as e:
                onboarding.validation.problems.append(DatalistProblem(path, "corrupt", _without_path(e, path)))
                failed.append(_image_paths(item)[0])
                ok = False
                break
            values, counts = np.unique(array, return_counts=True)
            as_numbers = [int(v) if float(v).is_integer() else float(v) for v in values]
            if onboarding.layout == "abdomenatlas" and path != item.get("combined_label"):
                # a binary mask per class: its foreground is the class of the file name
                value = names.get(Path(path).name.split(".")[0])
                extra = [v for v in as_numbers if v not in (0, 1)]
                as_numbers = [value if v == 1 else v for v in as_numbers]
            else:
                extra = [v for v in as_numbers if declared and v not in declared]
            onboarding.label_values[path] = as_numbers
            for v, n in zip(as_numbers, counts):
                voxel_counts[v] += int(n)
            total_voxels += int(array.size)
            if extra:
                onboarding.undeclared[path] = extra
                bad_labels.append(_image_paths(item)[0])
        onboarding.n_cases_read += int(ok)
    for image in dict.fromkeys(failed):
        onboarding.excluded[image] = "its voxels cannot be read (see the unreadable files)"
    for image in dict.fromkeys(non_finite):
        onboarding.excluded[image] = "its image holds NaN or infinite voxels (see the other findings)"
    for image in dict.fromkeys(bad_labels):
        onboarding.excluded.setdefault(image, "its label holds values outside the declared classes")
    dropped = set(failed) | set(non_finite) | set(bad_labels)
    onboarding.datalist = [it for it in onboarding.datalist if _image_paths(it)[0] not in dropped]
    onboarding.headers = {p: h for p, h in onboarding.headers.items() if p not in dropped}
    onboarding.image_p99_5 = {p: v for p, v in onboarding.image_p99_5.items() if p not in dropped}
    for path, extra in onboarding.undeclared.items():
        expected = "0 and 1 (a binary mask)" if onboarding.layout == "abdomenatlas" else sorted(declared)
        onboarding.validation.problems.append(
            DatalistProblem(
                path,
                "label_values",
                f"label values {extra} are not declared ({expected}): fix the labels or the dataset's label list.",
            )
        )
    onboarding.label_voxels = {v: n / total_voxels for v, n in voxel_counts.items()} if total_voxels else {}
    for channel, rows in sorted(per_channel.items()):
        onboarding.intensities.append(
            ChannelIntensity(
                channel=channel,
                name=onboarding.modalities.get(channel, f"channel {channel}"),
                n_images=len(rows),
                minimum=min(r["min"] for r in rows),
                maximum=max(r["max"] for r in rows),
                p0_5=float(np.median([r["p0_5"] for r in rows])),
                p50=float(np.median([r["p50"] for r in rows])),
                p99_5=float(np.median([r["p99_5"] for r in rows])),
                mean=float(np.mean([r["mean"] for r in rows])),
                std=float(np.mean([r["std"] for r in rows])),
                p99_5_range=(min(r["p99_5"] for r in rows), max(r["p99_5"] for r in rows)),
            )
        )


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------
def onboard_dataset(
    path: str | os.PathLike,
    layout: str = "auto",
    max_cases: int | None = None,
    spacing_ratio: float = 2.0,
    seed: int = 0,
) -> DatasetOnboarding:
    """Scan a dataset folder and describe it: usable pairs, problems, geometry, labels, intensities, how to use it.

    Every listed entry is checked through its headers (existence, readability, NIfTI integrity, image/label shape
    and grid). Voxels are read for at most ``max_cases`` usable cases spread evenly over the list (label values,
    values outside the declared classes, intensity percentiles per channel); ``None`` reads all of them.

    Args:
        path: a Decathlon task folder, nnU-Net v2 dataset folder, AbdomenAtlas folder, ImageNet-style folder or CSV.
        layout: ``"auto"`` (:func:`~monai_ext.data.datalists.detect_layout`) or ``decathlon``, ``nnunet``,
            ``abdomenatlas``, ``image_folder``, ``csv``.
        max_cases: at most this many cases have their voxels read.
        spacing_ratio: spacings more than this factor from the median on an axis are reported as outliers.
        seed: seed of the voxel sampling of large images.

    Returns:
        The findings; :meth:`DatasetOnboarding.write_datalist` and :meth:`DatasetOnboarding.write_report` write
        them.

    Raises:
        DatalistError: the path is missing or empty, matches no layout, or its metadata (``dataset.json``) cannot be
            read.
    """
    if max_cases is not None and int(max_cases) < 0:
        raise ValueError(f"max_cases must be >= 0 or None, got {max_cases}.")
    root = Path(path).expanduser().absolute()
    kind = detect_layout(root) if layout == "auto" else layout
    onboarding = DatasetOnboarding(
        root=str(root),
        layout=kind,
        layout_detected=layout == "auto",
        max_cases=max_cases,
        spacing_ratio=float(spacing_ratio),
    )
    scanners = {
        "decathlon": _scan_decathlon,
        "nnunet": _scan_nnunet,
        "abdomenatlas": _scan_abdomenatlas,
        "image_folder": _scan_image_folder,
    }
    if kind in scanners:
        items, layout_problems = scanners[kind](root, onboarding)
    else:  # CSV, 2D image+mask folders and any other layout build_datalist reads (it raises on unusable folders)
        items, layout_report = build_datalist(root, layout=kind, read_headers=False)
        layout_problems = [p for p in layout_report.problems if p.kind != "missing"]
        onboarding.class_names = dict(layout_report.labels)
    if (root / "splits.json").is_file():
        onboarding.splits_file = str(root / "splits.json")
    onboarding.n_listed = len(items)

    has_labels = any(_label_paths(it) or "label" in it for it in items)
    report = DatalistReport(layout=kind, root=str(root), n_items=len(items), labels=dict(onboarding.class_names))
    report.problems = list(layout_problems)
    labels = onboarding.class_names or None
    spatial_dims = 3 if kind == "abdomenatlas" else declared_spatial_dims(onboarding.metadata)
    for item in items:
        images = _image_paths(item)
        if (has_labels and not (_label_paths(item) or "label" in item)) or (
            kind == "abdomenatlas" and not _label_paths(item)
        ):
            onboarding.excluded[images[0]] = "no label"
            onboarding.unpaired.setdefault(images[0], "image without label")
            report.problems.append(DatalistProblem(images[0], "no_label", "this image has no label."))
            continue
        one = validate_datalist([item], read_headers=True, deep=False, labels=labels, spatial_dims=spatial_dims)
        report.problems += one.problems
        report.shapes += one.shapes
        report.spacings += one.spacings
        if one.n_pairs != 1 or one.errors:
            reasons = sorted({p.kind for p in one.errors}) or ["invalid"]
            onboarding.excluded[images[0]] = ", ".join(reasons) + " (see above)"
            continue
        report.n_pairs += 1
        onboarding.datalist.append(dict(item))
        onboarding.headers[images[0]] = read_volume_header(images[0], check_integrity=False)
    onboarding.validation = report
    if not items:
        raise DatalistError(f"{root}: the {kind} layout lists no image: nothing to onboard.")
    _read_voxels(onboarding, max_cases, seed)
    seen: set[tuple[str, str]] = set()
    unique = []
    for p in onboarding.validation.problems:  # the layout scan and the header checks may both report a missing file
        if (os.path.normpath(p.path), p.kind) not in seen:
            seen.add((os.path.normpath(p.path), p.kind))
            unique.append(p)
    onboarding.validation.problems = unique
    onboarding.validation.n_pairs = len(onboarding.datalist)
    return onboarding
