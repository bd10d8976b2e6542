"""Lobar anatomy of the lungs as an explicit geometric rule (pure numpy).

A lobe is decided from a point's position relative to its own lung's extent, so the same rule
labels synthetic truth and real detections.

Rule (an approximation of the fissures, after the standard anatomy in Gray's Anatomy, 42nd ed.,
"Lungs": the oblique fissure runs from about the level of T4/T5 posteriorly down and forwards to
the diaphragm near the 6th costochondral junction; the right horizontal fissure runs forwards
from the oblique fissure at the level of the 4th costal cartilage):

- ``h`` = height within the lung, 0 at its most inferior voxel and 1 at its apex (z, LPS).
- ``p`` = depth within the lung, 0 at its most anterior voxel and 1 at its most posterior (y, LPS).
- Oblique fissure: the plane ``h = 0.1 + 0.6 p`` (h 0.7 at the back, 0.1 at the front).
  Points below it (``h < 0.1 + 0.6 p``) are in the lower lobe (RLL / LLL).
- Right lung, above the oblique fissure: the horizontal fissure ``h = 0.55`` splits the
  upper lobe (``h >= 0.55``, RUL) from the middle lobe (RML).
- Left lung, above the oblique fissure: LUL (the lingula belongs to the upper lobe).

Coordinates are DICOM patient coordinates (LPS): x grows to the patient's left, y to posterior,
z to the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Lobe = Literal["RUL", "RML", "RLL", "LUL", "LLL"]
Side = Literal["R", "L"]

OBLIQUE_FISSURE_FRONT_H = 0.1  # fissure height at the anterior lung surface (p = 0)
OBLIQUE_FISSURE_BACK_H = 0.7  # fissure height at the posterior lung surface (p = 1)
HORIZONTAL_FISSURE_H = 0.55  # right lung only


@dataclass(frozen=True)
class LungExtent:
    """One lung's bounding extent in patient coordinates (mm, LPS)."""

    side: Side
    z_min_mm: float  # most inferior (base)
    z_max_mm: float  # most superior (apex)
    y_min_mm: float  # most anterior
    y_max_mm: float  # most posterior


def _fraction(value: float, low: float, high: float) -> float:
    span = high - low
    if span <= 0:
        return 0.5
    return float(min(1.0, max(0.0, (value - low) / span)))


def lobe_of(point_xyz_mm: tuple[float, float, float], extent: LungExtent) -> Lobe:
    """The lobe a point belongs to, by the fissure-plane rule in the module docstring."""
    _, y, z = point_xyz_mm
    h = _fraction(z, extent.z_min_mm, extent.z_max_mm)
    p = _fraction(y, extent.y_min_mm, extent.y_max_mm)
    oblique_h = OBLIQUE_FISSURE_FRONT_H + (OBLIQUE_FISSURE_BACK_H - OBLIQUE_FISSURE_FRONT_H) * p
    if h < oblique_h:
        return "RLL" if extent.side == "R" else "LLL"
    if extent.side == "L":
        return "LUL"
    return "RUL" if h >= HORIZONTAL_FISSURE_H else "RML"


@dataclass(frozen=True)
class Lungs:
    """Both lungs' extents and the midline (x, mm) that separates them."""

    right: LungExtent
    left: LungExtent
    midline_x_mm: float

    def lobe_of(self, point_xyz_mm: tuple[float, float, float]) -> Lobe:
        """The lobe of a point, on the lung of its side of the midline (x < midline: right)."""
        extent = self.right if point_xyz_mm[0] < self.midline_x_mm else self.left
        return lobe_of(point_xyz_mm, extent)


def lung_extents_from_mask(
    lung_mask: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    origin_xyz_mm: tuple[float, float, float],
) -> Lungs:
    """Extents of a bool (z, y, x) lung mask of axial slices (rows along +y, columns along +x).

    Voxel (k, j, i) sits at origin + (i*dx, j*dy, k*dz); dz may be negative for slices stored
    head to feet. The lungs are split at the midline, the mean x of all lung voxels.
    """
    if not lung_mask.any():
        raise ValueError("empty lung mask")
    dz, dy, dx = spacing_zyx_mm
    x0, y0, z0 = origin_xyz_mm
    col_counts = lung_mask.sum(axis=(0, 1))
    mid_col = float(np.average(np.arange(col_counts.size), weights=col_counts))
    split = int(np.ceil(mid_col))
    extents = []
    for side, part in (("R", lung_mask[:, :, :split]), ("L", lung_mask[:, :, split:])):
        zs = np.nonzero(part.any(axis=(1, 2)))[0]
        ys = np.nonzero(part.any(axis=(0, 2)))[0]
        if zs.size == 0:
            raise ValueError(f"no voxels for the {side} lung")
        z_a, z_b = sorted((z0 + zs[0] * dz, z0 + zs[-1] * dz))
        extents.append(LungExtent(side=side, z_min_mm=float(z_a), z_max_mm=float(z_b),
                                  y_min_mm=float(y0 + ys[0] * dy), y_max_mm=float(y0 + ys[-1] * dy)))
    return Lungs(right=extents[0], left=extents[1], midline_x_mm=float(x0 + mid_col * dx))
