"""The coded concepts radpath reports with, and how their systems are named on each wire.

One catalogue, each concept citing where its code comes from. Systems are FHIR URIs; the
DICOM coding scheme designator and the HL7 v2 coding system are derived from them.

Sources used below:
  [PS3.16]  DICOM PS3.16 Content Mapping Resource (CIDs and the DCM code list), as
            packaged in pydicom's `pydicom.sr.codedict.codes` (the CID numbers cited are
            the ones pydicom lists for each code).
  [SCT]     SNOMED CT International; lobe codes as used by DICOM CID 6170 "Lobe of Lung"
            and by HL7 mCODE examples (41224006).
  [LOINC]   LOINC; 24627-2 is in DICOM CID 7000 (report document titles).
  [RadLex]  RSNA RadLex; pulmonary-nodule attenuation terms as used by the DICOM encoding
            of LIDC-IDRI (Fedorov et al., PeerJ 2018, QIICR lidc2dicom).
  [UCUM]    Unified Code for Units of Measure.
"""

from __future__ import annotations

from pathways.report import Code

# --- Code systems (FHIR URIs) ------------------------------------------------------------
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
RADLEX = "http://radlex.org"  # terminology.hl7.org CodeSystem-RadLex
RADPATH = "urn:radpath:codes"  # radpath's own codes, where no standard concept exists
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # HL7 v2 diagnostic service section
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# FHIR system -> (DICOM coding scheme designator, HL7 v2 coding system; HL7 table 0396)
_WIRE_NAMES: dict[str, tuple[str, str]] = {
    LOINC: ("LN", "LN"),
    SNOMED: ("SCT", "SCT"),
    DCM: ("DCM", "DCM"),
    UCUM: ("UCUM", "UCUM"),
    RADLEX: ("RADLEX", "RADLEX"),
    RADPATH: ("99RADPATH", "99RADPATH"),  # "99" prefix: local schemes in DICOM and HL7 v2
}


def dicom_scheme(system: str) -> str:
    """DICOM Coding Scheme Designator (0008,0102) for a FHIR system URI."""
    try:
        return _WIRE_NAMES[system][0]
    except KeyError:
        raise ValueError(f"no DICOM coding scheme known for system {system!r}") from None


def hl7v2_coding_system(system: str) -> str:
    """HL7 v2 name of coding system (CE.3 / CWE.3) for a FHIR system URI."""
    try:
        return _WIRE_NAMES[system][1]
    except KeyError:
        raise ValueError(f"no HL7 v2 coding system known for system {system!r}") from None


def system_from_dicom_scheme(designator: str) -> str:
    """FHIR system URI for a DICOM coding scheme designator (SRT is SNOMED's old name)."""
    if designator == "SRT":
        return SNOMED
    for system, (dicom, _) in _WIRE_NAMES.items():
        if dicom == designator:
            return system
    raise ValueError(f"unknown DICOM coding scheme {designator!r}")


# Names RISs put in CE.3 besides table 0396's own (SNM/SNM3: SNOMED's older v2 names).
_V2_ALIASES = {"SNM": SNOMED, "SNM3": SNOMED, "SNOMED CT": SNOMED, "SNOMEDCT": SNOMED, "SNOMED-CT": SNOMED,
               "LOINC": LOINC}


def system_from_hl7v2(coding_system: str) -> str:
    """FHIR system URI for an HL7 v2 coding system name, or a common spelled-out alias of one."""
    name = coding_system.strip().upper()  # table 0396 names are upper case; some senders are not
    if name in _V2_ALIASES:
        return _V2_ALIASES[name]
    for system, (_, v2) in _WIRE_NAMES.items():
        if v2 == name:
            return system
    raise ValueError(f"unknown HL7 v2 coding system {coding_system!r}")


def _is_uri(system: str) -> bool:
    return ":" in system


def as_fhir_system(system: str) -> str:
    """A FHIR system URI for `system`, which may be a URI or an HL7 v2 coding-system name.

    Orders received over HL7 v2 carry local procedure codes ("L", "99XYZ"): an unknown short
    name becomes "urn:radpath:v2-coding-system:<name>" so it stays a valid, reversible URI.
    """
    if _is_uri(system):
        return system
    try:
        return system_from_hl7v2(system)
    except ValueError:
        return f"{_V2_LOCAL_PREFIX}{system}"


def as_hl7v2_coding_system(system: str) -> str:
    """HL7 v2 coding system for a URI or an HL7 v2 name (short names pass through).

    A URI with no HL7 v2 name becomes "L" (HL7 table 0396: local general code).
    """
    if system.startswith(_V2_LOCAL_PREFIX):
        return system[len(_V2_LOCAL_PREFIX):]
    if not _is_uri(system):
        return system
    return _WIRE_NAMES[system][1] if system in _WIRE_NAMES else "L"


def is_dicom_codable(system: str) -> bool:
    """True when `system` has a DICOM coding scheme designator."""
    return as_fhir_system(system) in _WIRE_NAMES


_V2_LOCAL_PREFIX = "urn:radpath:v2-coding-system:"


# --- Reports -----------------------------------------------------------------------------
# [LOINC] 24627-2; [PS3.16] CID 7000, pydicom codes.LN.CTChestReport
CT_CHEST_REPORT = Code(system=LOINC, code="24627-2", display="CT Chest Report")
# [PS3.16] DCM 126000, CID 7021: the title of a TID 1500 Measurement Report
IMAGING_MEASUREMENT_REPORT = Code(system=DCM, code="126000", display="Imaging Measurement Report")
# What every radpath report message says it is: an algorithm's imaging measurement report,
# not the radiologist's report of the examination (LOINC 24627-2 "CT Chest Report" and its
# kin name that). DICOM PS3.16 CID 7021 "Measurement Report Document Titles" gives DCM 126000,
# the title of the TID 1500 document IHE AI Results (AIR) uses for AI output; the FHIR
# DiagnosticReport.code binding (LOINC Diagnostic Report Codes) is "preferred", so a DCM code
# is allowed. The modality's LOINC report code stays `ReportContent.report_code` (the SR's
# Procedure Reported where the order's code has none).
AI_IMAGING_RESULT = IMAGING_MEASUREMENT_REPORT
# [PS3.16] DCM 121071 Finding; 121073 Impression; 121075 Recommendation; 121077 Conclusion
FINDING = Code(system=DCM, code="121071", display="Finding")
IMPRESSION = Code(system=DCM, code="121073", display="Impression")
RECOMMENDATION = Code(system=DCM, code="121075", display="Recommendation")
CONCLUSION = Code(system=DCM, code="121077", display="Conclusion")
# [PS3.16] DCM 123110, CID 7162 Algorithm Family
ARTIFICIAL_INTELLIGENCE = Code(system=DCM, code="123110", display="Artificial Intelligence")

# --- Findings and segmentation properties ------------------------------------------------
# [SCT] 27925004 Nodule; [PS3.16] CIDs 6102, 6104, 7151 (segmented property type)
NODULE = Code(system=SNOMED, code="27925004", display="Nodule")
# [SCT] 49755003; [PS3.16] CID 7150 Segmentation Property Categories
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code(
    system=SNOMED, code="49755003", display="Morphologically Abnormal Structure"
)
# [SCT] 363698007 Finding site: the concept name TID 1419 uses for a finding's location
FINDING_SITE = Code(system=SNOMED, code="363698007", display="Finding site")
# [SCT] 39607008; [PS3.16] CID 6100, 7151
LUNG = Code(system=SNOMED, code="39607008", display="Lung")

# --- Anatomy: lobes of lung --------------------------------------------------------------
# [SCT] pre-coordinated lobe structures. 72481006 and 44714003 are in pydicom's codedict
# (CID 6170 / 6124); 42400003, 266005 and 41224006 are the SNOMED CT body-structure
# concepts "Structure of upper/lower lobe of right lung" and "... lower lobe of left lung".
LOBES: dict[str, Code] = {
    "RUL": Code(system=SNOMED, code="42400003", display="Upper lobe of right lung"),
    "RML": Code(system=SNOMED, code="72481006", display="Middle lobe of right lung"),
    "RLL": Code(system=SNOMED, code="266005", display="Lower lobe of right lung"),
    "LUL": Code(system=SNOMED, code="44714003", display="Upper lobe of left lung"),
    "LLL": Code(system=SNOMED, code="41224006", display="Lower lobe of left lung"),
}

# --- Measurements ------------------------------------------------------------------------
# [SCT] 103339001 Long axis, 103340004 Short axis: [PS3.16] CID 7470 Linear Measurements
LONG_AXIS = Code(system=SNOMED, code="103339001", display="Long axis")
SHORT_AXIS = Code(system=SNOMED, code="103340004", display="Short axis")
# [SCT] 118565006 Volume: [PS3.16] CID 7472 Volume Measurements
VOLUME = Code(system=SNOMED, code="118565006", display="Volume")
# [PS3.16] DCM 111047 Probability of cancer, CID 6048
PROBABILITY_OF_CANCER = Code(system=DCM, code="111047", display="Probability of cancer")
# [PS3.16] DCM 126030, CID 7474 Volume Methods
SUM_OF_SEGMENTED_VOXELS = Code(
    system=DCM, code="126030", display="Sum of segmented voxel method for volume"
)
# radpath local: the Brock model (McWilliams et al., NEJM 2013;369:910-9) as the method
BROCK_MODEL = Code(system=RADPATH, code="brock-full-model", display="Brock model (full, with spiculation)")
# The published version of each local method, for DICOM's TID 4019 Algorithm Identification
# (the SR names a method with no standard code as the algorithm that computed the value)
LOCAL_METHOD_VERSIONS = {BROCK_MODEL.code: "McWilliams et al., NEJM 2013;369:910-9"}

# --- Qualitative evaluations -------------------------------------------------------------
# [RadLex] RID6037 attenuation characteristic; values RID50151/50152/50153
ATTENUATION_CHARACTERISTIC = Code(system=RADLEX, code="RID6037", display="attenuation characteristic")
NODULE_TYPES: dict[str, Code] = {
    "solid": Code(system=RADLEX, code="RID50151", display="solid pulmonary nodule"),
    "part-solid": Code(system=RADLEX, code="RID50152", display="part-solid pulmonary nodule"),
    "ground-glass": Code(system=RADLEX, code="RID50153", display="non-solid pulmonary nodule"),
}
# [PS3.16] DCM 112136 Spiculated (CID 6119 lesion margin), answered with SNOMED Yes/No
# ([SCT] 373066001 Yes, 373067005 No; [PS3.16] CID 230)
SPICULATED = Code(system=DCM, code="112136", display="Spiculated")
YES = Code(system=SNOMED, code="373066001", display="Yes")
NO = Code(system=SNOMED, code="373067005", display="No")

# --- Dementia brain MRI (pathways/dementia_mri.py) ----------------------------------------
# [LOINC] 25056-3 MRI Report; [PS3.16] CID 7000, pydicom codes.LN.MRIReport
MRI_REPORT = Code(system=LOINC, code="25056-3", display="MRI Report")
# [SCT] 5366008 Hippocampus, 12738006 Brain: [PS3.16] CIDs 7151/7192; 128319008 Intracranial
# structure: [PS3.16] CID 7140 (pydicom codes.SCT.Hippocampus / Brain / IntracranialStructure)
HIPPOCAMPUS = Code(system=SNOMED, code="5366008", display="Hippocampus")
BRAIN = Code(system=SNOMED, code="12738006", display="Brain")
INTRACRANIAL_STRUCTURE = Code(system=SNOMED, code="128319008", display="Intracranial structure")
# [SCT] 272741003 Laterality, 7771000 Left, 24028007 Right: [PS3.16] CID 244 (pydicom codes.SCT)
LATERALITY = Code(system=SNOMED, code="272741003", display="Laterality")
LEFT = Code(system=SNOMED, code="7771000", display="Left")
RIGHT = Code(system=SNOMED, code="24028007", display="Right")
# [PS3.16] DCM 121415 Percentile Ranking of measurement, 121416 Z-Score of measurement (CID 7465)
PERCENTILE_RANKING = Code(system=DCM, code="121415", display="Percentile Ranking of measurement")
Z_SCORE_OF_MEASUREMENT = Code(system=DCM, code="121416", display="Z-Score of measurement")
# radpath local: no standard concept found for these derived brain measures
BRAIN_PARENCHYMAL_FRACTION = Code(system=RADPATH, code="brain-parenchymal-fraction",
                                  display="Brain parenchymal fraction (brain / intracranial volume)")
HIPPOCAMPAL_ASYMMETRY_INDEX = Code(system=RADPATH, code="hippocampal-asymmetry-index",
                                   display="Hippocampal asymmetry index |L-R|/(L+R)")
# [UCUM] cm3; pydicom codes.UCUM.CubicCentimeter ([PS3.16] CID 7181)
CM3 = Code(system=UCUM, code="cm3", display="cubic centimeter")
# [UCUM] "1" (unity) for z-scores, as in [PS3.16] CID 7181 "no units"
NO_UNITS = Code(system=UCUM, code="1", display="no units")


def dementia_category_code(category: str, display: str) -> Code:
    """A dementia MRI conclusion (e.g. "hippocampal-atrophy") as a radpath local code."""
    return Code(system=RADPATH, code=f"dementia-mri-{category}", display=display)


# --- Heart failure: echo LV function and coronary calcium (pathways.heart_failure) -------
# [LOINC] 42148-7 Echocardiography Report, 25045-6 CT Report: [PS3.16] CID 7000
ECHO_REPORT = Code(system=LOINC, code="42148-7", display="Echocardiography Report")
CT_REPORT = Code(system=LOINC, code="25045-6", display="CT Report")
# [LOINC] 10230-1 "Left ventricular Ejection fraction" (method-neutral; the method rides in
# the measurement's method code)
LV_EJECTION_FRACTION = Code(system=LOINC, code="10230-1", display="Left ventricular Ejection fraction")
# [LOINC] 18026-5 / 18148-7: [PS3.16] CID 12202 (Echo LV volumes and EF)
LV_END_DIASTOLIC_VOLUME = Code(system=LOINC, code="18026-5", display="Left Ventricular End Diastolic Volume")
LV_END_SYSTOLIC_VOLUME = Code(system=LOINC, code="18148-7", display="Left Ventricular End Systolic Volume")
# [LOINC] 18077-8: [PS3.16] CID 12201 (LV linear measurements)
LV_DIASTOLIC_MAJOR_AXIS = Code(system=LOINC, code="18077-8", display="Left Ventricle diastolic major axis")
# [PS3.16] DCM 125208 / 125205: CID 12227 Echocardiography Measurement Method
METHOD_OF_DISKS_SINGLE_PLANE = Code(system=DCM, code="125208", display="Method of Disks, Single Plane")
AREA_LENGTH_SINGLE_PLANE = Code(system=DCM, code="125205", display="Area-Length Single Plane")
# [SCT] 87878005 Left ventricle, 80891009 Heart: [PS3.16] CID 4 / 3010
LEFT_VENTRICLE = Code(system=SNOMED, code="87878005", display="Left ventricle")
HEART = Code(system=SNOMED, code="80891009", display="Heart")
# [SCT] 450360000 Coronary artery calcium score: [PS3.16] CID 6142
CORONARY_CALCIUM_SCORE = Code(system=SNOMED, code="450360000", display="Coronary artery calcium score")
# [PS3.16] DCM 112055 Agatston scoring method: CID 6140
AGATSTON_METHOD = Code(system=DCM, code="112055", display="Agatston scoring method")
# [SCT] 237897009 Vascular calcification: [PS3.16] CID 3491 / 7111
VASCULAR_CALCIFICATION = Code(system=SNOMED, code="237897009", display="Vascular calcification")
# [SCT] coronary arteries: [PS3.16] CID 3014 / 3015 / 3604 (Coronary Arteries)
CORONARY_ARTERY = Code(system=SNOMED, code="41801008", display="Coronary artery")
CORONARY_VESSELS: dict[str, Code] = {
    "LM": Code(system=SNOMED, code="3227004", display="Left Main Coronary Artery"),
    "LAD": Code(system=SNOMED, code="59438005", display="Left Anterior Descending Coronary Artery"),
    "LCx": Code(system=SNOMED, code="57396003", display="Circumflex Coronary Artery"),
    "RCA": Code(system=SNOMED, code="13647002", display="Right Coronary Artery"),
}


def heart_failure_category_code(scheme: str, category: str, display: str) -> Code:
    """An LVEF category (ESC 2021) or CAC-DRS category (Hecht 2018) as a radpath local code."""
    return Code(system=RADPATH, code=f"{scheme}-{category}", display=display)


# --- radpath local flags -----------------------------------------------------------------
URGENT_REVIEW = Code(system=RADPATH, code="urgent-review", display="Urgent clinical review recommended")
# The AI found nothing to report. Not SNOMED CT 17621005 |Normal| (DICOM CID 242) or any
# normality finding: that is a reader's all-clear, and an AI miss must never read as one
# (hazard H-11). No standard code says "an algorithm detected no nodule" without asserting
# absence; the radiologist's read decides.
NO_NODULE_DETECTED_BY_AI = Code(
    system=RADPATH, code="ai-no-nodule-detected", display="No nodule detected by the AI (not an all-clear)"
)


def bts_category_code(category: str, display: str) -> Code:
    """A BTS 2015 management category (e.g. "ct-3-months") as a radpath local code."""
    return Code(system=RADPATH, code=f"bts2015-{category}", display=display)


# --- Units (UCUM) ------------------------------------------------------------------------
# [UCUM]; also pydicom codes.UCUM.Millimeter / CubicMillimeter / Percent
MM = Code(system=UCUM, code="mm", display="millimeter")
MM3 = Code(system=UCUM, code="mm3", display="cubic millimeter")
PERCENT = Code(system=UCUM, code="%", display="percent")
# [UCUM]; pydicom codes.UCUM.Milliliter, codes.UCUM.Centimeter, codes.UCUM.NoUnits ("1": a score)
ML = Code(system=UCUM, code="ml", display="milliliter")
CM = Code(system=UCUM, code="cm", display="centimeter")
NO_UNITS = Code(system=UCUM, code="1", display="no units")

# --- Categories --------------------------------------------------------------------------
# HL7 v2 table 0074 "RAD" (Radiology); FHIR observation-category "imaging"
RADIOLOGY_SECTION = Code(system=V2_0074, code="RAD", display="Radiology")
IMAGING_CATEGORY = Code(system=OBSERVATION_CATEGORY, code="imaging", display="Imaging")
