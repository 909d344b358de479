"""The simulated org population shared by both cost runs: lifetimes, activity, the floor.

Connections are spread evenly over Salesforce's session timeouts (15 min .. 24 h); a share of
them belong to users whose activity keeps extending their session, at random moments about
twice per lifetime, by Salesforce's rule: only a session past half its timeout is extended
(`simemulator.ACTIVITY_PATH`).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

from worker.dev.bench.emuadmin import EmulatorAdmin, Grant
from worker.dev.bench.params import DAY, LIFETIMES_MIN
from worker.dev.bench.simemulator import ACTIVITY_PATH
from worker.domain import policy


@dataclass(frozen=True)
class Member:
    grant_id: str
    lifetime: float  # seconds
    active_user: bool


def lifetimes(count: int) -> list[float]:
    """`count` lifetimes (seconds), round-robin over Salesforce's allowed session timeouts."""
    return [LIFETIMES_MIN[i % len(LIFETIMES_MIN)] * 60.0 for i in range(count)]


def floor_per_day(lifetime: float) -> float:
    """The true floor: one refresh per session lifetime, nothing else.

    Activity may make a session outlast its timeout, but only an introspection tells, and
    one costs as much as the refresh it might save; so no policy that keeps every token
    fresh pays less than one call per timeout, active user or not."""
    return DAY / lifetime


def lower_bound_per_day(lifetime: float, margin: float) -> float:
    """The old cost model (kept beside the floor so the change shows): one refresh per
    (lifetime - margin), one introspection per refresh. The margin is the one the policy
    applies to this lifetime."""
    timing = policy.Timing(
        margin=margin, default_lifetime=lifetime, keepalive=7 * DAY, retry_base=30, retry_max=900
    )
    return 2.0 * DAY / (lifetime - policy.margin_for(lifetime, timing))


SCHEDULE_CHUNK = 10_000  # calls per schedule post: ~0.3 MB of JSON


class Activity:
    """Users' session activity: (time, grant id) pairs in time order, handed to a simulated
    org once (`schedule`), which makes each call as its clock passes the call's time, or, in
    real time, posted as their time comes (`fire_until`)."""

    def __init__(
        self, members: list[Member], start: float, span: float, rng: random.Random
    ) -> None:
        self.calls: list[tuple[float, str]] = []
        for member in members:
            if not member.active_user:
                continue
            at = start + rng.expovariate(2.0 / member.lifetime)
            while at < start + span:
                self.calls.append((at, member.grant_id))
                at += rng.expovariate(2.0 / member.lifetime)
        self.calls.sort()
        self.fired = 0

    def fire_until(self, now: float, admin: EmulatorAdmin) -> None:
        """Make the calls due by `now` through the org's activity route."""
        until = bisect_right(self.calls, now, lo=self.fired, key=lambda call: call[0])
        due = [grant_id for _, grant_id in self.calls[self.fired : until]]
        if due:
            admin.http.post(ACTIVITY_PATH, json={"grants": due}).raise_for_status()
            self.fired += len(due)

    def schedule(self, admin: EmulatorAdmin) -> None:
        for start in range(0, len(self.calls), SCHEDULE_CHUNK):  # under the emulator's MAX_BODY
            chunk = self.calls[start : start + SCHEDULE_CHUNK]
            admin.http.post(ACTIVITY_PATH, json={"schedule": chunk}).raise_for_status()

    @staticmethod
    def made(admin: EmulatorAdmin) -> int:
        """How many scheduled calls the org has made so far."""
        answer = admin.http.post(ACTIVITY_PATH, json={"schedule": []}).raise_for_status()
        return int(answer.json()["made"])


def members_for(
    admin: EmulatorAdmin, client_id: str, count: int, active_share: float, rng: random.Random
) -> list[tuple[Member, Grant]]:
    """`count` grants at the emulator, spread over the lifetime classes."""
    by_class: dict[float, int] = {}
    for span in lifetimes(count):
        by_class[span] = by_class.get(span, 0) + 1
    made: list[tuple[Member, Grant]] = []
    for span, size in by_class.items():
        active = set(rng.sample(range(size), round(active_share * size)))
        for index, grant in enumerate(admin.grants(client_id, size, lifetime=span)):
            made.append((Member(grant.grant_id, span, index in active), grant))
    return made
