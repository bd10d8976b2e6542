"""Source addresses checked at TCP accept: a connection no allow-listed peer could make is closed
before any PDU is read, and audited; permitted peers still associate. Also guards the pynetdicom
internals the SCP relies on, so an upgrade that removes them fails here, loudly."""

from __future__ import annotations

import subprocess
import time

from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent
from integrations.dicom.scp import GatedAssociationServer, address_could_be_allowed, start_scp
from integrations.settings import get_settings, reset_settings
from tests.conftest import require_tool


def test_address_could_be_allowed():
    peers = {"CT1": ("10.0.0.1",), "CT2": ("10.0.0.2", "10.0.0.3")}
    assert address_could_be_allowed(peers, "10.0.0.3")
    assert not address_could_be_allowed(peers, "127.0.0.1")
    assert address_could_be_allowed({**peers, "ANYWHERE": ()}, "127.0.0.1")  # a peer with no address list
    assert not address_could_be_allowed({}, "127.0.0.1")


def _start(radpath_env, monkeypatch, peers: str):  # noqa: ANN001, ANN202
    monkeypatch.setenv("RADPATH_DICOM_PORT", "0")
    monkeypatch.setenv("RADPATH_DICOM_PEERS", peers)
    reset_settings()
    return start_scp(get_settings())


def _audits(action: str, expected: int) -> list[AuditEvent]:
    for _ in range(50):
        with session_scope() as s:
            rows = s.exec(select(AuditEvent).where(AuditEvent.action == action)).all()
        if len(rows) >= expected:
            break
        time.sleep(0.05)
    return rows


def _echo(port: int, aet: str, called: str = "RADPATH") -> subprocess.CompletedProcess:
    echoscu = require_tool("echoscu")
    return subprocess.run([echoscu, "-aet", aet, "-aec", called, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=20)


def test_connection_from_an_address_no_peer_uses_is_closed_at_accept(radpath_env, monkeypatch):
    handle = _start(radpath_env, monkeypatch, '{"MODALITY": ["10.9.9.9"]}')
    try:
        assert isinstance(handle.server, GatedAssociationServer)
        done = _echo(handle.port, "MODALITY")
        assert done.returncode != 0
        assert "Rejected" not in done.stderr  # no A-ASSOCIATE-RJ: the connection was closed unread
        (refused,) = _audits("connection.refused", 1)
        assert refused.entity_id == "127.0.0.1" and refused.actor == "dicom"
        assert _audits("association.rejected", 0) == []
        assert handle.ae.active_associations == []
    finally:
        handle.shutdown()
    assert handle.server not in handle.ae._servers  # noqa: SLF001


def test_permitted_address_still_associates_and_ae_titles_are_still_checked(radpath_env, monkeypatch):
    handle = _start(radpath_env, monkeypatch, '{"ECHOSCU": ["127.0.0.1"], "FAR": ["10.9.9.9"]}')
    try:
        ok = _echo(handle.port, "ECHOSCU")
        assert ok.returncode == 0, ok.stderr
        far = _echo(handle.port, "FAR")  # the address may be ECHOSCU's, so it gets as far as A-ASSOCIATE-RQ
        assert far.returncode != 0 and "Rejected" in far.stderr
        assert [r.entity_id for r in _audits("association.rejected", 1)] == ["FAR"]
        assert _audits("connection.refused", 0) == []
    finally:
        handle.shutdown()


def test_an_association_addressed_to_another_node_is_rejected_and_audited(radpath_env, monkeypatch):
    """A modality configured for another node's AE title must not have its images filed here."""
    handle = _start(radpath_env, monkeypatch, '{"CT1": ["127.0.0.1"]}')
    try:
        wrong = _echo(handle.port, "CT1", called="OTHER_PACS")
        assert wrong.returncode != 0 and "Rejected" in wrong.stderr
        assert "Called AE Title Not Recognized" in wrong.stderr  # PS3.8 reason 7
        (rejected,) = _audits("association.rejected", 1)
        assert rejected.entity_id == "CT1" and "OTHER_PACS" in rejected.detail["reason"]
        assert _echo(handle.port, "CT1").returncode == 0  # the node's own title still associates
    finally:
        handle.shutdown()


def test_any_called_ae_title_is_accepted_only_when_configured(radpath_env, monkeypatch):
    monkeypatch.setenv("RADPATH_DICOM_REQUIRE_CALLED_AE", "false")
    handle = _start(radpath_env, monkeypatch, '{"CT1": ["127.0.0.1"]}')
    try:
        assert _echo(handle.port, "CT1", called="ANY-SCP").returncode == 0
    finally:
        handle.shutdown()


def test_pynetdicom_internals_the_scp_relies_on():
    """If a pynetdicom upgrade fails this, revisit integrations/dicom/scp.py (and the pin in pyproject)."""
    import inspect

    from pynetdicom import AE
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.transport import ThreadedAssociationServer

    assert isinstance(AE()._servers, list)  # noqa: SLF001 - start_scp registers its server there
    assert "server_class" in inspect.signature(AE.make_server).parameters
    assert "self.ae._servers.remove" in inspect.getsource(ThreadedAssociationServer.shutdown)
    assert "verify_request" in inspect.getsource(__import__("socketserver").BaseServer._handle_request_noblock)
    assert "self.to_provider_queue" in inspect.getsource(DULServiceProvider.__init__)  # _flush_reject waits on it


def test_peer_without_addresses_is_never_refused_at_accept(radpath_env, monkeypatch):
    handle = _start(radpath_env, monkeypatch, '{"MODALITY": []}')
    try:
        assert _echo(handle.port, "MODALITY").returncode == 0
        assert _audits("connection.refused", 0) == []
    finally:
        handle.shutdown()
