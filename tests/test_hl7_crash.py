"""Kill the listener between receive and commit, and between commit and ACK: every order that
got AA is in the ledger, none twice. The listener runs as a subprocess with a crash hook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hl7.client
import pytest
from sqlmodel import select

from integrations.db.engine import session_scope
from integrations.db.models import InboundMessage, Order
from tests.hl7_fixtures import msa, order

ROOT = Path(__file__).resolve().parents[1]


def start_listener(tmp_path: Path, crash_at: str | None) -> tuple[subprocess.Popen, int]:
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    env = {**os.environ, "RADPATH_TEST_CRASH_AT": crash_at or ""}
    proc = subprocess.Popen([sys.executable, "-m", "integrations.hl7.listener", "--port", "0", "--ready-file", str(ready)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"listener did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    return proc, int(ready.read_text())


def send_all(port: int, messages: list[str]) -> dict[str, str]:
    """Send in order on one connection; {control id: MSA-1} for every ACK that came back."""
    acks: dict[str, str] = {}
    try:
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            for message in messages:
                reply = client.send_message(message)
                if not reply:
                    break  # the listener died: no ACK for this one
                code, control = msa(reply)
                acks[control] = code
    except OSError:
        pass
    return acks


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["before-commit", "after-commit"])
def test_killed_listener_loses_no_acknowledged_order_and_duplicates_none(radpath_env, tmp_path, stage):
    messages = [order(f"K{i}", placer=f"P{i}", accession=f"A{i}") for i in range(8)]
    proc, port = start_listener(tmp_path, f"{stage}:4")
    first = send_all(port, messages)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert len(first) == 3 and set(first.values()) == {"AA"}  # the 4th never got its ACK

    proc, port = start_listener(tmp_path, None)
    try:
        second = send_all(port, messages)  # the sender resends everything not acknowledged (and more)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert set(second.values()) == {"AA"} and len(second) == 8
    with session_scope() as s:
        placed = [o.placer_order_number for o in s.exec(select(Order)).all()]
        controls = [m.control_id for m in s.exec(select(InboundMessage)).all()]
    assert sorted(placed) == sorted(f"P{i}" for i in range(8))  # all there, none twice
    assert sorted(controls) == sorted(f"K{i}" for i in range(8))
    assert set(first) <= set(controls)
