"""The emulator's admin API (worker/dev/emulator/admin.py), as the benchmark uses it."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Grant:
    grant_id: str
    refresh_token: str
    access_token: str
    instance_url: str
    identity_url: str
    issued_at_ms: str


@dataclass(frozen=True)
class Stats:
    token_calls: int
    introspect_calls: int

    @property
    def total(self) -> int:
        return self.token_calls + self.introspect_calls


class EmulatorAdmin:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=300.0)

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.http.post(path, json=body or {})
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    def client(self, rotation: bool = False) -> tuple[str, str]:
        client_id, secret = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        self._post(
            "/_admin/clients",
            {"client_id": client_id, "client_secret": secret, "rotation": rotation},
        )
        return client_id, secret

    def grants(self, client_id: str, count: int, lifetime: float | None = None) -> list[Grant]:
        body: dict[str, Any] = {"client_id": client_id, "count": count}
        if lifetime is not None:
            body["lifetime"] = lifetime
        return [
            Grant(
                g["grant_id"],
                g["refresh_token"],
                g["access_token"],
                g["instance_url"],
                g["id"],
                g["issued_at"],
            )
            for g in self._post("/_admin/grants", body)["grants"]
        ]

    def grant_action(self, grant_ids: list[str], action: str, threads: int = 8) -> None:
        """POST /_admin/grants/{id}/{action} (expire, activity, revoke) for each id."""

        def one(grant_id: str) -> None:
            self.http.post(f"/_admin/grants/{grant_id}/{action}").raise_for_status()

        if len(grant_ids) < 50:
            for grant_id in grant_ids:
                one(grant_id)
            return
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, grant_ids))

    def stats(self) -> Stats:
        data = self.http.get("/_admin/stats").raise_for_status().json()
        return Stats(int(data["token_calls"]), int(data["introspect_calls"]))

    def token_calls_by_grant(self) -> dict[str, int]:
        data = self.http.get("/_admin/stats", params={"by_grant": "1"}).raise_for_status().json()
        return {grant: int(n) for grant, n in data.get("token_calls_by_grant", {}).items()}

    def reset_stats(self) -> None:
        self._post("/_admin/stats/reset")

    def set_latency(self, latency_ms: float) -> None:
        self._post("/_admin/config", {"latency_ms": latency_ms})
