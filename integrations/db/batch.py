"""Batched units of work on one writer thread: callers that arrive together share one
transaction and one fsync, so the ledger does not cap a front door's throughput (the HL7
intake's commits). Each caller's future resolves only after the commit that holds its unit.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from integrations.db.engine import get_engine

CRASH_ENV = "RADPATH_TEST_CRASH_AT"


class FaultInjector:
    """Test hook: SIGKILL this process at a commit stage once N messages got there.

    RADPATH_TEST_CRASH_AT="before-commit:N" (after receive, before commit) or
    "after-commit:N" (after commit, before the ACK is sent).
    """

    def __init__(self, spec: str | None):
        stage, _, count = (spec or "").partition(":")
        self.stage, self.count, self.seen = stage or None, int(count or 1), 0

    @classmethod
    def from_env(cls) -> FaultInjector:
        return cls(os.environ.get(CRASH_ENV))

    def reached(self, stage: str, n: int) -> None:
        if stage != self.stage:
            return
        self.seen += n
        if self.seen >= self.count:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class _Work:
    fn: Callable[[Session], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class BatchCommitter:
    """One writer thread; messages that arrive together share one transaction and one fsync.

    A future resolves only after the commit that holds its message (or fails with the
    error): callers acknowledge after `await run(fn)` returns, never before.
    """

    def __init__(self, max_batch: int = 64, fault: FaultInjector | None = None):
        self.max_batch = max_batch
        self.fault = fault or FaultInjector(None)
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ledger-committer", daemon=True)
        self._thread.start()
        self.batches = 0

    async def run(self, fn: Callable[[Session], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Work(fn, future, loop))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_Work]) -> None:
        try:
            with Session(get_engine(), expire_on_commit=False) as session:
                results = [w.fn(session) for w in batch]
                session.flush()
                self.fault.reached("before-commit", len(batch))
                session.commit()
            self.batches += 1
            self.fault.reached("after-commit", len(batch))
        except Exception as exc:  # noqa: BLE001 - one bad unit must not sink its neighbours
            if len(batch) > 1:
                for work in batch:
                    self._commit([work])
                return
            _resolve(batch[0], error=exc)
            return
        for work, result in zip(batch, results):
            _resolve(work, result=result)


def _resolve(work: _Work, *, result: Any = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if work.future.done():
            return
        if error is not None:
            work.future.set_exception(error)
        else:
            work.future.set_result(result)

    work.loop.call_soon_threadsafe(settle)
