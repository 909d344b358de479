"""Queued faults: the next matching Salesforce requests misbehave on purpose.

A fault matches by endpoint (or "any") and optionally by the caller's client_id, and is used up
after `count` matching requests (`count=None` keeps it until the queue is cleared). The queue is
tiny in practice, so a linear scan beats any index.
"""

from __future__ import annotations

from dataclasses import dataclass

# "code" is the token endpoint's authorization_code grant; "token" its refreshes.
# "userinfo" covers the identity URL too; "data" every REST resource.
ENDPOINTS = frozenset({"token", "code", "introspect", "revoke", "data", "userinfo", "any"})

# Mutations that still run the real operation, then tamper with its successful answer.
TAMPERING = frozenset({"bad_signature", "foreign_instance_url"})
# Mutations that answer instead of the real operation's answer.
REPLACING = frozenset(
    {
        "drop_access_token",
        "redirect",
        "huge_body",
        "truncated_json",
        "html_503",
        "close_connection",
        "error",
    }
)
MUTATIONS = TAMPERING | REPLACING
# Replacing mutations that are a 200 at a real Salesforce: a token endpoint only sends a 200
# after the grant ran, so at the token endpoint these run the real refresh first (with
# rotation the token sent is consumed) and then mangle its answer. `error` joins them when
# its status is 2xx. The others (redirect, html_503, close_connection, a non-2xx `error`)
# model failures before the token endpoint and change nothing. A fault's `rotate` overrides.
BROKEN_SUCCESS = frozenset({"drop_access_token", "huge_body", "truncated_json"})


@dataclass(slots=True)
class Fault:
    endpoint: str = "any"
    count: int | None = 1
    client_id: str | None = None
    status: int | None = None
    body: str = ""
    content_type: str = "application/json;charset=UTF-8"
    delay_s: float = 0.0
    mutate: str | None = None
    retry_after: int | None = None  # sent as a Retry-After header on an `error` answer
    rotate: bool | None = None  # run the real refresh before a replacing answer (None: default)

    def rotates_first(self, endpoint: str) -> bool:
        """Whether this replacing fault lets the real token endpoint run (and rotate) first."""
        if endpoint != "token":
            return False
        if self.rotate is not None:
            return self.rotate
        if self.mutate == "error":
            return self.status is not None and 200 <= self.status < 300
        return self.mutate in BROKEN_SUCCESS

    def matches(self, endpoint: str, client_id: str | None) -> bool:
        if self.endpoint not in ("any", endpoint):
            return False
        return self.client_id is None or self.client_id == client_id

    def as_json(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "count": self.count,
            "client_id": self.client_id,
            "status": self.status,
            "body": self.body,
            "content_type": self.content_type,
            "delay_s": self.delay_s,
            "mutate": self.mutate,
            "retry_after": self.retry_after,
            "rotate": self.rotate,
        }


class FaultQueue:
    """First queued, first used; a fault's count drops on every request it answers."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[Fault]:
        return list(self._faults)

    def take(self, endpoint: str, client_id: str | None) -> Fault | None:
        # The common case in a benchmark is an empty queue: keep it to one truth test.
        if not self._faults:
            return None
        for index, fault in enumerate(self._faults):
            if fault.matches(endpoint, client_id):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        del self._faults[index]
                return fault
        return None
