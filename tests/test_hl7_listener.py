"""The MLLP listener against an independent HL7 stack (python-hl7's MLLP client and mllp_send)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import hl7
import hl7.client
import hl7.mllp
import pytest
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import AuditEvent, Hl7Quarantine, InboundMessage, Order, PathwayRun
from integrations.hl7.intake import IntakeConfig
from integrations.hl7.listener import ListenerConfig
from tests.hl7_fixtures import RawConnection, ThreadedListener, adt, err, msa, order

pytestmark = pytest.mark.usefixtures("radpath_env")


@pytest.fixture
def listener():
    with ThreadedListener() as running:
        yield running


def send(port: int, *messages: str) -> list[bytes]:
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        return [client.send_message(m) for m in messages]


def settled(listener, n: int) -> list[str]:
    """Event names once n have arrived (events follow the ACK, so they may lag it briefly)."""
    deadline = time.monotonic() + 5
    while len(listener.events) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return [e.event for e in listener.events]


def orders() -> list[Order]:
    with session_scope() as s:
        return list(s.exec(select(Order)).all())


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5.1"])
def test_new_order_of_each_version_is_committed_then_acknowledged(listener, version):
    [ack] = send(listener.port, order("C1", version=version))
    assert msa(ack) == ("AA", "C1")
    [row] = orders()
    assert (row.accession_number, row.procedure_code, row.procedure_system, row.modality) == ("ACC00001", "169069000", "SCT", "CT")
    assert row.ordering_clinician == "C1234567^JONES^ALAN" and row.ordering_location == "RADIOLOGY^^^RXX01"
    assert row.priority == ("stat" if version == "2.5.1" else "routine")
    with session_scope() as s:
        assert s.exec(select(PathwayRun)).one().pathway == "lung-cancer-ct"
    assert settled(listener, 1) == ["order.received"]
    assert listener.orders[0].order_id == row.id and listener.orders[0].eligible
    assert set(listener.events[0].payload) == {"eligible", "runs"}  # opaque: no identifiers


def test_resend_gets_the_stored_ack_and_creates_nothing(listener):
    first, again = send(listener.port, order("C1"), order("C1"))
    assert first == again and msa(first) == ("AA", "C1")
    assert len(orders()) == 1 and len(listener.orders) == 1
    with session_scope() as s:
        assert len(s.exec(select(InboundMessage)).all()) == 1


def test_same_order_under_a_new_control_id_is_not_created_twice(listener):
    acks = send(listener.port, order("C1"), order("C2"))
    assert [msa(a)[0] for a in acks] == ["AA", "AA"]
    assert len(orders()) == 1


OTHER_NHS = "9434765870"  # another patient (valid modulus-11)


@pytest.mark.parametrize(("clash", "err_prefix"), [
    ({"placer": "PL123", "accession": "ACC00002"}, "ERR|ORC^1^2^205"),  # same placer number, same sender
    ({"placer": "PL999", "accession": "ACC00001"}, "ERR|OBR^1^18^205"),  # same accession
])
def test_an_order_naming_another_patients_order_is_refused_ae_and_audited(listener, clash, err_prefix):
    """Never merged, never silently absorbed: AE with ERR 205 (duplicate key identifier) naming
    the field, the refusal audited, the first order and its run untouched; the listener serves on."""
    [first] = send(listener.port, order("C1"))
    [ack] = send(listener.port, order("C2", nhs=OTHER_NHS, **clash))
    assert msa(first)[0] == "AA" and msa(ack) == ("AE", "C2") and err(ack).startswith(err_prefix), ack
    assert "another patient" in ack.decode() and OTHER_NHS not in ack.decode()  # MSA-3 (v2.4) says why
    [row] = orders()
    with session_scope() as s:
        assert row.patient_key and [r.status for r in s.exec(select(PathwayRun)).all()] == ["waiting"]
        [conflict] = s.exec(select(AuditEvent).where(AuditEvent.action == "order.conflict")).all()
        message = s.exec(select(InboundMessage).where(InboundMessage.control_id == "C2")).one()
    assert conflict.entity_id == row.id and conflict.detail["message_id"] == message.id
    assert message.status == "rejected" and OTHER_NHS not in str(conflict.detail)
    [again] = send(listener.port, order("C2", nhs=OTHER_NHS, **clash))  # a resend: the same answer
    assert again == ack
    [cancel] = send(listener.port, order("C3", nhs=OTHER_NHS, control_code="CA", **clash))
    assert msa(cancel)[0] == "AE" and orders()[0].status == "received"  # another patient's CA cancels nothing
    [next_order] = send(listener.port, order("C4", placer="PL2", accession="ACC00002"))
    assert msa(next_order)[0] == "AA" and len(orders()) == 2


def test_cancel_change_and_adt_update(listener):
    acks = send(
        listener.port,
        order("C1"),
        order("C2", control_code="XO", procedure="71651007^Mammography^SCT", modality="MG"),
        adt("A1", family="NEWNAME"),
        adt("A2", event="A31", family="NEWER"),
        order("C3", control_code="SC"),
        order("C4", control_code="CA"),
    )
    assert [msa(a)[0] for a in acks] == ["AA"] * 6
    [row] = orders()
    assert (row.status, row.procedure_code, row.modality, row.family_name) == ("cancelled", "71651007", "MG", "NEWER")
    with session_scope() as s:
        assert s.exec(select(PathwayRun)).one().status == "not_eligible"  # procedure changed away
    assert settled(listener, 5) == ["order.received", "order.changed", "patient.updated",
                                                  "patient.updated", "order.cancelled"]


def test_cancel_of_an_unknown_order_is_ae_naming_orc2(listener):
    [ack] = send(listener.port, order("C9", control_code="CA", placer="NOPE"))
    assert msa(ack) == ("AE", "C9") and err(ack).startswith("ERR|ORC^1^2^204")


def test_order_no_pathway_claims_is_accepted_and_visibly_not_eligible(listener):
    [ack] = send(listener.port, order("C1", procedure="71651007^Mammography^SCT", modality="MG"))
    assert msa(ack)[0] == "AA"
    settled(listener, 1)
    assert orders()[0].status == "not_eligible" and not listener.orders[0].eligible
    assert listener.events[0].payload == {"eligible": False, "runs": 0}


@pytest.mark.parametrize(
    ("message", "code", "err_prefix"),
    [
        (order("B1", nhs="9434765918"), "AE", "ERR|PID^1^3^102"),
        (order("B2", procedure="169069001^Bad check digit^SCT"), "AE", "ERR|OBR^1^4^103"),
        (order("B3", procedure="^^SCT"), "AE", "ERR|OBR^1^4^101"),
        (order("B4").replace("ORM^O01^ORM_O01", "SIU^S12^SIU_S12"), "AR", "ERR|MSH^1^9^200"),
        (order("B5").replace("|P|2.4", "|P|2.9"), "AR", "ERR||MSH^1^12|203"),  # answered in the sender's (v2.5+) layout
        (order("B6", charset="UNICODE UTF-16"), "AR", "ERR|MSH^1^18^103"),
        (order("B7", control_code="ZZ"), "AE", "ERR|ORC^1^1^103"),
        ("\r".join(s for s in order("B8").split("\r") if not s.startswith("OBR")), "AE", "ERR|OBR"),
        (order("B9", version="2.5.1", nhs="123"), "AE", "ERR||PID^1^3|102"),  # v2.5 ERR layout
    ],
)
def test_bad_orders_get_ae_or_ar_naming_the_field_and_are_quarantined(listener, message, code, err_prefix):
    [ack] = send(listener.port, message)
    assert msa(ack)[0] == code and err(ack).startswith(err_prefix), ack
    assert orders() == []
    with session_scope() as s:
        [q] = s.exec(select(Hl7Quarantine)).all()
        assert q.raw == message.encode() and q.ack
    [again] = send(listener.port, message)  # a resend gets the same answer
    assert msa(again) == msa(ack)


def _with_repeat(message: str, name: str, replacement: str | None = None) -> str:
    """The message with its `name` segment repeated (optionally as `replacement`) after itself."""
    segments = message.rstrip("\r").split("\r")
    i = next(k for k, s in enumerate(segments) if s.startswith(name))
    segments.insert(i + 1, replacement or segments[i])
    return "\r".join(segments) + "\r"


@pytest.mark.parametrize(
    ("message", "err_prefix"),
    [
        # two patients in one order: filed under either, it is a wrong-patient result
        (_with_repeat(order("S1"), "PID", "PID|2||9990000026^^^NHS^NH||OTHER^ANNE||19700101|F"), "ERR|PID^2^^100"),
        (_with_repeat(order("S2"), "MSH"), "ERR|MSH^2^^100"),
        # a second order group would be silently dropped (a lost order): refused instead
        (_with_repeat(_with_repeat(order("S3"), "OBR"), "ORC"), "ERR|ORC^2^^100"),
        (_with_repeat(adt("S4"), "PID", "PID|2||9990000026^^^NHS^NH||OTHER^ANNE||19700101|F"), "ERR|PID^2^^100"),
    ],
)
def test_a_segment_that_must_be_single_is_refused_naming_it(listener, message, err_prefix):
    [ack] = send(listener.port, message)
    assert msa(ack)[0] == "AE" and err(ack).startswith(err_prefix), ack
    assert orders() == []
    [ok] = send(listener.port, order("S9", placer="PL-S9", accession="ACC-S9"))  # the next order is served
    assert msa(ok)[0] == "AA" and len(orders()) == 1


def test_character_sets(listener):
    accented = order("U1", charset="UNICODE UTF-8", family="BRONTË")
    conn = RawConnection(listener.port)
    conn.send(b"\x0b" + accented.encode("utf-8") + b"\x1c\r")
    assert msa(conn.read_frame())[0] == "AA"
    conn.send(b"\x0b" + order("U2", placer="P2", family="BRONTË").encode("latin-1") + b"\x1c\r")  # no MSH-18: ASCII
    ack = conn.read_frame()
    assert msa(ack) == ("AE", "U2") and err(ack).startswith("ERR|PID^1^5^102")
    conn.send(b"\x0b" + order("U3", placer="P3", accession="A3", charset="8859/1", family="BRONTË").encode("latin-1") + b"\x1c\r")
    assert msa(conn.read_frame())[0] == "AA"
    assert sorted(o.family_name for o in orders()) == ["BRONTË", "BRONTË"]


def test_enhanced_mode_commit_ack_then_application_ack(listener):
    async def exchange():
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", listener.port)
        writer.writemessage(hl7.parse(order("E1", ack_types=("AL", "AL"))))
        first = await asyncio.wait_for(reader.readmessage(), 5)
        second = await asyncio.wait_for(reader.readmessage(), 5)
        writer.writemessage(hl7.parse(order("E2", nhs="9434765918", ack_types=("AL", "ER"))))
        third = await asyncio.wait_for(reader.readmessage(), 5)
        fourth = await asyncio.wait_for(reader.readmessage(), 5)
        writer.close()
        return [str(m) for m in (first, second, third, fourth)]

    acks = asyncio.run(exchange())
    assert [msa(a) for a in acks] == [("CA", "E1"), ("AA", "E1"), ("CA", "E2"), ("AE", "E2")]


def test_commit_failure_never_gives_aa(listener, monkeypatch):
    from integrations.db import orders as ledger_orders

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ledger_orders, "record", broken)
    [ack] = send(listener.port, order("F1"))
    assert msa(ack) == ("AR", "F1") and "207" in err(ack)
    monkeypatch.undo()
    [ack] = send(listener.port, order("F1"))  # nothing was stored, so the resend is processed
    assert msa(ack) == ("AA", "F1") and len(orders()) == 1


def test_commit_failure_with_close_policy_sends_nothing(radpath_env, monkeypatch):
    from integrations.db import orders as ledger_orders

    monkeypatch.setattr(ledger_orders, "record", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with ThreadedListener(intake_config=IntakeConfig(on_commit_failure="close")) as running:
        conn = RawConnection(running.port)
        conn.send_message(order("F2"))
        assert conn.read_frame() is None  # closed, no ACK


@pytest.mark.slow
def test_thousand_messages_on_one_connection_answered_in_order(listener):
    conn = RawConnection(listener.port, timeout=60)
    messages = [adt(f"N{i:04d}") if i % 2 else order(f"N{i:04d}", placer=f"P{i}", accession=f"A{i}")
                for i in range(1000)]
    conn.send(b"".join(b"\x0b" + m.encode() + b"\x1c\r" for m in messages))  # pipelined, all at once
    answers = [msa(conn.read_frame()) for _ in messages]
    assert answers == [("AA", f"N{i:04d}") for i in range(1000)]
    assert len(orders()) == 500


def test_framing_errors_are_answered_and_the_next_frame_served(listener):
    conn = RawConnection(listener.port)
    conn.send(b"\x0b" + order("G1").encode()[:120])  # never terminated
    conn.send(b"junk outside any frame\r")
    conn.send_message(order("G2"))
    first, second = msa(conn.read_frame()), msa(conn.read_frame())
    assert first == ("AR", "G1") and second == ("AA", "G2")  # the junk was inside G1's broken frame
    conn.send(b"junk between frames\r")
    conn.send_message(order("G3", placer="P3"))
    assert msa(conn.read_frame()) == ("AA", "G3")  # junk outside a frame: quarantined, not answered
    with session_scope() as s:
        reasons = sorted(q.reason for q in s.exec(select(Hl7Quarantine)).all())
    assert [r.split(":")[1].strip()[:9] for r in reasons] == ["data outs", "frame not"]


def test_oversized_frame_is_refused_and_the_connection_keeps_serving(radpath_env):
    with ThreadedListener(ListenerConfig(port=0, max_frame_bytes=4096)) as running:
        conn = RawConnection(running.port)
        conn.send_message(order("H1") + "NTE|1||" + "x" * 10000 + "\r")
        conn.send_message(order("H2"))
        assert msa(conn.read_frame()) == ("AR", "H1")
        assert msa(conn.read_frame()) == ("AA", "H2")
        with session_scope() as s:
            assert s.exec(select(Hl7Quarantine)).one().size_bytes > 10000


def test_idle_timeout_and_connection_cap(radpath_env):
    with ThreadedListener(ListenerConfig(port=0, idle_timeout_s=0.3, max_connections=1)) as running:
        first = RawConnection(running.port)
        first.send_message(order("I1"))
        assert msa(first.read_frame())[0] == "AA"
        second = RawConnection(running.port)
        assert second.read_frame() is None  # over the cap: closed at once
        time.sleep(0.6)
        assert first.read_frame() is None  # idle: closed
        third = RawConnection(running.port)  # a slot is free again
        third.send_message(order("I2"))
        assert msa(third.read_frame())[0] == "AA"


def test_mllp_send_command_line_tool(listener, tmp_path):
    path = tmp_path / "orders.hl7"
    path.write_text("\n".join(order(f"M{i}", placer=f"P{i}", accession=f"A{i}").replace("\r", "\n") for i in range(3)))
    tool = str(__import__("pathlib").Path(sys.executable).with_name("mllp_send"))
    out = subprocess.run([tool, "--loose", "-f", str(path), "-p", str(listener.port), "127.0.0.1"],
                         capture_output=True, timeout=60, check=True).stdout
    assert out.count(b"MSA|AA|") == 3 and len(orders()) == 3
