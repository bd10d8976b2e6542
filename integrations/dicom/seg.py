"""DICOM Segmentation (SEG) of a result's findings, built with highdicom.

One BINARY segment per finding that has a `segment_number`; frames with no segment are
omitted (highdicom default), so a few nodules in a 300-slice CT stay a small file. UIDs
and dates come from the result, so a rebuild is byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom

from integrations.dicom.coding import (
    algorithm_equipment,
    coded_concept,
    coding_scheme_items,
    dicom_date_time,
    pin_timestamps,
)
from integrations.uids import result_uid
from pathways import codes
from pathways.report import ReportContent, ResultContext

SEG_SERIES_NUMBER = 9902
MANUFACTURER = "radpath"


def tracking_uid(result_id: str, finding_key: str, carried: str | None = None) -> str:
    """The Tracking Unique Identifier shared by a finding's SEG segment and SR group: the one it
    `carried` from the patient's earlier study, else derived from the result and the finding."""
    return carried or result_uid(result_id, f"tracking/{finding_key}")


def build_segmentation(
    label_mask: np.ndarray,
    content: ReportContent,
    ctx: ResultContext,
    source_datasets: Sequence[pydicom.Dataset],
) -> pydicom.Dataset:
    """A SEG with one segment per finding; `label_mask` (z, y, x) holds segment numbers.

    `source_datasets` are the source slices in the mask's z order (one per mask slice);
    headers are enough (`stop_before_pixels=True`).
    Mask labels that no finding claims are ignored.
    """
    if label_mask.ndim != 3:
        raise ValueError("label_mask must be (z, y, x)")
    if label_mask.shape[0] != len(source_datasets):
        raise ValueError(
            f"label_mask has {label_mask.shape[0]} slices but {len(source_datasets)} source images"
        )
    segmented = [f for f in content.findings if f.segment_number is not None]
    if not segmented:
        raise ValueError("no finding has a segment number: nothing to segment")
    numbers = sorted(f.segment_number for f in segmented)
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"segment numbers must be 1..n without gaps, got {numbers}")

    mask = np.where(np.isin(label_mask, numbers), label_mask, 0).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ctx.model_name,
        family=coded_concept(codes.ARTIFICIAL_INTELLIGENCE),
        version=ctx.model_version,
        source=MANUFACTURER,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=f.segment_number,
            segment_label=f.label[:64],
            segmented_property_category=coded_concept(codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE),
            segmented_property_type=coded_concept(f.finding_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=tracking_uid(ctx.result_id, f.key, f.tracking_uid),
            tracking_id=f.key,
            anatomic_regions=[coded_concept(f.site)] if f.site else None,
        )
        for f in sorted(segmented, key=lambda f: f.segment_number)
    ]
    when_date, when_time = dicom_date_time(ctx.observed_at)
    all_codes = [f.finding_type for f in segmented] + [f.site for f in segmented if f.site]
    seg = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=result_uid(ctx.result_id, "seg-series"),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=result_uid(ctx.result_id, "seg-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=ctx.model_name[:64],
        software_versions=f"{ctx.model_version} ({ctx.pathway} {ctx.pathway_version})"[:64],
        device_serial_number=ctx.model_version[:64],
        series_description=f"AI segmentation: {content.title}"[:64],
        content_label="AI_SEGMENTS",
        content_description=f"{ctx.model_name} {ctx.model_version}"[:64],
        content_creator_name="radpath^AI",
        contributing_equipment=[algorithm_equipment(ctx)],  # IHE AIR: the algorithm, named
        omit_empty_frames=True,
        content_date=when_date,
        content_time=when_time,
        series_date=when_date,
        series_time=when_time,
        coding_schemes=coding_scheme_items(all_codes),
    )
    _pin_dimension_organization(seg, result_uid(ctx.result_id, "seg-dimension-organization"))
    return pin_timestamps(seg, ctx.observed_at)


def _pin_dimension_organization(seg: pydicom.Dataset, uid: str) -> None:
    """highdicom draws a random Dimension Organization UID: replace it with a derived one."""
    for item in [*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence]:
        item.DimensionOrganizationUID = uid
