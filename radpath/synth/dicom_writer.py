"""Write synthetic studies as valid DICOM IODs with pydicom.

CT Image Storage and MR Image Storage as single-frame series; Ultrasound Multi-frame Image
Storage for echo cines. Modules: Patient, General Study, Patient Study, General Series,
Frame of Reference, General Equipment, General Acquisition, General Image, Image Plane,
Image Pixel, CT Image / MR Image / US Image + Cine + Multi-frame + US Region Calibration,
VOI LUT, SOP Common (PS3.3 A.3, A.4, A.7 and C.7-C.8, C.12).

Identity: PatientID is the trust's local hospital number (IssuerOfPatientID "RXX01"); the NHS
number sits in OtherPatientIDsSequence with IssuerOfPatientID "NHS".
Files go to ``<out_dir>/<SeriesNumber>/<InstanceNumber>.dcm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radpath.synth.patients import SyntheticPatient

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
MANUFACTURER = "radpath-synth"
INSTITUTION = "RXX01 Synthetic NHS Trust"


def uid(*parts: object) -> str:
    """A UID derived only from its parts (same parts, same UID)."""
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


@dataclass(frozen=True)
class StudyInfo:
    patient: SyntheticPatient
    study_uid: str
    accession_number: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    description: str
    study_id: str = "1"
    referring_physician: str = "GP^REFERRER"
    patient_age: str = ""  # e.g. "067Y"


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    number: int
    description: str
    modality: str
    body_part: str
    frame_of_reference_uid: str
    station: str = "SYNTH01"
    model: str = "Phantom 1"
    patient_position: str = "HFS"
    extra: dict = field(default_factory=dict)  # modality-specific attributes by keyword


def _base(study: StudyInfo, series: SeriesInfo, sop_class: str, sop_uid: str, number: int) -> Dataset:
    p = study.patient
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = study.study_time
    # Patient
    ds.PatientName = p.dicom_name
    ds.PatientID = p.hospital_number
    ds.IssuerOfPatientID = "RXX01"
    other = Dataset()
    other.PatientID = p.nhs_number
    other.IssuerOfPatientID = "NHS"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate = p.birth_date.strftime("%Y%m%d")
    ds.PatientSex = p.sex
    if study.patient_age:
        ds.PatientAge = study.patient_age
    # General Study
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.description
    # General Series
    ds.Modality = series.modality
    ds.SeriesInstanceUID = series.series_uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.SeriesDate = study.study_date
    ds.SeriesTime = study.study_time
    ds.BodyPartExamined = series.body_part
    # Frame of Reference
    if series.frame_of_reference_uid:
        ds.FrameOfReferenceUID = series.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = INSTITUTION
    ds.StationName = series.station
    ds.ManufacturerModelName = series.model
    ds.SoftwareVersions = "radpath-synth 1"
    # General Acquisition / General Image
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = study.study_time
    ds.ContentDate = study.study_date
    ds.ContentTime = study.study_time
    ds.InstanceNumber = number
    for keyword, value in series.extra.items():
        setattr(ds, keyword, value)
    return ds


def _pixels(ds: Dataset, array: np.ndarray, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(array.shape[-2]), int(array.shape[-1])
    ds.BitsAllocated = 8 if array.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(array).tobytes()


def _plane(ds: Dataset, spacing_zyx, position_xyz, thickness: float) -> None:
    ds.PatientPosition = ds.get("PatientPosition") or "HFS"
    ds.PixelSpacing = [f"{spacing_zyx[1]:g}", f"{spacing_zyx[2]:g}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [f"{v:.4f}".rstrip("0").rstrip(".") for v in position_xyz]
    ds.SliceThickness = f"{thickness:g}"
    ds.SliceLocation = f"{position_xyz[2]:.4f}".rstrip("0").rstrip(".")


def _save(ds: Dataset, out_dir: Path, series_number: int, instance: int) -> Path:
    path = out_dir / str(series_number) / f"{instance}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(hu: np.ndarray, spacing_zyx_mm, origin_xyz_mm, study: StudyInfo,
                    series: SeriesInfo, out_dir: Path, *, kernel: str = "B45f",
                    thickness_mm: float | None = None, window=(-600, 1500)) -> list[Path]:
    """One CT Image per axial slice; stored = HU + 1024 (12 bits), RescaleIntercept -1024."""
    stored = (np.clip(hu, -1024, 3071).astype(np.int32) + 1024).astype(np.uint16)
    paths = []
    for k in range(hu.shape[0]):
        sop_uid = uid(series.series_uid, "instance", k)
        ds = _base(study, series, CT_IMAGE_STORAGE, sop_uid, k + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition = series.patient_position
        position = (origin_xyz_mm[0], origin_xyz_mm[1], origin_xyz_mm[2] + k * spacing_zyx_mm[0])
        _plane(ds, spacing_zyx_mm, position, thickness_mm or spacing_zyx_mm[0])
        ds.SpacingBetweenSlices = f"{spacing_zyx_mm[0]:g}"
        ds.KVP = "120"
        ds.ConvolutionKernel = kernel
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
        _pixels(ds, stored[k], 12)
        paths.append(_save(ds, out_dir, series.number, k + 1))
    return paths


def write_mr_series(values: np.ndarray, spacing_zyx_mm, origin_xyz_mm, study: StudyInfo,
                    series: SeriesInfo, out_dir: Path, *, window=(600, 1200)) -> list[Path]:
    """One MR Image per axial slice of a 3D T1 (MPRAGE-like) acquisition; 12-bit unsigned."""
    stored = np.clip(values, 0, 4095).astype(np.uint16)
    paths = []
    for k in range(values.shape[0]):
        sop_uid = uid(series.series_uid, "instance", k)
        ds = _base(study, series, MR_IMAGE_STORAGE, sop_uid, k + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.PatientPosition = series.patient_position
        position = (origin_xyz_mm[0], origin_xyz_mm[1], origin_xyz_mm[2] + k * spacing_zyx_mm[0])
        _plane(ds, spacing_zyx_mm, position, spacing_zyx_mm[0])
        ds.SpacingBetweenSlices = f"{spacing_zyx_mm[0]:g}"
        ds.ScanningSequence = ["GR", "IR"]
        ds.SequenceVariant = ["SP", "MP"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.SequenceName = "*tfl3d1"
        ds.RepetitionTime = "2300"
        ds.EchoTime = "2.98"
        ds.InversionTime = "900"
        ds.EchoTrainLength = "1"
        ds.FlipAngle = "9"
        ds.MagneticFieldStrength = "3"
        ds.ImagedNucleus = "1H"
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
        _pixels(ds, stored[k], 12)
        paths.append(_save(ds, out_dir, series.number, k + 1))
    return paths


def write_us_multiframe(frames: np.ndarray, study: StudyInfo, series: SeriesInfo, out_dir: Path,
                        *, frame_time_ms: float, heart_rate_bpm: int,
                        cm_per_pixel: float, region: tuple[int, int, int, int]) -> Path:
    """One Ultrasound Multi-frame Image (8-bit MONOCHROME2 cine) with a calibrated 2D region.

    region is (min_x, min_y, max_x, max_y) in pixels; PhysicalDeltaX/Y give cm per pixel.
    """
    sop_uid = uid(series.series_uid, "instance", 0)
    ds = _base(study, series, US_MULTIFRAME_STORAGE, sop_uid, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC", "0001"]  # value 4: 2D imaging (C.8.5.6.1.1)
    ds.LossyImageCompression = "00"
    ds.PatientOrientation = ""
    ds.NumberOfFrames = int(frames.shape[0])
    ds.FrameIncrementPointer = (0x0018, 0x1063)  # Frame Time
    ds.FrameTime = f"{frame_time_ms:g}"
    ds.CineRate = int(round(1000.0 / frame_time_ms))
    ds.RecommendedDisplayFrameRate = int(round(1000.0 / frame_time_ms))
    ds.HeartRate = heart_rate_bpm
    ds.ActualFrameDuration = int(round(frame_time_ms))
    ds.TransducerData = "S5-1"
    reg = Dataset()
    reg.RegionSpatialFormat = 1  # 2D
    reg.RegionDataType = 1  # tissue
    reg.RegionFlags = 0
    reg.RegionLocationMinX0, reg.RegionLocationMinY0 = region[0], region[1]
    reg.RegionLocationMaxX1, reg.RegionLocationMaxY1 = region[2], region[3]
    reg.PhysicalUnitsXDirection = 3  # cm
    reg.PhysicalUnitsYDirection = 3
    reg.PhysicalDeltaX = cm_per_pixel
    reg.PhysicalDeltaY = cm_per_pixel
    reg.ReferencePixelX0 = (region[2] - region[0]) // 2
    reg.ReferencePixelY0 = 0
    reg.ReferencePixelPhysicalValueX = 0.0
    reg.ReferencePixelPhysicalValueY = 0.0
    ds.SequenceOfUltrasoundRegions = Sequence([reg])
    ds.WindowCenter = "128"
    ds.WindowWidth = "256"
    _pixels(ds, frames.astype(np.uint8), 8)
    return _save(ds, out_dir, series.number, 1)
