"""The load generator measures the server, not itself: its own collector stays off while the
clients run (a collection stalls every client at once and would count as server latency)."""

from __future__ import annotations

import asyncio
import gc
import time

from worker.dev.bench.loadgen import SLOW_MS, LoadResult, _generate

BODY = b'{"access_token": "x"}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


async def _slow_server(delay: float) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(delay)
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_no_collection_runs_in_the_window_even_when_the_generator_keeps_objects() -> None:
    """Every read is slower than SLOW_MS, so each one keeps a (due, ms) tuple: over the window
    that is thousands of surviving objects, enough for CPython's default thresholds to start
    several collections. None runs, and the collector is back on once the run is over."""
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever another test set

    async def go() -> LoadResult:
        server = await _slow_server(SLOW_MS / 1000.0 + 0.002)
        port = server.sockets[0].getsockname()[1]
        try:
            start = time.time() + 0.1
            return await _generate([port], ["/x"], "key", 32, 0, start, 0.2, 1.5, None)
        finally:
            server.close()
            await server.wait_closed()

    try:
        result = asyncio.run(go())
    finally:
        gc.set_threshold(*thresholds)
    assert result.reads > 1_500, result.reads
    assert len(result.slow) == result.reads
    assert result.gc_collections == 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
