"""Running the emulator: in the current loop (`Emulator`), in a background thread for tests
(`EmulatorThread`), or as a foreground process for the CLI (`run_forever`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

from worker.dev.emulator.app import App
from worker.dev.emulator.http import HttpProtocol
from worker.dev.emulator.records import DEFAULT_LIFETIME
from worker.dev.emulator.state import State


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: it roughly halves the emulator's CPU per request."""
    try:
        import uvloop  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class Emulator:
    """A Salesforce OAuth emulator bound to one event loop."""

    def __init__(
        self,
        lifetime: float = DEFAULT_LIFETIME,
        latency_ms: float = 0.0,
        rotation: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = State(lifetime=lifetime, latency_ms=latency_ms, rotation=rotation, clock=clock)
        self.app = App(self.state)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[HttpProtocol] = set()
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port (useful with port=0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self.app.handle, self._connections), host, port, backlog=1024
        )
        bound = int(self._server.sockets[0].getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{bound}"
        # Grants default their instance_url and identity URL to wherever we listen.
        self.state.base_url = self._base_url
        return bound

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Keep-alive connections outlive the listener unless closed here.
        for connection in list(self._connections):
            connection.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run before the loop goes


class EmulatorThread:
    """An `Emulator` on its own loop in a daemon thread: `with EmulatorThread() as emu: ...`.

    Drive it over HTTP (`base_url`, admin API); `emulator.state` is only safe to read while
    no request is in flight, as it belongs to the emulator's thread.
    """

    def __init__(
        self,
        lifetime: float = DEFAULT_LIFETIME,
        latency_ms: float = 0.0,
        rotation: bool = False,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.emulator = Emulator(lifetime, latency_ms, rotation, clock)
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self.emulator.base_url

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def start(self, timeout: float = 10.0) -> EmulatorThread:
        self._thread = threading.Thread(target=self._run, name="sf-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.emulator.start(self._host, self._port))
        except BaseException as exc:  # reported to the starting thread, not lost here
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.emulator.stop())
            loop.close()


def run_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    lifetime: float = DEFAULT_LIFETIME,
    latency_ms: float = 0.0,
    rotation: bool = False,
) -> None:
    """Serve until SIGINT or SIGTERM; prints one line with the URL to stderr."""
    emulator = Emulator(lifetime=lifetime, latency_ms=latency_ms, rotation=rotation)
    serve_until_signalled(emulator, host, port, announce=True)


def serve_until_signalled(
    emulator: Emulator, host: str, port: int, *, announce: bool = False
) -> None:
    """Run `emulator` on its own event loop until SIGINT or SIGTERM (the emulator process of
    the demo, the tests and the benchmarks)."""
    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve(emulator, host, port, announce))
    finally:
        loop.close()


async def _serve(emulator: Emulator, host: str, port: int, announce: bool) -> None:
    await emulator.start(host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(signum, stopping.set)
    if announce:
        print(f"salesforce emulator listening on {emulator.base_url}", file=sys.stderr, flush=True)
    try:
        await stopping.wait()
    finally:
        await emulator.stop()
