"""worker.api.onewrite: a response's head and body, written in one loop tick, leave in one
transport write, in order; a close sends what is pending first."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from worker.api.onewrite import _OneWrite


class Recording:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def wrapped() -> tuple[Recording, _OneWrite]:
    real = Recording()
    return real, _OneWrite(cast(asyncio.Transport, real), asyncio.get_running_loop())


async def test_one_ticks_writes_leave_together_in_order() -> None:
    real, transport = wrapped()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"{}")
    assert real.calls == []  # not before the tick ends
    await asyncio.sleep(0)
    assert real.calls == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert real.calls[-1] == b"next"


async def test_a_close_sends_what_is_pending_first() -> None:
    real, transport = wrapped()
    transport.write(b"last words")
    transport.close()
    await asyncio.sleep(0)
    assert real.calls == [b"last words", "close"]
    assert transport.is_closing()
    assert transport.get_extra_info("peername") == "info:peername"
