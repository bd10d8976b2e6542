"""AI inference tasks: one model at a time per process, cached by input and model.

Inference takes both cores of a small server, so runs in one process take turns
(`INFERENCE_SLOT`). A Prefect global concurrency limit would do the same across processes,
but each acquisition cost 2-5 s against the embedded API here (measured with
bench/orchestration.py), more than the inference itself; across workers, the work pool's
concurrency limit is the place for it.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
from prefect import task
from pydantic import BaseModel, ConfigDict

from integrations.dicom.volume import read_volume
from integrations.inference.lung_nodules import detect_nodules
from integrations.inference.remote import open_model
from integrations.settings import get_settings
from pathways.dementia_mri import BrainVolumes
from pathways.findings import Nodule, VolumeRef
from pathways.heart_failure import CineRef, EchoRules, LvVolumes
from pathways.lung_nodule_measurement import lung_centroid_xyz_mm
from pathways.registry import model_path
from pathways.spec import ModelRef, PathwaySpec



INFERENCE_SLOT = threading.BoundedSemaphore(1)


def open_spec_model(model: ModelRef):  # noqa: ANN201 - OnnxModel | RemoteModel
    """The spec's model, checked against its sha256: run here by onnxruntime, or on the trust's
    inference service for it (`RADPATH_INFERENCE_SERVICES`)."""
    path = model_path(PathwaySpec.model_construct(model=model))
    return open_model(model.name, path, model.sha256, get_settings().inference_services)

class NoduleDetection(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    model_sha256: str
    nodules: tuple[Nodule, ...]
    mask_path: str  # uint8 label mask (.npy) on local disk; label k = nodule k
    lung_centroid_xyz_mm: tuple[float, float, float] | None = None  # aligns the scan with a prior


def local_cache_key(*parts: object) -> str:
    """A cache key from the inputs that decide a result (the exact slices or cine, model sha256, rules)
    plus the data directory, since cached results point at mask files inside it.

    Not run-scoped: the same inputs in a later run (a re-drive) reuse the result.
    The key is a digest: Prefect stores it on the task run and names the result file by it, and
    the parts carry DICOM UIDs, which would link the pseudonymous study key back to PACS.
    """
    parts_text = "\x1f".join([str(get_settings().data_dir.resolve()), *map(str, parts)])
    return hashlib.sha256(parts_text.encode()).hexdigest()


def _detection_cache_key(context, parameters) -> str:  # noqa: ANN001
    # "lung-nodules-2": results cached before the lung centroid was part of a detection are not reused.
    return local_cache_key("lung-nodules-2", parameters["volume"].content_key, parameters["model"].sha256, parameters.get("threshold"))


@task(
    name="detect-lung-nodules",
    cache_key_fn=_detection_cache_key,
    persist_result=True,
    retries=1,
    retry_delay_seconds=2,
)
def detect_lung_nodules(volume: VolumeRef, model: ModelRef, threshold: float | None = None) -> NoduleDetection:
    """Run the nodule model on the cached volume and measure each detection."""
    settings = get_settings()
    loaded_model = open_spec_model(model)
    hu = np.asarray(read_volume(volume))
    kwargs = {} if threshold is None else {"threshold": threshold}
    # One inference at a time per process keeps two cores from thrashing (global limit "inference").
    with INFERENCE_SLOT:
        nodules, mask = detect_nodules(hu, volume.spacing_zyx_mm, volume.origin_xyz_mm, loaded_model, **kwargs)
    out = settings.work_dir / "masks" / f"{hashlib.sha256((volume.content_key + model.sha256).encode()).hexdigest()[:24]}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, mask.astype(np.uint8))
    return NoduleDetection(
        model_name=loaded_model.name,
        model_version=loaded_model.version,
        model_sha256=loaded_model.sha256,
        nodules=tuple(nodules),
        mask_path=str(Path(out)),
        lung_centroid_xyz_mm=lung_centroid_xyz_mm(hu, volume.spacing_zyx_mm, volume.origin_xyz_mm),
    )


# --- Dementia brain MRI: brain volumetry ------------------------------------------------------
class BrainVolumetryResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    model_sha256: str
    volumes: BrainVolumes
    mask_path: str  # uint8 SEG label mask (.npy): 1 = left hippocampus, 2 = right hippocampus


def _volumetry_cache_key(context, parameters) -> str:  # noqa: ANN001
    return local_cache_key("brain-volumetry", parameters["volume"].content_key, parameters["model"].sha256)


@task(name="measure-brain-volumes", cache_key_fn=_volumetry_cache_key, persist_result=True, retries=1,
      retry_delay_seconds=2)
def measure_brain_volumes(volume: VolumeRef, model: ModelRef) -> BrainVolumetryResult:
    """Run the brain volumetry model on the cached T1 volume; hippocampal label mask to local disk."""
    from integrations.inference.brain_volumetry import HIPPO_LEFT, HIPPO_RIGHT, measure_brain
    from pathways.dementia_report import SEGMENT_NUMBERS

    loaded_model = open_spec_model(model)
    t1 = np.asarray(read_volume(volume))
    with INFERENCE_SLOT:
        measured = measure_brain(t1, volume.spacing_zyx_mm, loaded_model)
    mask = np.zeros(measured.labels.shape, np.uint8)
    mask[measured.labels == HIPPO_LEFT] = SEGMENT_NUMBERS["left"]
    mask[measured.labels == HIPPO_RIGHT] = SEGMENT_NUMBERS["right"]
    key = hashlib.sha256(("brain:" + volume.content_key + model.sha256).encode()).hexdigest()[:24]
    out = get_settings().work_dir / "masks" / f"{key}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, mask)
    volumes = BrainVolumes(intracranial_ml=measured.intracranial_ml, brain_ml=measured.brain_ml,
                           hippocampus_left_ml=measured.hippocampus_left_ml,
                           hippocampus_right_ml=measured.hippocampus_right_ml)
    return BrainVolumetryResult(model_name=loaded_model.name, model_version=loaded_model.version,
                                model_sha256=loaded_model.sha256, volumes=volumes, mask_path=str(out))


# --- Heart failure echo: LV cavity segmentation and volumes per frame ------------------------
class LvSegmentation(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    model_sha256: str
    volumes: LvVolumes  # per frame, by the rules' volume method (pathways.heart_failure)
    masks_path: str  # bool LV masks (frames, rows, cols), .npy on local disk


def _lv_cache_key(context, parameters) -> str:  # noqa: ANN001
    rules = parameters["rules"]
    return local_cache_key("echo-lv", parameters["cine"].sop_instance_uid, parameters["model"].sha256, rules.volume_method, rules.n_discs)


@task(name="segment-echo-lv", cache_key_fn=_lv_cache_key, persist_result=True, retries=1, retry_delay_seconds=2)
def segment_echo_lv(cine: CineRef, model: ModelRef, rules: EchoRules) -> LvSegmentation:
    """Run the echo-lv model on every frame of the cached cine and measure each frame's LV volume."""
    from integrations.dicom.multiframe import read_cine
    from integrations.inference.echo_lv import segment_lv
    from pathways.heart_failure import measure_lv_volumes

    loaded_model = open_spec_model(model)
    frames = np.asarray(read_cine(cine))
    with INFERENCE_SLOT:
        masks = segment_lv(frames, cine.region, cine.cm_per_pixel, loaded_model)
    key = hashlib.sha256(("echo-lv:" + cine.sop_instance_uid + model.sha256).encode()).hexdigest()[:24]
    out = get_settings().work_dir / "masks" / f"{key}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, masks)
    return LvSegmentation(model_name=loaded_model.name, model_version=loaded_model.version, model_sha256=loaded_model.sha256,
                          volumes=measure_lv_volumes(masks, cine.cm_per_pixel, rules), masks_path=str(out))
