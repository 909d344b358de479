"""A local Salesforce OAuth emulator: the web-server flow, token refresh, introspection,
revocation, userinfo, REST, faults.

Salesforce is unreachable from development and CI machines; this stands in for it with the
same response shapes, error wording and token semantics, plus an admin API under /_admin/.

    with EmulatorThread(lifetime=3600, latency_ms=0, rotation=False) as emu:
        httpx.post(f"{emu.base_url}/_admin/clients", json={"client_id": "a", "client_secret": "s"})
        grants = httpx.post(f"{emu.base_url}/_admin/grants", json={"client_id": "a", "count": 10})

Salesforce: GET|POST /services/oauth2/authorize (login and consent page: form `#consent`,
field `username`, buttons `allow` / `deny`), POST /services/oauth2/token (refresh_token and
authorization_code grants), POST introspect, POST|GET revoke, GET userinfo, GET /id/<org>/<user>,
GET /services/data/ and /services/data/v<NN.N>/ ("", limits, query?q=, POST sobjects/Account).
Admin (JSON, never delayed or faulted): POST clients (`redirect_uris`), POST|GET grants
(`?username=&client_id=`), GET grants/{id}, POST grants/{id}/revoke | activity | expire,
GET|POST users, POST codes, GET|DELETE authorizations, GET|POST config, GET|POST|DELETE
faults, GET stats[?by_grant=1], POST stats/reset.
"""

from worker.dev.emulator.faults import Fault
from worker.dev.emulator.records import DEFAULT_LIFETIME
from worker.dev.emulator.server import Emulator, EmulatorThread, run_forever
from worker.dev.emulator.state import State

__all__ = ["DEFAULT_LIFETIME", "Emulator", "EmulatorThread", "Fault", "State", "run_forever"]
