"""Deterministic synthetic datasets written in the on-disk layouts of real public data.

Every bundle of ``monai_ext`` runs with no arguments on these datasets: they are small (40-72 voxels a side, a whole
set in seconds) but built from one shared "anatomical vocabulary" so that an encoder pre-trained on some of them
learns something that transfers to the others:

- CT volumes are rendered from one miniature abdominal phantom (about a third of adult size, so that realistic
  voxel spacings give small volumes): air around a body, subcutaneous and visceral fat, a muscle wall, spine, ribs,
  pelvis and femurs, lungs, and the 25 AbdomenAtlas organs and vessels as deformed ellipsoids and tubes at plausible
  relative positions, in native or portal-venous contrast phase, with lesions inside liver and kidneys.
- MR volumes (brain with a nested tumour, prostate with two nested zones) use the same shapes with arbitrary
  positive intensities, a smooth multiplicative bias field and Rician noise.
- Every structure has internal texture, partial-volume edges and per-case random size, position, rotation and
  deformation; every volume is written with its voxel spacing in the NIfTI affine.

Layouts written: the Medical Segmentation Decathlon (:func:`write_decathlon_task`), AbdomenAtlas 1.1
(:func:`write_abdomenatlas`), an ImageNet-style image folder (:func:`write_image_folder_classification`), 2D images
with index masks (:func:`write_image_mask_segmentation`) and a 3D classification set with a CSV
(:func:`write_volume_classification`). The same seed gives the same arrays; each case draws from its own seed
sequence (seed, dataset, case), so case ``i`` does not depend on how many cases are written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_ext.data.abdomenatlas_classes import ABDOMENATLAS_CLASSES

__all__ = [
    "SyntheticTaskSpec",
    "SYNTHETIC_DECATHLON_TASKS",
    "PRETRAINING_TASKS",
    "HELD_OUT_TASK",
    "NATURAL_IMAGE_CLASSES",
    "SHAPE_SEGMENTATION_LABELS",
    "VOLUME_CLASSIFICATION_CLASSES",
    "write_decathlon_task",
    "write_decathlon_tasks",
    "write_abdomenatlas",
    "write_image_folder_classification",
    "write_image_mask_segmentation",
    "write_volume_classification",
]

# The phantom is about a third of adult size: an adult abdomen (34 x 24 cm) then spans 60-70 voxels at 1.7-2 mm.
_PHANTOM_SCALE = 0.35
# structures that others are clipped to: their memberships are kept while painting
_CLIP_PARENTS = {"body_fat", "visceral_fat", "liver", "brain", "oedema", "tumour_core", "stomach", "peripheral_zone"}
_CT_MIN, _CT_MAX = -1024, 3071


# ----------------------------------------------------------------------------------------------------------------------
# Random numbers and smooth fields
# ----------------------------------------------------------------------------------------------------------------------
def _case_rng(seed: int, dataset: str, case: int) -> np.random.Generator:
    """Independent generator per (seed, dataset, case); crc32 keeps it stable across Python processes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(dataset.encode()), int(case)]))


def _bspline_matrix(n_out: int, n_cells: int) -> np.ndarray:
    """Cubic B-spline weights (n_out, n_cells + 3) sampling a coarse grid of ``n_cells`` cells at ``n_out`` points."""
    pos = np.linspace(0.0, n_cells, n_out, endpoint=False) + 0.5 * n_cells / n_out
    lo = np.floor(pos).astype(int)
    t = pos - lo
    weights = np.stack(
        [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6], axis=1
    )
    m = np.zeros((n_out, n_cells + 3), dtype=np.float32)
    for k in range(4):
        m[np.arange(n_out), lo + k] = weights[:, k]
    return m


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: Sequence[int]) -> np.ndarray:
    """Smooth random field with zero mean and unit standard deviation (cubic B-spline of a coarse noise grid)."""
    cells = [max(1, int(c)) for c in cells]
    field_ = rng.standard_normal([c + 3 for c in cells]).astype(np.float32)
    for axis, (n, c) in enumerate(zip(shape, cells)):
        field_ = np.moveaxis(np.tensordot(_bspline_matrix(n, c), np.moveaxis(field_, axis, 0), axes=(1, 0)), 0, axis)
    field_ -= field_.mean()
    return field_ / max(float(field_.std()), 1e-6)


class _CosineField:
    """A smooth scalar field in world coordinates: a sum of random plane cosines (resolution independent)."""

    def __init__(self, rng: np.random.Generator, n_terms: int, wavelength_mm: tuple[float, float], amplitude: float):
        directions = rng.standard_normal((n_terms, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength_mm, size=(n_terms, 1))
        self.freq = (2 * np.pi * directions / wavelengths).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, n_terms).astype(np.float32)
        self.amp = (amplitude * rng.uniform(0.5, 1.0, n_terms) / math.sqrt(n_terms)).astype(np.float32)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        out = np.zeros(points.shape[1:], dtype=np.float32)
        for f, p, a in zip(self.freq, self.phase, self.amp):
            out += a * np.cos(f[0] * points[0] + f[1] * points[1] + f[2] * points[2] + p)
        return out


def _rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix from angles (degrees) about x, then y, then z."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# ----------------------------------------------------------------------------------------------------------------------
# Shapes: signed distances (mm, negative inside) in the patient frame
# ----------------------------------------------------------------------------------------------------------------------
class _Blob:
    """A deformed ellipsoid: radii along a rotated frame, radius modulated by low-order cosines of the direction."""

    def __init__(
        self,
        rng: np.random.Generator,
        center: Sequence[float],
        radii: Sequence[float],
        angles_deg: Sequence[float] = (0.0, 0.0, 0.0),
        irregular: float = 0.08,
        frequency: float = 2.5,
        n_terms: int = 4,
    ):
        self.center = np.asarray(center, dtype=np.float32)
        self.radii = np.asarray(radii, dtype=np.float32)
        self.rot = _rotation(angles_deg).astype(np.float32)
        dirs = rng.standard_normal((n_terms, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        self.freq = (dirs * frequency * rng.uniform(0.7, 1.3, (n_terms, 1))).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, n_terms).astype(np.float32)
        self.amp = (irregular * rng.uniform(0.4, 1.0, n_terms) * 2 / n_terms).astype(np.float32)

    def scaled(self, factor: float | Sequence[float], center_shift: Sequence[float] = (0.0, 0.0, 0.0)) -> _Blob:
        """The same deformed shape with radii multiplied by ``factor`` (a shell's inner surface, a nested zone)."""
        out = object.__new__(_Blob)
        out.__dict__.update(self.__dict__)
        out.radii = self.radii * np.asarray(factor, dtype=np.float32)
        out.center = self.center + np.asarray(center_shift, dtype=np.float32)
        return out

    def inside_point(self, rng: np.random.Generator, depth: tuple[float, float]) -> np.ndarray:
        """A random point at normalised radius within ``depth`` (0 = centre, 1 = surface) of the ellipsoid."""
        u = rng.standard_normal(3)
        u *= rng.uniform(*depth) / np.linalg.norm(u)
        return self.center + self.rot @ (u * self.radii)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = float(self.radii.max()) * (1 + float(self.amp.sum()))
        return self.center - r, self.center + r

    def signed_distance(self, p: np.ndarray) -> np.ndarray:
        d = [p[i] - self.center[i] for i in range(3)]
        r = self.rot
        q = [r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2] for i in range(3)]
        u = [q[i] / self.radii[i] for i in range(3)]
        nu = np.sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]) + np.float32(1e-6)
        inv = 1 / nu
        surface = np.ones_like(nu)
        for f, ph, a in zip(self.freq, self.phase, self.amp):
            surface += a * np.cos((f[0] * u[0] + f[1] * u[1] + f[2] * u[2]) * inv + ph)
        return np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]) * (1 - surface * inv)


class _Tube:
    """A tube of varying radius around a smooth centreline (Catmull-Rom spline through control points)."""

    def __init__(self, points: Sequence[Sequence[float]], radius: float | Sequence[float], samples_per_span: int = 3):
        ctrl = np.asarray(points, dtype=np.float64)
        radii = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(ctrl),))
        if len(ctrl) > 2:
            padded = np.concatenate([2 * ctrl[:1] - ctrl[1:2], ctrl, 2 * ctrl[-1:] - ctrl[-2:-1]])
            rpad = np.concatenate([radii[:1], radii, radii[-1:]])
            pts, rs = [], []
            for i in range(1, len(padded) - 2):
                for t in np.linspace(0, 1, samples_per_span, endpoint=False):
                    p0, p1, p2, p3 = padded[i - 1 : i + 3]
                    pts.append(
                        0.5
                        * (
                            2 * p1
                            + (-p0 + p2) * t
                            + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                            + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
                        )
                    )
                    rs.append(rpad[i] + (rpad[i + 1] - rpad[i]) * t)
            pts.append(ctrl[-1])
            rs.append(radii[-1])
            ctrl, radii = np.asarray(pts), np.asarray(rs)
        self.points = ctrl.astype(np.float32)
        self.radii = np.asarray(radii, dtype=np.float32)

    def scaled(self, factor: float) -> _Tube:
        """The same centreline with radii multiplied by ``factor`` (a lumen inside a wall)."""
        out = object.__new__(_Tube)
        out.points, out.radii = self.points, self.radii * np.float32(factor)
        return out

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = float(self.radii.max())
        return self.points.min(0) - r, self.points.max(0) + r

    def signed_distance(self, p: np.ndarray) -> np.ndarray:
        best = np.full(p.shape[1:], np.inf, dtype=np.float32)
        for a, b, ra, rb in zip(self.points[:-1], self.points[1:], self.radii[:-1], self.radii[1:]):
            ab = b - a
            ap = [p[i] - a[i] for i in range(3)]
            t = (ab[0] * ap[0] + ab[1] * ap[1] + ab[2] * ap[2]) * np.float32(1 / max(float(ab @ ab), 1e-9))
            np.clip(t, 0, 1, out=t)
            e = [ap[i] - ab[i] * t for i in range(3)]
            dist = np.sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]) - (ra + (rb - ra) * t)
            np.minimum(best, dist, out=best)
        return best


@dataclass
class _Structure:
    """One painted structure: its shape, intensity (per CT phase for CT), texture, and what it is labelled as."""

    name: str
    shape: _Blob | _Tube
    value: float | tuple[float, float]
    texture: float = 0.0
    label_as: str | None = None
    clip_to: str | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------------
class _VolumeCanvas:
    """A voxel grid with an affine, a rigid patient placement and a smooth warp, onto which structures are painted.

    Intensities are composited with partial-volume memberships (a linear ramp one voxel wide across the surface);
    the structure map keeps, per voxel, the last structure whose surface contains the voxel centre.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        shape: Sequence[int],
        affine: np.ndarray,
        background: float,
        patient_rotation: np.ndarray,
        patient_offset: np.ndarray,
        warp_mm: float,
        texture_mm: float,
        phase: int = 0,
    ):
        self.shape = tuple(int(s) for s in shape)
        self.affine = affine.astype(np.float64)
        self.rot = patient_rotation.astype(np.float32)
        self.offset = np.asarray(patient_offset, dtype=np.float32)
        self.phase = phase
        spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
        self.ramp = float(np.sqrt((spacing**2).mean()))
        self.image = np.full(self.shape, background, dtype=np.float32)
        self.ids = np.zeros(self.shape, dtype=np.int16)
        self.names: list[str] = ["background"]
        self.warp = [_CosineField(rng, 3, (35.0, 90.0), warp_mm) for _ in range(3)] if warp_mm > 0 else None
        self.warp_mm = warp_mm
        cells = [max(2, round(n * s / texture_mm)) for n, s in zip(self.shape, spacing)]
        self.textures = [_smooth_noise(rng, self.shape, cells), _smooth_noise(rng, self.shape, [c // 3 for c in cells])]
        self._shapes: dict[str, _Blob | _Tube] = {}
        self._memberships: dict[str, tuple] = {}
        self._inv_affine = np.linalg.inv(self.affine)
        self._all_points = self._patient_points()

    def _box(self, shape: _Blob | _Tube) -> tuple[slice, ...] | None:
        lo, hi = shape.bounds()
        margin = self.warp_mm * 1.8 + self.ramp
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        corners += np.sign(corners - (lo + hi) / 2) * margin
        world = corners @ self.rot.T + self.offset
        ijk = (np.c_[world, np.ones(8)] @ self._inv_affine.T)[:, :3]
        start = np.maximum(np.floor(ijk.min(0)).astype(int) - 1, 0)
        stop = np.minimum(np.ceil(ijk.max(0)).astype(int) + 2, self.shape)
        if np.any(stop <= start):
            return None
        return tuple(slice(a, b) for a, b in zip(start, stop))

    def _patient_points(self) -> np.ndarray:
        """Patient-frame coordinates (3, X, Y, Z) of every voxel centre: affine, inverse rigid placement, warp."""
        i, j, k = (np.arange(n, dtype=np.float32) for n in self.shape)
        a = self.affine.astype(np.float32)
        world = (
            a[:3, 0, None, None, None] * i[None, :, None, None]
            + a[:3, 1, None, None, None] * j[None, None, :, None]
            + a[:3, 2, None, None, None] * k[None, None, None, :]
            + a[:3, 3, None, None, None]
        )
        p = np.einsum("ji,j...->i...", self.rot, world - self.offset.reshape(3, 1, 1, 1)).astype(np.float32)
        if self.warp is not None:
            p += np.stack([w(p) for w in self.warp])
        return p

    def membership(self, shape: _Blob | _Tube, points: np.ndarray) -> np.ndarray:
        """Partial-volume fraction of each voxel inside ``shape``."""
        return np.clip(0.5 - shape.signed_distance(points) / self.ramp, 0.0, 1.0)

    def _clip_membership(self, name: str, box: tuple[slice, ...], pts: np.ndarray) -> np.ndarray:
        """Membership of the structure ``name`` on ``box``, reusing its stored membership when it covers the box."""
        pbox, pm = self._memberships[name]
        if pbox is not None and all(p.start <= b.start and b.stop <= p.stop for p, b in zip(pbox, box)):
            return pm[tuple(slice(b.start - p.start, b.stop - p.start) for p, b in zip(pbox, box))]
        return self.membership(self._shapes[name], pts)

    def paint(self, s: _Structure) -> None:
        """Composite one structure; remember its shape so that later structures can be clipped to it."""
        self._shapes[s.name] = s.shape
        box = self._box(s.shape)
        self._memberships[s.name] = (None, None)
        if box is None:
            return
        pts = self._all_points[(slice(None), *box)]
        m = self.membership(s.shape, pts)
        self._memberships[s.name] = (box, m.copy()) if s.name in _CLIP_PARENTS else (None, None)
        if s.clip_to is not None and s.clip_to in self._shapes:
            m *= self._clip_membership(s.clip_to, box, pts)
        if not m.any():
            return
        value = s.value[self.phase] if isinstance(s.value, tuple) else s.value
        if s.texture:
            mix = (zlib.crc32(s.name.encode()) % 628) / 100.0
            tex = math.cos(mix) * self.textures[0][box] + math.sin(mix) * self.textures[1][box]
            value = value + s.texture * tex
        region = self.image[box]
        region += m * (value - region)
        label = s.label_as or s.name
        if label not in self.names:
            self.names.append(label)
        self.ids[box][m > 0.5] = self.names.index(label)

    def label_map(self, lut: Mapping[str, int], dtype=np.uint8) -> np.ndarray:
        """Index map from the painted structures: ``lut`` maps structure/label names to output indices."""
        table = np.array([lut.get(n, 0) for n in self.names], dtype=dtype)
        return table[self.ids]

    def patient_points(self) -> np.ndarray:
        """Patient-frame coordinates of every voxel (for bias fields)."""
        return self._all_points


def _affine(spacing: Sequence[float], shape: Sequence[int], center: Sequence[float], flip_xy: bool) -> np.ndarray:
    """Axis-aligned RAS affine with the given spacing whose grid centre lies at ``center`` (LPS-like if flip_xy)."""
    signs = np.array([-1.0, -1.0, 1.0]) if flip_xy else np.ones(3)
    a = np.eye(4)
    a[:3, :3] = np.diag(signs * np.asarray(spacing, dtype=float))
    a[:3, 3] = np.asarray(center, dtype=float) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _finish_ct(canvas: _VolumeCanvas, rng: np.random.Generator) -> np.ndarray:
    """Add scanner noise and quantise to int16 Hounsfield units."""
    hu = canvas.image + rng.normal(0.0, rng.uniform(8.0, 18.0), canvas.shape).astype(np.float32)
    return np.clip(np.rint(hu), _CT_MIN, _CT_MAX).astype(np.int16)


def _finish_mr(canvas: _VolumeCanvas, rng: np.random.Generator, bias: np.ndarray, dtype: str) -> np.ndarray:
    """Scale by an arbitrary gain and a multiplicative bias field, then add Rician noise."""
    gain = rng.uniform(250.0, 1400.0)
    sigma = rng.uniform(0.015, 0.035) * gain
    signal = canvas.image * bias * gain
    real = signal + rng.normal(0.0, sigma, canvas.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, canvas.shape).astype(np.float32)
    out = np.sqrt(real**2 + imag**2)
    if np.dtype(dtype).kind in "iu":
        return np.clip(np.rint(out), 0, np.iinfo(dtype).max).astype(dtype)
    return out.astype(dtype)


# ----------------------------------------------------------------------------------------------------------------------
# The abdominal CT phantom (shared by the CT Decathlon tasks, AbdomenAtlas and nothing else)
# ----------------------------------------------------------------------------------------------------------------------
_CT_NATIVE, _CT_VENOUS = 0, 1
_MUSCULOSKELETAL = {
    "paraspinal_muscle", "psoas_muscle", "rib", "spinal_canal", "vertebra", "disc", "pelvic_bone", "femur_left",
    "femur_right",
}  # fmt: skip


def _abdomen_structures(
    rng: np.random.Generator, lesions: Mapping[str, int], male: bool
) -> tuple[list[_Structure], dict[str, np.ndarray]]:
    """The ordered structure list of one phantom case (patient frame, RAS: +x patient right, +y anterior, +z up).

    Args:
        rng: the case generator.
        lesions: number of lesions per organ ("liver", "kidney").
        male: whether to place a prostate.

    Returns:
        The structures in painting order and the centres of landmark organs (for field-of-view placement).
    """
    s = _PHANTOM_SCALE * rng.uniform(0.92, 1.06)

    def j(v, frac=0.06):
        return np.asarray(v, dtype=float) * (1 + rng.uniform(-frac, frac, np.shape(v)))

    def blob(center, radii, angles=(0, 0, 0), irregular=0.08, frequency=2.5, jitter_mm=6.0):
        c = (np.asarray(center, float) + rng.uniform(-jitter_mm, jitter_mm, 3)) * s
        ang = np.asarray(angles, float) + rng.uniform(-8, 8, 3)
        return _Blob(rng, c, j(radii, 0.1) * s, ang, irregular, frequency)

    def tube(points, radius, jitter_mm=5.0):
        pts = (np.asarray(points, float) + rng.uniform(-jitter_mm, jitter_mm, (len(points), 3))) * s
        return _Tube(pts, j(radius, 0.1) * s)

    st: list[_Structure] = []

    def add(name: str, shape, value, texture: float = 0.0, **kwargs) -> None:
        st.append(_Structure(name, shape, value, texture, **kwargs))

    body = blob((0, 0, -40), (168, 122, 1200), irregular=0.03, frequency=1.5, jitter_mm=2)
    add("body_fat", body, -100.0, 10.0)
    add("muscle_wall", body.scaled((0.9, 0.87, 1.0), (0, -4 * s, 0)), (45.0, 55.0), 8.0)
    add("visceral_fat", body.scaled((0.8, 0.72, 1.0), (0, 6 * s, 0)), -92.0, 14.0)
    for side in (-1, 1):
        add("paraspinal_muscle", blob((side * 42, -88, -20), (32, 24, 330), irregular=0.04), 50.0, 8.0)
        add(
            "psoas_muscle",
            tube([(side * 28, -62, 40), (side * 40, -50, -90), (side * 55, -30, -200)], [8, 18, 20]),
            50.0,
            8.0,
        )
    # lungs (bases at the top of the abdomen) inside the chest wall, the heart between them, ribs around
    for side, name in ((-1, "lung_left"), (1, "lung_right")):
        add(
            name,
            blob((side * 72, -12, 250 + (10 if side > 0 else 0)), (64, 84, 125), irregular=0.05),
            -860.0,
            35.0,
            clip_to="visceral_fat",
        )
    add(
        "heart",
        blob((-10, 22, 275), (62, 52, 70), angles=(20, 0, 25), irregular=0.05),
        (40.0, 135.0),
        8.0,
        clip_to="visceral_fat",
    )
    for z in np.arange(75, 300, 40):
        for side in (-1, 1):
            arc = [
                (side * 165 * 0.97 * math.sin(t) * (0.92 if abs(t) < 1 else 1.0), -122 * 0.9 * math.cos(t), z - 12 * t)
                for t in np.linspace(0.35, 2.2, 4)
            ]
            add("rib", tube(arc, 5.5, jitter_mm=3), 600.0, 40.0)
    # spine: canal, vertebral bodies with cortical rim, discs; pelvis and femurs below
    add("spinal_canal", tube([(0, -88, 300), (0, -86, 0), (0, -92, -260)], 9), 18.0, 4.0)
    for z in np.arange(-250, 300, 33):
        vb = blob((0, -68, z), (24, 19, 13.5), irregular=0.03, jitter_mm=1.5)
        add("vertebra", vb, 750.0, 60.0)
        add("vertebra", vb.scaled(0.72), 260.0, 40.0)
        add("vertebra", blob((0, -100, z + 4), (26, 12, 9), irregular=0.1, jitter_mm=2), 520.0, 60.0)
        add("disc", blob((0, -68, z + 16.5), (22, 17, 2.8), irregular=0.02, jitter_mm=1), 85.0, 6.0)
    for side in (-1, 1):
        wing = blob((side * 105, -55, -140), (28, 62, 48), angles=(0, 0, side * 35), irregular=0.1)
        add("pelvic_bone", wing, 620.0, 60.0)
        add("pelvic_bone", wing.scaled(0.7), 240.0, 40.0)
    for side, name in ((-1, "femur_left"), (1, "femur_right")):
        head = blob((side * 92, -10, -225), (24, 24, 24), irregular=0.02)
        shaft = tube([(side * 92, -10, -225), (side * 108, -2, -300), (side * 118, 4, -420)], 17)
        for shape in (head, shaft):
            add(name, shape, 880.0, 50.0)
            add(name, shape.scaled(0.72), 260.0, 40.0)
    # great vessels
    aorta = tube([(-14, -42, 320), (-16, -40, 120), (-14, -36, -60), (-8, -36, -110)], 11.5)
    add("aorta", aorta, (42.0, 190.0), 5.0)
    for side in (-1, 1):
        add("aorta", tube([(-8, -36, -105), (side * 35, -40, -170), (side * 60, -30, -230)], 7), (42.0, 185.0), 5.0)
    add(
        "postcava",
        tube([(24, -30, 260), (24, -36, 100), (22, -38, -40), (14, -40, -110)], 12.5),
        (40.0, 140.0),
        5.0,
    )
    add("esophagus", tube([(-6, -24, 330), (-14, -20, 200), (-40, 10, 150)], 8), (40.0, 60.0), 6.0)
    add("esophagus", tube([(-6, -24, 330), (-14, -20, 200), (-40, 10, 150)], 2.5), -900.0, 30.0)
    # solid organs
    liver = blob((68, -4, 150), (80, 84, 80), angles=(0, 10, -10), irregular=0.1, frequency=2.2)
    left_lobe = blob((-4, 34, 168), (62, 34, 42), angles=(0, -10, 15), irregular=0.1)
    add("liver", liver, (60.0, 105.0), 6.0)
    add("liver_left_lobe", left_lobe, (60.0, 105.0), 6.0, label_as="liver", clip_to="visceral_fat")
    for _ in range(4):
        end = liver.inside_point(rng, (0.5, 0.85))
        start = np.array([24 * s, -30 * s, 165 * s])
        mid = (start + end) / 2 + rng.uniform(-8, 8, 3) * s
        add(
            "hepatic_vessel",
            _Tube(np.stack([start, mid, end]), np.array([6.5, 5.0, 3.5]) * s),
            (48.0, 160.0),
            4.0,
            clip_to="liver",
        )
    for _ in range(int(lesions.get("liver", 0))):
        c = liver.inside_point(rng, (0.0, 0.6)) / s
        add(
            "liver_lesion",
            blob(c, rng.uniform(14, 34, 3), irregular=0.12, jitter_mm=0),
            (36.0, 55.0),
            9.0,
            clip_to="liver",
        )
    add("gall_bladder", blob((52, 58, 95), (18, 17, 34), angles=(25, 0, -20), irregular=0.05), 12.0, 3.0)
    spleen = blob((-92, -46, 140), (30, 56, 60), angles=(0, 0, 35), irregular=0.08)
    add("spleen", spleen, (48.0, 118.0), 6.0)
    stomach = blob((-52, 36, 150), (52, 40, 56), angles=(0, -15, 20), irregular=0.12)
    add("stomach", stomach, (42.0, 85.0), 8.0)
    add("stomach", stomach.scaled(0.75), 18.0, 8.0, label_as="stomach")
    add(
        "stomach",
        stomach.scaled((0.55, 0.35, 0.45), (0, 18 * s, 14 * s)),
        -950.0,
        20.0,
        label_as="stomach",
        clip_to="stomach",
    )
    for side, name, z in ((-1, "adrenal_gland_left", 120), (1, "adrenal_gland_right", 112)):
        add(
            name,
            blob((side * 44, -34, z), (6, 16, 20), angles=(0, 0, side * 30), irregular=0.15),
            (36.0, 60.0),
            5.0,
        )
    kidneys = {}
    for side, name, z in ((-1, "kidney_left", 50), (1, "kidney_right", 35)):
        k = blob((side * 66, -46, z), (28, 24, 54), angles=(-8, side * 14, side * 25), irregular=0.06)
        kidneys[name] = k
        add(name, k, (34.0, 175.0), 8.0)
        for t in (-0.45, 0.0, 0.45):  # medullary pyramids, darker in the venous phase
            add(name, k.scaled(0.33, (0, 0, t * float(k.radii[2]))), (30.0, 115.0), 6.0, label_as=name)
        add(name, k.scaled((0.35, 0.3, 0.45), (-side * 10 * s, 4 * s, 0)), -60.0, 12.0, label_as=name)
    n_kidney_lesions = int(lesions.get("kidney", 0))
    for _ in range(n_kidney_lesions):
        name = "kidney_left" if rng.uniform() < 0.5 else "kidney_right"
        c = kidneys[name].inside_point(rng, (0.45, 0.95)) / s
        cyst = rng.uniform() < 0.35
        value, tex = ((8.0, 11.0), 2.0) if cyst else ((36.0, 105.0), 22.0)
        add(
            f"{name}_lesion",
            blob(c, rng.uniform(14, 34, 3), irregular=0.05 if cyst else 0.15, jitter_mm=0),
            value,
            tex,
        )
    add(
        "pancreas",
        tube([(30, 8, 85), (0, 20, 98), (-40, 8, 110), (-80, -24, 122)], [17, 14, 12, 10]),
        (42.0, 95.0),
        12.0,
    )
    add(
        "duodenum",
        tube([(34, 24, 125), (58, 12, 100), (56, 10, 65), (26, 18, 52), (-14, 12, 60)], 10),
        (36.0, 70.0),
        10.0,
    )
    add(
        "portal_vein_and_splenic_vein",
        tube([(-80, -28, 130), (-40, -6, 112), (6, 4, 100), (36, -2, 128), (52, 2, 150)], 6.5),
        (42.0, 170.0),
        4.0,
    )
    add("celiac_trunk", tube([(-14, -32, 118), (-12, -12, 122), (-6, 2, 120)], 4.5), (42.0, 190.0), 3.0)
    colon = tube(
        [
            (-92, -8, -160),
            (-96, -4, -40),
            (-88, 32, 70),
            (-30, 50, 60),
            (40, 50, 55),
            (90, 28, 55),
            (94, 6, -60),
            (80, 10, -120),
        ],
        19,
    )
    add("colon", colon, (40.0, 70.0), 8.0)
    add("colon", colon.scaled(0.75), -180.0, 260.0, label_as="colon")
    add("colon", tube([(-92, -8, -160), (-50, -40, -175), (-10, -52, -185)], 14), (40.0, 70.0), 8.0)
    for _ in range(7):
        c = rng.uniform((-60, -10, -150), (60, 55, -20))
        loops = [c + rng.uniform(-30, 30, 3) for _ in range(4)]
        add("intestine", tube(loops, 10, jitter_mm=0), (32.0, 80.0), 22.0)
    rectum = tube([(-10, -52, -185), (0, -62, -225), (0, -58, -290)], 16)
    add("rectum", rectum, (40.0, 60.0), 8.0)
    add("rectum", rectum.scaled(0.6), -300.0, 250.0, label_as="rectum")
    add("bladder", blob((0, 32, -225), (44, 38, 34), irregular=0.06), 8.0, 3.0)
    if male:
        add("prostate", blob((0, 2, -275), (20, 17, 20), irregular=0.06), (40.0, 75.0), 8.0)
    for x in st[3:]:  # keep everything inside the body: organs inside the visceral cavity, the skeleton in the body
        if x.clip_to is None:
            x.clip_to = "body_fat" if x.name in _MUSCULOSKELETAL else "visceral_fat"
    landmarks = {
        "liver": liver.center,
        "spleen": spleen.center,
        "kidneys": (kidneys["kidney_left"].center + kidneys["kidney_right"].center) / 2,
        "abdomen": np.array([0.0, 0.0, 60.0 * s]),
    }
    return st, landmarks


def _render_abdomen_ct(
    rng: np.random.Generator,
    shape: Sequence[int],
    spacing: Sequence[float],
    focus: str,
    fov_jitter_mm: Sequence[float],
    lesions: Mapping[str, int],
    flip_xy: bool,
) -> tuple[_VolumeCanvas, np.ndarray]:
    """Render one CT case; returns the canvas (for label maps) and the int16 HU volume.

    As in real scans, the field of view is centred on the body in-plane and on the ``focus`` landmark along z.
    """
    phase = _CT_VENOUS if rng.uniform() < 0.7 else _CT_NATIVE
    structures, landmarks = _abdomen_structures(rng, lesions, male=rng.uniform() < 0.5)
    rot = _rotation((rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-6, 6)))
    offset = rng.uniform(-4, 4, 3)
    focus_point = np.array([0.0, 0.0, landmarks[focus][2]])
    center = rot @ focus_point + offset + rng.uniform(-1, 1, 3) * np.asarray(fov_jitter_mm)
    affine = _affine(spacing, shape, center, flip_xy)
    canvas = _VolumeCanvas(rng, shape, affine, -1000.0, rot, offset, warp_mm=2.5, texture_mm=3.0, phase=phase)
    for s in structures:
        canvas.paint(s)
    return canvas, _finish_ct(canvas, rng)


# ----------------------------------------------------------------------------------------------------------------------
# MR scenes
# ----------------------------------------------------------------------------------------------------------------------
def _render_brain_mr(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], dtype: str):
    """FLAIR-like head: scalp, skull, CSF, grey and white matter, ventricles, a tumour core nested in oedema."""
    st: list[_Structure] = []
    head = _Blob(rng, (0, 0, 0), np.array([27.0, 32.0, 25.0]) * rng.uniform(0.9, 1.05, 3), irregular=0.03)
    st += [
        _Structure("scalp", head, 0.72, 0.05),
        _Structure("skull", head.scaled(0.93), 0.07, 0.02),
        _Structure("csf", head.scaled(0.87), 0.14, 0.03),
    ]
    grey = _Blob(rng, head.center, head.radii * 0.84, irregular=0.05, frequency=3.0)
    white = _Blob(rng, head.center + (0, -1, 1), head.radii * 0.64, irregular=0.14, frequency=5.0, n_terms=8)
    st += [_Structure("brain", grey, 0.62, 0.04), _Structure("white_matter", white, 0.47, 0.03, label_as="brain")]
    for side in (-1, 1):
        st.append(
            _Structure(
                "ventricle",
                _Blob(rng, (side * 3.5, 1.5, 3.0), (2.4, 9.0, 4.0), (0, 0, side * 10), irregular=0.12),
                0.13,
                0.02,
            )
        )
    oedema = _Blob(
        rng,
        grey.inside_point(rng, (0.3, 0.6)),
        rng.uniform(7.0, 13.0, 3),
        rng.uniform(-40, 40, 3),
        irregular=0.18,
        frequency=3.0,
    )
    core = oedema.scaled(rng.uniform(0.45, 0.7), rng.uniform(-1.5, 1.5, 3))
    core = _Blob(rng, core.center, core.radii, rng.uniform(-40, 40, 3), irregular=0.12)
    st += [
        _Structure("oedema", oedema, 0.95, 0.05, clip_to="brain"),
        _Structure("tumour_core", core, 0.78, 0.1, clip_to="oedema"),
        _Structure("necrosis", core.scaled(0.45), 0.33, 0.06, label_as="tumour_core", clip_to="tumour_core"),
    ]
    rot = _rotation(rng.uniform(-8, 8, 3))
    offset = rng.uniform(-3, 3, 3)
    canvas = _VolumeCanvas(rng, shape, _affine(spacing, shape, offset, False), 0.0, rot, offset, 1.2, 2.0)
    for s in st:
        canvas.paint(s)
    bias = np.exp(_CosineField(rng, 4, (80.0, 200.0), 0.35)(canvas.patient_points()))
    return canvas, _finish_mr(canvas, rng, bias, dtype)


def _render_prostate_mr(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], dtype: str):
    """T2-like pelvis crop: fat, muscles, femoral heads, bladder, rectum, a prostate with two nested zones."""
    st: list[_Structure] = []
    for side in (-1, 1):
        st.append(
            _Structure("obturator_muscle", _Blob(rng, (side * 21, -2, 0), (5, 13, 30), irregular=0.06), 0.28, 0.04)
        )
        head = _Blob(rng, (side * 27.5, 1, 6), (9.5, 9.5, 9.5), irregular=0.02)
        st += [_Structure("femur", head, 0.08, 0.02), _Structure("femur", head.scaled(0.8), 0.62, 0.06)]
    st.append(_Structure("levator_ani", _Blob(rng, (0, -8, -22), (18, 10, 5), irregular=0.08), 0.3, 0.04))
    bladder = _Blob(rng, (0, 6, 27) + rng.uniform(-2, 2, 3), (17, 13, 11) * rng.uniform(0.85, 1.2, 3), irregular=0.06)
    st += [_Structure("bladder", bladder, 0.25, 0.03), _Structure("bladder", bladder.scaled(0.85), 1.0, 0.03)]
    rectum = _Tube([(0, -16, -40), (0, -15, 0), (1, -13, 40)] + rng.uniform(-1.5, 1.5, (3, 3)), 6.5)
    st += [_Structure("rectum", rectum, 0.3, 0.04), _Structure("rectum", rectum.scaled(0.6), 0.12, 0.05)]
    for side in (-1, 1):
        st.append(
            _Structure(
                "seminal_vesicle",
                _Blob(rng, (side * 8, -8, 16), (7, 3, 5), (0, 0, side * 20), irregular=0.15),
                0.8,
                0.1,
            )
        )
    gland = _Blob(
        rng,
        rng.uniform(-2, 2, 3),
        np.array([13.0, 10.0, 12.0]) * rng.uniform(0.8, 1.2),
        rng.uniform(-10, 10, 3),
        irregular=0.06,
    )
    tz = gland.scaled(rng.uniform(0.55, 0.72), (0, 2.5, 2.0))
    tz = _Blob(rng, tz.center, tz.radii, rng.uniform(-10, 10, 3), irregular=0.15, frequency=3.5)
    st += [
        _Structure("capsule", gland.scaled(1.07), 0.22, 0.03),
        _Structure("peripheral_zone", gland, 0.78, 0.08),
        _Structure("transition_zone", tz, 0.42, 0.1, clip_to="peripheral_zone"),
    ]
    rot = _rotation((rng.uniform(-6, 6), rng.uniform(-4, 4), rng.uniform(-6, 6)))
    offset = rng.uniform(-2, 2, 3)
    canvas = _VolumeCanvas(rng, shape, _affine(spacing, shape, offset, False), 0.7, rot, offset, 1.0, 2.0)
    for s in st:
        canvas.paint(s)
    pts = canvas.patient_points()
    coil = np.sqrt(pts[0] ** 2 + (pts[1] + 24.0) ** 2)  # endorectal/surface coil: brighter close to the rectum
    bias = np.exp(0.6 * np.exp(-coil / 15.0) + _CosineField(rng, 3, (60.0, 150.0), 0.25)(pts))
    return canvas, _finish_mr(canvas, rng, bias, dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Decathlon tasks
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticTaskSpec:
    """Description of one synthetic Decathlon task.

    Attributes:
        name: task folder name, e.g. ``"Task105_SynthKidneyCT"``.
        description: one sentence for ``dataset.json``.
        scene: ``"abdomen_ct"``, ``"brain_mr"`` or ``"prostate_mr"``.
        labels: label names by index, background first.
        structure_labels: phantom structure name -> label index (unlisted structures are background).
        spacing: voxel spacing (mm) written into the affine.
        shape: volume shape (x, y, z); the z size varies per case by up to ``z_jitter`` slices.
        n_cases: default number of training cases.
        case_prefix: file name prefix of the cases (``<prefix>_001.nii.gz``).
        z_jitter: largest change of the number of slices per case.
        focus: CT only, the landmark the field of view is centred on ("liver", "spleen", "kidneys", "abdomen").
        lesions: CT only, (organ, least, most) numbers of lesions per case.
        flip_xy: write an LPS-like affine (x and y axes reversed).
        dtype: on-disk data type of the image.
    """

    name: str
    description: str
    scene: str
    labels: tuple[str, ...]
    structure_labels: tuple[tuple[str, int], ...]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    n_cases: int
    case_prefix: str
    z_jitter: int = 0
    focus: str = "abdomen"
    lesions: tuple[tuple[str, int, int], ...] = ()
    flip_xy: bool = False
    dtype: str = "int16"

    @property
    def modality(self) -> str:
        """``"CT"`` or ``"MRI"`` as written into ``dataset.json``."""
        return "CT" if self.scene.endswith("_ct") else "MRI"


SYNTHETIC_DECATHLON_TASKS: dict[str, SyntheticTaskSpec] = {
    spec.name: spec
    for spec in (
        SyntheticTaskSpec(
            "Task101_SynthBrainMR", "Synthetic FLAIR-like brain MRI with a tumour core nested in oedema",
            "brain_mr", ("background", "oedema", "tumour_core"), (("oedema", 1), ("tumour_core", 2)),
            (1.0, 1.0, 1.0), (64, 72, 56), 20, "brain", dtype="float32",
        ),
        SyntheticTaskSpec(
            "Task102_SynthLiverCT", "Synthetic abdominal CT: liver (with its vessels) and liver lesions",
            "abdomen_ct", ("background", "liver", "lesion"),
            (("liver", 1), ("hepatic_vessel", 1), ("liver_lesion", 2)),
            (1.9, 1.9, 3.0), (72, 64, 48), 20, "liver", z_jitter=6, focus="liver", lesions=(("liver", 1, 3),),
        ),
        SyntheticTaskSpec(
            "Task103_SynthProstateMR", "Synthetic T2-like prostate MRI: peripheral and transition zones",
            "prostate_mr", ("background", "peripheral_zone", "transition_zone"),
            (("peripheral_zone", 1), ("transition_zone", 2)),
            (0.8, 0.8, 2.5), (72, 72, 30), 16, "prostate", z_jitter=2, dtype="int16",
        ),
        SyntheticTaskSpec(
            "Task104_SynthSpleenCT", "Synthetic abdominal CT: spleen", "abdomen_ct", ("background", "spleen"),
            (("spleen", 1),), (2.0, 2.0, 4.0), (68, 60, 40), 20, "spleen", z_jitter=4, focus="spleen",
            lesions=(("liver", 0, 1),), flip_xy=True,
        ),
        SyntheticTaskSpec(
            "Task105_SynthKidneyCT", "Synthetic abdominal CT: kidneys and kidney lesions (tumours or cysts)",
            "abdomen_ct", ("background", "kidney", "lesion"),
            (("kidney_left", 1), ("kidney_right", 1), ("kidney_left_lesion", 2), ("kidney_right_lesion", 2)),
            (1.8, 1.8, 1.8), (72, 64, 52), 24, "kidney", z_jitter=4, focus="kidneys",
            lesions=(("kidney", 1, 2), ("liver", 0, 1)),
        ),
    )
}  # fmt: skip

#: Tasks used for pre-training; the held-out task is only used for fine-tuning.
PRETRAINING_TASKS: tuple[str, ...] = (
    "Task101_SynthBrainMR", "Task102_SynthLiverCT", "Task103_SynthProstateMR", "Task104_SynthSpleenCT",
)  # fmt: skip
HELD_OUT_TASK = "Task105_SynthKidneyCT"


def _render_task_case(spec: SyntheticTaskSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, label and affine of one case of ``spec``."""
    shape = list(spec.shape)
    if spec.z_jitter:
        shape[2] += int(rng.integers(-spec.z_jitter, spec.z_jitter + 1))
    lut = dict(spec.structure_labels)
    if spec.scene == "abdomen_ct":
        lesions = {organ: int(rng.integers(lo, hi + 1)) for organ, lo, hi in spec.lesions}
        fov = np.asarray(spec.spacing) * np.asarray(shape) * np.array([0.04, 0.04, 0.12])
        canvas, image = _render_abdomen_ct(rng, shape, spec.spacing, spec.focus, fov, lesions, spec.flip_xy)
        image = image.astype(spec.dtype)
    elif spec.scene == "brain_mr":
        canvas, image = _render_brain_mr(rng, shape, spec.spacing, spec.dtype)
    elif spec.scene == "prostate_mr":
        canvas, image = _render_prostate_mr(rng, shape, spec.spacing, spec.dtype)
    else:
        raise ValueError(f"unknown scene {spec.scene!r} of task {spec.name}: use abdomen_ct, brain_mr or prostate_mr.")
    return image, canvas.label_map(lut), canvas.affine


def write_decathlon_task(
    out_dir: str | os.PathLike,
    task: str | SyntheticTaskSpec,
    modality: str | None = None,
    n_cases: int | None = None,
    seed: int = 0,
) -> str:
    """Write one synthetic task in the Medical Segmentation Decathlon layout.

    ``<out_dir>/<task>/imagesTr/<case>.nii.gz``, ``labelsTr/<case>.nii.gz`` and ``dataset.json`` (name, description,
    tensorImageSize, modality, labels, numTraining, numTest, training, test) exactly as in the Decathlon.

    Args:
        out_dir: folder that receives the task folder.
        task: a name of :data:`SYNTHETIC_DECATHLON_TASKS` or a custom :class:`SyntheticTaskSpec` (e.g. a built-in one
            changed with ``dataclasses.replace``; its ``modality`` follows from its scene).
        modality: ``"CT"`` or ``"MRI"`` to check against the task's own modality (None: no check).
        n_cases: number of training cases (default: the task's ``n_cases``).
        seed: random seed; the same seed writes the same arrays.

    Returns:
        The task folder.

    Raises:
        ValueError: unknown task name, a modality that is not the task's, or a non-positive number of cases.
    """
    spec = _task_spec(task)
    if modality is not None and modality.upper() != spec.modality.upper():
        raise ValueError(
            f"task {spec.name} is {spec.modality}, not {modality}: drop modality= or choose a {modality} task "
            f"({[n for n, t in SYNTHETIC_DECATHLON_TASKS.items() if t.modality.upper() == modality.upper()]})."
        )
    n = spec.n_cases if n_cases is None else int(n_cases)
    if n < 1:
        raise ValueError(f"n_cases must be positive, got {n} for {spec.name}.")
    root = Path(out_dir) / spec.name
    training = []
    for i in range(n):
        case = f"{spec.case_prefix}_{i + 1:03d}"
        image, label, affine = _render_task_case(spec, _case_rng(seed, spec.name, i))
        _save_nifti(image, affine, root / "imagesTr" / f"{case}.nii.gz")
        _save_nifti(label, affine, root / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    meta = {
        "name": spec.name.split("_", 1)[-1],
        "description": spec.description,
        "reference": "monai_ext synthetic generator (monai_ext.data.synthetic)",
        "licence": "CC0 1.0 (generated data)",
        "release": f"seed {seed}",
        "tensorImageSize": "3D",
        "modality": {"0": spec.modality},
        "labels": {str(i): name for i, name in enumerate(spec.labels)},
        "numTraining": n,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")
    return str(root)


def write_decathlon_tasks(
    out_dir: str | os.PathLike, names: Sequence[str] | None = None, n_cases: int | None = None, seed: int = 0
) -> dict[str, str]:
    """Write several synthetic Decathlon tasks (all five by default) side by side.

    Args:
        out_dir: folder that receives one folder per task.
        names: task names (default: every task of :data:`SYNTHETIC_DECATHLON_TASKS`).
        n_cases: number of cases per task (default: each task's own).
        seed: random seed.

    Returns:
        Task name -> task folder.
    """
    return {
        name: write_decathlon_task(out_dir, name, n_cases=n_cases, seed=seed)
        for name in (names or SYNTHETIC_DECATHLON_TASKS)
    }


def _task_spec(task: str | SyntheticTaskSpec) -> SyntheticTaskSpec:
    if isinstance(task, SyntheticTaskSpec):
        return task
    if task not in SYNTHETIC_DECATHLON_TASKS:
        raise ValueError(f"unknown synthetic task {task!r}: choose one of {sorted(SYNTHETIC_DECATHLON_TASKS)}.")
    return SYNTHETIC_DECATHLON_TASKS[task]


# ----------------------------------------------------------------------------------------------------------------------
# AbdomenAtlas
# ----------------------------------------------------------------------------------------------------------------------
# phantom structure -> AbdomenAtlas class (lesions belong to their organ's mask)
_ATLAS_NAME = {"liver_lesion": "liver", "kidney_left_lesion": "kidney_left", "kidney_right_lesion": "kidney_right"}


def write_abdomenatlas(
    out_dir: str | os.PathLike,
    n_cases: int = 8,
    seed: int = 0,
    classes: Sequence[str] = ABDOMENATLAS_CLASSES,
    spacing: Sequence[float] = (1.7, 1.7, 2.5),
    shape: Sequence[int] = (72, 64, 56),
) -> str:
    """Write synthetic CTs in the AbdomenAtlas 1.1 layout.

    ``BDMAP_0000000i/ct.nii.gz`` (int16 HU), ``segmentations/<class>.nii.gz`` (one uint8 binary mask per class, empty
    when the organ is outside the field of view) and ``combined_labels.nii.gz`` (uint8, index ``k`` = ``classes[k-1]``).
    The masks do not overlap, so the index map equals the masks exactly. All files of a case share the CT's affine,
    an LPS-like (x and y reversed) affine whose field of view moves along the body from case to case.

    Args:
        out_dir: folder that receives the ``BDMAP_*`` folders.
        n_cases: number of CTs.
        seed: random seed; the same seed writes the same arrays.
        classes: class names in index order (default: the 25 AbdomenAtlas 1.1 classes; the first 9 give 1.0).
        spacing: voxel spacing (mm).
        shape: volume shape (x, y, z); z varies per case by up to 4 slices.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: a class name that is not an AbdomenAtlas class.
    """
    unknown = [c for c in classes if c not in ABDOMENATLAS_CLASSES]
    if unknown:
        raise ValueError(f"unknown AbdomenAtlas classes {unknown}: use names from ABDOMENATLAS_CLASSES.")
    root = Path(out_dir)
    lut = {name: i + 1 for i, name in enumerate(classes)}
    lut.update({src: lut[dst] for src, dst in _ATLAS_NAME.items() if dst in lut})
    for i in range(n_cases):
        rng = _case_rng(seed, "abdomenatlas", i)
        case_shape = list(shape)
        case_shape[2] += int(rng.integers(-4, 5))
        lesions = {"liver": int(rng.integers(0, 3)), "kidney": int(rng.integers(0, 2))}
        fov = np.array([3.0, 3.0, 45.0])
        canvas, ct = _render_abdomen_ct(rng, case_shape, spacing, "abdomen", fov, lesions, flip_xy=True)
        combined = canvas.label_map(lut)
        case = root / f"BDMAP_{i + 1:08d}"
        _save_nifti(ct, canvas.affine, case / "ct.nii.gz")
        _save_nifti(combined, canvas.affine, case / "combined_labels.nii.gz")
        for k, name in enumerate(classes, start=1):
            _save_nifti((combined == k).astype(np.uint8), canvas.affine, case / "segmentations" / f"{name}.nii.gz")
    return str(root)


# ----------------------------------------------------------------------------------------------------------------------
# 2D natural-image-like data
# ----------------------------------------------------------------------------------------------------------------------
#: class name -> (shape, base RGB colour, texture) of the built-in image-folder classes.
NATURAL_IMAGE_CLASSES: dict[str, tuple[str, tuple[int, int, int], str]] = {
    "red_disc": ("disc", (200, 40, 35), "shaded"),
    "blue_square": ("square", (40, 70, 190), "shaded"),
    "green_triangle": ("triangle", (50, 160, 60), "shaded"),
    "yellow_star": ("star", (225, 200, 40), "shaded"),
    "purple_ring": ("ring", (130, 50, 160), "shaded"),
    "striped_ball": ("disc", (230, 120, 30), "stripes"),
    "checker_tile": ("square", (220, 220, 210), "checker"),
    "spotted_blob": ("blob", (150, 110, 70), "spots"),
}
#: label index -> name of the 2D shape segmentation set.
SHAPE_SEGMENTATION_LABELS: dict[int, str] = {0: "background", 1: "disc", 2: "square", 3: "triangle"}


def _natural_background(rng: np.random.Generator, width: int, height: int):
    """A photo-like background: a sky/ground gradient, cloud-like noise, muted clutter, slight blur."""
    from PIL import Image, ImageDraw, ImageFilter

    top, bottom = rng.uniform(40, 220, 3), rng.uniform(30, 200, 3)
    horizon = rng.uniform(0.3, 0.8) * height
    yy = np.arange(height, dtype=np.float32)[:, None, None]
    w = 1 / (1 + np.exp(-(yy - horizon) / (0.08 * height)))
    img = (1 - w) * top + w * bottom
    for cells, amp in ((4, 30.0), (12, 12.0)):
        noise = _smooth_noise(rng, (height, width), (cells, cells))
        img = img + amp * noise[..., None] * rng.uniform(0.5, 1.0, 3)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas, "RGBA")
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * width, y0 + rng.uniform(0.05, 0.5) * height
        colour = tuple(int(c) for c in rng.uniform(40, 200, 3)) + (int(rng.uniform(40, 110)),)
        if rng.uniform() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 5)))
    return canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator) -> list:
    """Vertices of a shape of radius ``r`` centred at (cx, cy), rotated by ``angle`` radians."""
    if kind == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        rad = np.full(4, r)
    elif kind == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        rad = np.full(3, r)
    elif kind == "star":
        t = angle + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
    elif kind == "cross":
        base = np.array([(1, 0.3), (0.3, 0.3), (0.3, 1)])
        pts = np.concatenate(
            [
                base @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
                for a in np.arange(4) * np.pi / 2
            ]
        )
        t = np.arctan2(pts[:, 1], pts[:, 0]) + angle
        rad = r * np.linalg.norm(pts, axis=1)
    else:  # blob: a disc with a wavy outline
        t = angle + np.linspace(0, 2 * np.pi, 24, endpoint=False)
        rad = r * (1 + 0.18 * np.cos(3 * t + rng.uniform(0, 6.3)) + 0.1 * np.cos(5 * t + rng.uniform(0, 6.3)))
    return [(float(cx + a * math.cos(b)), float(cy + a * math.sin(b))) for a, b in zip(rad, t)]


def _draw_object(image, mask_draw, kind: str, colour, texture: str, cx, cy, r, angle, rng, label: int = 1):
    """Draw one object with shading/texture onto ``image`` (in place) and its silhouette onto ``mask_draw``."""
    from PIL import Image, ImageDraw

    w, h = image.size
    sil = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(sil)
    if kind in ("disc", "ring"):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if kind == "ring":
            d.ellipse([cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r], fill=0)
    else:
        d.polygon(_polygon(kind, cx, cy, r, angle, rng), fill=255)
    if mask_draw is not None:
        mask_draw.bitmap((0, 0), sil, fill=label)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.clip(np.asarray(colour, dtype=np.float32) + rng.normal(0, 14, 3), 0, 255)
    light = rng.uniform(0, 2 * np.pi)
    shade = 1 + 0.35 * ((xx - cx) * math.cos(light) + (yy - cy) * math.sin(light)) / max(r, 1)
    tex = np.ones_like(xx)
    period = max(r / rng.uniform(1.5, 3.0), 2.0)
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    if texture == "stripes":
        tex = np.where(np.sin(2 * np.pi * u / period) > 0, 1.0, 0.35)
    elif texture == "checker":
        tex = np.where((np.floor(u / period) + np.floor(v / period)) % 2 == 0, 1.0, 0.2)
    elif texture == "spots":
        tex = 1 - 0.5 * (np.sin(2 * np.pi * u / period * 1.7) * np.sin(2 * np.pi * v / period * 1.7) > 0.5)
    rgb = np.clip(base * (shade * tex)[..., None], 0, 255).astype(np.uint8)
    image.paste(Image.fromarray(rgb), (0, 0), sil)


def _finish_photo(image, rng: np.random.Generator):
    """Slight blur and sensor noise."""
    from PIL import Image, ImageFilter

    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))
    arr = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 6), (image.size[1], image.size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_image_folder_classification(
    out_dir: str | os.PathLike,
    n_per_class: int = 40,
    seed: int = 0,
    size_range: tuple[int, int] = (56, 112),
    classes: Sequence[str] | None = None,
    n_val_per_class: int | None = None,
) -> str:
    """Write natural-image-like RGB JPEGs in the ImageNet folder layout.

    ``train/<class>/<class>_0001.JPEG`` and ``val/<class>/...``: each class is an object of its own shape, colour and
    texture (:data:`NATURAL_IMAGE_CLASSES`) at a random position, size, rotation and colour, on a photo-like background
    with clutter, blur, noise and JPEG compression; width and height vary independently within ``size_range``.

    Args:
        out_dir: dataset root.
        n_per_class: training images per class.
        seed: random seed; the same seed writes the same images.
        size_range: least and largest side length in pixels.
        classes: class names from :data:`NATURAL_IMAGE_CLASSES` (default: all eight).
        n_val_per_class: validation images per class (default: a quarter of ``n_per_class``, at least 2).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: an unknown class name.
    """
    classes = list(classes or NATURAL_IMAGE_CLASSES)
    unknown = [c for c in classes if c not in NATURAL_IMAGE_CLASSES]
    if unknown:
        raise ValueError(f"unknown image classes {unknown}: choose from {list(NATURAL_IMAGE_CLASSES)}.")
    n_val = max(2, n_per_class // 4) if n_val_per_class is None else n_val_per_class
    root = Path(out_dir)
    for split, n in (("train", n_per_class), ("val", n_val)):
        for name in classes:
            kind, colour, texture = NATURAL_IMAGE_CLASSES[name]
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = _case_rng(seed, f"natural2d/{split}/{name}", i)
                w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
                image = _natural_background(rng, w, h)
                r = rng.uniform(0.18, 0.36) * min(w, h)
                cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
                _draw_object(image, None, kind, colour, texture, cx, cy, r, rng.uniform(0, 2 * np.pi), rng)
                _finish_photo(image, rng).save(
                    folder / f"{name}_{i + 1:04d}.JPEG", "JPEG", quality=int(rng.integers(70, 96))
                )
    return str(root)


def write_image_mask_segmentation(
    out_dir: str | os.PathLike, n: int = 120, seed: int = 0, size: tuple[int, int] = (96, 96)
) -> str:
    """Write 2D RGB images with index masks: ``images/<id>.png``, ``masks/<id>.png`` and ``dataset.json``.

    Each image holds 1-4 discs, squares and triangles (labels 1-3, :data:`SHAPE_SEGMENTATION_LABELS`) of random
    colours, sizes and rotations, occluding each other, on a textured photo-like background; the class is given by the
    shape, not the colour. ``dataset.json`` follows the Decathlon format (``tensorImageSize`` "2D").

    Args:
        out_dir: dataset root.
        n: number of images.
        seed: random seed; the same seed writes the same images.
        size: (width, height) in pixels.

    Returns:
        ``out_dir``.
    """
    from PIL import Image, ImageDraw

    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    kinds = [SHAPE_SEGMENTATION_LABELS[k] for k in sorted(SHAPE_SEGMENTATION_LABELS) if k > 0]
    training = []
    w, h = size
    for i in range(n):
        rng = _case_rng(seed, "shapes2d", i)
        image = _natural_background(rng, w, h)
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        for _ in range(int(rng.integers(1, 5))):
            label = int(rng.integers(1, len(kinds) + 1))
            r = rng.uniform(0.1, 0.25) * min(w, h)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            colour = tuple(rng.uniform(30, 230, 3))
            texture = ("shaded", "stripes", "spots")[int(rng.integers(0, 3))]
            _draw_object(
                image, draw, kinds[label - 1], colour, texture, cx, cy, r, rng.uniform(0, 2 * np.pi), rng, label
            )
        case = f"shapes_{i + 1:04d}"
        _finish_photo(image, rng).save(root / "images" / f"{case}.png")
        mask.save(root / "masks" / f"{case}.png")
        training.append({"image": f"./images/{case}.png", "label": f"./masks/{case}.png"})
    meta = {
        "name": "SynthShapes2D",
        "description": "Synthetic RGB images of discs, squares and triangles on textured backgrounds, index masks",
        "reference": "monai_ext synthetic generator (monai_ext.data.synthetic)",
        "licence": "CC0 1.0 (generated data)",
        "tensorImageSize": "2D",
        "modality": {"0": "R", "1": "G", "2": "B"},
        "labels": {str(k): v for k, v in SHAPE_SEGMENTATION_LABELS.items()},
        "numTraining": n,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")
    return str(root)


# ----------------------------------------------------------------------------------------------------------------------
# 3D classification
# ----------------------------------------------------------------------------------------------------------------------
#: label index -> class name of the 3D classification set (lung CT patches).
VOLUME_CLASSIFICATION_CLASSES: dict[int, str] = {0: "no_nodule", 1: "solid_nodule", 2: "spiculated_nodule"}


def _render_lung_patch(rng: np.random.Generator, label: int, shape: Sequence[int], spacing: Sequence[float]):
    """A lung CT patch with vessels; a smooth solid nodule (1) or a lobulated nodule with spicules (2) at its centre."""
    st: list[_Structure] = []
    fov = np.asarray(shape) * np.asarray(spacing)
    if rng.uniform() < 0.4:  # chest wall: a large sphere whose surface crosses the patch on one side
        normal = np.zeros(3)
        axis = int(rng.integers(0, 3))
        normal[axis] = 1.0 if rng.uniform() < 0.5 else -1.0
        radius, depth = 300.0, rng.uniform(0.25, 0.42) * fov[axis]
        wall = _Blob(rng, normal * (radius + depth), (radius, radius, radius), irregular=0.002)
        st.append(_Structure("chest_wall", wall, 45.0, 10.0))
    for _ in range(int(rng.integers(3, 7))):  # vessels crossing the patch
        a, b = rng.uniform(-0.6, 0.6, (2, 3)) * fov
        a[int(rng.integers(0, 3))] = -0.6 * fov[0]
        mid = (a + b) / 2 + rng.uniform(-5, 5, 3)
        st.append(_Structure("vessel", _Tube([a, mid, b], rng.uniform(0.7, 2.2)), 30.0, 15.0))
    if label > 0:
        r = rng.uniform(4.0, 7.5)
        c = rng.uniform(-1.5, 1.5, 3)
        irregular, freq = (0.04, 2.0) if label == 1 else (0.25, 4.0)
        nodule = _Blob(rng, c, r * rng.uniform(0.85, 1.15, 3), rng.uniform(-30, 30, 3), irregular, freq, 6)
        st.append(_Structure("nodule", nodule, 25.0, 12.0))
        if label == 2:
            for _ in range(int(rng.integers(6, 12))):
                d = rng.standard_normal(3)
                d /= np.linalg.norm(d)
                st.append(
                    _Structure(
                        "nodule",
                        _Tube([c + d * r * 0.6, c + d * r * rng.uniform(1.6, 2.4)], [rng.uniform(0.6, 1.0), 0.25]),
                        10.0,
                        10.0,
                    )
                )
    canvas = _VolumeCanvas(
        rng, shape, _affine(spacing, shape, (0, 0, 0), False), -860.0, np.eye(3), np.zeros(3), 0.8, 2.0
    )
    canvas.image += 25.0 * canvas.textures[0]
    for s in st:
        canvas.paint(s)
    return canvas, _finish_ct(canvas, rng)


def write_volume_classification(
    out_dir: str | os.PathLike,
    n: int = 60,
    seed: int = 0,
    shape: Sequence[int] = (40, 40, 40),
    spacing: Sequence[float] = (0.8, 0.8, 0.8),
) -> str:
    """Write a small 3D classification set: ``images/<id>.nii.gz`` and ``labels.csv`` (columns ``image,label``).

    Lung CT patches (int16 HU) of three classes (:data:`VOLUME_CLASSIFICATION_CLASSES`, also written to
    ``classes.json``): vessels only, a smooth solid nodule, or a lobulated nodule with spicules; classes are
    balanced and their order is shuffled. Image paths in the CSV are relative to its folder.

    Args:
        out_dir: dataset root.
        n: number of volumes.
        seed: random seed; the same seed writes the same arrays.
        shape: volume shape.
        spacing: voxel spacing (mm).

    Returns:
        ``out_dir``.
    """
    root = Path(out_dir)
    n_classes = len(VOLUME_CLASSIFICATION_CLASSES)
    labels = np.arange(n) % n_classes
    _case_rng(seed, "volume3d/order", 0).shuffle(labels)
    rows = []
    for i, label in enumerate(labels):
        _, image = _render_lung_patch(_case_rng(seed, "volume3d", i), int(label), shape, spacing)
        rel = f"images/nodule_{i + 1:04d}.nii.gz"
        _save_nifti(image, _affine(spacing, shape, (0, 0, 0), False), root / rel)
        rows.append((rel, int(label)))
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    (root / "classes.json").write_text(json.dumps({str(k): v for k, v in VOLUME_CLASSIFICATION_CLASSES.items()}), encoding="utf-8")
    return str(root)
