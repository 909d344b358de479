"""The emulated org's OAuth state: clients, grants, tokens, faults and counters. No I/O.

Everything reads time through the injected `clock` (epoch seconds), so tests can move time
without sleeping. Tokens are plain `os.urandom` + base64 (about a microsecond each) because
the benchmark creates 100k grants in one admin call and waits for the answer.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import os
import time
from collections import deque
from collections.abc import Callable, Iterator

from worker.dev.emulator.faults import FaultQueue
from worker.dev.emulator.records import (
    DEFAULT_LIFETIME,
    DEFAULT_RACE_WINDOW_MS,
    SCOPE,
    USERNAME,
    AccessToken,
    AuthorizationCode,
    Client,
    Grant,
    Issued,
    OAuthError,
    Stats,
    User,
)

# Salesforce: "the authorization code ... expires after 15 minutes" (help article
# remoteaccess_oauth_web_server_flow).
CODE_LIFETIME = 15 * 60.0
# Salesforce keeps five approvals per user per connected app and revokes the oldest beyond
# that (help article remoteaccess_request_approve; fact sheet section 6). 0 turns it off.
DEFAULT_APPROVALS_PER_USER = 5
AUTHORIZE_LOG_SIZE = 200


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic GC while building many long-lived objects at once.

    Every object made in bulk here stays alive, so collections find nothing; they made
    creating 100k grants 40% slower.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Entropy:
    """Random URL-safe text (survives form encoding untouched), drawn from the OS in batches.

    One `os.urandom` call per few hundred tokens instead of one per token: per-token calls
    were half the cost of creating 100k grants.
    """

    _BATCH = 48 * 1024  # a multiple of 3, so the base64 text has no padding

    def __init__(self) -> None:
        self._text = ""
        self._pos = 0

    def take(self, length: int) -> str:
        start = self._pos
        end = start + length
        if end > len(self._text):
            self._text = base64.urlsafe_b64encode(os.urandom(self._BATCH)).decode("ascii")
            start, end = 0, length
        self._pos = end
        return self._text[start:end]


def _salesforce_id(prefix: str) -> str:
    return prefix + os.urandom(8).hex()[:15].upper()


class State:
    """One org. Not thread-safe: only the emulator's event loop touches it."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1",
        lifetime: float = DEFAULT_LIFETIME,
        latency_ms: float = 0.0,
        rotation: bool = False,
        clock: Callable[[], float] = time.time,
        race_window_ms: float = DEFAULT_RACE_WINDOW_MS,
    ) -> None:
        self.base_url = base_url
        self.race_window_ms = race_window_ms
        # What Salesforce is assumed to answer (not documented): a consumed refresh token
        # introspects inactive. True models the opposite, to show what the worker does then.
        self.consumed_refresh_active = False
        self.lifetime = lifetime
        self.latency_ms = latency_ms
        self.default_rotation = rotation
        self.clock = clock
        self.org_id = _salesforce_id("00D")
        self.clients: dict[str, Client] = {}
        self.grants: dict[str, Grant] = {}
        self.users: dict[str, User] = {}
        self.default_user = self.add_user(USERNAME)
        self.codes: dict[str, AuthorizationCode] = {}
        self.code_lifetime = CODE_LIFETIME
        self.approvals_per_user = DEFAULT_APPROVALS_PER_USER
        # The authorize requests seen (newest last), for tests to check what a client sent.
        self.authorize_log: deque[dict[str, str]] = deque(maxlen=AUTHORIZE_LOG_SIZE)
        self.faults = FaultQueue()
        self.stats = Stats()
        self._access: dict[str, AccessToken] = {}
        # Every refresh token ever issued, current or consumed: reuse detection needs the old.
        self._refresh: dict[str, Grant] = {}
        # Every refresh token a token call ever carried (kept across stats resets).
        self._sent_refresh: set[str] = set()
        self._access_prefix = self.org_id[:15] + "!AQ"
        # Compact mode (`bench --million`): no bookkeeping that grows with every token call
        # (resent-token detection, calls per grant), so a long run's memory stays that of its
        # grants, only the totals in `stats` kept; bulk grants share one identity URL.
        self.compact = False
        self._compact_id_url: str | None = None  # made once base_url is final
        self._seq = 0
        self._entropy = _Entropy()

    # -- clients -------------------------------------------------------------------------

    def upsert_client(
        self,
        client_id: str,
        client_secret: str | None,
        rotation: bool | None = None,
        introspect: bool | None = None,
        redirect_uris: tuple[str, ...] | None = None,
        any_loopback: bool = False,
    ) -> Client:
        """Create a client, or change only the fields given for an existing one."""
        client = self.clients.get(client_id)
        if client is None:
            if client_secret is None:
                raise ValueError("a new client needs a client_secret")
            client = Client(client_id, client_secret, self.default_rotation, True)
            self.clients[client_id] = client
        if client_secret is not None:
            client.client_secret = client_secret
        if rotation is not None:
            client.rotation = rotation
        if introspect is not None:
            client.introspect = introspect
        if redirect_uris is not None:
            client.redirect_uris = redirect_uris
        elif any_loopback:
            client.redirect_uris = None
        return client

    # -- users ---------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        org_id: str | None = None,
        display_name: str | None = None,
        email: str | None = None,
        instance_url: str | None = None,
    ) -> User:
        """A user who can log in on the authorize page; re-adding a username replaces it
        but keeps its user id, so identity URLs stay stable."""
        known = self.users.get(username)
        user_id = known.user_id if known is not None else _salesforce_id("005")
        user = User(
            user_id,
            username,
            org_id or self.org_id,
            display_name or username.split("@", 1)[0],
            email or username,
            instance_url,
        )
        self.users[username] = user
        return user

    def user_of(self, grant: Grant) -> User | None:
        user = self.users.get(grant.username)
        return user if user is not None and user.user_id == grant.user_id else None

    def authenticate(self, client_id: str | None, client_secret: str | None) -> Client:
        client = self.clients.get(client_id or "")
        if client is None:
            raise OAuthError(400, "invalid_client_id", "client identifier invalid")
        if client_secret != client.client_secret:
            raise OAuthError(400, "invalid_client", "invalid client credentials")
        return client

    # -- grants and tokens ---------------------------------------------------------------

    def create_grants(
        self,
        client_id: str,
        count: int = 1,
        lifetime: float | None = None,
        instance_url: str | None = None,
        vary_access_token: bool = True,
    ) -> list[Issued]:
        """N fresh authorizations, each with a refresh token and a first access token."""
        if client_id not in self.clients:
            raise KeyError(client_id)
        now = self.clock()
        issued_at = str(int(now * 1000))
        url = instance_url or self.base_url
        with paused_gc():
            return [
                self._add_grant(
                    client_id, url, lifetime, vary_access_token, now=now, issued_at=issued_at
                )
                for _ in range(count)
            ]

    def _add_grant(
        self,
        client_id: str,
        instance_url: str,
        lifetime: float | None,
        vary_access_token: bool,
        *,
        now: float,
        issued_at: str,
        user: User | None = None,
        scope: str = SCOPE,
    ) -> Issued:
        self._seq += 1
        seq = self._seq
        if user is None and self.compact:
            # One user behind every bulk grant: one identity URL string, not one per grant.
            if self._compact_id_url is None:
                user_id = self.default_user.user_id
                self._compact_id_url = f"{self.base_url}/id/{self.org_id}/{user_id}"
            id_url = self._compact_id_url
            username = USERNAME
        elif user is None:
            id_url = f"{self.base_url}/id/{self.org_id}/005{seq:015d}"
            username = USERNAME
        else:
            id_url = f"{self.base_url}/id/{user.org_id}/{user.user_id}"
            username = user.username
        grant = Grant(
            f"g{seq:07d}",
            client_id,
            instance_url,
            id_url,
            lifetime,
            vary_access_token,
            now,
            self._new_refresh_token(),
            scope,
            username,
        )
        self.grants[grant.grant_id] = grant
        self._refresh[grant.refresh_token] = grant
        access = self._issue_access(grant, now)
        return Issued(grant, access, issued_at, grant.refresh_token)

    def refresh(self, client: Client, refresh_token: str, answer_delay: float = 0.0) -> Issued:
        """The refresh_token grant: a new access token, and with rotation a new refresh token.

        `answer_delay` is how long the answer will take to leave: until it has (and for
        `race_window_ms` after the rotation), the token it consumed coming back is a concurrent
        refresh, which Salesforce answers "expired authorization code" without revoking
        anything (Summer '24); after that it is a reuse, and the whole grant dies."""
        grant = self._refresh.get(refresh_token)
        if grant is None or grant.revoked or grant.client_id != client.client_id:
            raise OAuthError(400, "invalid_grant", "expired access/refresh token")
        now = self.clock()
        if refresh_token != grant.refresh_token:
            if refresh_token == grant.previous_refresh_token and now <= grant.race_until:
                self.stats.concurrent_refresh_rejections += 1
                raise OAuthError(400, "invalid_grant", "expired authorization code")
            # A consumed token came back: someone holds a copy, so the whole grant dies.
            self.revoke_grant(grant)
            self.stats.reuse_revocations += 1
            raise OAuthError(400, "invalid_grant", "expired access/refresh token")
        grant.refresh_count += 1
        new_refresh: str | None = None
        if client.rotation:
            new_refresh = self._new_refresh_token()
            grant.refresh_token = new_refresh
            grant.previous_refresh_token = refresh_token
            grant.race_until = now + answer_delay + self.race_window_ms / 1000.0
            self._refresh[new_refresh] = grant
        self._prune(grant, now)
        if not grant.vary_access_token and grant.tokens and grant.latest.active(now):
            access = grant.latest
        else:
            access = self._issue_access(grant, now)
        return Issued(grant, access, str(int(now * 1000)), new_refresh)

    def find(self, token: str) -> AccessToken | Grant | None:
        """The access token record, or the grant a refresh token (current or old) belongs to."""
        return self._access.get(token) or self._refresh.get(token)

    def find_access(self, token: str) -> AccessToken | None:
        return self._access.get(token)

    def access_truth(self, token: str) -> dict[str, object]:
        """What the org knows of an access token, without using it (no session extension):
        unknown (never issued, or expired and forgotten), or its expiry and whether it is live."""
        access = self._access.get(token)
        if access is None:
            return {"known": False, "active": False, "exp": None}
        return {"known": True, "active": access.active(self.clock()), "exp": access.exp}

    def grant_of_refresh_token(self, token: str) -> Grant | None:
        return self._refresh.get(token)

    def use_session(self, token: str, at: float | None = None) -> bool:
        """An API call with an access token (at `at`, default now); activity past half-life
        extends the session."""
        now = self.clock() if at is None else at
        access = self._access.get(token)
        if access is None or not access.active(now):
            return False
        if access.exp - now < access.lifetime / 2:
            access.exp = now + access.lifetime
        return True

    def approve(self, client_id: str, user: User, scope: str) -> Issued:
        """A new grant from an authorization code; past `approvals_per_user` live grants
        of this user and app, the oldest is revoked, as Salesforce does."""
        now = self.clock()
        url = user.instance_url or self.base_url
        issued = self._add_grant(
            client_id,
            url,
            None,
            True,
            now=now,
            issued_at=str(int(now * 1000)),
            user=user,
            scope=scope,
        )
        limit = self.approvals_per_user
        if limit > 0:
            live = [g for g in self.grants_of(user.username, client_id) if not g.revoked]
            for oldest in live[: max(0, len(live) - limit)]:
                self.revoke_grant(oldest)
                self.stats.approval_revocations += 1
        return issued

    def grants_of(self, username: str, client_id: str | None = None) -> list[Grant]:
        """A user's grants, oldest first (a linear scan: a test helper, not a hot path)."""
        user = self.users.get(username)
        return [
            grant
            for grant in self.grants.values()
            if grant.username == username
            and (user is None or grant.user_id == user.user_id)
            and (client_id is None or grant.client_id == client_id)
        ]

    def revoke(self, token: str) -> None:
        """Revoke a refresh token (its whole grant) or one access token.

        A token never issued is `unsupported_token_type` (as before); one already revoked,
        expired or rotated out is `invalid_token`. Salesforce documents both codes for
        errors (fact sheet section 9) without saying which case gets which: assumed."""
        now = self.clock()
        access = self._access.get(token)
        if access is not None:
            if not access.active(now):
                raise OAuthError(400, "invalid_token", "invalid token")
            access.revoked = True
            return
        grant = self._refresh.get(token)
        if grant is None:
            raise OAuthError(400, "unsupported_token_type", "this token type is not supported")
        if grant.revoked or grant.refresh_token != token:
            raise OAuthError(400, "invalid_token", "invalid token")
        self.revoke_grant(grant)

    def revoke_grant(self, grant: Grant) -> None:
        grant.revoked = True
        for access in grant.tokens:
            access.revoked = True

    def extend(self, grant: Grant) -> None:
        """Activity on the latest session, unconditionally: exp becomes now + lifetime."""
        latest = grant.latest
        latest.exp = self.clock() + latest.lifetime

    def expire(self, grant: Grant) -> None:
        grant.latest.exp = self.clock()

    def effective_lifetime(self, grant: Grant) -> float:
        return grant.lifetime if grant.lifetime is not None else self.lifetime

    # -- counters ------------------------------------------------------------------------

    def count(self, endpoint: str, refresh_token: str | None = None) -> None:
        stats = self.stats
        if endpoint == "token":
            stats.token_calls += 1
            if self.compact:
                return
            grant = self._refresh.get(refresh_token) if refresh_token else None
            if refresh_token:
                if refresh_token in self._sent_refresh:
                    stats.refresh_token_resends += 1
                self._sent_refresh.add(refresh_token)
            if grant is not None:
                stats.token_calls_by_grant[grant.grant_id] += 1
        elif endpoint == "introspect":
            stats.introspect_calls += 1
        elif endpoint == "revoke":
            stats.revoke_calls += 1
        elif endpoint == "data":
            stats.data_calls += 1
        elif endpoint == "code":
            stats.code_calls += 1
        elif endpoint == "userinfo":
            stats.userinfo_calls += 1

    def reset_stats(self) -> None:
        self.stats = Stats()

    # -- internals -----------------------------------------------------------------------

    def new_code(self) -> str:
        return "aPrx" + self._entropy.take(60)

    def _new_refresh_token(self) -> str:
        return "5Aep861" + self._entropy.take(80)

    def _issue_access(self, grant: Grant, now: float) -> AccessToken:
        lifetime = self.effective_lifetime(grant)
        token = self._access_prefix + self._entropy.take(96)
        access = AccessToken(token, grant, now, now + lifetime, lifetime)
        grant.tokens.append(access)
        self._access[access.token] = access
        return access

    def _prune(self, grant: Grant, now: float) -> None:
        # Expired sessions are gone for good; forgetting them keeps memory flat in long runs
        # (an unknown "00D..." token introspects as inactive, just like an expired one).
        keep: list[AccessToken] = []
        for access in grant.tokens:
            if access.exp > now and not access.revoked:
                keep.append(access)
            else:
                self._access.pop(access.token, None)
        grant.tokens = keep
