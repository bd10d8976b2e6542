"""A local PACS for the demo: a real DICOM C-STORE SCP (pynetdicom) that keeps what it gets.

It counts every object received and every duplicate SOP Instance UID, so the demo can show
that results reached PACS exactly once. Tests use a real Orthanc instead (tests/orthanc.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification


class PacsSimulator:
    def __init__(self, folder: Path, ae_title: str = "PACS", host: str = "127.0.0.1", port: int = 0):
        self.folder, self.ae_title, self.host, self.port = folder, ae_title, host, port
        self.received: Counter[str] = Counter()  # SOP Instance UID → times received
        self.modalities: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = None

    def _on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received[ds.SOPInstanceUID] += 1
            self.modalities[str(ds.get("Modality", ""))] += 1
            self.folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(self.folder / f"{len(self.received):04d}-{ds.Modality}.dcm", enforce_file_format=True)
        return 0x0000

    def start(self) -> int:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self._server.server_address[1]
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.received.values())

    def __enter__(self) -> PacsSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
