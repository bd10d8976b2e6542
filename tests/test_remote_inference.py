"""Models run on a remote Open Inference Protocol server (KServe v2 REST) instead of onnxruntime here.

The peer is a real third-party server, Seldon MLServer, serving the specs' own ONNX files
through a small onnxruntime runtime (tests/inference_runtime.py), installed in its own
virtualenv by scripts/install-inference-server.sh and started by tests/inference_server.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from integrations.errors import PermanentError, TransientError
from integrations.inference.config import InferenceService
from integrations.inference.onnx_model import load_model
from integrations.inference.remote import RemoteModel, open_model
from pathways.registry import default_registry, model_path
from tests.conftest import ingest_synthetic_study
from tests.inference_server import inference_server
from tests.served import free_port

pytestmark = pytest.mark.slow


def spec_models() -> dict[str, tuple[Path, str]]:
    """{spec model name: (file, sha256)} of every installed pathway with a model."""
    return {s.model.name: (model_path(s), s.model.sha256) for s in default_registry().specs.values() if s.model}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with inference_server(tmp_path_factory.mktemp("mlserver"), {n: p for n, (p, _) in spec_models().items()}) as url:
        yield url


def remote(name: str, url: str, **config) -> RemoteModel:  # noqa: ANN003
    path, sha256 = spec_models()[name]
    model = open_model(name, path, sha256, {name: InferenceService(url=url, **config)})
    assert isinstance(model, RemoteModel)
    return model


def test_remote_outputs_equal_onnxruntime_here(server):
    rng = np.random.default_rng(3)
    lung = rng.normal(-700, 300, size=(1, 1, 40, 64, 64)).astype(np.float32)
    brain = rng.normal(0.5, 0.2, size=(1, 1, 160, 192, 160)).astype(np.float32)
    echo = rng.random(size=(3, 1, 112, 112), dtype=np.float32)
    for name, inputs in [("lung-nodule-detector", {"ct_hu": lung}), ("brain-volumetry", {"t1": brain}),
                         ("echo-lv", {"image": echo})]:
        path, sha256 = spec_models()[name]
        here = load_model(path, sha256).run(inputs)
        there = remote(name, server).run(inputs)
        assert there.keys() == here.keys()
        for key in here:  # float32 probabilities and uint8 labels, shapes and values
            assert there[key].dtype == here[key].dtype and there[key].shape == here[key].shape
            assert np.allclose(there[key], here[key], atol=1e-6), (name, key)


def test_a_different_model_behind_the_url_is_refused(server):
    wrong = remote("lung-nodule-detector", server, model="echo-lv")  # the server's echo model under the lung spec
    with pytest.raises(PermanentError, match="declares inputs"):
        wrong.run({"ct_hu": np.zeros((1, 1, 8, 8, 8), np.float32)})


def test_failures_are_classed_for_retry(server):
    missing = remote("lung-nodule-detector", server, model="no-such-model")
    with pytest.raises(PermanentError):  # 404: retrying cannot help
        missing.run({"ct_hu": np.zeros((1, 1, 8, 8, 8), np.float32)})
    down = remote("lung-nodule-detector", f"http://127.0.0.1:{free_port()}", timeout_seconds=5)
    with pytest.raises(TransientError):  # nothing listening: the task's retry may find it up
        down.run({"ct_hu": np.zeros((1, 1, 8, 8, 8), np.float32)})


def test_the_lung_pathway_with_remote_inference_finds_what_it_finds_here(server, prefect_api, radpath_env, registry,
                                                                        tmp_path, monkeypatch):
    """The whole flow, configured by RADPATH_INFERENCE_SERVICES alone. Pointed at a port where
    nothing listens, the run fails (so the model really is not run here); pointed at the
    server, the re-driven run finds what the local run of the same study finds
    (tests/test_lung_pathway_flow.py, generator seed 11): all three true nodules, no false positives."""
    from flows.dispatch import run_pathway
    from integrations.db.engine import session_scope
    from integrations.db.models import Result
    from integrations.settings import reset_settings
    from pathways.lung_cancer_ct import match_detections

    def use(url: str) -> None:
        monkeypatch.setenv("RADPATH_INFERENCE_SERVICES", json.dumps({"lung-nodule-detector": {"url": url,
                                                                                                "timeout_seconds": 60}}))
        reset_settings()

    study, run_id = ingest_synthetic_study(tmp_path, registry, "chest-ct", 11)
    use(f"http://127.0.0.1:{free_port()}")
    state = asyncio.run(run_pathway(run_id))
    assert state.is_failed() and "TransientError" in str(state.message), state.message
    use(server)
    state = asyncio.run(run_pathway(run_id))
    assert state.is_completed() and state.name == "Delivered", state.message
    with session_scope() as s:
        result = s.exec(select(Result)).one()
    truth = [n for n in json.loads(Path(study.truth_path).read_text())["truth"]["nodules"] if n["diameter_mm"] >= 5]
    hits, false_positives = match_detections(truth, [n["nodule"] for n in result.assessment["nodules"]])
    assert (hits, false_positives) == (3, 0)
