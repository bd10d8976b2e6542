"""Durable files: all-or-nothing writes and fsyncs, shared by the image store and the result
files (SR, SEG, FHIR Bundle, ORU) written before they are delivered."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """The name a file is written under before its rename: <stem>.tmp<pid>.<thread>, unique per
    writer (the store sweep recognises and removes stale ones)."""
    return path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")


def write_durably(path: Path, data: bytes | Iterable[bytes], sync_folder: bool = True) -> None:
    """Write to a temporary name, fsync, rename, fsync the folder: all or nothing on disk.
    `data` may be chunks (an export streamed from the ledger) rather than one bytes object.
    With sync_folder=False the caller fsyncs the folder itself (once for many files) before
    anything that depends on the new name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    with open(tmp, "wb") as f:
        for chunk in [data] if isinstance(data, bytes) else data:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_folder:
        fsync_folder(path.parent)


def fsync_file(path: Path) -> None:
    """Make a file's bytes durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` (new files, renames) durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
