"""`CeleryDispatch`: checks queued for the worker pool, optionally waited for.

The `worker.service.checks.Dispatch` that crosses the broker: `check`/`refresh` go to the
`ops` queue, a sweep to the `sweep` queue. Celery's own failures come back as the error tree:
an unreachable broker or result backend as `Unreachable`, a wait that ran out as `NoOutcome`.
The calls block while they wait (Celery's result API is synchronous); an event loop serving
others runs this class in a thread or does not wait.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from celery.backends.asynchronous import E_RETRY_LIMIT_EXCEEDED
from celery.exceptions import TimeoutError as CeleryTimeout
from kombu.exceptions import OperationalError

from config.settings import Settings
from worker.domain.outcomes import CheckResult
from worker.engine.sweep import SweepResult
from worker.errors import NoOutcome
from worker.service.checks import Queued, Tally
from worker.service.progress import OnProgress
from worker.service.reachability import require_reachable, unreachable


class CeleryDispatch:
    """`wait`: block up to `timeout` seconds for the outcome; otherwise return `Queued`."""

    def __init__(self, *, wait: bool, timeout: float, settings: Settings | None = None) -> None:
        self.wait = wait
        self.timeout = timeout
        self.settings = settings or Settings.from_env(require_keys=False)

    async def check(self, connection_id: str, *, force: bool) -> CheckResult | Queued:
        require_reachable(self.settings.store_endpoint, self.settings.broker_endpoint)
        from worker.jobs import tasks  # noqa: PLC0415  (imports the Celery app and its settings)

        task = tasks.refresh_connection if force else tasks.check_connection
        with self._errors():
            pending = task.apply_async([connection_id], queue="ops")
            if not self.wait:
                return Queued(pending.id)
            return CheckResult.from_dict(_outcome(pending, self.timeout))

    async def check_many(
        self, ids: Sequence[str], *, force: bool, on_progress: OnProgress
    ) -> Tally:
        require_reachable(self.settings.store_endpoint, self.settings.broker_endpoint)
        from worker.jobs import tasks  # noqa: PLC0415

        task = tasks.refresh_connection if force else tasks.check_connection
        with self._errors():
            on_progress("queueing", 0, len(ids))
            pending = []
            for cid in ids:
                pending.append(task.apply_async([cid], queue="ops"))
                on_progress("queueing", len(pending), len(ids))
            if not self.wait:
                return Tally(queued=len(ids))
            return self._gather(pending, on_progress)

    def _gather(self, pending: list[Any], on_progress: OnProgress) -> Tally:
        tally = Tally()
        deadline = time.monotonic() + self.timeout
        on_progress("refreshed", 0, len(pending))
        try:
            for done, result in enumerate(pending, 1):
                outcome = result.get(timeout=max(0.1, deadline - time.monotonic()))
                tally.outcomes[outcome["outcome"]] += 1
                on_progress("refreshed", done, len(pending))
        finally:
            for result in pending:
                release(result)
        return tally

    async def sweep(self, on_progress: OnProgress) -> SweepResult | Queued:
        del on_progress  # the pool reports a sweep's progress in its own logs
        require_reachable(self.settings.store_endpoint, self.settings.broker_endpoint)
        from worker.jobs import tasks  # noqa: PLC0415

        with self._errors():
            pending = tasks.sweep_task.apply_async([False], queue="sweep")
            if not self.wait:
                return Queued(pending.id)
            data = _outcome(pending, self.timeout)
            return SweepResult(data["claimed"], data["batches"], data["skipped"])

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Celery's failures to reach Redis as Unreachable, a wait that ran out as NoOutcome:
        one line each instead of a traceback."""
        broker = self.settings.broker_url
        try:
            yield
        except (OperationalError, redis.ConnectionError, redis.TimeoutError) as error:
            raise unreachable("broker", broker, error) from None
        except RuntimeError as error:
            if str(error) != E_RETRY_LIMIT_EXCEEDED:
                raise
            raise unreachable("broker", broker, error) from None
        except CeleryTimeout:
            raise NoOutcome(
                f"no outcome within --timeout {self.timeout:g} s: is a worker consuming the "
                "queue? (the task stays queued)"
            ) from None


def _outcome(pending: Any, timeout: float) -> dict[str, Any]:
    try:
        outcome: dict[str, Any] = pending.get(timeout=timeout)
    finally:
        release(pending)
    return outcome


def release(pending: Any) -> None:
    """Unsubscribe from a task's result now. AsyncResult.__del__ would do it at interpreter
    shutdown, reconnecting to Redis, which prints an ImportError traceback after a wait that
    timed out. Best effort: the subscription ends with the process anyway."""
    backend, pending.backend = pending.backend, None
    if backend is not None:
        with contextlib.suppress(Exception):
            backend.remove_pending_result(pending)
