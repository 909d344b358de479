"""`tokenworker api` (the HTTP API and console process) and `tokenworker api-keys`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.cli import output
from worker.cli._base import examples, with_runtime
from worker.engine.runtime import Runtime
from worker.service import apikeys
from worker.store.apikeys import ApiKey, Scope


def register(sub: Any) -> None:
    api = sub.add_parser(
        "api",
        help="serve the HTTP API for host applications (and the console)",
        **examples("tokenworker api --host 0.0.0.0 --port 8080"),
    )
    api.add_argument("--host", help="listen address (default TOKENWORKER_API_HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, help="listen port (default TOKENWORKER_API_PORT, 8080)")
    api.set_defaults(handler=serve)

    keys = sub.add_parser("api-keys", help="keys for the HTTP API").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create_ = keys.add_parser(
        "create",
        help="create a key; it is printed once (stdout: the key alone, or JSON with --json)",
        **examples("tokenworker api-keys create --name billing-app --scope read"),
    )
    create_.add_argument("--name", required=True)
    create_.add_argument("--scope", required=True, choices=[s.value for s in Scope])
    create_.add_argument("--json", action="store_true")
    create_.set_defaults(handler=create)
    list_ = keys.add_parser(
        "list",
        help="list keys (names and scopes; never the keys)",
        **examples("tokenworker api-keys list --json"),
    )
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=list_keys)
    revoke_ = keys.add_parser(
        "revoke", help="revoke a key by name", **examples("tokenworker api-keys revoke billing-app")
    )
    revoke_.add_argument("name")
    revoke_.set_defaults(handler=revoke)


def serve(args: argparse.Namespace) -> int:
    from config.settings import Settings  # noqa: PLC0415
    from worker.api.server import serve as run  # noqa: PLC0415

    run(Settings.from_env(), args.host, args.port)
    return 0


def create(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> tuple[str, ApiKey]:
        return await apikeys.create(rt, args.name, args.scope)

    key, record = with_runtime(work)
    if args.json:
        print(json.dumps({**record.as_dict(), "key": key}))
    else:
        print(key)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    found = with_runtime(apikeys.list_keys)
    if args.json:
        output.dump([key.as_dict() for key in found])
        return 0
    output.table(
        ["NAME", "SCOPE", "CREATED"],
        [[k.name, k.scope.value, output.when(k.created_at)] for k in found],
    )
    return 0


def revoke(args: argparse.Namespace) -> int:
    with_runtime(lambda rt: apikeys.revoke(rt, args.name))
    print(f"revoked {args.name}")
    return 0
