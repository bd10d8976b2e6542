"""The lung nodule ONNX model, its runner, the detector and the nodule measurements."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from integrations.inference.lung_nodules import detect_nodules, resample_to_spacing
from integrations.inference.onnx_model import ModelChecksumError, load_model
from pathways.lung_nodule_measurement import axial_diameters, classify_type, measure_nodule, opening_mm

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "lung_nodule"
MODEL_PATH = MODEL_DIR / "lung_nodule_detector.onnx"
SPACING = (1.0, 0.9, 0.9)
# Tolerance on the longest axial diameter of a detected nodule (evaluation: see MODEL_CARD.md)
DIAMETER_TOLERANCE_MM = 1.5
TEST_SEEDS = (7000, 7001, 7002)  # disjoint from training (9000..) and evaluation (5000..)


def card_sha256() -> str:
    text = (MODEL_DIR / "MODEL_CARD.md").read_text()
    found = re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", text)
    assert found, "MODEL_CARD.md names no sha256"
    return found.group(1)


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL_PATH, card_sha256())


def test_committed_model_matches_card_and_is_small():
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == card_sha256()
    assert MODEL_PATH.stat().st_size < 5 * 1024 * 1024


def test_metadata_is_exposed(model):
    assert model.name == "radpath-lung-nodule-detector"
    assert re.fullmatch(r"\d+\.\d+\.\d+", model.version)
    assert "NOT a medical device" in model.intended_use
    assert model.sha256 == card_sha256()


def test_checksum_mismatch_is_refused(tmp_path):
    with pytest.raises(ModelChecksumError, match="expected"):
        load_model(MODEL_PATH, "0" * 64)
    tampered = tmp_path / "detector.onnx"
    shutil.copy(MODEL_PATH, tampered)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelChecksumError):
        load_model(tampered, card_sha256())


def test_session_is_cached_per_path(model):
    assert load_model(MODEL_PATH, card_sha256()) is model


def _ball(shape, spacing, centre_mm, diameter_mm):
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    return (zz - centre_mm[0]) ** 2 + (yy - centre_mm[1]) ** 2 + (xx - centre_mm[2]) ** 2 <= (diameter_mm / 2) ** 2


def _scene(mask_values, shape=(60, 70, 70), spacing=SPACING, noise=15.0, seed=0):
    hu = np.full(shape, -850.0)
    for mask, value in mask_values:
        hu[mask] = value
    hu = ndi.gaussian_filter(hu, 0.6) + np.random.default_rng(seed).normal(0, noise, shape)
    return np.rint(hu).astype(np.int16)


def test_voxelised_sphere_of_10mm_measures_10mm_and_its_volume():
    shape, centre = (60, 70, 70), (30.2, 31.1, 31.3)
    ball = _ball(shape, SPACING, centre, 10.0)
    hu = np.where(ball, 30, -850).astype(np.int16)
    seed = tuple(int(round(c / s)) for c, s in zip(centre, SPACING))
    m = measure_nodule(hu, SPACING, seed, 10.0)
    assert m.long_axis_mm == pytest.approx(10.0, abs=0.7)
    assert m.short_axis_mm == pytest.approx(10.0, abs=0.9)
    assert m.volume_mm3 == pytest.approx(4 / 3 * np.pi * 5**3, rel=0.03)  # 523.6 mm3
    assert m.nodule_type == "solid"
    assert not m.spiculated


def test_axial_diameters_of_an_ellipse():
    mask = np.zeros((3, 60, 60), bool)
    jj, ii = np.mgrid[:60, :60] * 0.5
    mask[1] = ((jj - 15) / 3.0) ** 2 + ((ii - 15) / 6.0) ** 2 <= 1  # 12 x 6 mm
    long_axis, short_axis, k = axial_diameters(mask, (1.0, 0.5, 0.5))
    assert (long_axis, short_axis, k) == (pytest.approx(12.0, abs=0.6), pytest.approx(6.0, abs=0.6), 1)


def test_ground_glass_and_part_solid_types_and_size():
    shape, centre = (60, 70, 70), (30.0, 31.5, 31.5)
    seed = tuple(int(round(c / s)) for c, s in zip(centre, SPACING))
    glass = _scene([(_ball(shape, SPACING, centre, 14.0), -550)])
    m = measure_nodule(glass, SPACING, seed, 14.0)
    assert m.nodule_type == "ground-glass"
    assert m.long_axis_mm == pytest.approx(14.0, abs=1.2)
    part = _scene([(_ball(shape, SPACING, centre, 14.0), -550), (_ball(shape, SPACING, centre, 7.0), 30)])
    m = measure_nodule(part, SPACING, seed, 14.0)
    assert m.nodule_type == "part-solid"
    assert m.long_axis_mm == pytest.approx(14.0, abs=1.2)
    assert m.solid_core_diameter_mm == pytest.approx(7.0, abs=1.5)


def _vessel_along_x(shape, offset_mm, radius_mm=1.0, spacing=SPACING):
    """A tube (2 mm across by default: a subsegmental vessel) along x, crossing the whole crop."""
    zz, yy, _ = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    return (zz - 30.0) ** 2 + (yy - 31.5 - offset_mm) ** 2 <= radius_mm**2


@pytest.mark.parametrize("offset_mm", [0.0, 3.0])  # through the centre, and off-centre
def test_a_vessel_through_ground_glass_does_not_make_it_part_solid(offset_mm):
    """Fleischner Society glossary (Hansell et al., Radiology 2008;246:697-722): ground-glass
    opacity does not obscure the vessels within it. A 14 mm ground-glass nodule (-550 HU) crossed
    by a 2 mm vessel (40 HU) is ground glass; with a 7 mm solid component it is part-solid; a
    10 mm solid nodule crossed by the vessel stays solid."""
    shape, centre = (60, 70, 70), (30.0, 31.5, 31.5)
    seed = tuple(int(round(c / s)) for c, s in zip(centre, SPACING))
    glass, vessel = _ball(shape, SPACING, centre, 14.0), _vessel_along_x(shape, offset_mm)

    m = measure_nodule(_scene([(glass, -550), (vessel, 40)]), SPACING, seed, 14.0)
    assert m.nodule_type == "ground-glass" and m.solid_core_diameter_mm == 0.0
    assert m.long_axis_mm == pytest.approx(14.0, abs=2.0)

    core = _ball(shape, SPACING, centre, 7.0)
    m = measure_nodule(_scene([(glass, -550), (core, 30), (vessel, 40)]), SPACING, seed, 14.0)
    assert m.nodule_type == "part-solid"
    assert m.solid_core_diameter_mm == pytest.approx(7.0, abs=1.5)

    m = measure_nodule(_scene([(_ball(shape, SPACING, centre, 10.0), 30), (vessel, 40)]), SPACING, seed, 10.0)
    assert m.nodule_type == "solid"
    assert m.long_axis_mm == pytest.approx(10.0, abs=1.5)


def test_a_solid_component_apart_from_vessels_is_kept_however_small():
    """Only structures that run outside the nodule are opened: a 3 mm solid component inside
    ground glass, touching no vessel, still makes the nodule part-solid."""
    shape, centre = (60, 70, 70), (30.0, 31.5, 31.5)
    seed = tuple(int(round(c / s)) for c, s in zip(centre, SPACING))
    hu = _scene([(_ball(shape, SPACING, centre, 12.0), -550), (_ball(shape, SPACING, centre, 3.0), 30)])
    m = measure_nodule(hu, SPACING, seed, 12.0)
    assert m.nodule_type == "part-solid" and m.solid_core_diameter_mm == pytest.approx(3.0, abs=1.0)


def test_classify_type_cut_offs():
    assert classify_type(0.0, 10.0) == "ground-glass"
    assert classify_type(5.0, 10.0) == "part-solid"
    assert classify_type(9.5, 10.0) == "solid"


def test_attached_vessel_is_cut_off():
    shape, centre = (60, 70, 70), (30.0, 31.5, 31.5)
    ball = _ball(shape, SPACING, centre, 10.0)
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING)), indexing="ij")
    vessel = ((zz - 30.0) ** 2 + (yy - 35.5) ** 2 <= 1.5**2)  # 3 mm tube along x, grazing the ball
    hu = _scene([(ball | vessel, 30)])
    seed = tuple(int(round(c / s)) for c, s in zip(centre, SPACING))
    m = measure_nodule(hu, SPACING, seed, 10.0)
    assert m.long_axis_mm == pytest.approx(10.0, abs=1.5)
    assert m.volume_mm3 == pytest.approx(523.6, rel=0.2)


def test_opening_removes_thin_tube_and_keeps_ball():
    shape = (40, 40, 40)
    ball = _ball(shape, (1, 1, 1), (20, 20, 20), 12)
    tube = np.zeros(shape, bool)
    tube[19:22, 19:22, :] = True
    opened = opening_mm(ball | tube, 3.0, (1.0, 1.0, 1.0))
    assert (opened & ball).sum() == ball.sum()
    assert not opened[20, 20, 2]


def test_spiculated_sphere_scores_higher_than_smooth_one():
    shape, centre = (60, 70, 70), (30.0, 31.5, 31.5)
    ball = _ball(shape, SPACING, centre, 12.0)
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING)), indexing="ij")
    spikes = np.zeros(shape, bool)
    for direction in np.random.default_rng(3).normal(size=(8, 3)):
        direction /= np.linalg.norm(direction)
        for t in np.linspace(4.0, 11.0, 30):
            p = np.array(centre) + direction * t
            spikes |= (zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2 <= 0.8**2
    seed = tuple(int(round(c / s)) for c, s in zip(centre, SPACING))
    smooth = measure_nodule(_scene([(ball, 30)]), SPACING, seed, 12.0)
    spiky = measure_nodule(_scene([(ball, 30), (spikes & ~ball, -20)]), SPACING, seed, 12.0)
    assert spiky.spiculation_score > smooth.spiculation_score + 0.02
    assert smooth.long_axis_mm == pytest.approx(12.0, abs=1.0)


def test_model_keeps_spheres_and_suppresses_tubes(model):
    """On the model grid: a 10 mm solid ball, a 10 mm ground-glass ball and a 5 mm-wide tube."""
    shape, spacing = (40, 60, 90), (2.0, 2.0, 2.0)
    zz, yy, xx = np.meshgrid(*(np.arange(n) * 2.0 for n in shape), indexing="ij")
    hu = np.full(shape, -850.0, np.float32)
    hu[_ball(shape, spacing, (40, 40, 40), 10)] = 30
    hu[_ball(shape, spacing, (40, 40, 130), 10)] = -550
    hu[(zz - 40) ** 2 + (yy - 90) ** 2 <= 2.5**2] = 30  # tube along x
    prob = model.run({"ct_hu": hu[None, None]})["nodule_probability"][0, 0]
    threshold = float(model.metadata["operating_threshold"])
    assert prob[20, 20, 20] > threshold
    assert prob[20, 20, 65] > threshold
    assert prob[18:23, 43:48, 10:80].max() < threshold


@pytest.fixture(scope="module")
def phantoms():
    synth = pytest.importorskip("radpath.synth.chest_ct")
    return [synth.make_chest_ct(seed, 3) for seed in TEST_SEEDS[:2]]


def test_detector_finds_held_out_nodules_of_5mm_and_more(model, phantoms):
    from models.lung_nodule.evaluate import match  # noqa: PLC0415

    for phantom in phantoms:
        nodules, labels = detect_nodules(phantom.hu, phantom.spacing_zyx_mm, phantom.origin_xyz_mm, model)
        assert [n.index for n in nodules] == list(range(1, len(nodules) + 1))
        assert [n.volume_mm3 for n in nodules] == sorted((n.volume_mm3 for n in nodules), reverse=True)
        assert labels.shape == phantom.hu.shape and labels.dtype == np.uint8
        assert set(np.unique(labels)) == set(range(len(nodules) + 1))
        pairs, false_positives = match(phantom, nodules)
        assert len(false_positives) <= 1
        for truth, found in pairs:
            if truth.diameter_mm < 5.0:
                continue
            assert found is not None, f"missed a {truth.diameter_mm} mm {truth.nodule_type} nodule"
            assert abs(found.long_axis_mm - truth.diameter_mm) <= DIAMETER_TOLERANCE_MM
            assert found.lobe == truth.lobe


def test_phantom_without_nodules_gives_at_most_one_detection(model):
    synth = pytest.importorskip("radpath.synth.chest_ct")
    phantom = synth.make_chest_ct(TEST_SEEDS[2], 0)
    nodules, labels = detect_nodules(phantom.hu, phantom.spacing_zyx_mm, phantom.origin_xyz_mm, model)
    assert len(nodules) <= 1
    assert labels.max() == len(nodules)


def test_resampling_keeps_the_origin_voxel_and_spacing():
    volume = np.arange(11 * 21 * 21, dtype=np.float32).reshape(11, 21, 21)
    coarse = resample_to_spacing(volume, (1.0, 0.5, 0.5), 2.0)
    assert coarse.shape == (6, 6, 6)
    assert coarse[0, 0, 0] == volume[0, 0, 0]
    assert coarse[1, 1, 1] == pytest.approx(volume[2, 4, 4])
