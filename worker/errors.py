"""Errors, one tree. Callers catch by category, never by message.

    TokenworkerError
    ├── SalesforceError                 Salesforce (or the network to it) said no
    │   ├── TransientError              retry later with backoff: 5xx, timeouts, resets,
    │   │   │                           garbage bodies, unknown_error, concurrent refresh
    │   │   └── RateLimitedError        rate_limit_exceeded: back off for at least an hour
    │   ├── PermanentError              the grant is dead: the customer must re-authorize
    │   └── ConfigurationError          the integration is wrong: client id/secret, IP policy
    ├── ResponseIntegrityError          a 200 we must not trust (bad signature, foreign host)
    ├── Throttled                       our own per-integration rate limit: nothing was sent
    ├── StoreError                      the store is unreadable or inconsistent
    │   ├── DecryptionError             no configured key opens a stored secret
    │   └── ConflictError               a compare-and-set lost to a newer version
    ├── Unreachable                     the store or broker Redis did not answer in time
    ├── NotFoundError                   no such connection, integration, key or session
    ├── NoOutcome                       a task was queued but no worker answered in time
    ├── WebhookError                    a webhook receiver refused an event (telemetry.webhooks)
    ├── UnusableConnection              a caller asked for credentials that cannot be handed out
    │   ├── ReauthRequired              the grant is dead: the customer must re-authorize
    │   └── SalesforceUnavailable       no usable token now and Salesforce cannot be reached
    └── InputError                      an operator's input is malformed (names what and where)

The CLI maps categories to exit codes (`worker.cli._base.EXIT_CODES`) and the HTTP API will
map the same classes to statuses, so a new error joins a category rather than a list.

Every `SalesforceError` carries Salesforce's own `error`, `error_description` and the HTTP
status, so events can say exactly what Salesforce said. None of them ever carries a token.

`proves_unconsumed` says whether the answer to a refresh proves that Salesforce did NOT consume
(rotate) the refresh token we sent. Only then may the "refresh sent" mark be cleared; anything
else keeps it, so the next attempt asks Salesforce about the token before sending it again
(`worker.salesforce.responses.proves_unconsumed` decides it, in one place).
"""

from __future__ import annotations


class TokenworkerError(Exception):
    """Base of every error tokenworker raises on purpose."""


class SalesforceError(TokenworkerError):
    """Salesforce answered with an error, or could not be reached."""

    def __init__(
        self,
        error: str,
        error_description: str = "",
        http_status: int | None = None,
        retry_after: float | None = None,
        *,
        proves_unconsumed: bool = False,
    ) -> None:
        self.error = error
        self.error_description = error_description
        self.http_status = http_status
        self.retry_after = retry_after
        # False unless the answer proves the token was not consumed: a timeout, a reset, a
        # broken 200 may all come after Salesforce rotated it.
        self.proves_unconsumed = proves_unconsumed
        status = f" (HTTP {http_status})" if http_status is not None else ""
        detail = f": {error_description}" if error_description else ""
        super().__init__(f"{error}{detail}{status}")

    def as_fields(self) -> dict[str, object]:
        """The fields an event or a stored last_error carries."""
        return {
            "error": self.error,
            "error_description": self.error_description,
            "http_status": self.http_status,
        }


class TransientError(SalesforceError):
    """Worth retrying: the same request may succeed later."""


class RateLimitedError(TransientError):
    """Salesforce is limiting logins for this user; wait at least an hour."""


class PermanentError(SalesforceError):
    """The refresh token is dead (revoked, expired, user or org inactive)."""


class ConfigurationError(SalesforceError):
    """The integration's client id, secret or org policy is wrong; no connection can refresh."""


class ResponseIntegrityError(TokenworkerError):
    """A successful-looking response failed an integrity check."""

    def __init__(self, error: str, error_description: str) -> None:
        self.error = error
        self.error_description = error_description
        super().__init__(f"{error}: {error_description}")


class Throttled(TokenworkerError):
    """TOKENWORKER_RATE_LIMIT had no permit for this integration in time; nothing was sent."""

    def __init__(self, integration: str, retry_in: float) -> None:
        self.integration = integration
        self.retry_in = retry_in
        super().__init__(f"integration {integration!r} is at TOKENWORKER_RATE_LIMIT")


class StoreError(TokenworkerError):
    """The store could not be read or written as expected."""


class DecryptionError(StoreError):
    """No configured encryption key opens a stored secret."""


class ConflictError(StoreError):
    """A compare-and-set save lost to a newer version of the record."""


class InputError(TokenworkerError):
    """Operator input is malformed; the message names the field and, for files, the line."""


class Unreachable(TokenworkerError):
    """The store or broker Redis did not answer; the message names which and where, with any
    password masked."""


class NotFoundError(TokenworkerError):
    """No such connection, integration, API key or connect session (the message names it)."""


class NoOutcome(TokenworkerError):
    """A queued task got no answer within the wait: no worker consumed it in time (it stays
    queued)."""


class UnusableConnection(TokenworkerError):
    """Credentials were asked for and cannot be handed out."""


class ReauthRequired(UnusableConnection):
    """The connection is `reauth_required`; `last_error` is Salesforce's own verdict."""

    def __init__(self, connection_id: str, last_error: dict[str, object] | None) -> None:
        self.connection_id = connection_id
        self.last_error = last_error
        super().__init__(f"connection {connection_id!r} needs the customer to re-authorize")


class SalesforceUnavailable(UnusableConnection):
    """No token valid for the asked time is stored and refreshing failed for now."""

    def __init__(
        self, connection_id: str, retry_after: float, error: SalesforceError | None
    ) -> None:
        self.connection_id = connection_id
        self.retry_after = retry_after
        self.error = error
        super().__init__(f"connection {connection_id!r}: no usable token, Salesforce unavailable")
