"""The ceiling: the best bare client loop on this box against the same emulator endpoint.

No store, no policy, no Celery: aiohttp on uvloop keeps `in_flight` introspection requests
open at all times, with the same form body the worker sends. Run as a module in one or more
processes (`python -m worker.dev.bench.ceiling SPEC.json`); each prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from worker.dev.bench import profile
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.services import Workspace

INTROSPECT = "/services/oauth2/introspect"
TOKENS = 1_000


@dataclass(frozen=True)
class Ceiling:
    processes: int
    calls: int
    seconds: float
    errors: int
    # CPU seconds by process: each bare loop's own (measured inside it, from its first call
    # to its last), the emulator's and the store's (/proc, from the loops' common start to
    # the last loop's exit: its connections' closing included, a few ms).
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def cores_busy(self) -> dict[str, float]:
        """CPU seconds per wall second of the run, by process."""
        wall = max(1e-9, self.seconds)
        return {name: round(cpu / wall, 3) for name, cpu in self.cpu_seconds.items()}

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


async def _hammer(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415  (imported in the measuring process only)

    url = spec["url"] + INTROSPECT
    forms = [
        {
            "token": token,
            "token_type_hint": "access_token",
            "client_id": spec["client_id"],
            "client_secret": spec["secret"],
        }
        for token in spec["tokens"]
    ]
    remaining = spec["calls"]
    errors = 0
    connector = aiohttp.TCPConnector(limit=spec["in_flight"])
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop(n: int) -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                async with session.post(url, data=forms[(remaining + n) % len(forms)]) as answer:
                    await answer.read()
                    errors += answer.status != 200

        await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
        started, cpu = time.time(), time.process_time()
        await asyncio.gather(*(loop(n) for n in range(spec["in_flight"])))
        return {
            "calls": spec["calls"],
            "started": started,
            "ended": time.time(),
            "errors": errors,
            "cpu_s": time.process_time() - cpu,
        }


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    import uvloop  # noqa: PLC0415

    print(json.dumps(uvloop.run(_hammer(spec))), flush=True)


def measure(
    ws: Workspace,
    admin: EmulatorAdmin,
    calls: int,
    processes: int,
    in_flight: int,
    timeout: float,
    others: dict[str, int] | None = None,
) -> Ceiling:
    """`calls` introspections split over `processes` loops started at one instant; `others`
    (name -> pid: the emulator, the store) are metered over the same run."""
    client_id, secret = admin.client()
    tokens = [grant.access_token for grant in admin.grants(client_id, TOKENS)]
    start_at = time.time() + 1.5  # every process imported and connected by then
    procs = []
    for index in range(processes):
        share = calls // processes + (1 if index < calls % processes else 0)
        spec = {
            "url": admin.base_url,
            "client_id": client_id,
            "secret": secret,
            "tokens": tokens,
            "calls": share,
            "in_flight": in_flight,
            "start_at": start_at,
        }
        path = ws.path(f"ceiling-{index}.json")
        with open(path, "w") as handle:
            json.dump(spec, handle)
        procs.append(
            subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "worker.dev.bench.ceiling", path],
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
        )
    meter = profile.CpuMeter(others or {})
    results = []
    try:
        time.sleep(max(0.0, start_at - time.time()))
        meter.start()  # from the moment every loop starts calling
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for index in range(processes):
            os.unlink(ws.path(f"ceiling-{index}.json"))
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    errors = sum(r["errors"] for r in results)
    meter.stop()
    cpu = {f"bare loop {n + 1}": r["cpu_s"] for n, r in enumerate(results)} | meter.spent
    return Ceiling(processes, sum(r["calls"] for r in results), seconds, errors, cpu)


if __name__ == "__main__":
    main()
