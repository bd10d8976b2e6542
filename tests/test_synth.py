"""radpath.synth: deterministic synthetic studies with known truth, and their HL7 orders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from scipy import ndimage


from pathways.identifiers import is_test_nhs_number
from pathways.lung_anatomy import LungExtent, lobe_of, lung_extents_from_mask
from radpath.synth import KINDS, generate, study_seed
from radpath.synth.brain_mri import make_brain_mri
from radpath.synth.cardiac_ct import agatston_weight
from radpath.synth.chest_ct import make_chest_ct
from radpath.synth.patients import make_patient

SEED = 20250301


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("synth")
    calls = []
    result = {kind: generate(kind, 1, SEED, out, progress=lambda i, n: calls.append((i, n)))[0]
              for kind in KINDS}
    assert calls == [(1, 1)] * len(KINDS)
    return result


def _truth(study) -> dict:
    return json.loads(study.truth_path.read_text())


def _series(study, number: int) -> list[pydicom.Dataset]:
    files = sorted((study.dicom_dir / str(number)).glob("*.dcm"))
    return sorted((pydicom.dcmread(f) for f in files), key=lambda ds: float(ds.ImagePositionPatient[2]))


def _volume(datasets) -> np.ndarray:
    return np.stack([ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
                     for ds in datasets])


# --- patients -----------------------------------------------------------------------------

def test_nhs_numbers_are_valid_and_in_the_test_range():
    from datetime import date
    rng = np.random.default_rng(1)
    patients = [make_patient(rng, date(2025, 1, 1), (50, 80)) for _ in range(300)]
    assert all(is_test_nhs_number(p.nhs_number) for p in patients)
    assert all(50 <= p.age_on(date(2025, 1, 1)) <= 80 for p in patients)
    assert len({p.nhs_number for p in patients}) > 290


# --- lobes --------------------------------------------------------------------------------

def test_lobe_rule_worked_points():
    right = LungExtent("R", z_min_mm=0, z_max_mm=200, y_min_mm=-100, y_max_mm=100)
    left = LungExtent("L", z_min_mm=0, z_max_mm=200, y_min_mm=-100, y_max_mm=100)
    # Posterior (p = 1), h = 0.6: below the oblique fissure there (h 0.7) -> lower lobe.
    assert lobe_of((-80, 100, 120), right) == "RLL"
    assert lobe_of((80, 100, 120), left) == "LLL"
    # Anterior (p = 0), h = 0.3: above the oblique (0.1), below the horizontal (0.55) -> RML.
    assert lobe_of((-80, -100, 60), right) == "RML"
    assert lobe_of((80, -100, 60), left) == "LUL"
    # Apex -> upper lobes.
    assert lobe_of((-80, 0, 190), right) == "RUL"
    assert lobe_of((80, 0, 190), left) == "LUL"


# --- chest CT -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chest_phantom():
    return make_chest_ct(11, n_nodules=4)


def test_chest_nodules_truth(chest_phantom):
    ph = chest_phantom
    assert ph.hu.dtype == np.int16 and ph.hu.shape == ph.lung_mask.shape
    assert len(ph.nodules) == 4
    lungs = lung_extents_from_mask(ph.lung_mask, ph.spacing_zyx_mm, ph.origin_xyz_mm)
    voxel = float(np.prod(ph.spacing_zyx_mm))
    for n in ph.nodules:
        assert 3.0 <= n.diameter_mm <= 30.0
        k, j, i = (int(round(c)) for c in n.centre_zyx_vox)
        assert ph.lung_mask[k, j, i]
        assert n.lobe == lungs.lobe_of(n.centre_xyz_mm)
        # Voxel centre ↔ patient position (LPS) consistency.
        expected = (ph.origin_xyz_mm[0] + n.centre_zyx_vox[2] * ph.spacing_zyx_mm[2],
                    ph.origin_xyz_mm[1] + n.centre_zyx_vox[1] * ph.spacing_zyx_mm[1],
                    ph.origin_xyz_mm[2] + n.centre_zyx_vox[0] * ph.spacing_zyx_mm[0])
        assert np.allclose(expected, n.centre_xyz_mm)
        sphere = np.pi / 6 * n.diameter_mm**3
        if not n.spiculated:
            tolerance = 0.08 if n.diameter_mm >= 6 else 0.3
            assert abs(n.volume_mm3 - sphere) / sphere < tolerance
        assert n.volume_mm3 / voxel == pytest.approx(round(n.volume_mm3 / voxel), abs=1e-3)
        half = 1 if n.diameter_mm >= 6 else 0
        centre_hu = float(ph.hu[k - half:k + half + 1, j - half:j + half + 1,
                                i - half:i + half + 1].mean())
        if n.nodule_type == "ground-glass":
            assert -700 < centre_hu < -400
        else:  # solid body or solid core
            assert -60 < centre_hu < 120
        if n.nodule_type == "part-solid":
            assert 0 < n.solid_core_diameter_mm < n.diameter_mm


def test_chest_study_files_match_the_phantom(studies):
    study = studies["chest-ct"]
    truth = _truth(study)
    thin = _series(study, 2)
    thick = _series(study, 3)
    assert thin[0].SeriesDescription == "CT THORAX 1.0 B45f"
    assert float(thick[0].SliceThickness) == 5.0 and len(thick) == len(thin) // 5
    for series, step in ((thin, 1.0), (thick, 5.0)):
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in series])
        assert np.allclose(np.diff(z), step)
        assert len({tuple(map(float, ds.ImagePositionPatient[:2])) for ds in series}) == 1
        assert {ds.StudyInstanceUID for ds in series} == {study.study_uid}
        assert {ds.AccessionNumber for ds in series} == {study.accession_number}
    # Re-generating from the study seed gives the same volume that was written (determinism).
    ph = make_chest_ct(study_seed(SEED, "chest-ct", 1))
    assert np.array_equal(_volume(thin), ph.hu)
    assert [float(v) for v in thin[0].ImagePositionPatient] == pytest.approx(list(ph.origin_xyz_mm))
    assert [float(v) for v in thin[0].PixelSpacing] == [0.9, 0.9]
    assert truth["truth"]["nodules"] == json.loads(json.dumps(
        [n.__dict__ for n in ph.nodules]))
    assert thin[0].OtherPatientIDsSequence[0].PatientID == truth["patient"]["nhs_number"]


# --- brain MRI ------------------------------------------------------------------------------

def test_brain_truth_and_atrophy(studies):
    study = studies["brain-mri"]
    truth = _truth(study)["truth"]
    labels = np.load(study.truth_path.parent / truth["label_map"])["labels"]
    counts = np.bincount(labels.ravel(), minlength=9) / 1000.0
    assert truth["hippocampus_left_ml"] == pytest.approx(counts[5])
    assert truth["brain_volume_ml"] == pytest.approx(counts[3:7].sum())
    assert truth["intracranial_volume_ml"] == pytest.approx(counts[1:7].sum())
    ph = make_brain_mri(study_seed(SEED, "brain-mri", 1), truth["atrophy"])
    series = _series(study, 2)
    assert np.array_equal(np.stack([ds.pixel_array for ds in series]), ph.t1)
    assert np.allclose(np.diff([float(ds.ImagePositionPatient[2]) for ds in series]), 1.0)

    young, old = make_brain_mri(5, 0.0), make_brain_mri(5, 1.0)
    assert young.intracranial_volume_ml == old.intracranial_volume_ml
    assert old.brain_volume_ml < young.brain_volume_ml
    assert old.hippocampus_left_ml < young.hippocampus_left_ml
    assert old.ventricle_volume_ml > young.ventricle_volume_ml
    assert 2.0 < young.hippocampus_left_ml < 5.0 and 1000 < young.intracranial_volume_ml < 1700


# --- echo -----------------------------------------------------------------------------------

def test_echo_truth(studies):
    study = studies["echo"]
    truth = _truth(study)["truth"]
    assert truth["ef"] == pytest.approx((truth["edv_ml"] - truth["esv_ml"]) / truth["edv_ml"], abs=1e-4)
    assert truth["volumes_ml"][truth["ed_frame"]] == pytest.approx(truth["edv_ml"])
    assert truth["volumes_ml"][truth["es_frame"]] == pytest.approx(truth["esv_ml"])
    assert min(truth["volumes_ml"]) == pytest.approx(truth["esv_ml"])
    (path,) = (study.dicom_dir / "1").glob("*.dcm")
    ds = pydicom.dcmread(path)
    masks = np.load(study.truth_path.parent / truth["lv_masks"])["lv_masks"]
    assert int(ds.NumberOfFrames) == masks.shape[0] and ds.BitsStored == 8
    region = ds.SequenceOfUltrasoundRegions[0]
    cm = float(region.PhysicalDeltaX)
    assert region.PhysicalUnitsXDirection == 3 and cm == truth["cm_per_pixel"]
    assert float(ds.FrameTime) == truth["frame_time_ms"]
    # Method of discs (rows are discs perpendicular to the long axis) recovers the volumes.
    for frame, volume in ((truth["ed_frame"], truth["edv_ml"]), (truth["es_frame"], truth["esv_ml"])):
        diameters_cm = masks[frame].sum(axis=1) * cm
        discs_ml = float(np.sum(np.pi * (diameters_cm / 2) ** 2 * cm))
        assert discs_ml == pytest.approx(volume, rel=0.03)
        # The cavity is dark in the image, the rest of the sector brighter.
        assert ds.pixel_array[frame][masks[frame]].mean() < 40


# --- cardiac CT (Agatston) ------------------------------------------------------------------

def test_agatston_weights_from_the_paper():
    # Agatston et al., JACC 1990;15:827-32: 1 = 130-199 HU, 2 = 200-299, 3 = 300-399, 4 = >= 400.
    assert [agatston_weight(v) for v in (129, 130, 199, 200, 299, 300, 399, 400, 1200)] == \
        [0, 1, 1, 2, 2, 3, 3, 4, 4]


def _agatston_independent(volume_hu, pixel_area_mm2, centres_vox) -> np.ndarray:
    """Per slice: 8-connected regions >= 130 HU of >= 1 mm^2, area x weight of peak, by nearest lesion."""
    scores = np.zeros(len(centres_vox))
    for k, image in enumerate(volume_hu):
        regions, n = ndimage.label(image >= 130, structure=np.ones((3, 3)))
        for r in range(1, n + 1):
            pixels = regions == r
            area = pixels.sum() * pixel_area_mm2
            if area < 1.0:
                continue
            rows, cols = np.nonzero(pixels)
            where = np.array([k, rows.mean(), cols.mean()])
            distance = [np.linalg.norm((where - c) * [3.0, 0.39, 0.39]) for c in centres_vox]
            if not distance or min(distance) > 8.0:
                continue  # bone, not a coronary lesion
            peak = image[pixels].max()
            weight = 4 if peak >= 400 else 3 if peak >= 300 else 2 if peak >= 200 else 1
            scores[int(np.argmin(distance))] += area * weight
    return scores


def test_agatston_truth_rederived_from_pixels(studies):
    study = studies["cardiac-ct"]
    truth = _truth(study)["truth"]
    series = _series(study, 2)
    volume = _volume(series)
    dy, dx = (float(v) for v in series[0].PixelSpacing)
    origin = [float(v) for v in series[0].ImagePositionPatient]
    assert float(series[0].SliceThickness) == 3.0
    assert np.allclose(np.diff([float(ds.ImagePositionPatient[2]) for ds in series]), 3.0)
    centres = [np.array([(les["centre_xyz_mm"][2] - origin[2]) / 3.0,
                         (les["centre_xyz_mm"][1] - origin[1]) / dy,
                         (les["centre_xyz_mm"][0] - origin[0]) / dx]) for les in truth["lesions"]]
    scores = _agatston_independent(volume, dy * dx, centres)
    assert scores == pytest.approx([les["agatston"] for les in truth["lesions"]], abs=1e-6)
    assert truth["agatston_total"] == pytest.approx(scores.sum(), abs=1e-6)
    assert sum(truth["agatston_by_vessel"].values()) == pytest.approx(truth["agatston_total"])


def test_agatston_truth_many_lesions():
    from radpath.synth.cardiac_ct import make_cardiac_ct
    ph = make_cardiac_ct(3, n_lesions=6)
    dz, dy, dx = ph.spacing_zyx_mm
    centres = [np.array([(les.centre_xyz_mm[2] - ph.origin_xyz_mm[2]) / dz,
                         (les.centre_xyz_mm[1] - ph.origin_xyz_mm[1]) / dy,
                         (les.centre_xyz_mm[0] - ph.origin_xyz_mm[0]) / dx]) for les in ph.lesions]
    scores = _agatston_independent(ph.hu, dy * dx, centres)
    assert scores == pytest.approx([les.agatston for les in ph.lesions], abs=1e-6)
    assert ph.agatston_total > 0


# --- DICOM validity -------------------------------------------------------------------------

def test_dciodvfy_reports_no_errors(studies):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:  # dicom3tools: required in CI, optional on a workstation
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dciodvfy (dicom3tools) is not installed")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    files = [studies["chest-ct"].dicom_dir / "2" / "1.dcm", studies["chest-ct"].dicom_dir / "3" / "1.dcm",
             studies["brain-mri"].dicom_dir / "2" / "1.dcm", studies["echo"].dicom_dir / "1" / "1.dcm",
             studies["cardiac-ct"].dicom_dir / "2" / "1.dcm"]
    for path in files:
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        report = run.stdout + run.stderr
        assert "Error" not in report, f"{path}: {report}"
        assert any(iod in report for iod in ("CTImage", "MRImage", "USMultiFrameImage")), report


# --- orders ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, code, modality", [
    ("chest-ct", "169069000", "CT"), ("brain-mri", "816077007", "MR"),
    ("echo", "433236007", "US"), ("cardiac-ct", "426005005", "CT")])
def test_orm_parses_and_matches_the_study(studies, kind, code, modality):
    study = studies[kind]
    truth = _truth(study)
    er7 = study.order_path.read_bytes().decode("ascii")
    assert "\n" not in er7 and er7.count("\r") >= 4
    msg = parse_message(er7, validation_level=VALIDATION_LEVEL.QUIET)
    assert msg.msh.msh_9.to_er7() == "ORM^O01^ORM_O01" and msg.msh.msh_12.to_er7() == "2.4"
    assert msg.msh.msh_3.to_er7() == "SYNTH_RIS" and msg.msh.msh_4.to_er7() == "RXX01"
    segments = {line.split("|")[0]: line.split("|") for line in er7.split("\r") if line}
    pid, orc, obr = segments["PID"], segments["ORC"], segments["OBR"]
    nhs, mrn = pid[3].split("~")
    assert nhs.split("^")[0] == truth["patient"]["nhs_number"] and nhs.endswith("^^^NHS^NH")
    assert is_test_nhs_number(nhs.split("^")[0]) and mrn.endswith("^MR")
    assert orc[1] == "NW" and orc[7].split("^")[5] in ("S", "A", "R")
    assert obr[3].split("^")[0] == obr[18] == study.accession_number
    assert obr[4] == f"{code}^{truth['order']['procedure_text']}^SCT" and obr[24] == modality
    obx = [line for line in er7.split("\r") if line.startswith("OBX")]
    if kind == "chest-ct":
        answers = {line.split("|")[3].split("^")[0]: line.split("|")[5].split("^")[0] for line in obx}
        assert set(answers) == {"FHLC", "EMPH"} and set(answers.values()) <= {"Y", "N"}
        assert answers["EMPH"] == ("Y" if truth["order"]["emphysema"] else "N")
    else:
        assert obx == []


# --- determinism ----------------------------------------------------------------------------

def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_is_deterministic(tmp_path):
    a = generate("echo", 2, 99, tmp_path / "a")
    b = generate("echo", 2, 99, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert a[0].study_uid == b[0].study_uid and a[0].study_uid != a[1].study_uid
    assert (tmp_path / "a" / "echo-002" / "order.hl7").exists()
    c = generate("echo", 1, 100, tmp_path / "c")
    assert c[0].study_uid != a[0].study_uid
    with pytest.raises(ValueError):
        generate("pet-ct", 1, 1, tmp_path / "d")


def test_a_chest_ct_follow_up_is_the_same_patient_later_with_known_growth(tmp_path):
    """`generate_follow_up`: the same patient and anatomy, a new order and study 91 days later,
    nodule 1 doubled (true VDT = 91 days from the drawn voxels), nodule 2 resolved, one new, and
    the patient lying 5, -3, 8 mm elsewhere."""
    import datetime as dt

    from radpath.synth import FollowUpPlan, generate, generate_follow_up

    (baseline,) = generate("chest-ct", 1, 17, tmp_path)
    follow = generate_follow_up(17, FollowUpPlan(days=91, volume_ratio={1: 2.0, 2: 0.0}, new_nodules=1,
                                                 shift_xyz_mm=(5.0, -3.0, 8.0)), tmp_path)
    b, f = (json.loads(Path(s.truth_path).read_text()) for s in (baseline, follow))
    assert f["patient"] == b["patient"] and follow.accession_number != baseline.accession_number
    assert follow.study_uid != baseline.study_uid and f["truth"]["prior"]["study_uid"] == baseline.study_uid
    day = lambda d: dt.datetime.strptime(d, "%Y%m%d").date()  # noqa: E731
    assert day(f["study"]["study_date"]) - day(b["study"]["study_date"]) == dt.timedelta(days=91)
    growth = {g["index"]: g for g in f["truth"]["growth"]}
    assert growth[1]["status"] == "present" and abs(growth[1]["vdt_days"] - 91) < 91 * 0.05
    assert growth[2]["status"] == "resolved" and growth[3]["status"] == "new"
    before, after = b["truth"]["nodules"][0], f["truth"]["nodules"][0]
    assert [round(a - c, 6) for a, c in zip(after["centre_xyz_mm"], before["centre_xyz_mm"])] == [5.0, -3.0, 8.0]
