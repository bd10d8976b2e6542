"""Small-grid rasterisers shared by the phantoms (pure numpy).

Objects are drawn inside their own bounding box with a soft edge one voxel wide: the drawn
fraction is above 0.5 exactly for voxels whose centre lies inside the object, so a half-way
threshold of a noiseless phantom recovers the voxel-centre count used as truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Voxel grid: shape (z, y, x), spacing (mm) and the (z, y, x) mm position of voxel 0."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    start: tuple[float, float, float]

    def axis(self, a: int) -> np.ndarray:
        return (self.start[a] + self.spacing[a] * np.arange(self.shape[a])).astype(np.float32)

    def box(self, lo_mm, hi_mm) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in [lo, hi] (mm, zyx); None if empty."""
        out = []
        for a in range(3):
            i0 = max(0, int(np.ceil((lo_mm[a] - self.start[a]) / self.spacing[a])))
            i1 = min(self.shape[a], int(np.floor((hi_mm[a] - self.start[a]) / self.spacing[a])) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable z, y, x mm coordinates of a box."""
        z = self.axis(0)[box[0]][:, None, None]
        y = self.axis(1)[box[1]][None, :, None]
        x = self.axis(2)[box[2]][None, None, :]
        return z, y, x


def soft_edge(signed_depth_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Fraction inside from depth below the surface (positive inside): 0.5 exactly on it."""
    return np.clip(signed_depth_mm / width_mm + 0.5, 0.0, 1.0).astype(np.float32)


def capsule(grid: Grid, p0, p1, r0: float, r1: float, edge_mm: float):
    """(box, fraction) of a tapered tube from p0 (radius r0) to p1 (radius r1), points in mm zyx."""
    p0 = np.asarray(p0, np.float32)
    p1 = np.asarray(p1, np.float32)
    rmax = max(r0, r1) + edge_mm
    box = grid.box(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
    if box is None:
        return None, None
    z, y, x = grid.coords(box)
    d = p1 - p0
    length2 = float(d @ d) or 1e-6
    t = ((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / length2
    np.clip(t, 0.0, 1.0, out=t)
    dist = np.sqrt((z - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2
                   + (x - p0[2] - t * d[2]) ** 2)
    radius = r0 + t * (r1 - r0)
    return box, soft_edge(radius - dist, edge_mm)


def ball_distance(grid: Grid, centre, radius_mm: float, margin_mm: float):
    """(box, distance to centre in mm) over the bounding box of a ball plus a margin."""
    c = np.asarray(centre, np.float32)
    box = grid.box(c - radius_mm - margin_mm, c + radius_mm + margin_mm)
    if box is None:
        return None, None
    z, y, x = grid.coords(box)
    return box, np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)


def blend(volume: np.ndarray, box, fraction: np.ndarray, value, where: np.ndarray | None = None):
    """volume[box] <- volume*(1-f) + value*f, optionally only where a mask is true."""
    region = volume[box]
    f = fraction if where is None else fraction * where
    region += f * (np.asarray(value, np.float32) - region)
