"""What may leave the trust for a remote inference service (pure).

The tensors radpath sends to an Open Inference Protocol server carry pixel values only, never
the DICOM header, so the identity the header holds never leaves. Pixels can still carry it:
text burned into the image (an ultrasound machine's header bar with the patient's name, a
scanned form). Burned In Annotation (0028,0301, PS3.3 General Image module) says whether an image
has such text; PS3.15 Annex E (Basic Application Level Confidentiality Profile, "Clean Pixel
Data Option") requires that text be removed before an image counts as de-identified. radpath
does not clean pixels, so an image that has it, or may have it, is not sent.
"""

from __future__ import annotations

from collections.abc import Iterable

# Modalities whose images commonly carry burned-in text (ultrasound, fluoroscopy and angiography,
# endoscopy, secondary captures and "other"): where Burned In Annotation is not recorded, assume it.
BURNED_IN_LIKELY = frozenset({"US", "XA", "RF", "ES", "SC", "OT"})


def burned_in_value(values: Iterable[str | None]) -> str:
    """One series' Burned In Annotation from its images': YES if any says YES, NO if all say NO,
    "" (not recorded) otherwise."""
    seen = {str(v).strip().upper() if v is not None else "" for v in values}
    if "YES" in seen:
        return "YES"
    return "NO" if seen == {"NO"} else ""


def burned_in_problem(burned_in: str, modality: str) -> str | None:
    """Why these images may carry identifying text in their pixels; None when they do not."""
    if burned_in == "YES":
        return "the images carry burned-in annotation (Burned In Annotation YES)"
    if burned_in != "NO" and modality.upper() in BURNED_IN_LIKELY:
        return f"{modality} images commonly carry burned-in annotation and these do not record Burned In Annotation NO"
    return None
