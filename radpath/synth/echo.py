"""A deterministic apical four-chamber echo cine with known LV volumes (pure numpy).

LV model: the cavity is half a prolate spheroid (cut at its equator, the mitral plane) with
short-axis radius r and long-axis length L (apex to mitral plane): V = (2/3) * pi * r^2 * L.
The apical four-chamber plane contains the long axis, so each frame shows the central
section: a half ellipse with semi-axes r (across) and L (along). Over one cardiac cycle the
volume follows a raised-cosine systole from EDV (frame 0) to ESV (frame ``es_frame``) and a
slower diastolic refill; L shortens as V^0.2 (longitudinal shortening smaller than radial) and r
follows from V and L. EF = (EDV - ESV) / EDV. Method-of-discs on the truth mask recovers V up
to pixel discretisation, because the cavity is rotationally symmetric about its long axis.

Image: 8-bit MONOCHROME2, 300 rows x 400 columns at 0.05 cm per pixel (15 cm depth), a 75
degree sector with its apex at the top centre, Rayleigh speckle and log compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROWS, COLS = 300, 400
CM_PER_PIXEL = 0.05
N_FRAMES = 50
SECTOR_HALF_ANGLE_DEG = 37.5


@dataclass(frozen=True)
class EchoPhantom:
    frames: np.ndarray  # uint8 (n_frames, rows, cols)
    lv_masks: np.ndarray  # bool (n_frames, rows, cols), LV cavity truth per frame
    cm_per_pixel: float
    frame_time_ms: float
    heart_rate_bpm: int
    edv_ml: float
    esv_ml: float
    ef: float
    ed_frame: int
    es_frame: int
    volumes_ml: tuple[float, ...]  # analytic LV volume per frame
    region: tuple[int, int, int, int]  # calibrated region (min_x, min_y, max_x, max_y), pixels


def _volume_curve(edv: float, esv: float, n: int, es_frame: int) -> np.ndarray:
    t = np.arange(n, dtype=float)
    v = np.empty(n)
    systole = t <= es_frame
    v[systole] = edv - (edv - esv) * 0.5 * (1 - np.cos(np.pi * t[systole] / es_frame))
    u = (t[~systole] - es_frame) / (n - es_frame)
    v[~systole] = esv + (edv - esv) * 0.5 * (1 - np.cos(np.pi * u))
    return v


def make_echo(seed: int) -> EchoPhantom:
    """An A4C cine with a known EDV, ESV and EF."""
    rng = np.random.default_rng([seed, 0xEC])
    heart_rate = int(rng.integers(55, 96))
    frame_time = round(60000.0 / heart_rate / N_FRAMES, 3)
    edv = round(float(rng.uniform(90.0, 190.0)), 1)
    ef_target = float(rng.uniform(0.25, 0.70))
    esv = round(edv * (1 - ef_target), 1)
    es_frame = int(round(N_FRAMES * 0.36))
    volumes = _volume_curve(edv, esv, N_FRAMES, es_frame)
    volumes[0], volumes[es_frame] = edv, esv  # exact at the key frames
    length_ed_cm = float(rng.uniform(7.8, 9.2))

    rows = np.arange(ROWS, dtype=np.float32)[:, None]
    cols = np.arange(COLS, dtype=np.float32)[None, :]
    apex_x, apex_y = COLS / 2.0, 0.0
    depth = np.hypot(cols - apex_x, rows - apex_y)
    angle = np.degrees(np.arctan2(cols - apex_x, rows - apex_y))
    sector = (np.abs(angle) <= SECTOR_HALF_ANGLE_DEG) & (depth < ROWS - 1)
    lv_apex_row, lv_axis_col = 45.0, 262.0  # LV on the image right, apex near the probe
    wall_cm = 1.0

    frames = np.empty((N_FRAMES, ROWS, COLS), np.uint8)
    masks = np.empty((N_FRAMES, ROWS, COLS), bool)
    for f, v in enumerate(volumes):
        length = length_ed_cm * (v / edv) ** 0.2
        radius = np.sqrt(3.0 * v / (2.0 * np.pi * length))
        base_row = lv_apex_row + length / CM_PER_PIXEL
        # Half ellipse: centre on the mitral plane, extending towards the apex (rows < base).
        u = (cols - lv_axis_col) / (radius / CM_PER_PIXEL)
        w = (base_row - rows) / (length / CM_PER_PIXEL)
        cavity = (u**2 + w**2 <= 1.0) & (w >= 0)
        thick = wall_cm * (edv / v) ** 0.35  # wall thickens as the cavity empties
        uo = (cols - lv_axis_col) / ((radius + thick) / CM_PER_PIXEL)
        wo = (base_row - rows) / ((length + thick) / CM_PER_PIXEL)
        wall = (uo**2 + wo**2 <= 1.0) & (wo >= 0) & ~cavity
        # Right ventricle (image left), both atria below the mitral/tricuspid planes.
        rv = (((cols - 150) / 45.0) ** 2 + ((base_row - rows) / (length / CM_PER_PIXEL * 0.8)) ** 2
              <= 1.0) & (rows <= base_row)
        atria = (((cols - 255) / 55.0) ** 2 + ((rows - base_row - 45) / 42.0) ** 2 <= 1.0) | \
                (((cols - 150) / 48.0) ** 2 + ((rows - base_row - 42) / 40.0) ** 2 <= 1.0)
        echogenicity = np.full((ROWS, COLS), 0.25, np.float32)
        echogenicity[wall] = 0.9
        echogenicity[(rv | atria) & ~wall] = 0.015
        echogenicity[cavity] = 0.012
        echogenicity *= np.exp(-depth / 900.0)  # attenuation with depth
        speckle = np.hypot(rng.standard_normal((ROWS, COLS), dtype=np.float32),
                           rng.standard_normal((ROWS, COLS), dtype=np.float32)) / np.sqrt(2)
        envelope = echogenicity * speckle
        image = np.clip(255.0 * (1.0 + np.log10(envelope + 1e-4) / 1.6), 0, 255)
        frames[f] = np.where(sector, image, 0).astype(np.uint8)
        masks[f] = cavity
    region = (int(apex_x - (ROWS - 1) * np.sin(np.radians(SECTOR_HALF_ANGLE_DEG))), 0,
              int(apex_x + (ROWS - 1) * np.sin(np.radians(SECTOR_HALF_ANGLE_DEG))), ROWS - 1)
    return EchoPhantom(
        frames=frames, lv_masks=masks, cm_per_pixel=CM_PER_PIXEL, frame_time_ms=frame_time,
        heart_rate_bpm=heart_rate, edv_ml=edv, esv_ml=esv, ef=round((edv - esv) / edv, 4),
        ed_frame=0, es_frame=es_frame, volumes_ml=tuple(round(float(v), 3) for v in volumes),
        region=region)
