"""The api under a real uvicorn (uvloop, httptools): server-sent events, shutdown with a
stream open, 100 concurrent reports of one token, and `python -m worker.api` logging no key."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from config.settings import Settings
from tests.conftest import Emu, run
from tests.helpers import connect
from worker.api import events
from worker.api.server import server
from worker.engine.runtime import Runtime
from worker.service import apikeys

RuntimeFor = Callable[..., Runtime]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_up(base: str, deadline: float = 15.0) -> None:
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail(f"the api at {base} did not come up")


class Running:
    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = server(settings, "127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def app(self) -> Any:
        return self.server.config.app

    def stop(self) -> float:
        """Ask it to stop; how long it took."""
        started = time.monotonic()
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive()
        return time.monotonic() - started


@pytest.fixture
def live(settings_for: Callable[..., Settings]) -> Iterator[Running]:
    running = Running(settings_for())
    running.thread.start()
    wait_up(running.base)
    yield running
    if running.thread.is_alive():
        running.stop()


def key(rt_for: RuntimeFor, scope: str) -> str:
    async def make() -> str:
        rt = rt_for()
        made, _ = await apikeys.create(rt, f"k-{scope}", scope)
        await rt.close()
        return made

    return run(make())


def sse_events(lines: Iterator[str], count: int) -> list[dict[str, str]]:
    """The next `count` events (id, event, data) of a text/event-stream."""
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in current:
                found.append(current)
                if len(found) == count:
                    return found
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return found


def emit(rt_for: RuntimeFor, *names: str) -> None:
    async def go() -> None:
        rt = rt_for()
        for name in names:
            await rt.sink.emit(name, None, None)
        await rt.close()

    run(go())


class TestStream:
    def test_events_arrive_and_last_event_id_resumes(
        self, live: Running, runtime_for: RuntimeFor
    ) -> None:
        """New events arrive as SSE frames with their ids; a reconnect with Last-Event-ID gets
        exactly what came after."""
        auth = {"Authorization": f"Bearer {key(runtime_for, 'read')}"}
        with httpx.stream("GET", f"{live.base}/events/stream", headers=auth, timeout=10) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            lines = answer.iter_lines()
            assert next(lines) == "retry: 2000"
            emit(runtime_for, "token.refreshed", "connection.recovered")
            first, second = sse_events(lines, 2)
        assert (first["event"], second["event"]) == ("token.refreshed", "connection.recovered")
        emit(runtime_for, "connection.removed")
        resume = {**auth, "Last-Event-ID": first["id"]}
        with httpx.stream("GET", f"{live.base}/events/stream", headers=resume, timeout=10) as again:
            replay = sse_events(again.iter_lines(), 2)
        assert [e["event"] for e in replay] == ["connection.recovered", "connection.removed"]
        assert replay[0]["id"] == second["id"]

    def test_heartbeats_and_a_disconnect_frees_the_stream(
        self, live: Running, runtime_for: RuntimeFor, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.5)
        auth = {"Authorization": f"Bearer {key(runtime_for, 'read')}"}
        with httpx.stream("GET", f"{live.base}/events/stream", headers=auth, timeout=10) as answer:
            lines = answer.iter_lines()
            assert next(lines) == "retry: 2000"
            assert next(lines) == ""
            assert next(lines) == ": heartbeat"
            assert live.app.state.open_streams == 1
        stop = time.monotonic() + 5
        while live.app.state.open_streams and time.monotonic() < stop:
            time.sleep(0.1)
        assert live.app.state.open_streams == 0

    def test_shutdown_ends_an_open_stream_promptly(
        self, live: Running, runtime_for: RuntimeFor
    ) -> None:
        """The server does not wait out its grace period for a listening client."""
        auth = {"Authorization": f"Bearer {key(runtime_for, 'read')}"}
        with httpx.stream("GET", f"{live.base}/events/stream", headers=auth, timeout=10) as answer:
            lines = answer.iter_lines()
            next(lines)
            took = live.stop()
            rest = list(lines)  # the stream ends instead of hanging
        assert took < 5, took
        assert all(line == "" or line.startswith(":") for line in rest)


async def test_a_hundred_concurrent_reports_over_http_make_one_refresh(
    live: Running, runtime_for: RuntimeFor, emu: Emu
) -> None:
    rt = runtime_for()
    [(cid, grant)] = await connect(rt, emu, rotation=True)
    made, _ = await apikeys.create(rt, "reporter", "connect")
    await rt.close()
    auth = {"Authorization": f"Bearer {made}"}
    body = {"access_token": grant["access_token"]}
    async with httpx.AsyncClient(base_url=live.base, headers=auth, timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post(f"/connections/{cid}/token-rejected", json=body) for _ in range(100))
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["access_token"] for a in answers}) == 1
    assert emu.token_calls(grant["grant_id"]) == 1


def test_the_api_process_logs_no_key_or_token(
    env: dict[str, str], runtime_for: RuntimeFor, emu: Emu
) -> None:
    """`python -m worker.api`: serves, logs neither the API key nor a token (even on errors),
    and stops on SIGTERM with a stream open, well inside its grace period."""

    async def arrange() -> tuple[str, str, dict[str, Any]]:
        rt = runtime_for()
        [(cid, grant)] = await connect(rt, emu)
        made, _ = await apikeys.create(rt, "ops", "admin")
        await rt.close()
        return made, cid, grant

    made, cid, grant = run(arrange())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base)
        auth = {"Authorization": f"Bearer {made}"}
        assert httpx.get(f"{base}/connections/{cid}/credentials", headers=auth).status_code == 200
        httpx.post(f"{base}/connections/{cid}/token-rejected", headers=auth, content=b"{bad")
        assert httpx.get(f"{base}/healthz", headers={"Authorization": "Bearer tw_wrong"}).is_success
        with httpx.stream("GET", f"{base}/events/stream", headers=auth, timeout=10) as answer:
            next(answer.iter_lines())
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=15)
        assert time.monotonic() - started < 6
        # uvicorn re-raises the signal it handled once it is done: the conventional status.
        assert process.returncode in (0, -signal.SIGTERM), err
        assert "Finished server process" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    for secret in (made, grant["access_token"], grant["refresh_token"]):
        assert secret not in out + err
    assert "Application startup complete" in err  # it did log: just nothing secret
