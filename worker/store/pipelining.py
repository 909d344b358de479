"""Automatic pipelining: Redis commands issued in the same event-loop tick share one round trip.

Hundreds of connections are checked concurrently in one process; each needs a handful of
small Redis commands. Sent one by one they cost ~0.4 ms of client CPU each; sent as one
pipeline, ~0.06 ms (measured on this machine kind, see reference/performance-notes.md).
Callers just `await auto.run(lambda pipe: pipe.hgetall(key))`: commands queued while the
loop is busy are flushed together on the next tick, and each caller gets its own result or
its own exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

Queue = Callable[[Pipeline], object]

MAX_BATCH = 1000
# Pipelines in flight at once. With one, a command queued just after a flush began waits for
# that whole flush and then its own (1.5 flushes on average); with two it rides the next tick.
# Still a small bound on Redis connections (redis-py's async pool raises instead of waiting).
MAX_INFLIGHT = 2


class AutoPipeline:
    def __init__(self, redis: Redis, max_batch: int = MAX_BATCH) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._pending: list[tuple[Queue, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._inflight = 0  # flushes running (at most MAX_INFLIGHT)

    async def run(self, queue: Queue) -> Any:
        """Queue exactly one command on the next pipeline; return its reply."""
        return await self._enqueue(queue)

    def queue(self, queue: Queue) -> asyncio.Future[Any]:
        """Queue one command on the next pipeline without waiting: the future of its reply
        (whoever holds it must take its exception, or asyncio reports it unretrieved)."""
        return self._enqueue(queue)

    async def run_all(self, *queues: Queue) -> list[Any]:
        """Several commands on the same pipeline, run in this order; their replies, an error
        in its command's place (the caller decides what one failure means for the rest)."""
        futures = [self._enqueue(queue) for queue in queues]
        replies: list[Any] = []
        try:
            # One flush answers them all: awaited in turn, not gathered (gather's own future
            # and callbacks cost more than the commands' share of the round trip).
            for future in futures:
                try:
                    replies.append(await future)
                except Exception as error:
                    replies.append(error)
        finally:
            for future in futures:  # cancelled while waiting: the rest need no reply either
                future.cancel()
        return replies

    def _enqueue(self, queue: Queue) -> asyncio.Future[Any]:
        """Add one command to the pending batch, flushed on the next loop tick."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((queue, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flush)
        return future

    def _start_flush(self) -> None:
        self._scheduled = False
        if self._inflight >= MAX_INFLIGHT or not self._pending:
            return  # a flush in flight starts the next one when it is done
        batch, self._pending = self._pending, []
        self._inflight += 1
        task = asyncio.ensure_future(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._inflight -= 1
        self._start_flush()

    async def _flush(self, batch: list[tuple[Queue, asyncio.Future[Any]]]) -> None:
        try:
            for start in range(0, len(batch), self.max_batch):
                await self._flush_one(batch[start : start + self.max_batch])
        except BaseException:
            # Cancelled (a batch cut off by its time limit cancels every task): no reply will
            # come for what is left, so nobody may wait for one (settle() would, forever).
            for _, future in batch:
                future.cancel()
            raise

    async def _flush_one(self, batch: list[tuple[Queue, asyncio.Future[Any]]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue, _ in batch:
                    queue(pipe)
                replies = await execute_timed(pipe)
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


async def execute_timed(pipe: Pipeline) -> list[Any]:
    """`pipe.execute(raise_on_error=False)` with one timer for the round trip, not one per reply.

    redis-py bounds each reply by the connection's socket timeout: an asyncio timer armed and
    cancelled per reply (~15 us each, 6% of a check's CPU measured by cpucheck). Here the
    whole flush (connect, send, every reply) gets that same bound once; a flush that runs out
    disconnects its connection and raises redis-py's own TimeoutError, so callers classify it
    as they always did. Failures go through the connection's retry policy as
    Pipeline.execute sends them (the engine's client has none, redis-py's default for a
    pool from a URL: a resent pipeline may run twice). Needs redis-py >= 5.3
    (get_connection without a command name)."""
    if pipe.is_transaction or pipe.explicit_transaction or pipe.scripts or pipe.watching:
        return await pipe.execute(raise_on_error=False)  # not what the auto pipeline queues
    stack = pipe.command_stack
    if not stack:
        return []
    conn = await pipe.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    pipe.connection = conn  # the pipeline's reset() (its `async with`) gives it back
    limit = conn.socket_timeout

    async def once() -> Any:
        if limit is None:
            return await pipe._execute_pipeline(conn, stack, False)
        conn.socket_timeout = None  # this flush's own timer bounds every read below
        try:
            async with asyncio.timeout(limit):
                return await pipe._execute_pipeline(conn, stack, False)
        except TimeoutError:
            await conn.disconnect(nowait=True)  # replies may still be on their way
            raise RedisTimeoutError(
                f"Timeout reading from Redis: {len(stack)} pipelined commands, {limit} s"
            ) from None
        finally:
            conn.socket_timeout = limit

    async def failed(error: Exception) -> None:
        await conn.disconnect()

    replies: list[Any] = await conn.retry.call_with_retry(once, failed)
    return replies


async def eval_script(auto: AutoPipeline, script: Any, keys: list[Any], args: list[Any]) -> Any:
    """EVALSHA through the pipeline; on NOSCRIPT (a restarted Redis) load it and run directly."""
    try:
        return await auto.run(lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args))
    except NoScriptError:
        return await script(keys=keys, args=args)
