"""uvicorn's httptools protocol with each response leaving in one write.

uvicorn writes a response's status line and headers when the app sends `http.response.start`
and its body on `http.response.body`: two `send` calls, two TCP segments (uvloop sets
TCP_NODELAY) and two wake-ups of the client for a credentials read, which an app sends in the
same loop tick. Here the connection's writes of one tick are joined and sent once at its end
(`call_soon`): the same bytes, in the same order, one system call. A close sends what is
pending first.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _OneWrite:
    """A transport whose writes of one loop tick go out together; anything else is the
    transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpTools(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol over a `_OneWrite` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        super().connection_made(cast(asyncio.Transport, _OneWrite(transport, loop)))
