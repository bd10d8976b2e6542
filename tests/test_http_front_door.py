"""The HTTP front door (FHIR and STOW-RS) under a real uvicorn server: a client that closes the
connection mid-body costs one log line, never an ASGI traceback, and the next request is served."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from integrations.dicom.stow import build_router as stow_router
from integrations.fhir.api import fhir_router
from integrations.settings import get_settings
from tests.served import free_port


@pytest.fixture
def http_door(radpath_env, registry):
    app = FastAPI()
    app.include_router(stow_router(get_settings()), prefix="/dicomweb")
    app.include_router(fhir_router(registry, settings=get_settings()), prefix="/fhir")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _send_half_and_close(port: int, path: str, content_type: str) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head + b"x" * 5000)
        time.sleep(0.3)  # the handler is reading the body when the connection goes


@pytest.mark.parametrize(("path", "content_type", "expected"), [
    ("/fhir/ServiceRequest", "application/fhir+json", "fhir client closed the connection mid-body"),
    ("/dicomweb/studies", 'multipart/related; type="application/dicom"; boundary=b',
     "STOW-RS client closed the connection mid-body"),
])
def test_a_client_closing_mid_body_is_one_log_line_and_the_door_keeps_serving(http_door, caplog, path, content_type,
                                                                               expected):
    caplog.set_level(logging.INFO)
    _send_half_and_close(http_door, path, content_type)
    time.sleep(0.5)
    lines = [r for r in caplog.records if expected in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert not any(r.exc_info for r in caplog.records), "no traceback for a client that went away"
    assert not any("Exception in ASGI application" in r.getMessage() for r in caplog.records)
    answer = httpx.post(f"http://127.0.0.1:{http_door}/fhir/ServiceRequest", content=b"{}",
                        headers={"Content-Type": "application/fhir+json"}, timeout=10)
    assert answer.status_code == 400 and answer.json()["resourceType"] == "OperationOutcome"
