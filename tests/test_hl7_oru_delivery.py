"""ORU^R01 delivery over MLLP against an independent receiver (python-hl7's asyncio MLLP server)
that answers AA, AE, AR, late, or not at all — and against radpath's RIS simulator. One try
per send: the outbox schedules the next (tests/test_outbox_retry.py)."""

from __future__ import annotations

import asyncio
import socket
import threading

import hl7
import hl7.mllp
import pytest

from integrations.delivery.config import MllpDestination
from integrations.delivery.send import send
from integrations.errors import PermanentError, TransientError
from integrations.hl7.client import MllpClient
from radpath.ris_simulator import RisSimulator

ORU = "\r".join([
    "MSH|^~\\&|RADPATH|RADPATH|RIS|RXX01|20261129120000+0000||ORU^R01^ORU_R01|RPA1B2C3D4E5F6A7B8C9|P|2.4",
    "PID|1||9434765919^^^NHS^NH||SMITH^JANE||19580312|F",
    "ORC|RE|PL123|ACC00001|||CM",
    "OBR|1|PL123|ACC00001|169069000^Computed tomography of chest^SCT|||20261129120000+0000|||||||||||ACC00001||||20261129120000+0000||RAD|F",
    "OBX|1|TX|18782-3^Radiology Study observation (narrative)^LN||No nodules.||||||F",
]) + "\r"
CONTROL_ID = "RPA1B2C3D4E5F6A7B8C9"


class IndependentReceiver:
    """python-hl7's MLLP server; `answers` is consumed one per message ("AA", "AE", "AR",
    "none", "late" = an ACK for an older control id first, then nothing)."""

    def __init__(self, answers):
        self.answers, self.received = list(answers), []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _client(self, reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self.received.append(str(message.segment("MSH")[10]))
                answer = self.answers.pop(0) if self.answers else "AA"
                if answer == "none":
                    continue
                if answer == "late":
                    writer.writemessage(hl7.parse(str(message.create_ack("AA")).replace(CONTROL_ID, "EARLIER0001")))
                else:
                    writer.writemessage(message.create_ack(answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def __enter__(self):
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            hl7.mllp.start_hl7_server(self._client, host="127.0.0.1", port=0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc):
        async def close():
            self.server.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "oru-r01.hl7"
    path.write_bytes(ORU.encode())
    return [str(path)]


def destination(port, **kw) -> MllpDestination:
    return MllpDestination(host="127.0.0.1", port=port, ack_timeout_s=kw.pop("ack_timeout_s", 0.5), **kw)


def test_aa_delivers(payload):
    with IndependentReceiver(["AA"]) as ris:
        receipt = send("ris", destination(ris.port), "key", payload)
    assert receipt.startswith(f"ACK AA {CONTROL_ID}") and ris.received == [CONTROL_ID]


def test_ae_is_dead_lettered_by_default_and_retried_when_configured(payload):
    with IndependentReceiver(["AE"]) as ris:
        with pytest.raises(PermanentError, match="answered AE") as err:
            send("ris", destination(ris.port), "key", payload)
    assert err.value.peer["ack_code"] == "AE" and err.value.peer["control_id"] == CONTROL_ID
    with IndependentReceiver(["AE", "AA"]) as ris:
        with pytest.raises(TransientError, match="answered AE"):
            send("ris", destination(ris.port, on_ae="retry"), "key", payload)
        assert "AA" in send("ris", destination(ris.port, on_ae="retry"), "key", payload)


def test_ar_is_transient_and_each_try_sends_the_same_control_id(payload):
    with IndependentReceiver(["AR", "AR", "AA"]) as ris:
        for _ in range(2):
            with pytest.raises(TransientError, match="answered AR") as err:
                send("ris", destination(ris.port), "key", payload)
            assert err.value.peer["ack_code"] == "AR"
        assert "AA" in send("ris", destination(ris.port), "key", payload)
    assert ris.received == [CONTROL_ID] * 3  # MSH-10 fixed across retries, one message per try
    with IndependentReceiver(["AR"]) as ris:
        with pytest.raises(PermanentError):
            send("ris", destination(ris.port, on_ar="dead-letter"), "key", payload)


def test_the_ack_text_and_error_code_travel_with_the_error():
    from integrations.delivery.mllp import ack_error
    from integrations.hl7.client import parse_ack

    v25 = "MSH|^~\\&|RIS|RXX01|RADPATH|RADPATH|20261206||ACK^R01|A1|P|2.5.1\rMSA|AE|RP1|Unknown order 12345678\r" \
          "ERR|||207^Application internal error^HL70357|E||||Order not on worklist"
    ack = parse_ack(v25)
    assert (ack.code, ack.error_code, ack.text) == ("AE", "207", "Unknown order 12345678")
    err = ack_error(destination(1), ack)
    assert isinstance(err, PermanentError) and err.peer == {
        "ack_code": "AE", "control_id": "RP1", "error_code": "207", "text": "Unknown order #"}
    v24 = "MSH|^~\\&|RIS|RXX01|RADPATH|RADPATH|20261206||ACK^R01|A2|P|2.4\rMSA|AR|RP2\rERR|^^^204&Unknown key identifier"
    ack = parse_ack(v24)
    assert (ack.code, ack.error_code, ack.text) == ("AR", "204", "Unknown key identifier")
    assert isinstance(ack_error(destination(1), ack), TransientError)


def test_no_answer_times_out_and_is_transient(payload):
    with IndependentReceiver(["none", "AA"]) as ris:
        with pytest.raises(TransientError, match="no ACK"):
            send("ris", destination(ris.port), "key", payload)
        assert "AA" in send("ris", destination(ris.port), "key", payload)


def test_a_late_ack_for_an_earlier_message_is_never_taken(payload):
    with IndependentReceiver(["late"]) as ris:
        client = MllpClient("127.0.0.1", ris.port, ack_timeout=0.5)
        with pytest.raises(TransientError, match="no ACK"):
            client.send(ORU)


def test_refused_connection_is_transient(payload):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(TransientError, match="failed"):
            send("ris", destination(port), "key", payload)


def test_ris_simulator_answers_as_scripted(payload):
    with RisSimulator(script=["AR", "late:0.1"], default="AE") as ris:
        with pytest.raises(TransientError, match="answered AR"):
            send("ris", destination(ris.port), "key", payload)
        assert "AA" in send("ris", destination(ris.port), "key", payload)  # AA after 0.1 s
        with pytest.raises(PermanentError):
            send("ris", destination(ris.port), "key", payload)
    assert [m.answer for m in ris.received] == ["AR", "late:0.1", "AE"]
    assert {m.control_id for m in ris.received} == {CONTROL_ID} and ris.received[0].message_type == "ORU^R01"
    with RisSimulator(script=["stale"]) as ris:
        with pytest.raises(TransientError):
            MllpClient("127.0.0.1", ris.port, ack_timeout=0.3).send(ORU)


def test_mllp_destination_config_in_settings(monkeypatch, radpath_env):
    from integrations.settings import Settings

    settings = Settings(destinations={"ris": {"kind": "mllp", "host": "ris.trust.nhs.uk", "port": 6661,
                                              "hl7_version": "2.5.1", "receiving_facility": "RXX01"}})
    config = settings.destination("ris")
    assert isinstance(config, MllpDestination) and config.on_ae == "dead-letter" and config.on_ar == "retry"
