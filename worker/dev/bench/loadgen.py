"""A lean HTTP/1.1 load generator: keep-alive connections, one request in flight on each,
raw asyncio protocols on uvloop, in its own process(es).

Why not httpx or aiohttp: on a 2-core box every CPU cycle the generator spends is taken from
the api it measures. A client that writes prebuilt request bytes and reads `Content-Length`
bodies costs a few microseconds per request (aiohttp: tens), so the figures are the api's.

Each process runs `clients` connections spread over the api ports; requests started in the
measured window [start + warmup, start + warmup + duration) are timed (send to last byte).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from worker.dev.emulator.state import paused_gc

SLOW_MS = 10.0  # the paced reads' p99 target: reads slower than this are kept with their time
# From `run` to the clients' first sends: every process spawned (~0.5 s here) before the clock
# runs. A client that connects late only starts late in the warm-up, which is not measured.
START_S = 1.0


@dataclass
class LoadResult:
    """One generator process's share of the measured window."""

    reads: int = 0  # 200s with credentials in the window
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    # Paced, for reads whose client was idle at their due time: how late they actually left
    # (the generator's own delay, counted in their latency)
    send_lags_ms: list[float] = field(default_factory=list)
    # From an answer's last byte reaching the protocol to its read resuming: the generator's
    # own scheduling, also counted in that read's latency
    resume_lags_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # this process's CPU time during the window
    # Cyclic-GC collections this process ran during the window: 0, since a collection stalls
    # every client at once and its pause would count as the server's latency (`_generate`)
    gc_collections: int = 0
    last_done: float = 0.0  # epoch seconds of the last answer counted
    # (due time, ms) of each read slower than SLOW_MS: when in the window the tail happened
    slow: list[tuple[float, float]] = field(default_factory=list)

    def count(
        self, status: int, body: bytes, sent: float, lag: float | None, arrived: float
    ) -> None:
        """One answer to a read due at `sent`, which left `lag` seconds late; its last byte
        reached the protocol at `arrived`."""
        if status == 200 and b'"access_token"' in body:
            done = time.time()
            self.reads += 1
            self.latencies_ms.append((done - sent) * 1000.0)
            if done - sent > SLOW_MS / 1000.0:
                self.slow.append((sent, (done - sent) * 1000.0))
            self.resume_lags_ms.append((done - arrived) * 1000.0)
            if lag is not None:
                self.send_lags_ms.append(lag * 1000.0)
            self.last_done = max(self.last_done, done)
        else:
            name = f"HTTP {status}"
            self.errors[name] = self.errors.get(name, 0) + 1


class _Conn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.arrived = 0.0  # when the last answer's last byte reached this protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            waiter.set_exception(ConnectionError("no content-length"))
            return
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        self.arrived = time.time()
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.transport.write(data)
        return await self.waiter


def requests_for(host: str, port: int, paths: list[str], key: str) -> list[bytes]:
    return [
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nAccept: */*\r\n\r\n"
        ).encode()
        for path in paths
    ]


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """No cyclic collection while the clients run: inside bench --million's paced window a
    full one took 39-57 ms of wall time in this process (a gc callback, stop 22), every client
    stalled meanwhile and the pause counted in the api's p99. A run lasts a minute at most and
    frees its garbage by reference counting; what startup built is frozen out first."""
    gc.collect()
    gc.freeze()
    try:
        with paused_gc():
            yield
    finally:
        gc.unfreeze()


def _collections() -> int:
    return sum(generation["collections"] for generation in gc.get_stats())


async def _cpu_window(begin: float, end: float, cpu: list[float], collected: list[int]) -> None:
    """This process's CPU seconds and GC collections at the window's start and end."""
    await asyncio.sleep(max(0.0, begin - time.time()))
    cpu.append(sum(os.times()[:2]))
    collected.append(_collections())
    await asyncio.sleep(max(0.0, end - time.time()))
    cpu.append(sum(os.times()[:2]))
    collected.append(_collections())


async def _generate(
    ports: list[int],
    paths: list[str],
    key: str,
    clients: int,
    offset: int,
    start: float,
    warmup: float,
    duration: float,
    rate: float | None,
) -> LoadResult:
    loop = asyncio.get_running_loop()
    result = LoadResult()
    by_port = {port: requests_for("127.0.0.1", port, paths, key) for port in ports}
    begin, end = start + warmup, start + warmup + duration
    cpu: list[float] = []

    async def client(n: int) -> None:
        port = ports[(offset + n) % len(ports)]
        requests = by_port[port]
        _, conn = await loop.create_connection(lambda: _Conn(loop), "127.0.0.1", port)
        i = (offset + n) * 7919
        # Paced: this client's k-th request is due at a fixed time, and its latency runs from
        # then (a late answer delays the next send, but that wait is counted: no coordinated
        # omission). Closed loop: the next request goes as soon as the answer is in.
        interval = clients / rate if rate else 0.0
        due = start + (n / clients) * interval
        while True:
            now = time.time()
            waited = False  # paced and early: any lateness of this send is the generator's
            if interval:
                if due > now:
                    waited = True
                    await asyncio.sleep(due - now)
                sent = due
                due += interval
            else:
                sent = now
            if sent >= end:
                break
            data = requests[i % len(requests)]
            i += 1
            left = time.time()
            try:
                status, body = await conn.request(data)
            except ConnectionError as error:
                result.errors[str(error)] = result.errors.get(str(error), 0) + 1
                _, conn = await loop.create_connection(lambda: _Conn(loop), "127.0.0.1", port)
                continue
            if sent < begin:
                continue
            result.count(status, body, sent, left - sent if waited else None, conn.arrived)
        assert conn.transport is not None
        conn.transport.close()

    collected: list[int] = []
    with collector_off():
        await asyncio.sleep(max(0.0, start - time.time()))
        clocks = _cpu_window(begin, end, cpu, collected)
        await asyncio.gather(clocks, *(client(n) for n in range(clients)))
    result.cpu_s = cpu[1] - cpu[0] if len(cpu) == 2 else 0.0
    result.gc_collections = collected[1] - collected[0] if len(collected) == 2 else 0
    return result


def _process(args: tuple[Any, ...], out: Any) -> None:
    import uvloop  # noqa: PLC0415

    out.put(uvloop.run(_generate(*args)))


def run(
    ports: list[int],
    paths: list[str],
    key: str,
    clients: int,
    processes: int,
    warmup: float,
    duration: float,
    rate: float | None = None,
) -> list[LoadResult]:
    """`clients` keep-alive connections over `processes` processes, closed loop or paced to
    `rate` requests/s in all; blocks until the window ends and returns each process's result."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + START_S
    share = [clients // processes + (1 if n < clients % processes else 0) for n in range(processes)]
    procs = []
    offset = 0
    for n in range(processes):
        part = rate * share[n] / clients if rate else None
        args = (ports, paths, key, share[n], offset, start, warmup, duration, part)
        offset += share[n]
        proc = ctx.Process(target=_process, args=(args, out), daemon=True)
        proc.start()
        procs.append(proc)
    results: list[LoadResult] = []
    deadline = time.monotonic() + START_S + warmup + duration + 60.0
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            if time.monotonic() > deadline or any(not p.is_alive() for p in procs):
                raise RuntimeError("a load generator process failed or stalled") from None
    for proc in procs:
        proc.join(10)
    return results
