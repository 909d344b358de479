"""Pure decisions: refresh or not, when to look again, how long to back off. No I/O.

Every function takes the clock (`now`) and randomness (`rng`) as arguments, so a test can call
it with a fixed clock and a seeded generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.domain.answers import IntrospectionResult, TokenResponse
from worker.domain.models import Connection, ExpirySource

RATE_LIMIT_BACKOFF = 3600.0  # Salesforce blocks a user's logins for the rest of the hour
MIN_DELAY = 1.0
MAX_JITTER = 60.0  # the most `next_check_at` moves a check earlier than the margin


@dataclass(frozen=True)
class Timing:
    """The durations the decisions depend on (seconds)."""

    margin: float
    default_lifetime: float
    keepalive: float
    retry_base: float
    retry_max: float
    escalate_after: int = 5
    escalate_after_failing: float = 21600.0
    daily_attempt_cap: int = 100
    lookahead: float = 0.0  # how early a sweep may start a check (worker.engine.sweep)


@dataclass(frozen=True)
class Expiry:
    """When an access token ends, how we know, and the lifetime it teaches us."""

    expires_at: float
    source: ExpirySource
    lifetime: float | None = None


@dataclass(frozen=True)
class Decision:
    """The verdict of one check."""

    refresh: bool
    reason: str
    expiry: Expiry | None = None


def margin_for(lifetime: float | None, timing: Timing) -> float:
    """The refresh margin, never more than half the session lifetime.

    Salesforce sessions can be as short as 15 minutes, the default margin; without this cap a
    fresh token would already count as near expiry and be refreshed at every check.
    """
    known = lifetime if lifetime is not None and lifetime > 0 else timing.default_lifetime
    return min(timing.margin, known / 2.0)


def keepalive_deadline(conn: Connection, timing: Timing) -> float | None:
    """When the refresh token must next be used, or None when we never saw it used."""
    baseline = conn.last_refresh_at or conn.issued_at
    return None if baseline is None else baseline + timing.keepalive


def assumed_expiry(conn: Connection, now: float, timing: Timing) -> Expiry:
    """The expiry we believe without introspection: stored if known, else age-based."""
    if conn.expires_at is not None and conn.expiry_source is not None:
        return Expiry(conn.expires_at, conn.expiry_source, conn.lifetime)
    lifetime = conn.lifetime or timing.default_lifetime
    issued = conn.issued_at if conn.issued_at is not None else now - lifetime
    return Expiry(issued + lifetime, ExpirySource.ASSUMED, conn.lifetime)


def refresh_without_looking(
    conn: Connection, now: float, timing: Timing, *, force: bool = False
) -> Decision | None:
    """A refresh no introspection should precede (forced, no token, keep-alive due, or the
    stored expiry says the token is due)."""
    if force:
        return Decision(True, "forced")
    if conn.access_token is None:
        return Decision(True, "no_access_token")
    deadline = keepalive_deadline(conn, timing)
    if deadline is None or now >= deadline:
        return Decision(True, "keepalive")
    return due_by_stored_expiry(conn, now, timing)


def relearn_due(conn: Connection, now: float) -> bool:
    """Whether the token a refresh just brought should be introspected although its lifetime
    is known: at the first refresh of each UTC day. A learned lifetime is otherwise reused
    forever (a direct refresh never looks at the old token), so an org that shortened its
    session timeout would be served expired tokens until someone noticed; this bounds that to
    a day, for one call per connection per day. (A host app's rejected-token report re-learns
    at once.)"""
    last = conn.last_refresh_at
    return last is None or int(last // 86400) != int(now // 86400)


def due_by_stored_expiry(conn: Connection, now: float, timing: Timing) -> Decision | None:
    """Refresh at once when an expiry Salesforce told us (not assumed) is within the margin.

    Activity can only extend a session (Salesforce, past half its timeout), never shorten
    it, so the stored expiry is the earliest the token can end. Introspecting first could
    avert this refresh only when activity extended the session, and costs the same one call
    as the refresh it might avert: it never pays. The check was scheduled up to MAX_JITTER
    before the margin starts, and a sweep starts it up to `timing.lookahead` before that, so
    that much earlier still counts as due (else every cycle would introspect once, find the
    token fresh for a few seconds more, and look again).
    """
    if conn.expires_at is None or conn.expiry_source in (None, ExpirySource.ASSUMED):
        return None
    if conn.expires_at - now > margin_for(conn.lifetime, timing) + MAX_JITTER + timing.lookahead:
        return None
    expiry = Expiry(conn.expires_at, conn.expiry_source, conn.lifetime)
    return Decision(True, "near_expiry", expiry)


def decide(
    conn: Connection,
    facts: IntrospectionResult | None,
    now: float,
    timing: Timing,
    *,
    force: bool = False,
) -> Decision:
    """Refresh or not. `facts` is None when introspection is unavailable or failed."""
    early = refresh_without_looking(conn, now, timing, force=force)
    if early is not None:
        return early
    if facts is None:
        expiry = assumed_expiry(conn, now, timing)
        if expiry.expires_at - now <= margin_for(expiry.lifetime, timing):
            return Decision(True, "near_expiry", expiry)
        return Decision(False, "fresh", expiry)
    if not facts.active:
        return Decision(True, "inactive")
    if facts.exp is None:
        return Decision(True, "no_expiry")
    # exp - iat overstates the lifetime once activity extended the session, so it is never
    # stored (lifetimes are learned from just-issued tokens, Refresher._learn_expiry); with
    # no learned lifetime it only caps the margin, where overstating errs on the early side.
    span = facts.exp - facts.iat if facts.iat is not None and facts.exp > facts.iat else None
    expiry = Expiry(facts.exp, ExpirySource.INTROSPECTION, conn.lifetime or span)
    if facts.exp - now <= margin_for(expiry.lifetime, timing):
        return Decision(True, "near_expiry", expiry)
    return Decision(False, "fresh", expiry)


def expiry_after_refresh(
    conn: Connection, response: TokenResponse, now: float, timing: Timing
) -> Expiry | None:
    """The new token's expiry when the response or a learned lifetime tells it, else None.

    None means: introspect the new token to learn it.
    """
    issued = response.issued_at if response.issued_at is not None else now
    if response.expires_in is not None:
        return Expiry(issued + response.expires_in, ExpirySource.EXPIRES_IN, response.expires_in)
    if conn.lifetime is not None:
        return Expiry(issued + conn.lifetime, ExpirySource.INTROSPECTION, conn.lifetime)
    return None


def next_check_at(
    expiry: Expiry, conn: Connection, now: float, timing: Timing, rng: random.Random
) -> float:
    """Look again just before the margin starts, never later than the keep-alive deadline.

    A little jitter (at most 5% of the wait, at most MAX_JITTER) spreads connections that were
    imported together, and only ever makes the check earlier.
    """
    target = expiry.expires_at - margin_for(expiry.lifetime, timing)
    deadline = keepalive_deadline(conn, timing)
    if deadline is not None:
        target = min(target, deadline)
    wait = target - now
    if wait > 0:
        target -= rng.uniform(0.0, min(MAX_JITTER, wait * 0.05))
    return max(target, now + MIN_DELAY)


def backoff(
    attempt: int, timing: Timing, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds before retry `attempt` (1-based): doubling from the base, capped, jittered.

    Jitter draws from the upper half of the interval so a retry is never immediate; a
    Retry-After from Salesforce is honoured when it asks for longer.
    """
    doublings = min(max(0, attempt - 1), 60)  # 2**60 * base exceeds any cap; no overflow
    ceiling = min(timing.retry_max, timing.retry_base * 2.0**doublings)
    delay = ceiling / 2.0 + rng.uniform(0.0, ceiling / 2.0)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return max(delay, MIN_DELAY)


@dataclass(frozen=True)
class Failure:
    """How one more failure changes a connection's retry bookkeeping."""

    attempt: int  # consecutive failures, this one included
    attempts_day: int
    attempts_today: int
    next_attempt_at: float
    escalate: bool  # emit the one escalation event now


def after_failure(
    conn: Connection,
    now: float,
    timing: Timing,
    rng: random.Random,
    *,
    retry_after: float | None = None,
    rate_limited: bool = False,
) -> Failure:
    """Backoff, the daily attempt cap, and whether this failure crosses an escalation line.

    Rate limiting waits at least an hour (Salesforce blocks the user's logins for the hour).
    Past the daily cap a connection waits for the next UTC day, so a long outage cannot burn
    through attempts (and login-failure budgets) forever.
    """
    attempt = conn.failures + 1
    day = int(now // 86400)
    today = conn.attempts_today + 1 if conn.attempts_day == day else 1
    delay = backoff(attempt, timing, rng, retry_after)
    if rate_limited:
        delay = max(delay, RATE_LIMIT_BACKOFF)
    if today >= timing.daily_attempt_cap:
        delay = max(delay, (day + 1) * 86400 - now + rng.uniform(0.0, 600.0))
    failing_since = conn.failing_since if conn.failing_since is not None else now
    crossed = (
        attempt >= timing.escalate_after or now - failing_since >= timing.escalate_after_failing
    )
    return Failure(attempt, day, today, now + delay, crossed and conn.escalated_at is None)
