"""Held-out apical four-chamber cines for the echo LV model: never used for training or thresholds.

Written separately from `radpath/synth/echo.py` (the training generator), with another
geometry, shape model and image formation, so that a model that learned how that generator
draws cannot pass by recognising it:

- 360-560 rows at 0.030-0.055 cm per pixel (depth 14-22 cm), a 30-45 degree half-angle
  sector whose apex sits at the top, centred or a little off;
- the LV is a solid of revolution about a long axis tilted up to 15 degrees from the beam, its
  half-width profile r(s) = R s^a (1 - b s^6) from the apex (s = 0) to the mitral plane
  (s = 1): a from 0.35 (bullet) to 0.75 (cone), b (0.1-0.35) a narrower base; on the image right (as
  usually displayed) or, in a quarter, on the left;
- EF evenly 15-75 %, EDV 70-260 ml; over one beat the long axis shortens 8-20 % and the radius
  follows from the volume; the myocardium (0.7-1.3 cm, thickening in systole), RV and both atria
  beside and below it, the mitral and tricuspid leaflets as bright moving lines, apical clutter;
- image formation in beam space: tissue echogenicity sampled on (depth, angle) beams, complex
  Gaussian scatterers convolved with an axial and a lateral point-spread function (lateral
  width growing with depth), envelope, depth-gain, log compression with a random dynamic range
  and gain, then scan conversion to the Cartesian frame.

Truth: the LV cavity mask per frame (the central section of the solid), and its analytic volume
(the integral of pi r(s)^2 along the axis), EDV, ESV and EF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class HeldoutCine:
    seed: int
    frames: np.ndarray  # uint8 (n, rows, cols)
    lv_masks: np.ndarray  # bool (n, rows, cols)
    cm_per_pixel: float
    region: tuple[int, int, int, int]  # min_x, min_y, max_x, max_y of the sector
    frame_time_ms: float
    edv_ml: float
    esv_ml: float
    ef_percent: float
    volumes_ml: tuple[float, ...]
    lv_on_left: bool
    shape_exponent: float


def _profile_volume(radius_cm: float, length_cm: float, a: float, b: float) -> float:
    """Volume (ml) of the solid with half-width r(s) = R s^a (1 - b s^6), s = 0..1 over length L."""
    s = np.linspace(0.0, 1.0, 2001)
    r = radius_cm * s**a * (1 - b * s**6)
    return float(np.trapezoid(np.pi * r**2, s) * length_cm)


def make_heldout_cine(seed: int) -> HeldoutCine:
    """One held-out A4C cine; the same seed gives the same frames and truth."""
    rng = np.random.default_rng([seed, 0xE4C0])
    cm = float(rng.uniform(0.030, 0.055))
    depth_cm = float(rng.uniform(14.0, 22.0))
    rows = int(round(depth_cm / cm))
    half_angle = np.radians(rng.uniform(30.0, 45.0))
    cols = int(2 * rows * np.sin(half_angle)) + 40
    apex_col = cols / 2 + rng.uniform(-0.05, 0.05) * cols
    n_frames = int(rng.integers(30, 71))
    heart_rate = float(rng.uniform(50.0, 110.0))
    ef = float(rng.uniform(0.15, 0.75))
    edv = float(rng.uniform(70.0, 260.0))
    esv = edv * (1 - ef)
    a, b = float(rng.uniform(0.35, 0.75)), float(rng.uniform(0.1, 0.35))
    length_ed = float(rng.uniform(7.0, 9.5)) * (edv / 140.0) ** (1 / 6)
    shortening = float(rng.uniform(0.08, 0.20))
    on_left = bool(rng.uniform() < 0.25)
    for _attempt in range(50):  # the whole LV inside the sector at end-diastole
        tilt = np.radians(rng.uniform(-15.0, 15.0))
        apex_depth_cm = float(rng.uniform(1.0, 3.0))
        lateral_cm = float(rng.uniform(0.6, 2.2)) * (-1 if on_left else 1)  # LV axis beside the sector's centre line
        radius_ed = np.sqrt(edv / _profile_volume(1.0, length_ed, a, b))
        s_base = np.linspace(0, 1, 50)
        half = radius_ed * s_base**a * (1 - b * s_base**6) + 1.5
        points_x = lateral_cm + np.sin(tilt) * length_ed * s_base
        points_y = apex_depth_cm + np.cos(tilt) * length_ed * s_base
        edge_angle = np.abs(np.arctan2(np.abs(points_x) + half, points_y))
        if edge_angle.max() < half_angle * 0.97:
            break
    wall_ed = float(rng.uniform(0.7, 1.3))
    es_fraction = float(rng.uniform(0.33, 0.42))
    dynamic_range_db = float(rng.uniform(45.0, 65.0))
    gain = float(rng.uniform(0.8, 1.2))

    # Volume over one beat: raised-cosine systole to ES, then refill with a diastasis plateau
    t = np.arange(n_frames) / n_frames
    phase = np.where(t <= es_fraction, 0.5 * (1 - np.cos(np.pi * t / es_fraction)),
                     np.where(t < es_fraction + 0.35,
                              0.5 * (1 + np.cos(np.pi * (t - es_fraction) / 0.35)), 0.0))
    volumes = edv - (edv - esv) * phase

    axis = np.array([np.sin(tilt), np.cos(tilt)])  # (x, y) from apex to base, in cm
    normal = np.array([axis[1], -axis[0]])
    apex = np.array([apex_col * cm + lateral_cm, apex_depth_cm])

    # Beam space: depth samples x beams
    n_depth, n_beams = int(rows * 1.1), int(2 * half_angle / np.radians(0.35))
    depth = np.linspace(0, rows * cm, n_depth)
    angles = np.linspace(-half_angle, half_angle, n_beams)
    beam_x = apex_col * cm + depth[:, None] * np.sin(angles)[None, :]
    beam_y = depth[:, None] * np.cos(angles)[None, :]
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    x_cm, y_cm = xx * cm, yy * cm
    pix_depth = np.hypot(x_cm - apex_col * cm, y_cm)
    pix_angle = np.arctan2(x_cm - apex_col * cm, y_cm)
    sector = (np.abs(pix_angle) <= half_angle) & (pix_depth < rows * cm)
    map_rows = pix_depth / (rows * cm) * (n_depth - 1)
    map_cols = (pix_angle + half_angle) / (2 * half_angle) * (n_beams - 1)

    frames = np.zeros((n_frames, rows, cols), np.uint8)
    masks = np.zeros((n_frames, rows, cols), bool)
    truth_volumes = []
    lateral_psf = np.clip(depth / depth[-1], 0.2, 1.0)
    for f in range(n_frames):
        length = length_ed * (1 - shortening * phase[f])
        radius = np.sqrt(volumes[f] / _profile_volume(1.0, length, a, b))
        truth_volumes.append(_profile_volume(radius, length, a, b))
        wall = wall_ed * (edv / volumes[f]) ** 0.3

        def cavity_section(px, py, grow=0.0):
            rel_x, rel_y = px - apex[0], py - apex[1]
            along = (rel_x * axis[0] + rel_y * axis[1] + grow) / (length + grow)
            across = np.abs(rel_x * normal[0] + rel_y * normal[1])
            s = np.clip(along, 0, 1)
            half = radius * s**a * (1 - b * s**6) + grow
            return (along >= 0) & (along <= 1) & (across <= half), along, across

        def tissue(px, py):
            cavity, along, across = cavity_section(px, py)
            outer, _, _ = cavity_section(px, py, wall)
            echo = np.full(px.shape, 0.06, np.float32)  # pericardium and surroundings
            echo[outer & ~cavity] = 0.5
            side = -1 if on_left else 1
            rv_x = apex[0] - side * (1.8 * radius + 2 * wall)
            rv = (((px - rv_x) / (0.8 * radius + 0.4)) ** 2 + ((py - apex[1] - 0.6 * length) / (0.55 * length)) ** 2) < 1
            base_y = apex[1] + length * axis[1]
            atria = ((((px - apex[0]) / (radius * 1.1)) ** 2 + ((py - base_y - 2.2) / 2.0) ** 2) < 1) \
                | ((((px - rv_x) / (radius * 0.9)) ** 2 + ((py - base_y - 2.0) / 1.8) ** 2) < 1)
            echo[(rv | atria) & ~outer] = 2e-5  # blood: about 45 dB below myocardium
            echo[cavity] = 1.5e-5
            clutter = cavity & (along < 0.25)
            echo[clutter] += 0.004 * (1 - along[clutter] / 0.25)
            opening = 0.5 * (1 + np.cos(2 * np.pi * f / n_frames))  # leaflets open in diastole
            for centre_x in (apex[0], rv_x):
                leaflet = (np.abs(py - base_y - 0.15) < 0.08) & (np.abs(px - centre_x) < radius) \
                    & (np.abs(px - centre_x) > radius * 0.9 * opening)
                echo[leaflet] = 0.9
            return echo, cavity

        echo_beams, _ = tissue(beam_x, beam_y)
        echo_beams *= np.exp(-depth[:, None] / (rows * cm * 1.6))  # attenuation
        scatter = rng.standard_normal(echo_beams.shape) + 1j * rng.standard_normal(echo_beams.shape)
        rf = np.sqrt(echo_beams) * scatter
        rf = ndimage.gaussian_filter(rf.real, (1.2, 0.0)) + 1j * ndimage.gaussian_filter(rf.imag, (1.2, 0.0))
        lateral = np.empty_like(rf)
        for band in range(4):  # lateral blur grows with depth
            lo, hi = band * n_depth // 4, (band + 1) * n_depth // 4
            sigma = 0.6 + 2.0 * lateral_psf[(lo + hi) // 2]
            lateral[lo:hi] = ndimage.gaussian_filter(rf.real, (0, sigma))[lo:hi] \
                + 1j * ndimage.gaussian_filter(rf.imag, (0, sigma))[lo:hi]
        envelope = np.abs(lateral) * (1 + depth[:, None] / depth[-1])  # time-gain compensation
        db = 20 * np.log10(envelope / np.percentile(envelope, 99.5) + 1e-6)
        grey = np.clip((db + dynamic_range_db) / dynamic_range_db, 0, 1) * 255 * gain
        image = ndimage.map_coordinates(grey, [map_rows, map_cols], order=1, mode="constant", cval=0.0)
        frames[f] = np.where(sector, np.clip(image, 0, 255), 0).astype(np.uint8)
        masks[f] = cavity_section(x_cm, y_cm)[0] & sector
    x_lo = int(max(0, apex_col - rows * np.sin(half_angle)))
    x_hi = int(min(cols - 1, apex_col + rows * np.sin(half_angle)))
    edv_t, esv_t = max(truth_volumes), min(truth_volumes)
    return HeldoutCine(
        seed=seed, frames=frames, lv_masks=masks, cm_per_pixel=cm, region=(x_lo, 0, x_hi, rows - 1),
        frame_time_ms=60000.0 / heart_rate / n_frames, edv_ml=round(edv_t, 2), esv_ml=round(esv_t, 2),
        ef_percent=round((edv_t - esv_t) / edv_t * 100, 2), volumes_ml=tuple(round(v, 2) for v in truth_volumes),
        lv_on_left=on_left, shape_exponent=round(a, 3),
    )
