"""A real Orthanc (Debian package, DICOMweb plugin) as the test PACS, on free loopback ports.

Each instance gets its own folder and a generated JSON configuration: DICOM port, HTTP port,
the DICOMweb plugin (path found from the orthanc-dicomweb package), AE title "ORTHANC",
radpath registered as modality "radpath" (so C-MOVE can send to it), and TCP_NODELAY=1 in its
environment (DCMTK inside Orthanc keeps Nagle on otherwise).

Refusing first attempts: with `known_peers_only=True` Orthanc rejects associations from calling
AE titles it does not know (DicomAlwaysAllowStore/Echo false); `allow(ae)` registers one through
the REST API (PUT /modalities), so later attempts succeed. (A Lua ReceivedInstanceFilter is no
use here: Orthanc 1.10 answers a filtered C-STORE with success and drops the instance.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import require_tool

AE_TITLE = "ORTHANC"
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",)



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dicomweb_plugin() -> str:
    """The DICOMweb plugin shipped by the orthanc-dicomweb package."""
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True).stdout
        for line in listed.splitlines():
            if "libOrthancDicomWeb.so" in line and Path(line).is_file():
                return line
    except (OSError, subprocess.CalledProcessError):
        pass
    for candidate in PLUGIN_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    raise FileNotFoundError("the orthanc-dicomweb package is not installed")


class Orthanc:
    """One Orthanc process; `.rest` is an httpx client on its REST API."""

    def __init__(self, folder: Path, *, radpath_port: int = 0, radpath_ae: str = "RADPATH", known_peers_only: bool = False):
        self.folder = folder
        self.binary = require_tool("Orthanc")
        self.http_port, self.dicom_port = free_port(), free_port()
        self.radpath_ae, self.radpath_port = radpath_ae, radpath_port
        self.known_peers_only = known_peers_only
        self.process: subprocess.Popen | None = None
        self.rest = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30)

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def config(self) -> dict:
        config = {
            "Name": "radpath-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AE_TITLE,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": not self.known_peers_only,
            "DicomAlwaysAllowEcho": not self.known_peers_only,
            "DicomAlwaysAllowFind": not self.known_peers_only,
            "DicomAlwaysAllowMove": not self.known_peers_only,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SaveJobs": False,
            "StorageCompression": False,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "StudiesMetadata": "Full"},
            "DicomModalities": {"radpath": [self.radpath_ae, "127.0.0.1", self.radpath_port or 104]},
        }
        return config

    def allow(self, name: str, ae_title: str, port: int = 104) -> None:
        """Register a calling AE title as a known modality (REST API), so it may associate."""
        body = {"AET": ae_title, "Host": "127.0.0.1", "Port": port, "AllowEcho": True, "AllowStore": True, "AllowFind": True,
                "AllowMove": True, "AllowGet": True}
        self.rest.put(f"/modalities/{name}", json=body).raise_for_status()

    def start(self, wait_s: float = 30.0) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        env = {**os.environ, "TCP_NODELAY": "1"}
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen([self.binary, str(path)], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if self.rest.get("/system").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("Orthanc did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.rest.close()

    def instances(self) -> list[str]:
        return self.rest.get("/instances").raise_for_status().json()

    def sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs of every instance Orthanc holds (one entry per stored object)."""
        out = []
        for oid in self.instances():
            tags = self.rest.get(f"/instances/{oid}/simplified-tags").raise_for_status().json()
            out.append(tags["SOPInstanceUID"])
        return out

    def upload(self, data: bytes) -> dict:
        return self.rest.post("/instances", content=data).raise_for_status().json()

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
