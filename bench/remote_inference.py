"""Remote inference cost: the lung model on an Open Inference Protocol server against onnxruntime here.

Both run the same ONNX file on the same machine, alternating, on a synthetic chest CT's
volume resampled to the model's grid as the pathway does; the server is Seldon MLServer
(tests/inference_server.py starts it, installing it on first use). The difference is what
the protocol costs: JSON tensors both ways, HTTP, the server's decoding. Medians reported.

Usage: python bench/remote_inference.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _volume(files: list[Path]):  # noqa: ANN202 - (HU volume zyx, spacing zyx mm)
    import numpy as np
    import pydicom

    slices = sorted((pydicom.dcmread(f) for f in files), key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    dz = abs(float(slices[1].ImagePositionPatient[2]) - float(slices[0].ImagePositionPatient[2]))
    return hu.astype(np.float32), (dz, *(float(v) for v in slices[0].PixelSpacing))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np

    from integrations.inference.config import InferenceService
    from integrations.inference.lung_nodules import INPUT_NAME, model_spacing_mm, resample_to_spacing
    from integrations.inference.onnx_model import load_model
    from integrations.inference.remote import open_model
    from pathways.registry import default_registry, model_path
    from radpath.synth import generate
    from tests.inference_server import inference_server

    spec = default_registry().get("lung-cancer-ct")
    path = model_path(spec)
    local = load_model(path, spec.model.sha256)
    work = Path(tempfile.mkdtemp(prefix="radpath-bench-remote-"))
    (study,) = generate("chest-ct", 1, 7, work / "synthetic")
    volume, spacing = _volume(sorted(Path(study.dicom_dir).rglob("*.dcm")))
    grid = resample_to_spacing(volume, spacing, model_spacing_mm(local))[None, None].astype(np.float32)

    with inference_server(work / "mlserver", {spec.model.name: path}) as url:
        remote = open_model(spec.model.name, path, spec.model.sha256, {spec.model.name: InferenceService(url=url)})
        remote.run({INPUT_NAME: grid})  # contract check and warm-up, untimed
        local.run({INPUT_NAME: grid})
        times: dict[str, list[float]] = {"onnxruntime here": [], "MLServer (OIP JSON)": []}
        for _ in range(args.repeats):
            for label, model in (("onnxruntime here", local), ("MLServer (OIP JSON)", remote)):
                started = time.perf_counter()
                model.run({INPUT_NAME: grid})
                times[label].append(time.perf_counter() - started)
    here, there = (statistics.median(v) for v in times.values())
    print(f"lung model input {list(grid.shape)} float32 ({grid.nbytes / 1e6:.0f} MB), {args.repeats} runs each, medians")
    print("| where | seconds |")
    print("| --- | ---: |")
    for label, values in times.items():
        print(f"| {label} | {statistics.median(values):.2f} |")
    print(f"protocol cost: +{there - here:.2f} s per study ({there / here:.1f}x the local run)")


if __name__ == "__main__":
    main()
