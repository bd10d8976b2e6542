"""AI inference tasks: onnxruntime behind a concurrency limit, cached by input and model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from prefect import task
from prefect.concurrency.sync import concurrency
from pydantic import BaseModel, ConfigDict

from integrations.dicom.volume import read_volume
from integrations.inference.lung_nodules import detect_nodules
from integrations.inference.onnx_model import load_model
from integrations.settings import get_settings
from pathways.findings import Nodule, VolumeRef
from pathways.registry import model_path
from pathways.spec import ModelRef, PathwaySpec


class NoduleDetection(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: str
    model_sha256: str
    nodules: tuple[Nodule, ...]
    mask_path: str  # uint8 label mask (.npy) on local disk; label k = nodule k


def _detection_cache_key(context, parameters) -> str:  # noqa: ANN001
    """Same series and same model bytes → same detections, across runs (not run-scoped).

    The data directory is part of the key: the cached result points at a mask file in it.
    """
    volume: VolumeRef = parameters["volume"]
    model: ModelRef = parameters["model"]
    data_dir = hashlib.sha256(str(get_settings().data_dir.resolve()).encode()).hexdigest()[:12]
    return f"lung-nodules:{data_dir}:{volume.series_uid}:{model.sha256}:{parameters.get('threshold')}"


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
    onnx_model = load_model(model_path(PathwaySpec.model_construct(model=model)), expected_sha256=model.sha256)
    hu = np.asarray(read_volume(volume))
    kwargs = {} if threshold is None else {"threshold": threshold}
    # One inference at a time per process keeps two cores from thrashing (global limit "inference").
    with concurrency("inference", occupy=1, strict=False):
        nodules, mask = detect_nodules(hu, volume.spacing_zyx_mm, volume.origin_xyz_mm, onnx_model, **kwargs)
    out = settings.work_dir / "masks" / f"{hashlib.sha256((volume.series_uid + model.sha256).encode()).hexdigest()[:24]}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, mask.astype(np.uint8))
    return NoduleDetection(
        model_name=onnx_model.name,
        model_version=onnx_model.version,
        model_sha256=onnx_model.sha256,
        nodules=tuple(nodules),
        mask_path=str(Path(out)),
    )
