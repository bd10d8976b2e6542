"""Results every PACS viewer can show: a Key Object Selection of the key images and a rendered
summary as a DICOM Secondary Capture, beside the SR and SEG (IHE AI Results).

Pure: datasets in, datasets out. The key image of a segmented finding is the source slice where
its segment is largest. The summary is one RGB Secondary Capture (burned-in annotation: YES):
the first finding's key slice (lung window for CT) with each segment outlined, under a banner
that says it is AI output and its review status, the algorithm and version, and the conclusion.
A viewer without SR or SEG support still shows what the AI found and that nobody checked it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydicom.sr.codedict import codes as dicom_codes

from integrations.dicom.coding import algorithm_equipment, pin_timestamps
from integrations.dicom.seg import MANUFACTURER
from integrations.uids import result_uid, uid_from_name
from pathways.report import ReportContent, ResultContext

KOS_SERIES_NUMBER = 9903
SC_SERIES_NUMBER = 9904
OF_INTEREST = hd.sr.CodedConcept("113000", "DCM", "Of Interest")  # CID 7010 Key Object Selection Document Title
BANNER = (255, 200, 0)
OUTLINES = [(255, 64, 64), (64, 200, 255), (120, 255, 120), (255, 120, 255)]
LUNG_WINDOW = (-600.0, 1500.0)  # level, width (HU)
MIN_WIDTH = 512


def key_images(label_mask: np.ndarray | None, content: ReportContent) -> list[tuple[int, int]]:
    """(segment number, slice index) per segmented finding: the slice where it is largest."""
    if label_mask is None:
        return []
    out = []
    for finding in content.findings:
        if finding.segment_number is None:
            continue
        areas = (label_mask == finding.segment_number).reshape(label_mask.shape[0], -1).sum(axis=1)
        if areas.max() > 0:
            out.append((finding.segment_number, int(areas.argmax())))
    return out


def build_key_object_selection(content: ReportContent, ctx: ResultContext, key_sources: Sequence[pydicom.Dataset]
                               ) -> pydicom.Dataset:
    """A KOS ("Of Interest") naming the key images, observed by the algorithm as a device."""
    if not key_sources:
        raise ValueError("a key object selection needs at least one key image")
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uid_from_name(f"device/{ctx.model_name}/{ctx.model_version}"), name=ctx.model_name[:64],
        manufacturer_name=MANUFACTURER, model_name=f"{ctx.model_name} {ctx.model_version}"[:64])
    selection = hd.ko.KeyObjectSelection(
        document_title=OF_INTEREST,
        referenced_objects=list(key_sources),
        observer_device_context=hd.sr.ObserverContext(observer_type=dicom_codes.cid270.Device,
                                                      observer_identifying_attributes=device),
        description=f"AI key images (preliminary, not reviewed): {content.conclusion}"[:1024],
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=list(key_sources),
        content=selection,
        series_instance_uid=result_uid(ctx.result_id, "kos-series"),
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=result_uid(ctx.result_id, "kos-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        contributing_equipment=[algorithm_equipment(ctx)],
    )
    kos.SeriesDescription = f"AI key images: {content.title}"[:64]
    return pin_timestamps(kos, ctx.observed_at)


def build_summary_capture(content: ReportContent, ctx: ResultContext, source: pydicom.Dataset,
                          outlines: np.ndarray | None = None) -> pydicom.Dataset:
    """The summary Secondary Capture: `source`'s pixels (a key slice) with the segments in
    `outlines` (labels, same rows x columns) drawn, under the AI-output banner. Like the SEG it
    stays the algorithm's (preliminary) rendering after a review: the verified SR is the
    reviewed record."""
    image = _grey(source)
    rgb = np.stack([image] * 3, axis=-1)
    if outlines is not None:
        for number in [int(n) for n in np.unique(outlines) if n]:
            edge = _edge(outlines == number)
            rgb[edge] = OUTLINES[(number - 1) % len(OUTLINES)]
    canvas = Image.fromarray(rgb)
    if canvas.width < MIN_WIDTH:  # small matrices are enlarged so the banner stays readable
        scale = -(-MIN_WIDTH // canvas.width)
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    banner = _banner(content, ctx, canvas.width)
    page = Image.new("RGB", (canvas.width, canvas.height + banner.height))
    page.paste(banner, (0, 0))
    page.paste(canvas, (0, banner.height))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.asarray(page),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=_orientation(source),
        series_instance_uid=result_uid(ctx.result_id, "sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid(ctx.result_id, "sc-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        contributing_equipment=[algorithm_equipment(ctx)],
    )
    for keyword in ("BodyPartExamined", "Laterality"):  # General Series: Laterality is 2C on the body part
        if keyword in source:
            setattr(sc, keyword, source.data_element(keyword).value)
    sc.BurnedInAnnotation = "YES"  # the banner: never forward this image as de-identified
    sc.SeriesDescription = f"AI summary (preliminary): {content.title}"[:64]
    sc.ImageComments = "AI output. Preliminary: not reviewed by a radiologist."
    return pin_timestamps(sc, ctx.observed_at)


def _orientation(ds: pydicom.Dataset) -> tuple[str, str]:
    """Patient Orientation (row, column directions) of the rendered slice, from its Image
    Orientation (Patient); an axial slice is ("L", "P")."""
    cosines = [float(v) for v in ds.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]

    def letters(vector: list[float]) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return ("L", "P", "H")[axis] if vector[axis] > 0 else ("R", "A", "F")[axis]

    return letters(cosines[:3]), letters(cosines[3:])


def _grey(ds: pydicom.Dataset) -> np.ndarray:
    """8-bit display values: CT in the lung window, other modalities scaled to their range."""
    pixels = ds.pixel_array.astype(np.float32)
    if pixels.ndim == 3:  # a cine or multi-frame source: its middle frame
        pixels = pixels[pixels.shape[0] // 2]
    if ds.get("Modality") == "CT":
        hu = pixels * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        level, width = LUNG_WINDOW
        low = level - width / 2
        return (np.clip((hu - low) / width, 0, 1) * 255).astype(np.uint8)
    span = float(pixels.max() - pixels.min()) or 1.0
    return ((pixels - pixels.min()) / span * 255).astype(np.uint8)


def _edge(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def _banner(content: ReportContent, ctx: ResultContext, width: int) -> Image.Image:
    columns = max(20, width // 7)
    lines = ["AI RESULT - PRELIMINARY - NOT REVIEWED BY A RADIOLOGIST"[:columns],
             f"{ctx.model_name} {ctx.model_version} (radpath {ctx.pathway} {ctx.pathway_version})"[:columns]]
    lines += textwrap.wrap(content.conclusion, columns)[:4]
    if content.urgent:
        lines.append("URGENT: flagged for priority reporting")
    banner = Image.new("RGB", (width, 14 * len(lines) + 8), (0, 0, 0))
    draw = ImageDraw.Draw(banner)
    for row, text in enumerate(lines):
        draw.text((4, 4 + 14 * row), text, fill=BANNER)
    return banner
