"""worker/domain/policy.py: refresh or not, when to look again, how long to back off."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from config.settings import Settings
from worker.domain.answers import IntrospectionResult, TokenResponse
from worker.domain.models import Connection, ExpirySource
from worker.domain.policy import (
    MAX_JITTER,
    MIN_DELAY,
    Expiry,
    Timing,
    backoff,
    decide,
    expiry_after_refresh,
    next_check_at,
    refresh_without_looking,
)
from worker.engine.runtime import timing

now = 1_800_000_000.0
TIMING = Timing(
    margin=900.0, default_lifetime=7200.0, keepalive=604_800.0, retry_base=30.0, retry_max=900.0
)


def connection(**changes: Any) -> Connection:
    """A connection refreshed ten minutes ago with an access token and no known expiry."""
    base = Connection(
        id="c-1",
        integration="acme",
        refresh_token="5Aep861-refresh",
        access_token="00Dxx0000001gPL!AQ-access",
        issued_at=now - 600,
        last_refresh_at=now - 600,
    )
    return base.evolve(**changes)


def token_response(**changes: Any) -> TokenResponse:
    fields: dict[str, Any] = {
        "access_token": "00Dxx0000001gPL!AQ-new",
        "refresh_token": None,
        "instance_url": "https://acme.my.salesforce.com",
        "identity_url": None,
        "issued_at": now,
        "issued_at_raw": str(int(now * 1000)),
        "signature": None,
        "expires_in": None,
        "scope": "api refresh_token",
    }
    fields.update(changes)
    return TokenResponse(**fields)


def active(exp: float | None, iat: float | None = None) -> IntrospectionResult:
    return IntrospectionResult(active=True, exp=exp, iat=iat)


class TestTiming:
    def test_the_runtime_copies_the_durations_from_the_settings(self) -> None:
        """Timing takes margin, lifetime, keep-alive and retry bounds from the settings, and
        the sweep's lookahead from its interval (the engine's runtime builds it: the pure
        policy never reads the environment)."""
        settings = Settings.from_env(
            {
                "TOKENWORKER_REFRESH_MARGIN": "120",
                "TOKENWORKER_DEFAULT_LIFETIME": "3600",
                "TOKENWORKER_KEEPALIVE_INTERVAL": "86400",
                "TOKENWORKER_RETRY_BASE": "5",
                "TOKENWORKER_RETRY_MAX": "60",
                "TOKENWORKER_SWEEP_INTERVAL": "20",
            },
            require_keys=False,
        )
        assert timing(settings) == Timing(120.0, 3600.0, 86400.0, 5.0, 60.0, lookahead=10.0)


class TestDecideWithoutLooking:
    def test_forced_refresh_ignores_a_fresh_token(self) -> None:
        """force=True refreshes even when introspection says the token is fresh."""
        decision = decide(connection(), active(now + 7000), now, TIMING, force=True)
        assert (decision.refresh, decision.reason) == (True, "forced")

    def test_missing_access_token_refreshes(self) -> None:
        """A connection without an access token is refreshed whatever the facts say."""
        decision = decide(connection(access_token=None), active(now + 7000), now, TIMING)
        assert (decision.refresh, decision.reason) == (True, "no_access_token")

    def test_keepalive_due_refreshes_a_fresh_token(self) -> None:
        """A refresh token last used a keep-alive interval ago is used again, fresh or not."""
        conn = connection(last_refresh_at=now - TIMING.keepalive)
        decision = decide(conn, active(now + 7000), now, TIMING)
        assert (decision.refresh, decision.reason) == (True, "keepalive")

    def test_keepalive_not_yet_due_leaves_a_fresh_token(self) -> None:
        """One second before the keep-alive deadline a fresh token is left alone."""
        conn = connection(last_refresh_at=now - TIMING.keepalive + 1)
        assert decide(conn, active(now + 7000), now, TIMING).refresh is False

    def test_keepalive_baseline_prefers_last_refresh_over_issued_at(self) -> None:
        """The keep-alive clock runs from the last refresh, not from the original issue."""
        conn = connection(issued_at=now - 2 * TIMING.keepalive, last_refresh_at=now - 60)
        assert decide(conn, active(now + 7000), now, TIMING).refresh is False

    def test_keepalive_falls_back_to_issued_at(self) -> None:
        """Without a recorded refresh, an old issued_at makes the keep-alive due."""
        conn = connection(issued_at=now - TIMING.keepalive - 1, last_refresh_at=None)
        assert decide(conn, active(now + 7000), now, TIMING).reason == "keepalive"

    def test_unknown_baseline_refreshes(self) -> None:
        """A connection we never saw issued or refreshed is refreshed to establish a baseline."""
        conn = connection(issued_at=None, last_refresh_at=None)
        decision = decide(conn, active(now + 7000), now, TIMING)
        assert (decision.refresh, decision.reason) == (True, "keepalive")


class TestDueByStoredExpiry:
    """A known stored expiry inside the margin refreshes at once: no introspection first."""

    def known(self, left: float, source: ExpirySource = ExpirySource.INTROSPECTION) -> Connection:
        return connection(expires_at=now + left, expiry_source=source, lifetime=3600.0)

    def test_due_refreshes_without_looking(self) -> None:
        """Inside the margin by a learned expiry: refresh, the expiry carried along."""
        decision = refresh_without_looking(self.known(TIMING.margin), now, TIMING)
        assert decision is not None
        assert (decision.refresh, decision.reason) == (True, "near_expiry")
        assert decision.expiry == Expiry(now + TIMING.margin, ExpirySource.INTROSPECTION, 3600.0)

    def test_a_check_jittered_early_still_counts_as_due(self) -> None:
        """`next_check_at` schedules up to MAX_JITTER before the margin: that is due (else
        each cycle introspects once to find the token fresh for a few seconds more)."""
        conn = self.known(TIMING.margin + MAX_JITTER, ExpirySource.EXPIRES_IN)
        assert refresh_without_looking(conn, now, TIMING) is not None

    def test_beyond_the_margin_and_jitter_it_looks(self) -> None:
        """One second further out is left to introspection (None: not decided yet)."""
        conn = self.known(TIMING.margin + MAX_JITTER + 1)
        assert refresh_without_looking(conn, now, TIMING) is None

    def test_an_assumed_expiry_is_not_enough(self) -> None:
        """An expiry only assumed from age may be wrong either way: introspect first."""
        conn = self.known(0.0, ExpirySource.ASSUMED)
        assert refresh_without_looking(conn, now, TIMING) is None

    def test_the_margin_is_capped_by_the_learned_lifetime(self) -> None:
        """A 15-minute session's margin is half of it, not the configured 900 s."""
        conn = connection(expires_at=now + 600, expiry_source=ExpirySource.INTROSPECTION)
        short = conn.evolve(lifetime=900.0)
        assert refresh_without_looking(short, now, TIMING) is None  # 600 > 450 + 60
        assert refresh_without_looking(conn.evolve(lifetime=7200.0), now, TIMING) is not None

    def test_a_check_the_sweep_started_early_still_counts_as_due(self) -> None:
        """A sweep claims up to `lookahead` seconds ahead (worker.engine.sweep): a check that
        early, with the jitter's MAX_JITTER on top, refreshes without looking; one second more
        and it does not (it would introspect and find the token fresh)."""
        ahead = Timing(**{**TIMING.__dict__, "lookahead": 30.0})
        edge = now + TIMING.margin + MAX_JITTER + 30.0
        conn = connection(expires_at=edge, expiry_source=ExpirySource.INTROSPECTION)
        assert refresh_without_looking(conn, now, ahead) is not None
        assert refresh_without_looking(conn, now, TIMING) is None
        later = conn.evolve(expires_at=edge + 1.0)
        assert refresh_without_looking(later, now, ahead) is None


class TestDecideWithIntrospection:
    def test_inactive_token_refreshes(self) -> None:
        """Introspection saying the token is inactive means refresh."""
        decision = decide(connection(), IntrospectionResult(active=False), now, TIMING)
        assert (decision.refresh, decision.reason) == (True, "inactive")

    def test_active_without_exp_refreshes(self) -> None:
        """An active token whose expiry introspection does not tell is refreshed."""
        decision = decide(connection(), active(None), now, TIMING)
        assert (decision.refresh, decision.reason) == (True, "no_expiry")

    def test_expiry_within_margin_refreshes(self) -> None:
        """A token expiring exactly at the margin is refreshed, with the expiry recorded."""
        decision = decide(connection(), active(now + TIMING.margin), now, TIMING)
        assert (decision.refresh, decision.reason) == (True, "near_expiry")
        assert decision.expiry == Expiry(now + TIMING.margin, ExpirySource.INTROSPECTION)

    def test_expiry_beyond_margin_is_fresh(self) -> None:
        """A token expiring one second past the margin is left alone."""
        decision = decide(connection(), active(now + TIMING.margin + 1), now, TIMING)
        assert (decision.refresh, decision.reason) == (False, "fresh")
        assert decision.expiry is not None
        assert decision.expiry.expires_at == now + TIMING.margin + 1
        assert decision.expiry.source is ExpirySource.INTROSPECTION

    def test_exp_minus_iat_teaches_nothing(self) -> None:
        """exp - iat of a session extended by activity overstates the lifetime: the stored one
        (learned from a just-issued token) is kept."""
        conn = connection(lifetime=900.0)
        decision = decide(conn, active(now + 6600, iat=now - 600), now, TIMING)
        assert decision.expiry is not None
        assert decision.expiry.lifetime == 900.0

    def test_exp_not_after_iat_keeps_the_stored_lifetime(self) -> None:
        """An exp at or before iat teaches nothing; the stored lifetime is kept."""
        conn = connection(lifetime=5400.0)
        decision = decide(conn, active(now + 6600, iat=now + 6600), now, TIMING)
        assert decision.expiry is not None
        assert decision.expiry.lifetime == 5400.0


class TestDecideWithoutFacts:
    def test_stored_expiry_is_believed(self) -> None:
        """Without introspection a stored expiry decides, and is returned unchanged."""
        conn = connection(
            expires_at=now + 1000, expiry_source=ExpirySource.EXPIRES_IN, lifetime=3600.0
        )
        decision = decide(conn, None, now, TIMING)
        assert (decision.refresh, decision.reason) == (False, "fresh")
        assert decision.expiry == Expiry(now + 1000, ExpirySource.EXPIRES_IN, 3600.0)

    def test_stored_expiry_within_margin_refreshes(self) -> None:
        """A stored expiry inside the margin means refresh, even with a young issued_at."""
        conn = connection(
            issued_at=now - 1,
            expires_at=now + TIMING.margin,
            expiry_source=ExpirySource.INTROSPECTION,
        )
        assert decide(conn, None, now, TIMING).reason == "near_expiry"

    def test_age_based_expiry_is_issued_at_plus_default_lifetime(self) -> None:
        """With no stored expiry the token is assumed to live the default lifetime."""
        issued = now - TIMING.default_lifetime + TIMING.margin + 1
        decision = decide(connection(issued_at=issued), None, now, TIMING)
        assert (decision.refresh, decision.reason) == (False, "fresh")
        assert decision.expiry == Expiry(
            issued + TIMING.default_lifetime, ExpirySource.ASSUMED, None
        )

    def test_age_based_expiry_within_margin_refreshes(self) -> None:
        """An assumed expiry exactly at the margin means refresh."""
        issued = now - TIMING.default_lifetime + TIMING.margin
        assert decide(connection(issued_at=issued), None, now, TIMING).reason == "near_expiry"

    def test_learned_lifetime_beats_the_default(self) -> None:
        """A lifetime learned earlier replaces the default in the age-based guess."""
        conn = connection(issued_at=now - 3000, lifetime=3600.0)
        decision = decide(conn, None, now, TIMING)
        assert decision.reason == "near_expiry"
        assert decision.expiry == Expiry(now + 600, ExpirySource.ASSUMED, 3600.0)

    def test_expiry_without_source_is_not_trusted(self) -> None:
        """A stored expires_at with no source falls back to the age-based guess."""
        conn = connection(issued_at=now - 600, expires_at=now + 60, expiry_source=None)
        decision = decide(conn, None, now, TIMING)
        assert decision.expiry is not None
        assert decision.expiry.source is ExpirySource.ASSUMED
        assert decision.refresh is False

    @given(age=st.floats(min_value=0, max_value=TIMING.keepalive - 1))
    def test_age_based_rule(self, age: float) -> None:
        """Without facts, refresh exactly when issued_at + lifetime - now <= margin."""
        conn = connection(issued_at=now - age, last_refresh_at=now - age)
        expected = (now - age) + TIMING.default_lifetime - now <= TIMING.margin
        assert decide(conn, None, now, TIMING).refresh is expected


class TestExpiryAfterRefresh:
    def test_expires_in_wins(self) -> None:
        """expires_in in the response decides, even over a learned lifetime."""
        conn = connection(lifetime=7200.0)
        expiry = expiry_after_refresh(conn, token_response(expires_in=3600.0), now, TIMING)
        assert expiry == Expiry(now + 3600, ExpirySource.EXPIRES_IN, 3600.0)

    def test_expires_in_counts_from_issued_at(self) -> None:
        """The expiry counts from the response's issued_at, not from our clock."""
        response = token_response(issued_at=now - 30, expires_in=3600.0)
        expiry = expiry_after_refresh(connection(), response, now, TIMING)
        assert expiry is not None
        assert expiry.expires_at == now - 30 + 3600

    def test_learned_lifetime_applies_without_expires_in(self) -> None:
        """Without expires_in a lifetime learned from introspection predicts the expiry."""
        conn = connection(lifetime=5400.0)
        expiry = expiry_after_refresh(conn, token_response(), now, TIMING)
        assert expiry == Expiry(now + 5400, ExpirySource.INTROSPECTION, 5400.0)

    def test_missing_issued_at_counts_from_now(self) -> None:
        """A response without issued_at is taken as issued now."""
        conn = connection(lifetime=5400.0)
        expiry = expiry_after_refresh(conn, token_response(issued_at=None), now, TIMING)
        assert expiry is not None
        assert expiry.expires_at == now + 5400

    def test_unknown_lifetime_is_none(self) -> None:
        """Nothing tells the lifetime: None, so the caller introspects the new token."""
        assert expiry_after_refresh(connection(), token_response(), now, TIMING) is None


def expiry_in(seconds: float) -> Expiry:
    return Expiry(now + seconds, ExpirySource.INTROSPECTION)


class TestNextCheckAt:
    def test_looks_again_just_before_the_margin(self) -> None:
        """The next check is at exp - margin, at most a minute earlier."""
        at = next_check_at(expiry_in(7200), connection(), now, TIMING, random.Random(1))
        target = now + 7200 - TIMING.margin
        assert target - 60 <= at <= target

    def test_never_later_than_the_keepalive_deadline(self) -> None:
        """A refresh token near its keep-alive deadline is checked by then, fresh or not."""
        conn = connection(last_refresh_at=now - TIMING.keepalive + 100)
        at = next_check_at(expiry_in(7200), conn, now, TIMING, random.Random(2))
        assert now + 95 <= at <= now + 100

    def test_jitter_is_at_most_five_percent_of_a_short_wait(self) -> None:
        """For a 200-second wait the check moves at most 10 seconds earlier."""
        results = {
            next_check_at(expiry_in(TIMING.margin + 200), connection(), now, TIMING,
                          random.Random(seed))
            for seed in range(20)
        }
        assert all(now + 190 <= at <= now + 200 for at in results)

    def test_jitter_spreads_connections(self) -> None:
        """Connections with the same expiry are not all checked at the same instant."""
        results = {
            next_check_at(expiry_in(7200), connection(), now, TIMING, random.Random(seed))
            for seed in range(20)
        }
        assert len(results) > 1

    def test_expiry_inside_the_margin_checks_in_one_second(self) -> None:
        """An expiry already inside the margin schedules the check MIN_DELAY from now."""
        at = next_check_at(expiry_in(10), connection(), now, TIMING, random.Random(3))
        assert at == now + MIN_DELAY

    @given(
        expires_in=st.floats(min_value=-10_000, max_value=2 * 604_800),
        since_refresh=st.floats(min_value=0, max_value=2 * 604_800),
        seed=st.integers(min_value=0, max_value=2**32),
    )
    def test_bounds(self, expires_in: float, since_refresh: float, seed: int) -> None:
        """Never after the target, earlier by at most min(60 s, 5%), never before now + 1 s."""
        conn = connection(last_refresh_at=now - since_refresh)
        at = next_check_at(expiry_in(expires_in), conn, now, TIMING, random.Random(seed))
        target = min(now + expires_in - TIMING.margin, now - since_refresh + TIMING.keepalive)
        wait = max(0.0, target - now)
        assert at >= now + MIN_DELAY
        assert at <= max(target, now + MIN_DELAY)
        assert at >= target - min(60.0, wait * 0.05)


class TestBackoff:
    def test_first_retry_is_within_the_base(self) -> None:
        """Attempt 1 waits between half the base and the base."""
        delay = backoff(1, TIMING, random.Random(1))
        assert TIMING.retry_base / 2 <= delay <= TIMING.retry_base

    def test_doubles_per_attempt(self) -> None:
        """Attempt 3 waits between 2x and 4x the base."""
        delay = backoff(3, TIMING, random.Random(1))
        assert 2 * TIMING.retry_base <= delay <= 4 * TIMING.retry_base

    def test_capped_at_retry_max(self) -> None:
        """A late attempt waits between half of retry_max and retry_max."""
        delay = backoff(30, TIMING, random.Random(1))
        assert TIMING.retry_max / 2 <= delay <= TIMING.retry_max

    def test_capped_after_thousands_of_attempts(self) -> None:
        """A connection failing for weeks still gets a capped delay, not an overflow."""
        delay = backoff(5000, TIMING, random.Random(1))
        assert TIMING.retry_max / 2 <= delay <= TIMING.retry_max

    @given(attempt=st.integers(min_value=1, max_value=200), seed=st.integers(0, 2**32))
    def test_jitter_within_upper_half_of_ceiling(self, attempt: int, seed: int) -> None:
        """Every delay lies in [ceiling/2, ceiling] with ceiling = min(max, base * 2^(n-1))."""
        ceiling = min(TIMING.retry_max, TIMING.retry_base * 2.0 ** (attempt - 1))
        delay = backoff(attempt, TIMING, random.Random(seed))
        assert ceiling / 2 <= delay <= ceiling

    def test_longer_retry_after_is_honoured(self) -> None:
        """A Retry-After longer than the backoff is waited out exactly."""
        assert backoff(1, TIMING, random.Random(1), retry_after=5000.0) == 5000.0

    def test_shorter_retry_after_does_not_shorten(self) -> None:
        """A Retry-After shorter than the backoff does not make the retry sooner."""
        delay = backoff(3, TIMING, random.Random(1), retry_after=1.0)
        assert delay >= 2 * TIMING.retry_base

    @given(
        attempt=st.integers(min_value=-3, max_value=60),
        base=st.floats(min_value=0.001, max_value=5.0),
        retry_after=st.none() | st.floats(min_value=0.0, max_value=0.999),
        seed=st.integers(0, 2**32),
    )
    def test_never_under_one_second(
        self, attempt: int, base: float, retry_after: float | None, seed: int
    ) -> None:
        """Whatever the base, attempt or Retry-After, a retry waits at least one second."""
        timing = Timing(900.0, 7200.0, 604_800.0, retry_base=base, retry_max=base * 4)
        assert backoff(attempt, timing, random.Random(seed), retry_after) >= MIN_DELAY
