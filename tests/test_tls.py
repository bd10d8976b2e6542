"""TLS on every inbound door, with certificates this test generates (a throwaway CA, a server
certificate for 127.0.0.1 and a client certificate): the MLLP listener, the DICOM SCP and the
HTTP door (uvicorn, configured as `radpath serve` configures it) speak TLS only once it is
configured, and with a client CA they take only clients holding a certificate it issued."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from integrations.dicom.scp import start_scp
from integrations.hl7.listener import MllpListener, listener_config
from integrations.hl7.mllp import FrameDecoder, frame
from integrations.settings import get_settings, reset_settings
from tests.hl7_fixtures import ThreadedListener, msa, order
from tests.served import free_port


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(subject: str, key, issuer_key, issuer: x509.Name | None = None, *, ca: bool = False,
                 server: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                                     x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, *objects) -> Path:
    pem = b""
    for obj in objects:
        if isinstance(obj, x509.Certificate):
            pem += obj.public_bytes(serialization.Encoding.PEM)
        else:
            pem += obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    path.write_bytes(pem)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _certificate("radpath test CA", ca_key, ca_key, ca=True)
    server = _certificate("radpath", server_key, ca_key, ca.subject, server=True)
    client = _certificate("CT1", client_key, ca_key, ca.subject)
    return {
        "ca": _write(folder / "ca.pem", ca), "cert": _write(folder / "server.pem", server),
        "key": _write(folder / "server.key", server_key), "client_cert": _write(folder / "client.pem", client),
        "client_key": _write(folder / "client.key", client_key),
    }


@pytest.fixture
def tls_env(radpath_env, monkeypatch, pki):
    monkeypatch.setenv("RADPATH_TLS_CERT_FILE", str(pki["cert"]))
    monkeypatch.setenv("RADPATH_TLS_KEY_FILE", str(pki["key"]))

    def require_client_certificates() -> None:
        monkeypatch.setenv("RADPATH_TLS_CLIENT_CA_FILE", str(pki["ca"]))
        reset_settings()

    reset_settings()
    return require_client_certificates


def _client_context(pki, *, with_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if with_certificate:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return context


def _send_order(port: int, context: ssl.SSLContext | None) -> str | None:
    """One ORM over MLLP (TLS when a context is given); the ACK's MSA-1, or None without an ACK."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        conn = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        conn.sendall(frame(order().encode()))
        decoder = FrameDecoder()
        while True:
            data = conn.recv(65536)
            if not data:
                return None
            frames = [f for f in decoder.feed(data)]
            if frames:
                return msa(frames[0].payload)[0]
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
        return None
    finally:
        raw.close()


def _mllp(settings) -> ThreadedListener:
    config = listener_config(settings.model_copy(update={"mllp_port": 0}))
    return ThreadedListener(config)


def test_mllp_speaks_tls_only_once_configured(tls_env, pki):
    with _mllp(get_settings()) as listener:
        assert _send_order(listener.port, None) is None  # plaintext gets no ACK
        assert _send_order(listener.port, _client_context(pki)) == "AA"
    assert isinstance(listener.listener, MllpListener)


def test_mllp_with_a_client_ca_takes_only_clients_holding_its_certificate(tls_env, pki):
    tls_env()
    with _mllp(get_settings()) as listener:
        assert _send_order(listener.port, _client_context(pki)) is None
        assert _send_order(listener.port, _client_context(pki, with_certificate=True)) == "AA"


def _echo(port: int, context: ssl.SSLContext | None) -> int | None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="RADPATH_DEMO")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="RADPATH", tls_args=(context, "127.0.0.1") if context else None)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return status.Status if status else None


def test_dicom_scp_speaks_tls_only_once_configured_and_checks_client_certificates(tls_env, pki, monkeypatch):
    monkeypatch.setenv("RADPATH_DICOM_PORT", "0")
    tls_env()
    handle = start_scp(get_settings())
    try:
        assert _echo(handle.port, None) is None
        assert _echo(handle.port, _client_context(pki)) is None  # no client certificate
        assert _echo(handle.port, _client_context(pki, with_certificate=True)) == 0x0000
    finally:
        handle.shutdown()


def test_http_door_speaks_tls_as_serve_configures_it(tls_env, pki, monkeypatch):
    import uvicorn

    from radpath.serve import http_config

    monkeypatch.setenv("RADPATH_HTTP_PORT", str(free_port()))
    tls_env()
    settings = get_settings()
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    server = uvicorn.Server(http_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"https://127.0.0.1:{settings.http_port}/health"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{settings.http_port}/health", timeout=5)  # plaintext
        with pytest.raises(httpx.TransportError):
            httpx.get(url, verify=_client_context(pki), timeout=5)  # no client certificate
        answer = httpx.get(url, verify=_client_context(pki, with_certificate=True), timeout=5)
        assert answer.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
