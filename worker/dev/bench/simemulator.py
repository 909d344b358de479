"""The emulator on a simulated clock, in its own process, for the cost scenario.

The benchmark process owns the clock (a double in a file both processes map) and moves it
sweep by sweep; the emulator reads it for every issue, expiry and introspection, so a
simulated day takes as long as its calls take, not a day. One route is added for the
freshness probe: POST /_bench/stale {"tokens": [...]} answers how many of those access tokens
are past their emulator-side expiry (or revoked, or forgotten because expired) at the
simulated now. It is not a Salesforce call and is not counted in /_admin/stats.

Users' activity is an API call on a grant's latest session, with Salesforce's half-timeout
rule (`State.use_session`: it extends the session only once more than half of it has passed;
the admin `activity` route extends unconditionally, which Salesforce never does). POST
/_bench/activity {"schedule": [[t, grant id], ...]} hands over a run's activity (in as many
posts as suit), and each call happens at its own simulated time t: before answering any
request, the emulator makes the calls whose time the clock has passed.
Nothing else changes the org between requests, so that is what the org would hold had each
call come at t (the driver posting each sweep interval's calls cost a shard ~7% of its CPU
and applied them up to an interval late). The answer says how many were made so far.
"""

from __future__ import annotations

import heapq
import json
import mmap
import os
import struct
import sys
from typing import Any

from worker.dev.bench.services import Workspace, wait_http
from worker.dev.embedded import free_port
from worker.dev.emulator.app import App
from worker.dev.emulator.http import Request, Response, json_response
from worker.dev.emulator.records import AccessToken
from worker.dev.emulator.server import Emulator, serve_until_signalled
from worker.dev.emulator.state import State

STALE_PATH = "/_bench/stale"
ACTIVITY_PATH = "/_bench/activity"
_DOUBLE = struct.Struct("<d")


class SimApp(App):
    def __init__(self, state: State) -> None:
        super().__init__(state)
        self._schedule: list[tuple[float, str]] = []  # a heap of (simulated time, grant id)
        self._made = 0  # scheduled calls made

    def handle(self, request: Request) -> Response:
        self._catch_up()
        if request.path == STALE_PATH:
            return self._stale(request)
        if request.path == ACTIVITY_PATH:
            return self._activity(request)
        return super().handle(request)

    def _catch_up(self) -> None:
        """Make the scheduled calls the clock has passed, each at its own time."""
        if not self._schedule:
            return
        now = self.state.clock()
        while self._schedule and self._schedule[0][0] <= now:
            at, grant_id = heapq.heappop(self._schedule)
            grant = self.state.grants.get(grant_id)
            if grant is not None:
                self.state.use_session(grant.latest.token, at)
            self._made += 1

    def _activity(self, request: Request) -> Response:
        calls: list[list[Any]] = json.loads(request.body)["schedule"]
        self._schedule.extend((float(at), str(grant_id)) for at, grant_id in calls)
        heapq.heapify(self._schedule)
        self._catch_up()
        return json_response(200, {"made": self._made, "pending": len(self._schedule)})

    def _stale(self, request: Request) -> Response:
        tokens: list[str] = json.loads(request.body)["tokens"]
        now = self.state.clock()
        stale = [i for i, token in enumerate(tokens) if not _active(self.state, token, now)]
        return json_response(
            200, {"checked": len(tokens), "stale": len(stale), "at": now, "first": stale[:10]}
        )


def _active(state: State, token: str, now: float) -> bool:
    record = state.find(token)
    return isinstance(record, AccessToken) and record.active(now)


class SharedClock:
    """Simulated epoch seconds in an 8-byte file both processes map: one writer, one reader."""

    def __init__(self, path: str, create: bool = False) -> None:
        if create:
            with open(path, "wb") as handle:
                handle.write(bytes(8))
        self._file = open(path, "r+b")  # noqa: SIM115  (mapped for the process's lifetime)
        self._map = mmap.mmap(self._file.fileno(), 8)

    def read(self) -> float:
        value: float = _DOUBLE.unpack_from(self._map)[0]
        return value

    def write(self, value: float) -> None:
        _DOUBLE.pack_into(self._map, 0, value)

    def close(self) -> None:
        self._map.close()
        self._file.close()


def _serve(port: int, clock_path: str) -> None:
    clock = SharedClock(clock_path)
    emulator = Emulator(lifetime=7200.0, latency_ms=0.0, clock=clock.read)
    emulator.app = SimApp(emulator.state)
    serve_until_signalled(emulator, "127.0.0.1", port)


class SimClock:
    """A running simulated org seen from a driver process: its URL and its clock (set `now`
    to move the org's time). A cost shard's process attaches to the emulator its parent
    started with the URL and the clock's file."""

    def __init__(self, base_url: str, clock_path: str) -> None:
        self.base_url = base_url
        self.clock_path = clock_path
        self._clock = SharedClock(clock_path)

    @property
    def now(self) -> float:
        return self._clock.read()

    @now.setter
    def now(self, value: float) -> None:
        self._clock.write(value)

    def close(self) -> None:
        self._clock.close()


class SimEmulator(SimClock):
    """The emulator process, `name` telling apart several in one workspace."""

    def __init__(self, ws: Workspace, start: float, name: str = "sim") -> None:
        self._ws = ws
        path = ws.path(f"{name}-clock")
        clock = SharedClock(path, create=True)
        clock.write(start)
        clock.close()
        self.port = free_port()
        base_url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "worker.dev.bench.simemulator", str(self.port), path]
        self._proc = ws.spawn(args, dict(os.environ), f"{name}-emulator.log")
        wait_http(base_url, self._proc)
        super().__init__(base_url, path)

    def stop(self) -> None:
        self._ws.stop(self._proc)
        self.close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
