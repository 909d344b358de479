"""One check cycle for one or many connections: the only place that combines the store, the
lease, the Salesforce client and the events.

    lease -> re-read -> [introspect] -> decide -> (refresh -> save -> learn expiry) -> reschedule

Introspection comes first only when the stored expiry cannot decide: a known expiry inside
the margin refreshes at once (`policy.refresh_without_looking`), one call per session.

Failures are recorded by `worker.engine.failures`; this module handles the paths that succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from worker.domain import policy
from worker.domain.answers import IntrospectionResult, TokenResponse
from worker.domain.models import (
    Connection,
    ConnectionStatus,
    ExpirySource,
    Integration,
    IntegrationStatus,
)
from worker.domain.outcomes import CheckResult, Outcome
from worker.engine import events, failures
from worker.engine.events import EventSink
from worker.engine.saving import apply_refresh, save_refresh
from worker.errors import (
    ConfigurationError,
    ConflictError,
    DecryptionError,
    PermanentError,
    SalesforceError,
    StoreError,
    Throttled,
    TransientError,
)
from worker.salesforce.client import SalesforceClient
from worker.store import codec
from worker.store.clients import STORE_DOWN
from worker.store.connections import Store
from worker.store.leases import Leases
from worker.store.replication import Replication

log = structlog.get_logger("tokenworker.refresher")
INTEGRATION_CACHE_SECONDS = 5.0
# How soon a check that met an unreachable store is due again (if the store takes the
# give-back; if not, the sweep's claim window brings the id back).
STORE_DOWN_RETRY = 2.0
# An unreadable record (a missing encryption key) is reported once per connection per window.
UNREADABLE_EVENT_WINDOW = 3600
# A fresh token reading inactive means "this app cannot introspect" only when no token of the
# integration read active within this window (in this process), and on more than one
# connection: a grant revoked right after its refresh reads exactly the same.
INTROSPECTION_SEEN_WORKING = 600.0
UNAVAILABLE_AFTER_CONNECTIONS = 2


@dataclass(frozen=True)
class Demand:
    """A caller that needs a token now (the API): refresh, unless `satisfied` holds of the
    record read under the lease (another process refreshed it meanwhile, say)."""

    satisfied: Callable[[Connection], bool]
    reason: str


class Refresher:
    def __init__(
        self,
        store: Store,
        leases: Leases,
        client: SalesforceClient,
        sink: EventSink,
        timing: policy.Timing,
        *,
        lease_wait: float = 0.0,
        concurrency: int = 200,
        save_window: float = 120.0,
        replication: Replication | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.leases = leases
        self.client = client
        self.sink = sink
        self.timing = timing
        self.lease_wait = lease_wait
        self.concurrency = concurrency
        self.save_window = save_window
        self.replication = replication  # a rotated token waits for replicas (WAIT)
        self.clock = clock
        self.rng = rng or random.Random()
        self._integrations: dict[str, tuple[Integration | None, float]] = {}
        self._reading: dict[str, asyncio.Future[Integration | None]] = {}  # reads under way
        self._forgotten: dict[str, float] = {}  # name -> when last forgotten (monotonic)
        self._lease: dict[str, str] = {}  # connection id -> our lease token, while held
        self._marked: dict[str, float] = {}  # connection id -> when we marked a refresh sent
        self.recorder = failures.Recorder(store, sink, timing, clock, self.rng)
        self._introspection_active: dict[str, float] = {}  # integration -> last active answer
        self._inactive_fresh: dict[str, dict[str, float]] = {}  # integration -> {id: when}

    async def check_many(
        self, ids: Iterable[str], *, force: bool = False, budget: float | None = None
    ) -> list[CheckResult]:
        """Check connections concurrently, at most `concurrency` at a time.

        With a `budget` (seconds), no check starts after it is spent: the ids not started are
        given back to the due index, due at once, and come back with the next sweep. A slow
        Salesforce therefore bounds how long a batch runs (and a warm shutdown waits)."""
        stop_at = None if budget is None else time.monotonic() + budget
        deferred: list[str] = []
        ids = list(ids)
        results: dict[int, CheckResult] = {}
        pending = iter(enumerate(ids))

        async def lane() -> None:
            """Check the next id not taken by another lane, until none is left: `concurrency`
            lanes, not one task per id waiting on a semaphore."""
            for index, connection_id in pending:
                if stop_at is not None and time.monotonic() >= stop_at:
                    deferred.append(connection_id)
                    late = CheckResult(connection_id, Outcome.DEFERRED, reason="batch out of time")
                    results[index] = late
                    continue
                try:
                    results[index] = await self.check(connection_id, force=force, detach=True)
                except Exception as error:  # a bug: this id's result, not the batch's
                    results[index] = _crashed(connection_id, error)

        try:
            await asyncio.gather(*(lane() for _ in range(min(self.concurrency, len(ids)))))
        finally:
            await self.leases.settle()  # the detached releases, before the loop may stop
        if deferred:
            await self._give_back(deferred, self.clock())
            log.warning("batch.deferred", count=len(deferred), budget_s=budget)
        return [results[index] for index in range(len(ids))]

    async def _give_back(self, connection_ids: list[str], at: float) -> None:
        """Best effort: when the store is away, the sweep's claim window returns the ids."""
        try:
            await self.store.give_back(connection_ids, at)
        except STORE_DOWN as error:
            log.warning("store.unreachable", stage="give_back", problem=type(error).__name__)

    async def refresh_unless(
        self, connection_id: str, satisfied: Callable[[Connection], bool], reason: str
    ) -> CheckResult:
        """Single-flight refresh for a caller that needs a token: wait for the lease like an
        explicit check, re-read under it, and refresh (the one refresh path: rotation-safe
        save, events) only when `satisfied` is false of what is stored by then. SUPERSEDED
        means it held: nothing was sent to Salesforce."""
        return await self.check(connection_id, demand=Demand(satisfied, reason))

    async def check(
        self,
        connection_id: str,
        *,
        force: bool = False,
        explicit: bool = False,
        demand: Demand | None = None,
        detach: bool = False,
    ) -> CheckResult:
        """One cycle. `force` refreshes whatever the token says; `explicit` (an operator asked)
        runs even when the connection or its integration is paused and waits for the lease;
        a `demand` is explicit and refreshes unless it is satisfied under the lease.
        `detach`: return without waiting for the lease's release (check_many settles them)."""
        explicit = explicit or force or demand is not None
        with structlog.contextvars.bound_contextvars(connection_id=connection_id):
            try:
                return await self._check(connection_id, force, explicit, demand, detach)
            except Throttled as throttled:
                at = self.clock() + throttled.retry_in
                await self.store.give_back([connection_id], at)  # not if deleted meanwhile
                return CheckResult(
                    connection_id,
                    Outcome.DEFERRED,
                    reason="TOKENWORKER_RATE_LIMIT reached for the integration",
                    next_check_at=at,
                )
            except STORE_DOWN as error:
                return await self._store_down(connection_id, error)
            except StoreError as error:
                log.error("connection.unreadable", problem=str(error))
                if isinstance(error, DecryptionError):
                    await self._report_unreadable(connection_id, error)
                await self.store.schedule(connection_id, self.clock() + self.timing.retry_max)
                return CheckResult(connection_id, Outcome.ERROR, reason=str(error))

    async def _store_down(self, connection_id: str, error: Exception) -> CheckResult:
        """The store went away in the middle of this check: this check's outcome, not the
        batch's. Failing the batch would have Celery retry every id of it, including those
        already done, while this check's id is due again soon anyway. Nothing was sent without
        the lease: an answer already received was saved (or is lost only past save_window)."""
        log.warning("store.unreachable", stage="check", problem=type(error).__name__)
        await self._give_back([connection_id], self.clock() + STORE_DOWN_RETRY)
        return CheckResult(connection_id, Outcome.ERROR, reason="store unreachable")

    async def _report_unreadable(self, connection_id: str, error: DecryptionError) -> None:
        """`connection.unreadable` once per connection per window, whichever process sees it
        first: a record nobody can decrypt is retried every RETRY_MAX, not reported each time."""
        key = f"{self.store.keys.prefix}unreadable:{connection_id}"
        if await self.store.redis.set(key, "1", nx=True, ex=UNREADABLE_EVENT_WINDOW):
            await self.sink.emit(
                events.CONNECTION_UNREADABLE,
                None,
                None,
                connection_id=connection_id,
                error="unreadable",
                error_description=str(error),
            )

    async def _check(
        self,
        connection_id: str,
        force: bool,
        explicit: bool,
        demand: Demand | None,
        detach: bool = False,
    ) -> CheckResult:
        wait = self.lease_wait if explicit else 0.0
        lease = self.store.keys.lease(connection_id)
        read = self.store.connection_read(connection_id)
        satisfied = None if demand is None else self._satisfies(connection_id, demand)
        hold = self.leases.hold(lease, read, wait, satisfied, detach=detach)
        async with hold as (token, raw):
            if token is None and raw is not None:  # the holder did what the demand needs
                return CheckResult(connection_id, Outcome.SUPERSEDED, reason="satisfied meanwhile")
            if token is None:
                return CheckResult(connection_id, Outcome.CONTENDED, reason="lease held")
            conn = self.store.decode_connection(connection_id, raw)
            if conn is None:
                await self.store.redis.zrem(self.store.keys.due, connection_id)
                return CheckResult(connection_id, Outcome.NOT_FOUND)
            if demand is not None and demand.satisfied(conn):
                return CheckResult(connection_id, Outcome.SUPERSEDED, reason="satisfied meanwhile")
            integration = await self.integration(conn.integration)
            if integration is None:
                return await self.recorder.orphan(conn)
            if not explicit:
                if integration.status is IntegrationStatus.MISCONFIGURED:
                    # Never skip on a cached verdict: the operator may have fixed it just now.
                    self.forget_integration(integration.name)
                    integration = await self.integration(conn.integration) or integration
                paused = await self.recorder.paused(conn, integration)
                if paused is not None:
                    return paused
            self._lease[connection_id] = token
            try:
                if demand is not None:
                    return await self._refresh(conn, integration, demand.reason)
                return await self._cycle(conn, integration, force)
            finally:
                self._lease.pop(connection_id, None)
                self._marked.pop(connection_id, None)

    def _satisfies(self, connection_id: str, demand: Demand) -> Callable[[codec.Raw], bool]:
        """Whether a record read while waiting for the lease already meets the demand."""

        def check(raw: codec.Raw) -> bool:
            conn = self.store.decode_connection(connection_id, raw)
            return conn is not None and demand.satisfied(conn)

        return check

    async def integration(self, name: str) -> Integration | None:
        """The integration, cached for INTEGRATION_CACHE_SECONDS. When the copy runs out, the
        checks in flight that want it wait for one read, not one read each (a process has
        `concurrency` of them, and all of them miss at the same moment)."""
        cached = self._integrations.get(name)
        if cached is not None and time.monotonic() - cached[1] < INTEGRATION_CACHE_SECONDS:
            return cached[0]
        reading = self._reading.get(name)
        if reading is None:
            reading = asyncio.ensure_future(self._read_integration(name))
            reading.add_done_callback(_retrieved)  # even when every waiter was cancelled
            self._reading[name] = reading
        # Shielded: a check cancelled while waiting must not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read_integration(self, name: str) -> Integration | None:
        reading = asyncio.current_task()  # in _reading unless forgotten before it began
        started = time.monotonic()
        try:
            integration = await self.store.get_integration(name)
        finally:
            if self._reading.get(name) is reading:
                del self._reading[name]
        if self._reading.get(name) is None and self._forgotten.get(name, 0.0) <= started:
            self._integrations[name] = (integration, started)
        return integration

    def forget_integration(self, name: str) -> None:
        """Drop the cached copy; a read already under way is not cached either (it may have
        read the integration before the change that made the caller forget it)."""
        self._integrations.pop(name, None)
        self._reading.pop(name, None)
        self._forgotten[name] = time.monotonic()

    async def _cycle(self, conn: Connection, integration: Integration, force: bool) -> CheckResult:
        now = self.clock()
        decision = policy.refresh_without_looking(conn, now, self.timing, force=force)
        if decision is None:
            facts: IntrospectionResult | None = None
            if integration.introspection_available and conn.access_token is not None:
                try:
                    facts = await self.client.introspect(integration, conn.access_token)
                except SalesforceError as error:
                    handled = await self._introspection_failed(conn, integration, error, now)
                    if handled is not None:
                        return handled
            if facts is not None and facts.active:
                self._seen_active(integration)
            decision = policy.decide(conn, facts, now, self.timing)
        if not decision.refresh:
            assert decision.expiry is not None
            return await self._still_fresh(conn, integration, decision.expiry, now)
        return await self._refresh(conn, integration, decision.reason)

    async def _introspection_failed(
        self, conn: Connection, integration: Integration, error: SalesforceError, now: float
    ) -> CheckResult | None:
        """A result when the failure ends the cycle; None to go on to a refresh anyway."""
        if isinstance(error, ConfigurationError):
            newer = await self._newer_integration(integration)
            if newer is not None:
                return await self._cycle(conn, newer, force=False)
            self.forget_integration(integration.name)
            return await self.recorder.misconfigured(conn, integration, error, stage="introspect")
        expiry = policy.assumed_expiry(conn, now, self.timing)
        if expiry.expires_at - now > self.timing.margin:
            return await self.recorder.transient(conn, integration, error, stage="introspect")
        return None  # the stored expiry says the token is near its end: refresh regardless

    async def _still_fresh(
        self, conn: Connection, integration: Integration, expiry: policy.Expiry, now: float
    ) -> CheckResult:
        updated = conn.healthy(now, expires_at=expiry.expires_at, expiry_source=expiry.source)
        at = policy.next_check_at(expiry, updated, now, self.timing, self.rng)
        try:
            await self.store.save_connection(updated, at, since=conn)
        except ConflictError:
            return CheckResult(conn.id, Outcome.SUPERSEDED, reason="a newer write won")
        if conn.status is not ConnectionStatus.ACTIVE:
            await self.sink.emit(events.RECOVERED, updated, integration, previous=conn.status.value)
        return CheckResult(conn.id, Outcome.FRESH, reason="fresh", next_check_at=at)

    async def _refresh(
        self, conn: Connection, integration: Integration, reason: str, *, retried: bool = False
    ) -> CheckResult:
        lost_lease = CheckResult(conn.id, Outcome.CONTENDED, reason="lease lost before refresh")
        if conn.refresh_started_at is not None and self._marked.get(conn.id) is None:
            # The lost-answer verdict may end the connection: only while the lease is ours.
            if not await self._still_ours(conn):
                return lost_lease
            lost = await self._earlier_answer_lost(conn, integration)
            if lost is not None:
                return lost
        await self._admit(conn, integration)
        # Renewed right before sending, after every wait above (the lost-answer introspection,
        # a permit): a lease that ran out means another worker may be refreshing this token.
        if not await self._still_ours(conn):
            return lost_lease
        if self._marked.get(conn.id) is None:
            started = self.clock()
            unmarked = await self._mark(conn, started)
            if unmarked is not None:
                return unmarked
            self._marked[conn.id] = started
            conn = conn.evolve(refresh_started_at=started)
        try:
            response = await self.client.refresh(integration, conn.refresh_token, admitted=True)
        except (PermanentError, ConfigurationError) as error:
            newer = await self._newer_integration(integration)
            if newer is not None:
                # Credentials changed since we cached them: the verdict was about old ones.
                return await self._refresh(conn, newer, reason, retried=retried)
            if isinstance(error, PermanentError):
                return await self.recorder.reauth_required(conn, integration, error)
            self.forget_integration(integration.name)
            return await self.recorder.misconfigured(conn, integration, error, stage="refresh")
        except TransientError as error:
            if error.error == "invalid_grant" and not retried:
                return await self._lost_race(conn, integration, reason)
            return await self.recorder.transient(conn, integration, error, stage="refresh")
        return await self._refreshed(conn, integration, response, reason)

    async def _mark(self, conn: Connection, started: float) -> CheckResult | None:
        """Mark the refresh as sent; a result (and nothing sent) when it must not go out.

        When replicas are wanted the mark must be confirmed (WAIT) before the refresh token
        leaves: a failover that loses the mark while the refresh is on the wire hands the new
        master a record that looks idle, and its next check sends the consumed token again.
        A shortfall sends nothing: our mark is taken back (best effort; one left behind only
        costs the next check an introspection) and the check is due again in STORE_DOWN_RETRY."""
        replication = self.replication
        if replication is None or replication.cached() == 0:
            marked, wanted, acked = await self.store.mark_refreshing(conn.id, started), 0, 0
        else:
            marked, wanted, acked = await self.store.mark_replicated(conn.id, started, replication)
        if not marked:
            # Removed by an operator since we read it: never send a removed grant's token.
            return CheckResult(conn.id, Outcome.NOT_FOUND, reason="removed before refresh")
        if acked >= wanted:
            return None
        log.warning("replication.short", stage="mark", acked=acked, wanted=wanted)
        with contextlib.suppress(*STORE_DOWN):
            await self.store.clear_refreshing(conn.id)
        await self._give_back([conn.id], self.clock() + STORE_DOWN_RETRY)
        return CheckResult(
            conn.id, Outcome.ERROR, reason="replicas did not confirm the refresh mark: not sent"
        )

    async def _still_ours(self, conn: Connection) -> bool:
        """Renew our lease on the connection; False when it ran out and may be another's."""
        token = self._lease.get(conn.id)
        return token is not None and await self.leases.renew(self.store.keys.lease(conn.id), token)

    async def _keep_lease(self, conn: Connection) -> bool:
        """Renew our lease, or take it back if nobody holds it (see save_refresh's `keep`)."""
        token = self._lease.get(conn.id)
        return token is not None and await self.leases.keep(self.store.keys.lease(conn.id), token)

    async def _admit(self, conn: Connection, integration: Integration) -> None:
        """The rate-limit permit for a refresh, taken before it is marked as sent, so a
        throttled refresh never looks like a lost answer. On a retry (the earlier send of this
        check was answered) a throttle also clears that mark: nothing is in flight."""
        try:
            await self.client.admit(integration)
        except Throttled:
            if self._marked.pop(conn.id, None) is not None:
                await self.store.clear_refreshing(conn.id)
            raise

    async def _earlier_answer_lost(
        self, conn: Connection, integration: Integration
    ) -> CheckResult | None:
        """An earlier refresh was sent and its answer never saved (a crash, a timeout). With
        rotation that answer consumed the token, and sending it again makes Salesforce revoke
        the grant: ask Salesforce about the refresh token first. None means: safe to send.

        Reached only with the lease, and a live holder of an answer keeps its lease until it is
        saved (save_refresh's `keep`), so a mark met here is a dead worker's, or one cut off
        from the store for a whole lease TTL. Not chosen: waiting until the mark is older than
        SAVE_WINDOW + the refresh timeout, which never misjudges a live holder but holds every
        connection a killed worker had in flight for over two minutes instead of one TTL; the
        cut-off holder's later save still stores its answer (compare-and-set onto the
        `reauth_required` record), so the grant survives and only the verdict was early."""
        if not integration.introspection_available:
            return None  # nothing to ask; the earlier call most likely never arrived
        try:
            facts = await self.client.introspect(integration, conn.refresh_token, "refresh_token")
        except SalesforceError as error:
            return await self.recorder.transient(conn, integration, error, stage="introspect")
        if facts.active:
            self._seen_active(integration)
            return None
        dead = PermanentError(
            "refresh_token_inactive",
            "an earlier refresh got no answer and Salesforce now reports the refresh token "
            "inactive (consumed by that lost answer, or revoked); it was not sent again",
        )
        return await self.recorder.reauth_required(conn, integration, dead)

    async def _lost_race(
        self, conn: Connection, integration: Integration, reason: str
    ) -> CheckResult:
        """Salesforce saw a concurrent refresh of this token ("expired authorization code").

        Re-read first: when another writer stored a newer token, we are done (and our mark
        on its record goes). Otherwise ask Salesforce about our refresh token before sending
        it again: with rotation the winner consumed it, and a resend after the race window is
        a reuse that revokes the grant for the winner too. Inactive: not sent; the mark stays,
        so the next attempt asks again (the winner's token may be stored by then). Active (no
        rotation), or introspection unavailable: try once more, as Salesforce advises."""
        await asyncio.sleep(0.5 + self.rng.random())
        latest = await self.store.get_connection(conn.id)
        if latest is None or latest.refresh_token != conn.refresh_token:
            mark = self._marked.get(conn.id)
            if latest is not None and mark is not None and latest.refresh_started_at == mark:
                await self.store.clear_refreshing(conn.id)  # ours, on the winner's record
            return CheckResult(conn.id, Outcome.SUPERSEDED, reason="refreshed concurrently")
        if integration.introspection_available:
            try:
                facts = await self.client.introspect(
                    integration, latest.refresh_token, "refresh_token"
                )
            except Throttled:
                # Our send was answered (an OAuth error): nothing of ours is in flight.
                if self._marked.pop(conn.id, None) is not None:
                    await self.store.clear_refreshing(conn.id)
                raise
            except SalesforceError as error:
                return await self.recorder.transient(latest, integration, error, "introspect")
            if not facts.active:
                consumed = TransientError(
                    "refresh_token_consumed",
                    "a concurrent refresh consumed this refresh token and no newer token is "
                    "stored yet; it was not sent again",
                )
                return await self.recorder.transient(latest, integration, consumed, "refresh")
        return await self._refresh(latest, integration, reason, retried=True)

    async def _fresh_token_inactive(
        self, conn: Connection, integration: Integration, now: float
    ) -> None:
        """A token issued a moment ago reads inactive: either this app may not introspect
        (Salesforce's exact answer then is not documented: see the README), or the grant was
        revoked right after the refresh (the customer, or a reuse revocation). Only the first
        is the integration's problem; report it when nothing says the second."""
        if self._introspection_works(integration) or await self._grant_alive(conn, integration):
            # The app sees tokens of this integration: it is this grant (or token) that died.
            log.warning("token.inactive_after_refresh", integration=integration.name)
            await self.store.schedule(conn.id, now + self.timing.retry_base)
            return
        seen = self._inactive_fresh.setdefault(integration.name, {})
        seen[conn.id] = time.monotonic()
        for cid, when in list(seen.items()):
            if time.monotonic() - when > INTROSPECTION_SEEN_WORKING:
                del seen[cid]
        if len(seen) >= UNAVAILABLE_AFTER_CONNECTIONS:
            await self.recorder.introspection_unavailable(integration)

    async def _grant_alive(self, conn: Connection, integration: Integration) -> bool:
        """Does the refresh token just stored read active? (False when unknown.)"""
        try:
            facts = await self.client.introspect(integration, conn.refresh_token, "refresh_token")
        except (SalesforceError, Throttled):
            return False
        if facts.active:
            self._seen_active(integration)
        return facts.active

    def _seen_active(self, integration: Integration) -> None:
        self._introspection_active[integration.name] = time.monotonic()
        self._inactive_fresh.pop(integration.name, None)

    def _introspection_works(self, integration: Integration) -> bool:
        seen = self._introspection_active.get(integration.name)
        return seen is not None and time.monotonic() - seen < INTROSPECTION_SEEN_WORKING

    async def _newer_integration(self, used: Integration) -> Integration | None:
        """The stored integration when it is newer than the copy we used, else None."""
        self.forget_integration(used.name)
        current = await self.integration(used.name)
        if current is None or current.version == used.version:
            return None
        return current

    async def _refreshed(
        self, conn: Connection, integration: Integration, response: TokenResponse, reason: str
    ) -> CheckResult:
        now = self.clock()
        applied = apply_refresh(conn, integration, response, now, self.timing, self.rng)
        # The rotated refresh token is saved before anything else can fail or be awaited.
        saved = await save_refresh(
            self.store,
            applied.connection,
            applied.next_check_at,
            sent=conn.refresh_token,
            window=self.save_window,
            replication=self.replication,
            keep=lambda: self._keep_lease(conn),
        )
        if saved.refresh_token != applied.connection.refresh_token:
            # An operator's import (or another writer) replaced the grant while we refreshed
            # the old one: the stored grant stands, this answer is not written.
            return CheckResult(conn.id, Outcome.SUPERSEDED, reason="grant replaced meanwhile")
        if applied.problem is not None:
            return await self.recorder.integrity(saved, integration, applied.problem)
        if applied.rejected_instance_url is not None:
            await self.sink.emit(
                events.INSTANCE_URL_REJECTED,
                saved,
                integration,
                error="invalid_instance_url",
                error_description=applied.rejected_instance_url,
            )
        elif applied.instance_url_changed:
            await self.sink.emit(
                events.INSTANCE_URL_CHANGED,
                saved,
                integration,
                previous=conn.instance_url,
                instance_url=saved.instance_url,
            )
        # After an "inactive" verdict, look at the new token once: if it reads inactive too,
        # this app cannot introspect (no "Introspect All Tokens"). A rejected token (a host
        # app got a 401) or the day's first refresh re-learns a lifetime the org may have cut.
        unknown = (
            applied.expiry is None
            or reason in ("inactive", "token_rejected")
            or policy.relearn_due(conn, now)
        )
        saved = await self._learn_expiry(saved, integration, unknown, now)
        await self.sink.emit(
            events.TOKEN_REFRESHED,
            saved,
            integration,
            reason=reason,
            expires_at=saved.expires_at,
            expiry_source=_source(saved),
            rotated=applied.rotated,
        )
        if conn.status is not ConnectionStatus.ACTIVE:
            await self.sink.emit(events.RECOVERED, saved, integration, previous=conn.status.value)
        if integration.status is IntegrationStatus.MISCONFIGURED:
            await self.recorder.integration_recovered(integration)
        return CheckResult(
            conn.id,
            Outcome.REFRESHED,
            reason=reason,
            next_check_at=await self.store.next_check_at(conn.id),
        )

    async def learn_expiry(self, conn: Connection, integration: Integration) -> Connection:
        """Introspect a token stored outside a check (a new connection from the connect
        flow) to learn its expiry; the saved record, or `conn` when nothing was learned."""
        return await self._learn_expiry(conn, integration, True, self.clock())

    async def _learn_expiry(
        self, conn: Connection, integration: Integration, unknown: bool, now: float
    ) -> Connection:
        """Introspect a just-issued token when its expiry is unknown, or to notice that
        introspection works again; fall back to age when it reads inactive."""
        if not unknown and integration.introspection_available:
            return conn
        assert conn.access_token is not None
        try:
            facts = await self.client.introspect(integration, conn.access_token)
        except (SalesforceError, Throttled):
            return conn  # the assumed expiry already saved stands; the next check retries
        if not facts.active:
            await self._fresh_token_inactive(conn, integration, now)
            return conn
        self._seen_active(integration)
        if not integration.introspection_available:
            await self.recorder.introspection_restored(integration)
        if facts.exp is None:
            return conn
        issued = facts.iat or conn.issued_at or now
        expiry = policy.Expiry(facts.exp, ExpirySource.INTROSPECTION, facts.exp - issued)
        updated = conn.evolve(
            expires_at=expiry.expires_at, expiry_source=expiry.source, lifetime=expiry.lifetime
        )
        at = policy.next_check_at(expiry, updated, now, self.timing, self.rng)
        try:
            return await self.store.save_connection(updated, at, since=conn)
        except ConflictError:
            return conn


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shared read's error as seen: each waiter got it (or none was left to)."""
    if not future.cancelled():
        future.exception()


def _crashed(connection_id: str, error: BaseException) -> CheckResult:
    """A check that raised what it should have handled: logged, and this id's result only
    (it is due again when the sweep's claim runs out)."""
    log.error(
        "check.crashed",
        connection_id=connection_id,
        problem=type(error).__name__,
        exc_info=(type(error), error, error.__traceback__),
    )
    return CheckResult(connection_id, Outcome.ERROR, reason=f"crashed: {type(error).__name__}")


def _source(conn: Connection) -> str | None:
    return conn.expiry_source.value if conn.expiry_source else None
