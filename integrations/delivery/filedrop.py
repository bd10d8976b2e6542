"""File-drop destination: results appear in a folder another system watches.

Each delivery lands in its own folder named by its idempotency key, written under a
temporary name and renamed into place, so a watcher never sees half a delivery and a
retry after a crash rewrites the same folder rather than adding a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from integrations.errors import PermanentError


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deliver_files(target_dir: Path, idempotency_key: str, payloads: Sequence[str]) -> str:
    """Place the payload files in target_dir/<key>/ atomically; return a receipt line."""
    sources = [Path(p) for p in payloads]
    missing = [p.name for p in sources if not p.exists()]
    if missing:
        raise PermanentError(f"payload files missing: {', '.join(missing)}")
    final = target_dir / idempotency_key
    manifest = {p.name: _digest(p) for p in sources}
    if (final / "manifest.json").exists():
        if json.loads((final / "manifest.json").read_text()) == manifest:
            return f"already present in {final.name} ({len(sources)} files)"
        raise PermanentError("a different delivery already sits under this idempotency key")
    staging = target_dir / f".{idempotency_key}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for src in sources:
        shutil.copyfile(src, staging / src.name)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    for f in staging.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(staging, final)
    dir_fd = os.open(target_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return f"written to {final.name} ({len(sources)} files)"
