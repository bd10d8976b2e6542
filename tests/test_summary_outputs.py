"""Key Object Selection and the rendered summary Secondary Capture: what a PACS viewer without
SR/SEG support shows, labelled as AI output and preliminary; dciodvfy-clean."""

from __future__ import annotations

import io

import numpy as np
import pydicom

from integrations.dicom.summary import build_key_object_selection, build_summary_capture, key_images
from tests.conftest import dciodvfy_errors
from tests.test_outputs import assessment, content, ctx, label_mask, source_datasets  # noqa: F401 - fixtures


def _written(ds, path):  # noqa: ANN001, ANN202
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    return pydicom.dcmread(path)


def test_key_images_are_where_each_segment_is_largest(label_mask, content):  # noqa: F811
    assert key_images(label_mask, content) == [(1, 3), (2, 6)]
    assert key_images(None, content) == []


def test_kos_names_the_key_images_and_the_algorithm(label_mask, content, ctx, source_datasets, tmp_path):  # noqa: F811
    keys = [source_datasets[index] for _, index in key_images(label_mask, content)]
    kos = _written(build_key_object_selection(content, ctx, keys), tmp_path / "kos.dcm")
    assert kos.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection Document
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"  # "Of Interest"
    referenced = {item.ReferencedSOPInstanceUID for s in kos.CurrentRequestedProcedureEvidenceSequence
                  for series in s.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert referenced == {k.SOPInstanceUID for k in keys}
    assert kos.ContributingEquipmentSequence[0].ManufacturerModelName == ctx.model_name
    assert dciodvfy_errors(tmp_path / "kos.dcm") == []


def test_summary_capture_is_labelled_preliminary_ai_output_with_the_finding_outlined(
        label_mask, content, ctx, source_datasets, tmp_path):  # noqa: F811
    import copy

    (number, index), _ = key_images(label_mask, content)
    source = copy.deepcopy(source_datasets[index])
    source.BodyPartExamined = "CHEST"  # as a chest CT carries it (General Series Laterality is 2C on it)
    sc = _written(build_summary_capture(content, ctx, source, np.where(label_mask[index] == number, number, 0)),
                  tmp_path / "sc.dcm")
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert sc.BurnedInAnnotation == "YES" and "not reviewed" in sc.ImageComments
    assert sc.StudyInstanceUID == source_datasets[index].StudyInstanceUID and sc.PatientID == source_datasets[index].PatientID
    pixels = sc.pixel_array
    assert pixels.shape[2] == 3 and pixels.shape[1] >= 512  # enlarged to stay readable, the banner above it
    banner = pixels[: pixels.shape[0] - pixels.shape[1] * source_datasets[index].Rows // source_datasets[index].Columns]
    assert np.any((banner[..., 0] > 200) & (banner[..., 1] > 150) & (banner[..., 2] < 80))  # amber banner text
    assert np.any(np.all(pixels == (255, 64, 64), axis=-1))  # the first segment's outline
    assert dciodvfy_errors(tmp_path / "sc.dcm") == []


def test_a_lung_result_reaches_a_real_pacs_as_sr_seg_kos_and_a_summary_capture(prefect_api, radpath_env, registry,
                                                                               tmp_path, monkeypatch):
    """A spec whose PACS takes every DICOM output: Orthanc receives the SR, SEG, KOS and SC,
    and the KOS references slices of the study's own series."""
    import asyncio
    import json

    from flows.dispatch import run_pathway
    from integrations.settings import reset_settings
    from tests.conftest import ingest_synthetic_study
    from tests.orthanc import Orthanc

    with Orthanc(tmp_path / "orthanc") as orthanc:
        monkeypatch.setenv("RADPATH_DESTINATIONS", json.dumps({"pacs": {
            "kind": "dicom", "host": "127.0.0.1", "port": orthanc.dicom_port, "called_ae_title": "ORTHANC"}}))
        reset_settings()
        original = registry.specs["lung-cancer-ct"]
        registry.specs["lung-cancer-ct"] = original.model_copy(update={"destinations": tuple(
            d.model_copy(update={"formats": ("dicom-sr", "dicom-seg", "dicom-kos", "dicom-sc")}) if d.name == "pacs" else d
            for d in original.destinations)})
        try:
            study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", 2026)
            state = asyncio.run(run_pathway(run_id))
        finally:
            registry.specs["lung-cancer-ct"] = original
        assert state.name == "Delivered", state.message
        found = {}
        for instance in orthanc.instances():
            tags = orthanc.rest.get(f"/instances/{instance}/simplified-tags").raise_for_status().json()
            found[tags["SOPClassUID"]] = tags
    assert set(found) == {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.66.4",  # Comprehensive 3D SR, SEG
                          "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.5.1.4.1.1.7"}  # KOS, Secondary Capture
    assert all(t["StudyInstanceUID"] == study.study_uid for t in found.values())
    assert found["1.2.840.10008.5.1.4.1.1.7"]["BurnedInAnnotation"] == "YES"
