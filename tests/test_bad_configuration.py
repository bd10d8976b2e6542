"""`radpath serve` with a configuration it cannot run with, started as an operator starts it (a
subprocess): exit status 2 and one line naming the setting and what is wrong, never a traceback,
and never a silent run on defaults the trust did not choose (issue 20).

PREFECT_API_URL points at a port nothing listens on: every case must fail before Prefect is
contacted, so none of them waits for a Prefect server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.served import ROOT, free_port


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RADPATH_")}
    base |= {"RADPATH_DATA_DIR": str(tmp_path / "data"), "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
             "RADPATH_MLLP_PORT": str(free_port()), "RADPATH_DICOM_PORT": str(free_port()),
             "RADPATH_HTTP_PORT": str(free_port())}
    return subprocess.run([sys.executable, "-m", "radpath.cli", "serve"], cwd=ROOT, env=base | env,
                          capture_output=True, text=True, timeout=120)


CASES = {
    "non-numeric port": ({"RADPATH_MLLP_PORT": "twenty"}, "RADPATH_MLLP_PORT"),
    "port out of range": ({"RADPATH_DICOM_PORT": "70000"}, "RADPATH_DICOM_PORT"),
    "peers not JSON": ({"RADPATH_DICOM_PEERS": "CT1=10.0.0.1"}, "RADPATH_DICOM_PEERS"),
    "AE title over 16 characters": ({"RADPATH_DICOM_AE_TITLE": "A" * 20}, "RADPATH_DICOM_AE_TITLE"),
    "zero runner limit": ({"RADPATH_RUNNER_LIMIT": "0"}, "RADPATH_RUNNER_LIMIT"),
    "config file missing": ({"RADPATH_CONFIG": "/nonexistent/radpath.toml"}, "RADPATH_CONFIG"),
    "specs folder missing": ({"RADPATH_PATHWAYS_DIR": "/nonexistent/specs"}, "RADPATH_PATHWAYS_DIR"),
    "code map missing": ({"RADPATH_CODE_MAP": "/nonexistent/code-map.yaml"}, "RADPATH_CODE_MAP"),
    "database URL nonsense": ({"RADPATH_DATABASE_URL": "nonsense://db"}, "RADPATH_DATABASE_URL"),
    "TLS certificate without its key": ({"RADPATH_TLS_CERT_FILE": "/nonexistent/server.pem"}, "RADPATH_TLS_KEY_FILE"),
    "TLS files missing": ({"RADPATH_TLS_CERT_FILE": "/nonexistent/server.pem", "RADPATH_TLS_KEY_FILE": "/nonexistent/k"},
                          "RADPATH_TLS_CERT_FILE"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_setting_is_one_line_naming_it_and_a_non_zero_exit(tmp_path, case):
    env, setting = CASES[case]
    done = _serve(tmp_path, **env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and setting in lines[0], done.stderr[-2000:]


def test_an_unwritable_data_dir_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = _serve(tmp_path, RADPATH_DATA_DIR=str(blocker / "data"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "RADPATH_DATA_DIR" in done.stderr


@pytest.mark.parametrize("setting", ["RADPATH_MLLP_PORT", "RADPATH_DICOM_PORT", "RADPATH_HTTP_PORT"])
def test_a_port_already_taken_is_named(tmp_path, setting):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _serve(tmp_path, **{setting: str(port)})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{setting}={port}" in done.stderr and "in use" in done.stderr.lower()
