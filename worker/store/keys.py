"""Every Redis key tokenworker uses, in one place."""

from __future__ import annotations

import re

from worker.errors import InputError

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def check_id(kind: str, value: object) -> str:
    """A connection id or integration name: 1-128 characters, letters, digits and ._:@-"""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InputError(
            f"{kind}: expected 1-128 characters of letters, digits and . _ : @ - "
            f"(starting with a letter or digit), got {value!r:.60}"
        )
    return value


class Keys:
    """Key names under one prefix (TOKENWORKER_KEY_PREFIX, default `tw:`)."""

    def __init__(self, prefix: str = "tw:") -> None:
        self.prefix = prefix
        self.integrations = f"{prefix}integrations"  # set of integration names
        self.due = f"{prefix}due"  # sorted set: connection id -> next check (epoch s)
        self.events = f"{prefix}events"  # capped stream of events
        self.conn_pattern = f"{prefix}conn:*"
        self.rotation = f"{prefix}keys:rotation"  # resumable key-rotation cursor
        self.beat = f"{prefix}beat:lock"
        self.sweep_guard = f"{prefix}sweep:guard"  # set for half an interval by each sweep
        self.heartbeat = f"{prefix}heartbeat"  # hash: worker hostname -> last consumed at
        self.metrics = f"{prefix}metrics"  # hash: counters the worker processes add up
        # The fleet read model (worker.store.counting): counts kept on every save and remove.
        self.fleet_counts = f"{prefix}fleet:counts"  # hash: "integration|status|key id" -> n
        self.fleet_meta = f"{prefix}fleet:meta"  # hash: generation, backfill cursor, complete
        self.fleet_lock = f"{prefix}fleet:lock"  # lease of the one process backfilling
        self.fleet_broken = f"{prefix}fleet:ids:broken"  # set: ids nobody can read
        # Sorted sets for paging (worker.store.fleet_index), kept by the same scripts.
        self.fleet_by_id = f"{prefix}fleet:by-id"  # layout 3's id set: a recount drops it
        self.fleet_by_integration = f"{prefix}fleet:by-integration"  # zset: "integration|id", 0
        self.fleet_by_error = f"{prefix}fleet:by-error"  # zset: id -> its last error's time
        # Non-active ids only (small), score 0: a status's ids by lexical range.
        self.fleet_by_status = f"{prefix}fleet:by-status"  # zset: "status|id"
        self.fleet_by_status_integration = (
            f"{prefix}fleet:by-status-integration"  # zset: "status|integration|id"
        )

    def fleet_ids(self, status: str) -> str:
        """Set of the ids in a non-active status (small: O(failing), not O(all))."""
        return f"{self.prefix}fleet:ids:{status}"

    def conn(self, connection_id: str) -> str:
        return f"{self.prefix}conn:{connection_id}"

    def integration(self, name: str) -> str:
        return f"{self.prefix}int:{name}"

    def rate(self, integration: str) -> str:
        return f"{self.prefix}rate:{integration}"  # hash: token bucket of Salesforce calls

    def lease(self, connection_id: str) -> str:
        return f"{self.prefix}lease:{connection_id}"

    def connection_id(self, key: bytes | str) -> str:
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self.prefix) + len("conn:") :]

    # -- connect sessions (worker.store.sessions) ---------------------------------------

    def connect_session(self, session_id: str) -> str:
        return f"{self.prefix}connect-session:{session_id}"  # hash; expires with its tombstone

    def connect_state(self, state: str) -> str:
        return f"{self.prefix}connect-state:{state}"  # OAuth state -> session id

    @property
    def connect_pending(self) -> str:
        return f"{self.prefix}connect-sessions:pending"  # sorted set: session id -> expires_at

    def connect_identity(self, integration: str, user: str) -> str:
        # set of connection ids one Salesforce user (org/user ids) connected to an integration
        return f"{self.prefix}connect-identity:{integration}:{user}"
