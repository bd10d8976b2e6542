"""Small shared pieces for the SR and SEG builders: codes and dates in DICOM form."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import highdicom as hd

from pathways import codes
from pathways.report import Code

# Coding schemes that PS3.16 section 8 does not list as standard need a Coding Scheme
# Identification Sequence entry in the instance (PS3.3 C.12.1.1.4).
_SCHEME_NAMES = {
    "RADLEX": ("RadLex", "RSNA", "http://radlex.org"),
}


def is_local(code: Code) -> bool:
    """True for radpath's own codes (`urn:radpath:codes`), which no DICOM receiver knows.

    HL7 v2 and FHIR carry them coded (`99RADPATH`, `urn:radpath:codes`); DICOM objects never
    do: the SR writes each such concept as text (`integrations.dicom.sr`), so a PACS shows the
    words and no instance names a private coding scheme (dciodvfy: no unknown designator).
    """
    return code.system == codes.RADPATH


def coded_concept(code: Code) -> hd.sr.CodedConcept:
    """A highdicom CodedConcept for a radpath Code (never one of radpath's local codes)."""
    if is_local(code):
        raise ValueError(f"radpath's local code {code.code!r} goes into DICOM as text, not coded")
    return hd.sr.CodedConcept(
        value=code.code,
        scheme_designator=codes.dicom_scheme(code.system),
        meaning=code.display[:64],
    )


def coding_scheme_items(
    used: Iterable[Code],
) -> list[hd.coding_schemes.CodingSchemeIdentificationItem] | None:
    """Coding Scheme Identification items for the non-standard schemes among `used`, if any."""
    designators = sorted({codes.dicom_scheme(c.system) for c in used} & set(_SCHEME_NAMES))
    items = [
        hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=d,
            name=_SCHEME_NAMES[d][0],
            responsible_organization=_SCHEME_NAMES[d][1],
            external_id=_SCHEME_NAMES[d][2],
        )
        for d in designators
    ]
    return items or None


def dicom_date_time(when: dt.datetime) -> tuple[dt.date, dt.time]:
    """Date and time (UTC, whole seconds) for Content/Series Date and Time attributes."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    when = when.replace(microsecond=0)
    return when.date(), when.time()


def pin_timestamps(ds, when: dt.datetime):
    """Replace the wall-clock stamps highdicom writes with the result's time (determinism)."""
    date, time = dicom_date_time(when)
    ds.InstanceCreationDate = date.strftime("%Y%m%d")
    ds.InstanceCreationTime = time.strftime("%H%M%S")
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date.strftime("%Y%m%d") + time.strftime("%H%M%S")
    return ds


def algorithm_equipment(ctx) -> "hd.ContributingEquipment":  # noqa: ANN001
    """The AI algorithm as a Contributing Equipment Sequence item (PS3.3 C.12.1 SOP Common;
    IHE AI Results Rev 1.1 6.5.3.1): Purpose of Reference DCM 109102 "Processing Equipment",
    Manufacturer, Manufacturer's Model Name = the model, Software Versions = its version,
    Device UID derived from name + version + sha256, Contribution DateTime = the result's."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dicom_codes

    from integrations.dicom.seg import MANUFACTURER
    from integrations.uids import algorithm_device_uid

    item = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=dicom_codes.DCM.ProcessingEquipment,
        manufacturer_model_name=ctx.model_name[:64],
        software_versions=ctx.model_version[:64],
        contribution_datetime=ctx.observed_at.astimezone(dt.timezone.utc).replace(tzinfo=None),
        contribution_description=f"AI algorithm {ctx.model_name} {ctx.model_version}"[:64],
    )
    item.DeviceUID = algorithm_device_uid(ctx.model_name, ctx.model_version, ctx.model_sha256)
    return item
