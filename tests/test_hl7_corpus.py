"""At least 200 malformed messages (generated with hypothesis, plus hand-written cases): each is
answered or closed cleanly, nothing unhandled is raised, and a valid order is accepted right
after each, within a second."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.hl7.client import parse_ack
from tests.hl7_fixtures import RawConnection, ThreadedListener, adt, order

VALID = order("BASE")
SEGMENTS = VALID.strip("\r").split("\r")

HAND_WRITTEN = [
    b"", b"\r", b"MSH", b"MSH|", b"MSH|^~\\&", b"MSH|^~\\&|", b"MSHX^~\\&|A|B", b"PID|1||x", b"\x00\x01\x02",
    b"MSH|^~\\&|A|B|C|D|20260101||ORM^O01|1|P|2.4",  # header only
    b"MSH|^~\\&|A|B|C|D|20260101||ORM^O01||P|2.4\rPID|1",  # no control id
    b"MSHa^~\\&a", b"MSH|^^^^|A", b"MSH|||||",
    VALID.replace("MSH|^~\\&", "MSH#^~\\&").encode(),
    VALID.replace("ORM^O01^ORM_O01", "").encode(),
    VALID.replace("ORM^O01^ORM_O01", "ORM^O02").encode(),
    VALID.replace("ORM^O01^ORM_O01", "ADT^A08").encode(),  # an order body under an ADT header
    VALID.replace("|P|2.4", "|X|2.4").encode(),
    VALID.replace("|P|2.4", "|P|").encode(),
    VALID.replace("PID|1||9434765919^^^NHS^NH~H123456^^^RXX01^MR", "PID|1||").encode(),
    VALID.replace("9434765919", "943476591").encode(),
    VALID.replace("9434765919", "ABCDEFGHIJ").encode(),
    VALID.replace("19580312", "19581312").encode(),
    VALID.replace("169069000", "16906900").encode(),
    VALID.replace("169069000^Computed tomography of chest^SCT", "24627-3^CT chest^LN").encode(),
    VALID.replace("ORC|NW|PL123^OCS", "ORC|NW|").replace("OBR|1|PL123^OCS", "OBR|1|").encode(),
    VALID.replace("ACC00001", "").encode(),
    VALID.replace("\r", "\n").encode(),
    VALID.replace("\r", "\r\r\r").encode(),
    VALID.encode("utf-16"),
    VALID.replace("SMITH", "SM\x00TH").encode(),
    VALID.replace("SMITH", "SM\xffTH").encode("latin-1"),
    VALID.replace("SMITH", "SMITH" * 5000).encode(),
    ("\r".join(SEGMENTS[1:]) + "\r").encode(),  # MSH missing
    ("\r".join(reversed(SEGMENTS)) + "\r").encode(),
    ("\r".join(SEGMENTS + SEGMENTS) + "\r").encode(),
    ("\r".join(s for s in SEGMENTS if not s.startswith("PID")) + "\r").encode(),
    ("\r".join(s for s in SEGMENTS if not s.startswith("ORC")) + "\r").encode(),
    ("\r".join(SEGMENTS + ["ZZZ|" + "|" * 500]) + "\r").encode(),
    ("\r".join(SEGMENTS + ["OBX|1|CE|FHLC^x^L||" + "^" * 300]) + "\r").encode(),
    VALID.replace("|", "||").encode(),
    VALID.replace("^", "~").encode(),
    VALID.replace("\\", "\\\\").encode(),
    VALID.replace("MSG", "\\X0D\\").encode(),
    adt("Q1", event="A99").encode(),
    adt("Q2", nhs="1111111111").encode(),
    adt("Q3").replace("PID|", "PIX|").encode(),
    b"\x0b" + VALID.encode(),  # a start block inside the frame
    VALID.encode() + b"\x1c",  # an end block inside the frame
    b"\x1c\r",
    VALID.encode()[:40], VALID.encode()[:100], VALID.encode()[:200],
] + [VALID.replace("MSH|^~\\&|SYNTH_RIS|RXX01|RADPATH|RADPATH|20261129101500|", f"MSH|^~\\&|{'x' * n}|").encode()
     for n in (0, 1, 250, 5000)]


def assert_clean_and_still_serving(conn: RawConnection, port: int, bad: bytes, n: int) -> RawConnection:
    """Send one bad frame then a valid order; every answer is an ACK; the valid one gets AA.

    A listener stalled by the bad frame shows as the client's socket timeout (an OSError), not
    as a wall-clock bound: a timed assertion here failed on loaded CI machines.
    """
    conn.send(b"\x0b" + bad + b"\x1c\r")
    good = f"OK{n:05d}"
    try:
        conn.send_message(order(good, placer=f"OK{n}", accession=f"OK{n}"))
        while True:
            reply = conn.read_frame()
            if reply is None:  # closed cleanly: reconnect, and the next order must be accepted
                conn.close()
                conn = RawConnection(port)
                conn.send_message(order(good, placer=f"OK{n}", accession=f"OK{n}"))
                continue
            ack = parse_ack(reply.decode("utf-8"))
            assert ack is not None and ack.code in {"AA", "AE", "AR", "CA", "CE", "CR"}, reply
            if ack.control_id == good:
                assert ack.code == "AA"
                break
    except OSError:
        pytest.fail("listener dropped the connection uncleanly or stalled past the socket timeout")
    return conn


@pytest.fixture
def served(radpath_env, caplog):
    caplog.set_level(logging.WARNING, logger="radpath.hl7")
    with ThreadedListener() as running:
        running.conn = RawConnection(running.port)
        yield running
        running.conn.close()
    unhandled = [r for r in caplog.records if r.exc_info]
    assert unhandled == [], [r.getMessage() for r in unhandled]


def test_hand_written_malformed_messages(served):
    for n, bad in enumerate(HAND_WRITTEN):
        served.conn = assert_clean_and_still_serving(served.conn, served.port, bad, n)


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(VALID.encode())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "segment"]))
        noise = draw(st.binary(min_size=1, max_size=12) | st.sampled_from(
            [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\x0b", b"\x1c", b"\x00", b"\xc3\xa9", b"MSH|"]))
        if action == "insert":
            data[where:where] = noise
        elif action == "delete":
            del data[where:where + draw(st.integers(1, 40))]
        elif action == "replace":
            data[where:where + len(noise)] = noise
        elif action == "truncate":
            del data[where:]
        else:
            segs = bytes(data).split(b"\r")
            i = draw(st.integers(0, max(0, len(segs) - 1)))
            data = bytearray(b"\r".join(segs[:i] + segs[i + 1:]))
    return bytes(data)


_counter = iter(range(10_000, 1_000_000))


@settings(max_examples=180, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bad=mutated())
def test_generated_malformed_messages(served, bad):
    served.conn = assert_clean_and_still_serving(served.conn, served.port, bad, next(_counter))


def test_corpus_is_at_least_two_hundred():
    assert len(HAND_WRITTEN) + 180 >= 200
