"""Output builders: DICOM SR + SEG, FHIR R4 Bundle, HL7 v2 ORU^R01, from lung report content."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json

import highdicom as hd
import numpy as np
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from integrations.dicom.seg import build_segmentation
from integrations.dicom.sr import build_measurement_report_sr, predecessor_srs
from integrations.uids import result_uid
from integrations.fhir.report import build_report_bundle, validate_r4
from integrations.hl7.oru import build_oru_r01, default_control_id, escape
from pathways import codes
from pathways.findings import LungAssessment, Nodule, NoduleAssessment
from pathways.identifiers import NHS_NUMBER_SYSTEM
from pathways.lung_cancer_report import lung_report_content
from pathways.report import Code, PatientIdentity, ResultContext
from pathways.result_status import ResultStatus
from tests.conftest import dciodvfy_errors

NHS_NUMBER = "9434765919"  # valid modulus-11 NHS number (NHS Digital example)
STUDY_UID = "1.2.826.0.1.3680043.10.999.1"
SERIES_UID = "1.2.826.0.1.3680043.10.999.1.2"
FRAME_OF_REFERENCE_UID = "1.2.826.0.1.3680043.10.999.1.3"
N_SLICES, ROWS, COLS = 10, 64, 64
SPACING_MM = (2.5, 0.7, 0.7)  # z, row, column
ORIGIN = (-22.4, -22.4, -100.0)  # x, y, z of voxel (0, 0, 0)


# --- fixtures ----------------------------------------------------------------------------
def _ct_slice(index: int) -> Dataset:
    ds = Dataset()
    uid = f"{SERIES_UID}.{index + 1}"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate, ds.StudyTime = "20240102", "101500"
    ds.ContentDate, ds.ContentTime = "20240102", "101600"
    ds.AccessionNumber, ds.Modality, ds.Manufacturer = "ACC0001", "CT", "Synthetic"
    ds.ReferringPhysicianName = "Referrer^Dr"
    ds.PatientName, ds.PatientID = "Testpatient^Alice", "MRN001"
    ds.PatientBirthDate, ds.PatientSex = "19500101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.StudyID = STUDY_UID, SERIES_UID, "1"
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 2, index + 1, 1
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = FRAME_OF_REFERENCE_UID, ""
    ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + index * SPACING_MM[0]]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness, ds.PixelSpacing = SPACING_MM[0], list(SPACING_MM[1:])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType, ds.KVP = 0, 1, "HU", 120
    ds.PixelData = np.full((ROWS, COLS), -800, np.int16).tobytes()
    return ds


@pytest.fixture(scope="module")
def source_datasets() -> list[Dataset]:
    return [_ct_slice(i) for i in range(N_SLICES)]


@pytest.fixture(scope="module")
def label_mask() -> np.ndarray:
    mask = np.zeros((N_SLICES, ROWS, COLS), np.uint8)
    mask[3:6, 18:23, 18:23] = 1  # nodule 1: slices 3-5
    mask[6:8, 40:44, 40:44] = 2  # nodule 2: slices 6-7
    return mask


def _nodule(index, lobe, nodule_type, spiculated, long_mm, short_mm, volume, centre_zyx):
    z, y, x = centre_zyx
    centre_xyz = (ORIGIN[0] + x * SPACING_MM[2], ORIGIN[1] + y * SPACING_MM[1], ORIGIN[2] + z * SPACING_MM[0])
    return Nodule(
        index=index, centre_zyx_vox=centre_zyx, centre_xyz_mm=centre_xyz,
        long_axis_mm=long_mm, short_axis_mm=short_mm, mean_diameter_mm=(long_mm + short_mm) / 2,
        volume_mm3=volume, nodule_type=nodule_type, spiculated=spiculated, lobe=lobe,
        mean_hu=-20.0, confidence=0.93,
    )


@pytest.fixture(scope="module")
def assessment() -> LungAssessment:
    return LungAssessment(
        nodules=(
            NoduleAssessment(
                nodule=_nodule(1, "RUL", "solid", True, 14.2, 11.0, 1150.0, (4.0, 20.0, 20.0)),
                brock_probability=0.2347,
                bts_category="pet-ct",
                recommendation="Brock risk over 10%: offer PET-CT (BTS 2015).",
            ),
            NoduleAssessment(
                nodule=_nodule(2, "LLL", "part-solid", False, 6.1, 4.9, 80.0, (6.5, 41.5, 41.5)),
                brock_probability=0.031,
                bts_category="ct-3-months",
                recommendation="Brock risk under 10%: CT surveillance (BTS 2015).",
            ),
        ),
        recommendation_code="pet-ct",
        recommendation="Offer PET-CT for nodule 1 (BTS 2015).",
        urgent=True,
        urgent_reasons=("Brock probability above 10%",),
    )


@pytest.fixture(scope="module")
def content(assessment):
    return lung_report_content(assessment)


@pytest.fixture(scope="module")
def ctx() -> ResultContext:
    return ResultContext(
        result_id="0b5d1c36-63b4-4a57-9d9e-2f2d0c7d6a11",
        pathway="lung_cancer_ct",
        pathway_version="1.0.0",
        model_name="radpath-lung-nodule-ref",
        model_version="0.1.0",
        study_uid=STUDY_UID,
        source_series_uid=SERIES_UID,
        accession_number="ACC0001",
        placer_order_number="PO-778",
        filler_order_number=None,
        procedure=Code(system="L", code="CCHES", display="CT Chest"),
        patient=PatientIdentity(
            nhs_number=NHS_NUMBER, local_id="MRN001", local_id_authority="RXX",
            family_name="Testpatient", given_name="Alice", birth_date=dt.date(1950, 1, 1), sex="F",
        ),
        observed_at=dt.datetime(2024, 1, 2, 11, 30, 5, tzinfo=dt.timezone.utc),
    )


@pytest.fixture(scope="module")
def seg(label_mask, content, ctx, source_datasets):
    return build_segmentation(label_mask, content, ctx, source_datasets)


@pytest.fixture(scope="module")
def sr(content, ctx, source_datasets, seg):
    return build_measurement_report_sr(content, ctx, source_datasets, seg)


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --- codes and report content ------------------------------------------------------------
def test_catalogue_agrees_with_pydicom_codedict():
    """Every concept pydicom's PS3.16 dictionary also holds has the same value and scheme."""
    pairs = [
        (codes.LONG_AXIS, dicom_codes.SCT.LongAxis),
        (codes.SHORT_AXIS, dicom_codes.SCT.ShortAxis),
        (codes.VOLUME, dicom_codes.SCT.Volume),
        (codes.NODULE, dicom_codes.SCT.Nodule),
        (codes.LUNG, dicom_codes.SCT.Lung),
        (codes.FINDING_SITE, dicom_codes.SCT.FindingSite),
        (codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, dicom_codes.SCT.MorphologicallyAbnormalStructure),
        (codes.LOBES["RML"], dicom_codes.SCT.MiddleLobeOfRightLung),
        (codes.LOBES["LUL"], dicom_codes.SCT.StructureOfUpperLobeOfLeftLung),
        (codes.FINDING, dicom_codes.DCM.Finding),
        (codes.IMAGING_MEASUREMENT_REPORT, dicom_codes.DCM.ImagingMeasurementReport),
        (codes.PROBABILITY_OF_CANCER, dicom_codes.DCM.ProbabilityOfCancer),
        (codes.SPICULATED, dicom_codes.DCM.Spiculated),
        (codes.RECOMMENDATION, dicom_codes.DCM.Recommendation),
        (codes.ARTIFICIAL_INTELLIGENCE, dicom_codes.DCM.ArtificialIntelligence),
        (codes.SUM_OF_SEGMENTED_VOXELS, dicom_codes.DCM.SumOfSegmentedVoxelMethodForVolume),
        (codes.YES, dicom_codes.SCT.Yes),
        (codes.NO, dicom_codes.SCT.No),
        (codes.CT_CHEST_REPORT, dicom_codes.LN.CTChestReport),
        (codes.MM, dicom_codes.UCUM.Millimeter),
        (codes.MM3, dicom_codes.UCUM.CubicMillimeter),
        (codes.PERCENT, dicom_codes.UCUM.Percent),
    ]
    for ours, theirs in pairs:
        assert (ours.code, codes.dicom_scheme(ours.system)) == (theirs.value, theirs.scheme_designator)


def test_lobe_codes_are_the_snomed_lobe_structures():
    assert {k: c.code for k, c in codes.LOBES.items()} == {
        "RUL": "42400003", "RML": "72481006", "RLL": "266005", "LUL": "44714003", "LLL": "41224006",
    }


def test_system_names_map_both_ways():
    for system, dicom, v2 in [
        (codes.LOINC, "LN", "LN"), (codes.SNOMED, "SCT", "SCT"), (codes.DCM, "DCM", "DCM"),
        (codes.UCUM, "UCUM", "UCUM"),
    ]:
        assert codes.dicom_scheme(system) == dicom and codes.system_from_dicom_scheme(dicom) == system
        assert codes.hl7v2_coding_system(system) == v2 and codes.system_from_hl7v2(v2) == system
    assert codes.system_from_dicom_scheme("SRT") == codes.SNOMED
    assert codes.as_hl7v2_coding_system(codes.as_fhir_system("L")) == "L"
    assert codes.as_hl7v2_coding_system(codes.as_fhir_system("99NICIP")) == "99NICIP"
    assert codes.as_hl7v2_coding_system("https://example.org/unmapped") == "L"
    with pytest.raises(ValueError):
        codes.dicom_scheme("http://example.org/unknown")


def test_report_content_findings_and_words(content):
    assert [f.key for f in content.findings] == ["nodule-1", "nodule-2"]
    first = content.findings[0]
    assert first.site == codes.LOBES["RUL"] and first.finding_type == codes.NODULE
    values = {m.concept.code: (m.value, m.unit.code) for m in first.measurements}
    assert values == {
        "103339001": (14.2, "mm"), "103340004": (11.0, "mm"),
        "118565006": (1150.0, "mm3"), "111047": (23.5, "%"),
    }
    qualitative = {q.concept.code: q.value.code for q in first.qualitative}
    assert qualitative == {"RID6037": "RID50151", "112136": "373066001"}
    second = {q.concept.code: q.value.code for q in content.findings[1].qualitative}
    assert second == {"RID6037": "RID50152", "112136": "373067005"}
    assert content.urgent and content.conclusion_codes[0].code == "bts2015-pet-ct"
    assert content.conclusion_codes[0].display == "BTS 2015: PET-CT and risk assessment"
    assert "BTS 2015" in content.text and "23.5%" in content.text and "3.1%" in content.text
    assert "not a medical device" in content.text and "URGENT" in content.text


def test_report_content_has_no_patient_identity(content):
    dumped = content.model_dump_json()
    for secret in (NHS_NUMBER, "Testpatient", "Alice", "1950"):
        assert secret not in dumped


# --- DICOM -------------------------------------------------------------------------------
def test_result_uids_are_deterministic_and_valid():
    a = result_uid("r-1", "sr-instance")
    assert a == result_uid("r-1", "sr-instance")
    assert a != result_uid("r-1", "seg-instance") != result_uid("r-2", "seg-instance")
    assert a.startswith("2.25.") and len(a) <= 64 and UID(a).is_valid


def test_seg_passes_dciodvfy_and_reads_back(seg, label_mask, source_datasets, ctx, tmp_path):
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = hd.seg.segread(path)
    assert back.SOPInstanceUID == result_uid(ctx.result_id, "seg-instance")
    assert back.number_of_segments == 2
    assert int(back.NumberOfFrames) == 5  # slices 3-7 only: empty frames are omitted
    assert back.get_segment_description(1).SegmentAlgorithmType == "AUTOMATIC"
    assert back.get_segment_description(2).SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"
    uids = [ds.SOPInstanceUID for ds in source_datasets]
    labels = back.get_pixels_by_source_instance(uids, segment_numbers=[1, 2], combine_segments=True)
    assert np.array_equal(labels, label_mask)


def test_sr_passes_dciodvfy_and_measurements_read_back(sr, seg, ctx, tmp_path):
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = hd.sr.srread(path)
    assert back.PatientID == "MRN001" and back.StudyInstanceUID == STUDY_UID
    groups = back.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    first = groups[0]
    found = {m.name.value: (m.value, m.unit.value) for m in first.get_measurements()}
    assert found["103339001"] == (14.2, "mm") and found["111047"] == (23.5, "%")
    assert first.finding_sites[0].value.value == "42400003"
    referenced = first.referenced_segment[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert referenced.ReferencedSegmentNumber == 1
    observer = back.content.get_observer_contexts()[0]
    assert observer.observer_type.value == "121007"  # Device
    conclusion = back.content.get_image_measurement_groups()
    assert conclusion[0].get_qualitative_evaluations() == []
    assert _texts(conclusion[0]) == [
        ("121075", "BTS 2015: PET-CT and risk assessment"),
        ("121075", "Urgent clinical review recommended: Yes"),
    ]
    brock = next(m for m in first.get_measurements() if m.name.value == "111047")
    algorithm = {i.ConceptNameCodeSequence[0].CodeValue: i.TextValue for i in brock[0].ContentSequence
                 if i.ValueType == "TEXT"}  # TID 4019: Algorithm Name 111001, Version 111003
    assert algorithm["111001"] == "Brock model (full, with spiculation)"
    assert algorithm["111003"].startswith("McWilliams") and brock.method is None
    evidence = {item.SeriesInstanceUID for item in back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert SERIES_UID in evidence


def test_sr_reports_the_standard_procedure_a_local_code_means(content, ctx, source_datasets, tmp_path):
    """A NICIP-style local order code (L CCHES) that the trust's code map takes to mean SNOMED CT
    169069000: the SR's Procedure Reported (TID 1500, DCM 121058) is the SNOMED CT concept;
    without a mapping it is the report's LOINC title; the ORU keeps the RIS's own code."""
    def procedure_reported(ds: Dataset) -> tuple[str, str]:
        item = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058")
        return item.ConceptCodeSequence[0].CodingSchemeDesignator, item.ConceptCodeSequence[0].CodeValue

    mapped = ctx.model_copy(update={"standard_procedure": Code(system=codes.SNOMED, code="169069000",
                                                                display="Computed tomography of chest")})
    sr = build_measurement_report_sr(content, mapped, source_datasets, None)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    assert procedure_reported(sr) == ("SCT", "169069000")
    assert procedure_reported(build_measurement_report_sr(content, ctx, source_datasets, None)) == ("LN", "24627-2")
    obr = next(s.split("|") for s in build_oru_r01(content, mapped).split("\r") if s.startswith("OBR"))
    assert obr[4] == "CCHES^CT Chest^L"


def test_sr_without_seg_points_at_the_nodule_centres(content, ctx, source_datasets, tmp_path):
    sr = build_measurement_report_sr(content, ctx, source_datasets, None)
    path = tmp_path / "sr-point.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    groups = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()
    surface = groups[1].roi
    assert surface is not None
    point = surface[0].value
    assert np.allclose(point, content.findings[1].centre_xyz_mm, atol=1e-3)


def test_sr_without_any_location_uses_plain_measurement_groups(content, ctx, source_datasets):
    unlocated = content.model_copy(update={
        "findings": tuple(f.model_copy(update={"centre_xyz_mm": None}) for f in content.findings),
        "urgent": False,
    })
    built = build_measurement_report_sr(unlocated, ctx, source_datasets, None)
    back = hd.sr.Comprehensive3DSR.from_dataset(built)
    assert back.content.get_volumetric_roi_measurement_groups() == []
    groups = back.content.get_image_measurement_groups()
    assert len(groups) == 3  # two findings + the conclusion
    assert _texts(groups[-1])[-1] == ("121075", "Urgent clinical review recommended: No")


def _texts(group) -> list[tuple[str, str]]:
    """The TEXT findings and recommendations of a TID 1501/1411 group: (concept code, text)."""
    return [(i.ConceptNameCodeSequence[0].CodeValue, i.TextValue) for i in group[0].ContentSequence
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue in (codes.FINDING.code,
                                                                                      codes.RECOMMENDATION.code)]


def test_no_dicom_object_names_a_private_coding_scheme(content, ctx, sr, seg):
    """radpath's local codes (BTS, ESC, CAC-DRS and dementia categories, the urgent flag, the
    Brock method) are coded in HL7 v2 and FHIR; in DICOM they are text (hazard H-03)."""
    def designators(items) -> set[str]:
        found = set()
        for item in items:
            for element in item:
                if element.VR == "SQ":
                    found |= designators(element.value)
                elif element.keyword == "CodingSchemeDesignator":
                    found.add(element.value)
        return found

    assert not {d for d in designators([sr, seg]) if d.startswith("99")}
    oru = build_oru_r01(content, ctx)
    assert "bts2015-pet-ct^BTS 2015: PET-CT and risk assessment^99RADPATH" in oru


def test_superseding_sr_names_the_earlier_sr_as_predecessor(
    content, ctx, source_datasets, seg, sr, tmp_path
):
    """PS3.3 Table C.17-2: Predecessor Documents Sequence (0040,A360) holds Hierarchical SOP
    Instance References (study > series > SOP class + instance) of the SR(s) superseded."""
    earlier_path = tmp_path / "earlier" / "sr.dcm"
    earlier_path.parent.mkdir()
    sr.save_as(earlier_path, enforce_file_format=True)
    assert "PredecessorDocumentsSequence" not in sr
    assert predecessor_srs(tmp_path / "absent" / "sr.dcm") == []
    (earlier,) = predecessor_srs(earlier_path)

    later_ctx = ctx.model_copy(update={"result_id": "5f0e3f7e-2b61-4d0c-9a51-7f3c2f1a0b22"})
    later = build_measurement_report_sr(content, later_ctx, source_datasets, seg, predecessors=[earlier])
    path = tmp_path / "later.dcm"
    later.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = hd.sr.srread(path)
    assert back.SOPInstanceUID == result_uid(later_ctx.result_id, "sr-instance") != sr.SOPInstanceUID
    assert back.SeriesInstanceUID == result_uid(later_ctx.result_id, "sr-series") != sr.SeriesInstanceUID
    (study,) = back.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == sr.StudyInstanceUID == STUDY_UID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == sr.SeriesInstanceUID
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == sr.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    # An unverified AI result stays COMPLETE / PRELIMINARY / UNVERIFIED when it supersedes another.
    flags = ("CompletionFlag", "PreliminaryFlag", "VerificationFlag")
    assert [back[f].value for f in flags] == [sr[f].value for f in flags] == ["COMPLETE", "PRELIMINARY", "UNVERIFIED"]
    # A named reviewer's accept: a new SR instance, FINAL / VERIFIED with the Verifying
    # Observer, superseding the preliminary one through the Predecessor Documents Sequence.
    reviewed_at = dt.datetime(2024, 1, 2, 14, 0, tzinfo=dt.timezone.utc)
    verified = build_measurement_report_sr(content, ctx, source_datasets, seg, predecessors=[earlier],
                                           verifier="Dr Ada Reviewer", verified_at=reviewed_at)
    verified_path = tmp_path / "verified.dcm"
    verified.save_as(verified_path, enforce_file_format=True)
    assert dciodvfy_errors(verified_path) == []
    assert [verified[f].value for f in flags] == ["COMPLETE", "FINAL", "VERIFIED"]
    (observer,) = verified.VerifyingObserverSequence
    assert (str(observer.VerifyingObserverName), observer.VerifyingOrganization, observer.VerificationDateTime) == (
        "Dr Ada Reviewer^", ctx.sending_facility, "20240102140000")
    assert verified.SOPInstanceUID != sr.SOPInstanceUID
    assert verified.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == sr.SOPInstanceUID
    # Without predecessors the rebuild of the first SR is unchanged (no empty sequence appears).
    assert "PredecessorDocumentsSequence" not in build_measurement_report_sr(content, ctx, source_datasets, seg, ())


def test_the_algorithm_is_named_as_contributing_equipment_in_sr_and_seg(ctx, seg, sr, tmp_path):
    """IHE AI Results Rev 1.1 6.5.3.1: a Contributing Equipment item for the algorithm, with
    manufacturer, model name, software version and a Device UID that changes with the model."""
    from integrations.uids import algorithm_device_uid

    uid = algorithm_device_uid(ctx.model_name, ctx.model_version, ctx.model_sha256)
    for ds in (seg, sr):
        algorithms = [i for i in ds.ContributingEquipmentSequence if i.get("DeviceUID") == uid]
        assert len(algorithms) == 1, ds.Modality
        (item,) = algorithms
        assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # DCM Processing Equipment
        assert (item.Manufacturer, item.ManufacturerModelName, item.SoftwareVersions) == (
            "radpath", ctx.model_name, ctx.model_version)
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
    other = {algorithm_device_uid(ctx.model_name, v, s) for v, s in ((ctx.model_version, "0" * 64),
                                                                   ("9.9.9", ctx.model_sha256))}
    assert uid not in other and len(other) == 2  # a new version or a new file: a new Device UID
    assert algorithm_device_uid(ctx.model_name, ctx.model_version, ctx.model_sha256) == uid  # deterministic


def test_rebuild_is_byte_identical(label_mask, content, ctx, source_datasets, seg, sr):
    seg_again = build_segmentation(label_mask, content, ctx, source_datasets)
    sr_again = build_measurement_report_sr(content, ctx, source_datasets, seg_again)
    assert seg_again.SOPInstanceUID == seg.SOPInstanceUID
    assert sr_again.SOPInstanceUID == sr.SOPInstanceUID
    assert _bytes(seg_again) == _bytes(seg)
    assert _bytes(sr_again) == _bytes(sr)


def test_seg_rejects_mismatched_geometry(label_mask, content, ctx, source_datasets):
    with pytest.raises(ValueError, match="slices"):
        build_segmentation(label_mask[:5], content, ctx, source_datasets)


# --- FHIR --------------------------------------------------------------------------------
def _by_type(bundle, kind):
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_fhir_bundle_validates_and_is_conditional(content, ctx):
    bundle = build_report_bundle(content, ctx)
    validate_r4(bundle)
    json.dumps(bundle)  # JSON-ready
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        if entry["resource"]["resourceType"] == "Provenance":  # no business identifier: PUT by a deterministic id
            assert entry["request"] == {"method": "PUT", "url": f"Provenance/{entry['resource']['id']}"}
            continue
        assert entry["request"]["method"] == "POST"
        assert entry["request"]["ifNoneExist"].startswith("identifier=")
    patient = _by_type(bundle, "Patient")[0]
    assert patient["resource"]["identifier"][0] == {"system": NHS_NUMBER_SYSTEM, "value": NHS_NUMBER}
    assert patient["request"]["ifNoneExist"] == f"identifier={NHS_NUMBER_SYSTEM}|{NHS_NUMBER}"
    assert build_report_bundle(content, ctx) == bundle  # deterministic


def test_fhir_report_and_observations(content, ctx):
    bundle = build_report_bundle(content, ctx)
    report = _by_type(bundle, "DiagnosticReport")[0]["resource"]
    assert report["status"] == "preliminary" and "resultsInterpreter" not in report  # unreviewed
    assert {o["resource"]["status"] for o in _by_type(bundle, "Observation")} == {"preliminary"}
    assert report["category"][0]["coding"][0]["code"] == "RAD"
    # an algorithm's measurement report (DCM 126000), not the radiologist's CT chest report (LOINC 24627-2)
    assert report["code"]["coding"][0] == {"system": codes.DCM, "code": "126000", "display": "Imaging Measurement Report"}
    assert report["basedOn"][0]["identifier"]["value"] == "PO-778"
    assert report["basedOn"][0]["identifier"]["system"] == "urn:radpath:placer-order-number"  # the order named none
    placed = build_report_bundle(content, ctx.model_copy(update={"placer_system": "https://trust.example/placer"}))
    based_on = _by_type(placed, "DiagnosticReport")[0]["resource"]["basedOn"][0]["identifier"]
    assert (based_on["system"], based_on["value"]) == ("https://trust.example/placer", "PO-778")  # the EHR's own
    assert report["identifier"][0] == {"system": "urn:radpath:result", "value": ctx.result_id}
    assert base64.b64decode(report["presentedForm"][0]["data"]).decode() == content.text
    assert report["conclusionCode"][0]["coding"][0]["code"] == "bts2015-pet-ct"
    urls = {e["fullUrl"]: e["resource"] for e in _by_type(bundle, "Observation")}
    assert {r["reference"] for r in report["result"]} <= set(urls)
    brock = [o for o in urls.values() if o["code"]["coding"][0]["code"] == "111047"]
    assert [o["valueQuantity"] for o in brock] == [
        {"value": 23.5, "unit": "%", "system": codes.UCUM, "code": "%"},
        {"value": 3.1, "unit": "%", "system": codes.UCUM, "code": "%"},
    ]
    assert brock[0]["bodySite"]["coding"][0]["code"] == "42400003"
    urgent = [o for o in urls.values() if o["code"]["coding"][0]["code"] == "urgent-review"]
    assert urgent[0]["valueBoolean"] is True
    assert urgent[0]["interpretation"][0]["coding"][0] == {  # where an EHR acts on it
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "AA",
        "display": "Critical abnormal"}
    nodule = [o for o in urls.values() if o.get("hasMember")]
    assert len(nodule) == 2 and all(m["reference"] in urls for m in nodule[0]["hasMember"])


def test_fhir_final_names_the_reviewer_and_nothing_is_final_without_one(content, ctx):
    """FHIR R4: DiagnosticReport.resultsInterpreter and Observation.performer name who accepted it."""
    with pytest.raises(ValueError, match="reviewer"):
        build_report_bundle(content, ctx, status="final")
    bundle = build_report_bundle(content, ctx, status="final", interpreter="Dr Ada Reviewer")
    validate_r4(bundle)
    report = _by_type(bundle, "DiagnosticReport")[0]["resource"]
    assert report["status"] == "final" and report["resultsInterpreter"] == [{"display": "Dr Ada Reviewer"}]
    observations = [o["resource"] for o in _by_type(bundle, "Observation")]
    assert {o["status"] for o in observations} == {"final"}
    assert all(o["performer"] == [{"display": "Dr Ada Reviewer"}] for o in observations)
    cancelled = build_report_bundle(content, ctx, status="entered-in-error")
    assert all(e["request"]["method"] == "PUT" for e in _by_type(cancelled, "DiagnosticReport"))  # same resource, withdrawn


def test_fhir_existing_patient_reference(content, ctx):
    bundle = build_report_bundle(content, ctx, patient_reference="Patient/42")
    assert not _by_type(bundle, "Patient")
    assert _by_type(bundle, "DiagnosticReport")[0]["resource"]["subject"] == {"reference": "Patient/42"}


def test_validate_r4_rejects_a_broken_resource(content, ctx):
    bundle = build_report_bundle(content, ctx)
    _by_type(bundle, "Observation")[0]["resource"]["valueQuantity"] = "twelve"
    with pytest.raises(Exception):
        validate_r4(bundle)


# --- HL7 v2 ------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["2.4", "2.5.1"])
def test_oru_parses_strictly(content, ctx, version):
    er7 = build_oru_r01(content, ctx, version=version)
    assert "\n" not in er7
    message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate() is True
    assert message.msh.msh_12.to_er7() == version
    assert message.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    segments = [s.split("|") for s in er7.split("\r") if s]
    pid = next(s for s in segments if s[0] == "PID")
    assert pid[3] == f"{NHS_NUMBER}^^^NHS^NH~MRN001^^^RXX^MR"
    obr = next(s for s in segments if s[0] == "OBR")
    assert obr[2] == "PO-778" and obr[3] == "ACC0001" and obr[4] == "CCHES^CT Chest^L"
    # The placer's EI as sent (namespace, universal id): ORC-2 and OBR-2 alike, and still strict v2
    placed = build_oru_r01(content, ctx.model_copy(update={"placer_namespace": "OCS", "placer_system": "urn:oid:1.2.3"}),
                           version=version)
    assert parse_message(placed, validation_level=VALIDATION_LEVEL.STRICT).validate() is True
    fields = {s.split("|")[0]: s.split("|") for s in placed.split("\r") if s[:3] in ("ORC", "OBR")}
    assert fields["ORC"][2] == fields["OBR"][2] == "PO-778^OCS^1.2.3^ISO"
    assert obr[24] == "RAD" and obr[25] == "P" and len(obr) <= 32  # unreviewed: preliminary, no interpreter
    obx = [s for s in segments if s[0] == "OBX"]
    assert {s[11] for s in obx} == {"P"}
    brock = [s for s in obx if s[3].startswith("111047^")]
    assert [(s[2], s[4], s[5], s[6]) for s in brock] == [
        ("NM", "1", "23.5", "%^percent^UCUM"), ("NM", "2", "3.1", "%^percent^UCUM"),
    ]
    urgent = next(s for s in obx if s[3].startswith("urgent-review^"))
    assert urgent[5] == "Y^Yes^HL70136" and urgent[8] == "AA"  # HL7 table 0078: where a RIS acts on it
    assert {s[8] for s in obx if s[3].startswith("121075^")} == {"AA"}  # the recommendation too
    text = [s[5] for s in obx if s[2] == "TX"]
    assert any("BTS 2015" in line for line in text)
    assert {s[3] for s in obx if s[2] == "TX"} == {"126000^Imaging Measurement Report^DCM"}
    from integrations.uids import algorithm_device_uid  # OBX-18: the algorithm, as in the SR/SEG

    device_uid = algorithm_device_uid(ctx.model_name, ctx.model_version, ctx.model_sha256)
    assert {s[18] for s in obx} == {f"{ctx.model_name} {ctx.model_version}^RADPATH^{device_uid}^ISO"}
    assert [int(s[1]) for s in obx] == list(range(1, len(obx) + 1))


@pytest.mark.parametrize("version", ["2.4", "2.5.1"])  # every hl7_version a destination allows
def test_oru_life_cycle_statuses_for_the_same_order(content, ctx, version):
    """HL7 v2 table 0123 (OBR-25) / 0085 (OBX-11): P preliminary (unreviewed), F final (a named
    reviewer accepted: OBR-32 principal result interpreter), C "correction ... replaces a
    final result", X withdrawn; all for the same placer/filler numbers, each its own MSH-10."""
    def fields(er7, name):
        return [s.split("|") for s in er7.split("\r") if s.startswith(name + "|")]

    with pytest.raises(ValueError, match="reviewer"):
        build_oru_r01(content, ctx, version=version, status=ResultStatus.FINAL)
    preliminary = build_oru_r01(content, ctx, version=version)
    issued = {ResultStatus.PRELIMINARY: preliminary}
    for status in (ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.CANCELLED):
        issued[status] = build_oru_r01(content, ctx, version=version, status=status, interpreter="Dr Ada Reviewer",
                                       control_id=default_control_id(ctx.result_id, "ris", status))
    for status, er7 in issued.items():
        message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT)
        assert message.validate() is True and message.msh.msh_12.to_er7() == version
        (obr,) = fields(er7, "OBR")
        assert obr[25] == status.hl7
        assert (obr + [""] * 33)[32] == ("&Dr Ada Reviewer" if status != ResultStatus.PRELIMINARY else "")
        obx = fields(er7, "OBX")
        assert len(obx) > 5 and {s[11] for s in obx} == {status.hl7}
        # Same order: placer and filler numbers in ORC-2/3 and OBR-2/3 are unchanged.
        assert [s[2:4] for s in fields(er7, "ORC") + fields(er7, "OBR")] == [["PO-778", "ACC0001"], ["PO-778", "ACC0001"]]
    assert [s.hl7 for s in issued] == ["P", "F", "C", "X"]
    assert len({fields(er7, "MSH")[0][9] for er7 in issued.values()}) == 4  # four messages, four control ids


def test_oru_control_id_is_deterministic_per_destination(content, ctx):
    a = build_oru_r01(content, ctx, receiving_application="RIS", receiving_facility="RXX")
    b = build_oru_r01(content, ctx, receiving_application="RIS", receiving_facility="RXX")
    other = build_oru_r01(content, ctx, receiving_application="EPR", receiving_facility="RXX")
    assert a == b
    control = a.split("\r")[0].split("|")[9]
    assert control == default_control_id(ctx.result_id, "RIS^RXX") and len(control) <= 20
    assert other.split("\r")[0].split("|")[9] != control
    assert build_oru_r01(content, ctx, control_id="X1").split("\r")[0].split("|")[9] == "X1"


def test_oru_escapes_delimiters_in_text(content, ctx):
    tricky = content.model_copy(update={"text": "A|B^C&D~E\\F"})
    er7 = build_oru_r01(tricky, ctx, version="2.5.1")
    message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate() is True
    tx = [s for s in er7.split("\r") if s.startswith("OBX") and "|TX|" in s]
    assert tx[0].split("|")[5] == escape("A|B^C&D~E\\F") == "A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F"


def test_oru_rejects_unknown_version(content, ctx):
    with pytest.raises(ValueError):
        build_oru_r01(content, ctx, version="2.3")


# --- with the real lung rules --------------------------------------------------------------
def test_outputs_from_the_lung_rules_including_a_study_with_no_detection(assessment, ctx, source_datasets):
    from pathways.findings import PatientContext
    from pathways.lung_cancer_ct import assess_lung_study

    patient = PatientContext(age_years=64, sex="F")
    for nodules in ([a.nodule for a in assessment.nodules], []):
        content = lung_report_content(assess_lung_study(nodules, patient))
        assert "BTS" in content.text
        validate_r4(build_report_bundle(content, ctx))
        for version in ("2.4", "2.5.1"):
            er7 = build_oru_r01(content, ctx, version=version)
            assert parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT).validate() is True
        sr = hd.sr.Comprehensive3DSR.from_dataset(
            build_measurement_report_sr(content, ctx, source_datasets, None)
        )
        assert len(sr.content.get_volumetric_roi_measurement_groups()) == len(nodules)
    # No detection is no "normal study": no all-clear from a possible miss (hazard H-11)
    assert "No pulmonary nodule" in content.text and "not an all-clear" in content.text
    assert content.conclusion_codes == (codes.NO_NODULE_DETECTED_BY_AI,)


def test_single_nodule_seg_and_sr(assessment, ctx, source_datasets, label_mask, tmp_path):
    """A one-segment SEG keeps its segment identification in the shared functional groups;
    the SR must still reference the segment and its frames (demo regression)."""
    one = assessment.model_copy(update={"nodules": assessment.nodules[:1]})
    content = lung_report_content(one)
    mask = np.where(label_mask == 1, 1, 0).astype(np.uint8)
    seg = build_segmentation(mask, content, ctx, source_datasets)
    sr = build_measurement_report_sr(content, ctx, source_datasets, seg)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    group = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()[0]
    referenced = group.referenced_segment[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSegmentNumber == 1 and referenced.ReferencedSOPInstanceUID == seg.SOPInstanceUID
