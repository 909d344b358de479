"""The emulator of `bench --million`: the real one (real clock, real HTTP, 50 ms per call),
in its own process, with three bench routes that are not Salesforce calls (never counted):

- POST /_bench/million/grants {"client_id", "lifetime", "ages": [s, ...]}: one grant per age,
  its first access token issued `age` seconds ago (so it expires `lifetime - age` from now);
  answers [[grant_id, refresh_token, access_token, issued_at_ms], ...] in the same order.
- POST /_bench/million/stale: how many live grants' newest access token has expired. The
  emulator knows each grant's newest token and its expiry, and the worker stores the newest
  token it was handed, so a live grant whose newest token expired is a connection holding an
  expired token: the freshness probe costs one pass over the grants, no decryption.
- POST /_bench/activity {"grants": [...]} (`simemulator`'s route, so `workload.Activity`
  drives it): an API call on each grant's newest session (Salesforce's half-timeout rule,
  `State.use_session`).

The org runs in compact mode (`State(compact=True)`): no per-call bookkeeping that grows with
every refresh (see `State.count`).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

import httpx

from worker.dev.bench.services import Workspace, wait_http
from worker.dev.bench.simemulator import ACTIVITY_PATH
from worker.dev.embedded import free_port
from worker.dev.emulator.app import App
from worker.dev.emulator.http import Request, Response, json_response
from worker.dev.emulator.server import Emulator, serve_until_signalled
from worker.dev.emulator.state import paused_gc

GRANTS_PATH = "/_bench/million/grants"
STALE_PATH = "/_bench/million/stale"


class MillionApp(App):
    def handle(self, request: Request) -> Response:
        if request.path == GRANTS_PATH:
            return self._grants(request)
        if request.path == STALE_PATH:
            return self._stale()
        if request.path == ACTIVITY_PATH:
            return self._activity(request)
        return super().handle(request)

    def _grants(self, request: Request) -> Response:
        body: dict[str, Any] = json.loads(request.body)
        ages: list[float] = body["ages"]
        lifetime = float(body["lifetime"])
        state = self.state
        with paused_gc():
            issued = state.create_grants(body["client_id"], len(ages), lifetime=lifetime)
            rows = []
            for item, age in zip(issued, ages, strict=True):
                access = item.access
                access.iat -= age
                access.exp = access.iat + lifetime
                ms = str(int(access.iat * 1000))
                rows.append([item.grant.grant_id, item.grant.refresh_token, access.token, ms])
        # The grants live until the end: a full collection would walk them all (~1 s at a
        # million, every emulator answer waiting meanwhile) and find nothing to free.
        gc.freeze()
        return json_response(200, {"grants": rows})

    def _stale(self) -> Response:
        began = time.perf_counter()
        now = self.state.clock()
        stale = live = 0
        for grant in self.state.grants.values():
            if grant.revoked or not grant.tokens:
                continue
            live += 1
            if grant.tokens[-1].exp <= now:
                stale += 1
        took_ms = (time.perf_counter() - began) * 1000.0
        # The sessions refreshes made since the last pass live on as well: without this the
        # full collections walked them, 0.62-0.81 s each in steady state (stop 22).
        gc.freeze()
        return json_response(200, {"stale": stale, "live": live, "at": now, "ms": took_ms})

    def _activity(self, request: Request) -> Response:
        grant_ids: list[str] = json.loads(request.body)["grants"]
        used = 0
        for grant_id in grant_ids:
            grant = self.state.grants.get(grant_id)
            if grant is not None and grant.tokens and self.state.use_session(grant.latest.token):
                used += 1
        return json_response(200, {"grants": len(grant_ids), "used": used})


def _serve(port: int, latency_ms: float) -> None:
    emulator = Emulator(lifetime=7200.0, latency_ms=latency_ms)
    emulator.state.compact = True
    emulator.app = MillionApp(emulator.state)
    serve_until_signalled(emulator, "127.0.0.1", port)


class MillionEmulator:
    """The emulator process and the bench's client for its bench routes."""

    def __init__(self, ws: Workspace, latency_ms: float) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "worker.dev.bench.millionemu", str(self.port)]
        self._proc = ws.spawn([*args, str(latency_ms)], dict(os.environ), "million-emu.log")
        wait_http(self.base_url, self._proc)
        self.pid = self._proc.pid
        self.http = httpx.Client(base_url=self.base_url, timeout=300.0)

    def grants(self, client_id: str, lifetime: float, ages: list[float]) -> list[list[str]]:
        body = {"client_id": client_id, "lifetime": lifetime, "ages": ages}
        rows: list[list[str]] = self._post(GRANTS_PATH, body)["grants"]
        return rows

    def stale(self) -> tuple[int, int, float]:
        """(live grants whose newest access token expired, live grants, the pass's ms: the
        emulator answers nothing else meanwhile)."""
        data = self._post(STALE_PATH, {})
        return int(data["stale"]), int(data["live"]), float(data["ms"])

    def activity(self, grant_ids: list[str]) -> int:
        return int(self._post(ACTIVITY_PATH, {"grants": grant_ids})["used"])

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(path, json=body)
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data


if __name__ == "__main__":
    _serve(int(sys.argv[1]), float(sys.argv[2]))
