"""Deterministic synthetic studies with known truth, as DICOM files plus the matching HL7 order.

``generate(kind, count, seed, out_dir)`` writes, per study, ``out_dir/<kind>-<NNN>/``:
``dicom/<SeriesNumber>/<InstanceNumber>.dcm``, ``order.hl7`` (ORM^O01, ER7) and
``truth.json`` (synthetic patient, UIDs, accession, kind-specific truth, generator version and
seed); array truth (brain label map, echo LV masks) sits beside it as ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from radpath.synth import dicom_writer as dw
from radpath.synth.brain_mri import make_brain_mri
from radpath.synth.cardiac_ct import make_cardiac_ct
from radpath.synth.chest_ct import make_chest_ct, make_follow_up_ct
from radpath.synth.echo import make_echo
from radpath.synth.orders import PROCEDURES, Order, build_orm
from radpath.synth.patients import accession_number, make_patient, placer_order_number

GENERATOR_VERSION = "1.0.0"
KINDS = ("chest-ct", "brain-mri", "echo", "cardiac-ct")
_AGE_RANGE = {"chest-ct": (55, 80), "brain-mri": (55, 90), "echo": (40, 90), "cardiac-ct": (40, 75)}
_DESCRIPTION = {"chest-ct": "CT THORAX", "brain-mri": "MRI HEAD", "echo": "ECHO TTE",
                "cardiac-ct": "CT HEART CALCIUM SCORE"}
_INDICATION = {
    "chest-ct": ("Ex-smoker, 30 pack-years. Persistent cough.", "Lung nodule assessment"),
    "brain-mri": ("Progressive memory decline over 18 months.", "?Neurodegeneration"),
    "echo": ("Breathlessness on exertion, raised NT-proBNP.", "LV systolic function"),
    "cardiac-ct": ("Atypical chest pain, intermediate risk.", "Coronary artery calcium score"),
}


@dataclass(frozen=True)
class GeneratedStudy:
    study_uid: str
    accession_number: str
    kind: str
    dicom_dir: Path
    order_path: Path
    truth_path: Path


def study_seed(seed: int, kind: str, index: int) -> int:
    """The seed of one study, derived from the run seed, the kind and its index."""
    digest = hashlib.sha256(f"radpath-synth:{seed}:{kind}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def generate(kind: str, count: int, seed: int, out_dir: Path,
             progress: Callable[[int, int], None] | None = None) -> list[GeneratedStudy]:
    """Write ``count`` studies of a kind under out_dir; the same arguments give the same files."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    studies = []
    for index in range(1, count + 1):
        studies.append(_one_study(kind, index, study_seed(seed, kind, index), seed, Path(out_dir)))
        if progress is not None:
            progress(index, count)
    return studies


@dataclass(frozen=True)
class FollowUpPlan:
    """How a follow-up chest CT differs from its baseline (radpath.synth.chest_ct.make_follow_up_ct)."""

    days: int  # after the baseline study
    volume_ratio: dict[int, float]  # baseline nodule index -> follow-up volume / baseline volume (0: resolved)
    new_nodules: int = 0
    shift_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # where the patient lies this time


def generate_follow_up(seed: int, plan: FollowUpPlan, out_dir: Path) -> GeneratedStudy:
    """The follow-up chest CT of the first study ``generate("chest-ct", 1, seed, ...)`` writes:
    the same patient, a new order and study ``plan.days`` later, its nodules grown, stable,
    resolved or new as `plan` says; truth.json adds the prior and each nodule's true
    volume-doubling time."""
    return _one_study("chest-ct", 1, study_seed(seed, "chest-ct", 1), seed, Path(out_dir), follow_up=plan)


def _one_study(kind: str, index: int, sseed: int, base_seed: int, out_dir: Path,
               follow_up: FollowUpPlan | None = None) -> GeneratedStudy:
    rng = np.random.default_rng([sseed, 0x0D])
    when = datetime.combine(date(2025, 1, 6) + timedelta(days=int(index)), datetime.min.time()) \
        + timedelta(minutes=int(8 * 60 + rng.integers(0, 9 * 60)))
    patient = make_patient(rng, when.date(), _AGE_RANGE[kind])
    baseline_uid = dw.uid("radpath-synth", kind, sseed, "study")
    if follow_up is not None:  # same patient; a new order, accession and study, days later
        rng = np.random.default_rng([sseed, 0xF0, follow_up.days])
        when += timedelta(days=follow_up.days)
    accession = accession_number(rng)
    clinical, reason = _INDICATION[kind]
    order = Order(kind=kind, placer_order_number=placer_order_number(rng), accession_number=accession,
                  ordered_at=when - timedelta(days=int(rng.integers(1, 30))),
                  priority=str(rng.choice(["R", "A", "S"], p=[0.8, 0.15, 0.05])),
                  clinical_info=clinical, reason=reason,
                  family_history_lung_cancer=bool(rng.random() < 0.2) if kind == "chest-ct" else None,
                  emphysema=bool(rng.random() < 0.3) if kind == "chest-ct" else None)
    study_uid = baseline_uid if follow_up is None else dw.uid("radpath-synth", kind, sseed, "follow-up", follow_up.days)
    study = dw.StudyInfo(patient=patient, study_uid=study_uid, accession_number=accession,
                         study_date=when.strftime("%Y%m%d"), study_time=when.strftime("%H%M%S"),
                         description=_DESCRIPTION[kind], study_id=str(index),
                         patient_age=f"{patient.age_on(when.date()):03d}Y")
    folder = out_dir / (f"{kind}-{index:03d}" if follow_up is None else f"{kind}-{index:03d}-follow-up-{follow_up.days}d")
    dicom_dir = folder / "dicom"
    if follow_up is not None:
        series, truth = _chest(sseed, study, dicom_dir, folder, follow_up)
        truth["prior"] = {"study_uid": baseline_uid, "interval_days": follow_up.days}
    else:
        writer = {"chest-ct": _chest, "brain-mri": _brain, "echo": _echo, "cardiac-ct": _cardiac}[kind]
        series, truth = writer(sseed, study, dicom_dir, folder)

    order_path = folder / "order.hl7"
    order_path.write_bytes(build_orm(patient, order).encode("ascii"))
    proc = PROCEDURES[kind]
    document = {
        "generator": "radpath-synth", "version": GENERATOR_VERSION, "seed": base_seed,
        "study_seed": sseed, "kind": kind, "index": index,
        "patient": patient.to_json(),
        "study": {"study_uid": study_uid, "accession_number": accession,
                  "placer_order_number": order.placer_order_number,
                  "study_date": study.study_date, "study_time": study.study_time,
                  "description": study.description, "series": series},
        "order": {"procedure_code": proc.code, "procedure_text": proc.text,
                  "coding_system": proc.system, "modality": proc.modality,
                  "priority": order.priority, "clinical_info": clinical, "reason": reason,
                  "family_history_lung_cancer": order.family_history_lung_cancer,
                  "emphysema": order.emphysema},
        "truth": truth,
    }
    truth_path = folder / "truth.json"
    truth_path.write_text(json.dumps(document, indent=2, sort_keys=False))
    return GeneratedStudy(study_uid=study_uid, accession_number=accession, kind=kind,
                          dicom_dir=dicom_dir, order_path=order_path, truth_path=truth_path)


def _series(sseed, study, number, description, modality, body_part, frame_of_reference, **extra):
    return dw.SeriesInfo(series_uid=dw.uid(study.study_uid, "series", number, sseed), number=number,
                         description=description, modality=modality, body_part=body_part,
                         frame_of_reference_uid=frame_of_reference, extra=extra)


def _series_json(info: dw.SeriesInfo, n: int, thickness: float | None, primary: bool) -> dict:
    return {"series_uid": info.series_uid, "series_number": info.number,
            "description": info.description, "modality": info.modality, "n_instances": n,
            "slice_thickness_mm": thickness, "primary": primary}


def _chest(sseed, study, dicom_dir, folder, follow_up: FollowUpPlan | None = None):
    if follow_up is None:
        ph = make_chest_ct(sseed)
    else:
        ph = make_follow_up_ct(sseed, follow_up.volume_ratio, new_nodules=follow_up.new_nodules,
                               shift_xyz_mm=follow_up.shift_xyz_mm)
    frame = dw.uid(study.study_uid, "frame-of-reference")
    thin = _series(sseed, study, 2, "CT THORAX 1.0 B45f", "CT", "CHEST", frame)
    dw.write_ct_series(ph.hu, ph.spacing_zyx_mm, ph.origin_xyz_mm, study, thin, dicom_dir,
                       kernel="B45f")
    # Thick 5 mm soft-kernel reconstruction: mean of 5 thin slices, centred on the block.
    n_thick = ph.hu.shape[0] // 5
    thick_hu = ph.hu[: n_thick * 5].reshape(n_thick, 5, *ph.hu.shape[1:]).mean(axis=1)
    thick_origin = (ph.origin_xyz_mm[0], ph.origin_xyz_mm[1], ph.origin_xyz_mm[2] + 2.0)
    thick = _series(sseed, study, 3, "CT THORAX 5.0 B31f", "CT", "CHEST", frame)
    dw.write_ct_series(np.rint(thick_hu).astype(np.int16), (5.0, *ph.spacing_zyx_mm[1:]),
                       thick_origin, study, thick, dicom_dir, kernel="B31f", window=(40, 400))
    voxel_ml = float(np.prod(ph.spacing_zyx_mm)) / 1000.0
    truth = {
        "geometry": {"series_uid": thin.series_uid, "shape_zyx": list(ph.hu.shape),
                     "spacing_zyx_mm": list(ph.spacing_zyx_mm), "origin_xyz_mm": list(ph.origin_xyz_mm)},
        "lung_volume_ml": round(float(ph.lung_mask.sum()) * voxel_ml, 3),
        "nodules": [asdict(n) for n in ph.nodules],
        "volume_rule": "voxels whose centre lies within the nodule ball (incl. ground-glass halo, "
                       "excl. spicules) x voxel volume",
    }
    if follow_up is not None:
        truth["growth"] = _growth_truth(make_chest_ct(sseed), ph, follow_up)
    series = [_series_json(thin, ph.hu.shape[0], 1.0, True),
              _series_json(thick, n_thick, 5.0, False)]
    return series, truth


def _growth_truth(baseline, follow_up_phantom, plan: FollowUpPlan) -> list[dict]:
    """Per nodule of either study: baseline and follow-up volume (drawn voxels), and the true
    volume-doubling time (VDT = interval x ln 2 / ln(V2 / V1); None when the volume did not change)."""
    import math

    before = {n.index: n for n in baseline.nodules}
    after = {n.index: n for n in follow_up_phantom.nodules}
    rows = []
    for index in sorted(before.keys() | after.keys()):
        v1 = before[index].volume_mm3 if index in before else None
        v2 = after[index].volume_mm3 if index in after else None
        status = "new" if v1 is None else "resolved" if v2 is None else "present"
        vdt = plan.days * math.log(2) / math.log(v2 / v1) if v1 and v2 and v2 != v1 else None
        rows.append({"index": index, "status": status, "baseline_volume_mm3": v1, "follow_up_volume_mm3": v2,
                     "vdt_days": round(vdt, 1) if vdt is not None else None})
    return rows


def _brain(sseed, study, dicom_dir, folder):
    atrophy = round(float(np.random.default_rng([sseed, 0xA7]).uniform(0.0, 1.0)), 3)
    ph = make_brain_mri(sseed, atrophy)
    frame = dw.uid(study.study_uid, "frame-of-reference")
    info = _series(sseed, study, 2, "T1 MPRAGE 3D 1mm", "MR", "BRAIN", frame)
    dw.write_mr_series(ph.t1, ph.spacing_zyx_mm, ph.origin_xyz_mm, study, info, dicom_dir)
    np.savez_compressed(folder / "labels.npz", labels=ph.labels)
    truth = {
        "geometry": {"series_uid": info.series_uid, "shape_zyx": list(ph.t1.shape),
                     "spacing_zyx_mm": list(ph.spacing_zyx_mm), "origin_xyz_mm": list(ph.origin_xyz_mm)},
        "atrophy": ph.atrophy,
        "intracranial_volume_ml": ph.intracranial_volume_ml, "brain_volume_ml": ph.brain_volume_ml,
        "hippocampus_left_ml": ph.hippocampus_left_ml, "hippocampus_right_ml": ph.hippocampus_right_ml,
        "ventricle_volume_ml": ph.ventricle_volume_ml,
        "label_map": "labels.npz", "labels": {
            "csf": 1, "ventricle": 2, "grey_matter": 3, "white_matter": 4,
            "hippocampus_left": 5, "hippocampus_right": 6, "skull": 7, "scalp": 8},
    }
    return [_series_json(info, ph.t1.shape[0], 1.0, True)], truth


def _echo(sseed, study, dicom_dir, folder):
    ph = make_echo(sseed)
    info = _series(sseed, study, 1, "A4C 2D", "US", "HEART", "")
    dw.write_us_multiframe(ph.frames, study, info, dicom_dir, frame_time_ms=ph.frame_time_ms,
                           heart_rate_bpm=ph.heart_rate_bpm, cm_per_pixel=ph.cm_per_pixel,
                           region=ph.region)
    np.savez_compressed(folder / "lv_masks.npz", lv_masks=ph.lv_masks)
    truth = {"edv_ml": ph.edv_ml, "esv_ml": ph.esv_ml, "ef": ph.ef, "ed_frame": ph.ed_frame,
             "es_frame": ph.es_frame, "heart_rate_bpm": ph.heart_rate_bpm,
             "frame_time_ms": ph.frame_time_ms, "cm_per_pixel": ph.cm_per_pixel,
             "volumes_ml": list(ph.volumes_ml), "lv_masks": "lv_masks.npz",
             "lv_model": "half prolate spheroid, V = 2/3 pi r^2 L; A4C plane contains the long axis"}
    return [_series_json(info, 1, None, True)], truth


def _cardiac(sseed, study, dicom_dir, folder):
    ph = make_cardiac_ct(sseed)
    frame = dw.uid(study.study_uid, "frame-of-reference")
    info = _series(sseed, study, 2, "CT HEART CaSc 3.0 Qr36", "CT", "HEART", frame)
    dw.write_ct_series(ph.hu, ph.spacing_zyx_mm, ph.origin_xyz_mm, study, info, dicom_dir,
                       kernel="Qr36", window=(40, 400))
    truth = {
        "geometry": {"series_uid": info.series_uid, "shape_zyx": list(ph.hu.shape),
                     "spacing_zyx_mm": list(ph.spacing_zyx_mm), "origin_xyz_mm": list(ph.origin_xyz_mm)},
        "agatston_total": ph.agatston_total, "agatston_by_vessel": ph.agatston_by_vessel,
        "lesions": [asdict(lesion) for lesion in ph.lesions],
        "method": "Agatston et al., JACC 1990;15:827-32: 130 HU, >= 1 mm^2, weights 1-4 by peak HU",
    }
    return [_series_json(info, ph.hu.shape[0], 3.0, True)], truth
