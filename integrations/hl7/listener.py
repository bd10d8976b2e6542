"""The MLLP listener: persistent connections, many messages per connection answered in
order, a frame size limit, an idle timeout and a cap on concurrent connections.

hl7apy parses (in `intake`), but does not own the socket: its bundled server closes the
connection after each message and has no size limit. Commit first, acknowledge second,
emit events third — the callbacks run only after the ACK is written.

Run standalone (tests, ops): `python -m integrations.hl7.listener --port 2575`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from integrations.db.orders import OrderOutcome
from integrations.db.batch import BatchCommitter, FaultInjector
from integrations.hl7.intake import Intake, IntakeConfig, IntakeEvent, Reply
from integrations.hl7.mllp import DEFAULT_MAX_FRAME, Frame, FrameDecoder, frame

log = logging.getLogger("radpath.hl7")
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 2575
    max_frame_bytes: int = DEFAULT_MAX_FRAME
    idle_timeout_s: float = 300.0
    max_connections: int = 32
    intake: IntakeConfig = IntakeConfig()
    ssl: ssl.SSLContext | None = None  # TLS (integrations/tls.py); None: plain TCP


class MllpListener:
    def __init__(self, intake: Intake, config: ListenerConfig,
                 on_order_committed: Callable[[OrderOutcome], None] | None = None,
                 on_event: Callable[[IntakeEvent], None] | None = None):
        self.intake, self.config = intake, config
        self.on_order_committed, self.on_event = on_order_committed, on_event
        self.active = 0
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> asyncio.Server:
        self.server = await asyncio.start_server(self._connection, self.config.host, self.config.port,
                                                 limit=READ_CHUNK, ssl=self.config.ssl)
        return self.server

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
        self.intake.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "%s:%s" % writer.get_extra_info("peername")[:2]
        if self.active >= self.config.max_connections:
            log.warning("MLLP connection from %s refused: %d connections open", peer, self.active)
            writer.close()
            return
        self.active += 1
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:  # one connection's fault never stops the listener
            log.exception("MLLP connection from %s failed", peer)
        finally:
            self.active -= 1
            self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        decoder = FrameDecoder(self.config.max_frame_bytes)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), self.config.idle_timeout_s)
            except TimeoutError:
                log.info("MLLP connection from %s idle; closing", peer)
                return
            items = decoder.feed(data) if data else [e for e in [decoder.close()] if e]
            for item in items:
                if isinstance(item, Frame):
                    reply = await self.intake.handle_frame(item.payload, peer)
                else:
                    reply = await self.intake.handle_framing_error(item, peer)
                if not await self._answer(writer, reply):
                    return
            if not data:
                return

    async def _answer(self, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        if reply.close:
            return False
        for ack in reply.acks:
            writer.write(frame(ack.encode("utf-8")))
        await writer.drain()
        self._notify(reply)
        return True

    def _notify(self, reply: Reply) -> None:
        try:
            if reply.order is not None and not reply.order.duplicate and self.on_order_committed:
                self.on_order_committed(reply.order)
            if self.on_event:
                for event in reply.events:
                    self.on_event(event)
        except Exception:  # events are best effort; the ledger already holds the truth
            log.exception("event callback failed")


def listener_config(settings) -> ListenerConfig:  # noqa: ANN001 - integrations.settings.Settings
    from integrations.tls import server_context

    return ListenerConfig(
        ssl=server_context(settings),
        host=settings.bind_host,
        port=settings.mllp_port,
        max_frame_bytes=settings.mllp_max_frame_bytes,
        idle_timeout_s=settings.mllp_idle_timeout_s,
        max_connections=settings.mllp_max_connections,
        intake=IntakeConfig(
            application=settings.mllp_application,
            facility=settings.mllp_facility,
            default_charset=settings.mllp_default_charset,
            on_commit_failure=settings.mllp_on_commit_failure,
        ),
    )


async def serve_mllp(settings, on_order_committed: Callable[[OrderOutcome], None] | None = None,  # noqa: ANN001
                     on_event: Callable[[IntakeEvent], None] | None = None, *, registry=None) -> MllpListener:  # noqa: ANN001
    """Start the MLLP listener for `radpath serve`; returns it started (`.server`, `.port`, `.stop()`)."""
    from pathways.registry import default_registry

    intake = Intake(registry or default_registry(), listener_config(settings).intake,
                    BatchCommitter(fault=FaultInjector.from_env()), parse_processes=settings.mllp_parse_processes)
    listener = MllpListener(intake, listener_config(settings), on_order_committed, on_event)
    await listener.start()
    log.info("MLLP listener on %s:%d", settings.bind_host, listener.port)
    return listener


async def _main(port: int | None, ready_file: str | None) -> None:
    from integrations.db.engine import migrate
    from integrations.settings import get_settings

    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(update={"mllp_port": port})
    migrate()
    listener = await serve_mllp(settings)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(str(listener.port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await listener.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="radpath MLLP listener (HL7 v2 order intake)")
    parser.add_argument("--port", type=int, default=None, help="default RADPATH_MLLP_PORT (2575); 0 picks a free port")
    parser.add_argument("--ready-file", help="write the bound port here once listening")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_main(args.port, args.ready_file))


if __name__ == "__main__":
    main()
