"""Recording what went wrong: the connection's new state, its next attempt, and exactly one
event per failure carrying Salesforce's own error.

    transient      -> `failing`, retry with backoff (>= 1 h when rate limited)
    permanent      -> `reauth_required`, unscheduled, no retry
    configuration  -> the integration becomes `misconfigured` (one event), its connections pause
    integrity      -> like transient, but reported as `token.signature_invalid`
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from worker.domain import policy
from worker.domain.models import (
    Connection,
    ConnectionStatus,
    Integration,
    IntegrationStatus,
    LastError,
)
from worker.domain.outcomes import CheckResult, Outcome
from worker.engine import events
from worker.engine.events import EventSink
from worker.errors import ConflictError, RateLimitedError, ResponseIntegrityError, SalesforceError
from worker.store.connections import Store

SAVE_ATTEMPTS = 5
UNAVAILABLE_HELP = (
    "Salesforce reports a token it issued a moment ago as inactive, so this connected app "
    "cannot introspect its tokens. In Setup > App Manager > (app) > Edit Policies, enable "
    "'Introspect All Tokens'. Until then checks fall back to issued_at + "
    "TOKENWORKER_DEFAULT_LIFETIME."
)


class Recorder:
    def __init__(
        self,
        store: Store,
        sink: EventSink,
        timing: policy.Timing,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.store = store
        self.sink = sink
        self.timing = timing
        self.clock = clock
        self.rng = rng

    async def _save(
        self, conn: Connection, change: Callable[[Connection], Connection], at: float | None
    ) -> Connection | None:
        """Apply `change` to the newest version whose refresh token is still the one we used.

        None when the connection moved on (refreshed or re-imported meanwhile): our verdict
        was about a token that is no longer stored, so it must not be recorded.
        """
        current: Connection | None = conn
        for _ in range(SAVE_ATTEMPTS):
            if current is None or current.refresh_token != conn.refresh_token:
                return None
            try:
                return await self.store.save_connection(change(current), at)
            except ConflictError:
                current = await self.store.get_connection(conn.id)
        return None

    async def transient(
        self, conn: Connection, integration: Integration, error: SalesforceError, stage: str
    ) -> CheckResult:
        return await self._failed(
            conn,
            integration,
            error.as_fields(),
            events.TOKEN_REFRESH_FAILED,
            stage,
            retry_after=error.retry_after,
            rate_limited=isinstance(error, RateLimitedError),
            unconsumed=stage == "refresh" and error.proves_unconsumed,
        )

    async def integrity(
        self, conn: Connection, integration: Integration, problem: ResponseIntegrityError
    ) -> CheckResult:
        fields = {"error": problem.error, "error_description": problem.error_description}
        return await self._failed(conn, integration, fields, events.SIGNATURE_INVALID, "refresh")

    async def _failed(
        self,
        conn: Connection,
        integration: Integration,
        fields: dict[str, Any],
        event: str,
        stage: str,
        *,
        retry_after: float | None = None,
        rate_limited: bool = False,
        unconsumed: bool = False,
    ) -> CheckResult:
        """One failure: `failing`, the next attempt scheduled, exactly one event (plus the
        single escalation event when this failure crosses the line).

        `unconsumed`: the answer proved the refresh token was not consumed (see
        `SalesforceError.proves_unconsumed`), so the "refresh sent" mark is cleared; otherwise
        it stays and the next attempt asks Salesforce about the token before resending it."""
        now = self.clock()
        failure = policy.after_failure(
            conn, now, self.timing, self.rng, retry_after=retry_after, rate_limited=rate_limited
        )
        at = failure.next_attempt_at
        saved = await self._save(conn, lambda c: _failing(c, fields, now, failure, unconsumed), at)
        if saved is None:
            return CheckResult(conn.id, Outcome.SUPERSEDED, reason="token changed meanwhile")
        await self.sink.emit(
            event,
            saved,
            integration,
            **fields,
            stage=stage,
            attempt=failure.attempt,
            next_attempt_at=round(at, 3),
        )
        if failure.escalate:
            await self.sink.emit(
                events.ESCALATED,
                saved,
                integration,
                **fields,
                attempt=failure.attempt,
                failing_since=saved.failing_since,
                next_attempt_at=round(at, 3),
            )
        return CheckResult(conn.id, Outcome.FAILED, stage, fields, at)

    async def reauth_required(
        self, conn: Connection, integration: Integration, error: SalesforceError
    ) -> CheckResult:
        now = self.clock()
        last = LastError(error.error, error.error_description, error.http_status, now)

        def dead(c: Connection) -> Connection:
            # Salesforce's own verdict proves the token unconsumed; ours ("inactive after a
            # lost answer") does not, and the mark keeps a forced refresh from resending it.
            return c.evolve(
                refresh_started_at=None if error.proves_unconsumed else c.refresh_started_at,
                status=ConnectionStatus.REAUTH_REQUIRED,
                last_error=last,
                last_check_at=now,
                failing_since=c.failing_since or now,
            )

        saved = await self._save(conn, dead, None)
        if saved is None:
            return CheckResult(conn.id, Outcome.SUPERSEDED, reason="token changed meanwhile")
        await self.sink.emit(events.REAUTH_REQUIRED, saved, integration, **error.as_fields())
        return CheckResult(conn.id, Outcome.REAUTH_REQUIRED, "refresh", error.as_fields())

    async def misconfigured(
        self, conn: Connection, integration: Integration, error: SalesforceError, stage: str
    ) -> CheckResult:
        now = self.clock()
        last = LastError(error.error, error.error_description, error.http_status, now)
        changed = await self.store.set_integration_status(
            integration.name, IntegrationStatus.MISCONFIGURED, last
        )
        if changed:
            await self.sink.emit(
                events.INTEGRATION_MISCONFIGURED,
                None,
                integration,
                **error.as_fields(),
                stage=stage,
                detected_by=conn.id,
            )
        at = now + self.timing.retry_max
        await self.store.schedule(conn.id, at)
        return CheckResult(conn.id, Outcome.MISCONFIGURED, stage, error.as_fields(), at)

    async def integration_recovered(self, integration: Integration) -> None:
        if await self.store.set_integration_status(
            integration.name, IntegrationStatus.ACTIVE, None
        ):
            await self.sink.emit(events.INTEGRATION_RECOVERED, None, integration)

    async def introspection_unavailable(self, integration: Integration) -> None:
        if await self.store.set_introspection(integration.name, available=False):
            await self.sink.emit(
                events.INTROSPECTION_UNAVAILABLE,
                None,
                integration,
                error="introspection_unavailable",
                error_description=UNAVAILABLE_HELP,
            )

    async def introspection_restored(self, integration: Integration) -> None:
        if await self.store.set_introspection(integration.name, available=True):
            await self.sink.emit(events.INTROSPECTION_RESTORED, None, integration)

    async def paused(self, conn: Connection, integration: Integration) -> CheckResult | None:
        """A SKIPPED result when the connection or its integration is paused, else None."""
        if conn.status is ConnectionStatus.REAUTH_REQUIRED:
            await self.store.redis.zrem(self.store.keys.due, conn.id)
            return CheckResult(conn.id, Outcome.SKIPPED, reason="reauth_required")
        if integration.status is IntegrationStatus.MISCONFIGURED:
            at = self.clock() + self.timing.retry_max
            await self.store.schedule(conn.id, at)
            return CheckResult(
                conn.id, Outcome.SKIPPED, reason="integration misconfigured", next_check_at=at
            )
        return None

    async def orphan(self, conn: Connection) -> CheckResult:
        at = self.clock() + self.timing.retry_max
        await self.store.schedule(conn.id, at)
        return CheckResult(
            conn.id,
            Outcome.SKIPPED,
            reason=f"integration {conn.integration!r} does not exist",
            next_check_at=at,
        )


def _failing(
    conn: Connection,
    error: Mapping[str, object],
    now: float,
    failure: policy.Failure,
    unconsumed: bool,
) -> Connection:
    status = error.get("http_status")
    return conn.evolve(
        refresh_started_at=None if unconsumed else conn.refresh_started_at,
        status=ConnectionStatus.FAILING,
        failures=failure.attempt,
        failing_since=conn.failing_since or now,
        escalated_at=now if failure.escalate else conn.escalated_at,
        attempts_day=failure.attempts_day,
        attempts_today=failure.attempts_today,
        last_check_at=now,
        last_error=LastError(
            str(error["error"]),
            str(error.get("error_description") or ""),
            status if isinstance(status, int) else None,
            now,
        ),
    )
