"""`tokenworker integrations add|list`: the connected apps tokens are refreshed through."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from worker.cli import output
from worker.cli._base import examples, with_runtime
from worker.engine.runtime import Runtime
from worker.errors import InputError
from worker.service import integrations
from worker.service.connect_options import check_prompt, check_scopes, set_connect_options


def register(sub: Any) -> None:
    ints = sub.add_parser("integrations", help="connected apps").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add_ = ints.add_parser(
        "add",
        help="add or update a connected app",
        **examples(
            "SF_SECRET=... tokenworker integrations add acme --provider salesforce "
            "--client-id 3MVG9... --client-secret-env SF_SECRET"
        ),
    )
    add_.add_argument("name")
    add_.add_argument("--provider", required=True, choices=["salesforce", "salesforce-sandbox"])
    add_.add_argument("--client-id", required=True, help="the connected app's consumer key")
    secret = add_.add_mutually_exclusive_group(required=True)
    secret.add_argument("--client-secret-env", metavar="VAR", help="read the secret from $VAR")
    secret.add_argument("--client-secret-file", metavar="PATH", help="read the secret from a file")
    secret.add_argument("--client-secret-stdin", action="store_true", help="read it from stdin")
    add_.add_argument("--login-url", help="My Domain login URL (default: by provider)")
    add_.add_argument(
        "--scopes", help='OAuth scopes the connect flow asks for (default "api refresh_token")'
    )
    add_.add_argument("--prompt", help="Salesforce's prompt for the connect flow (default consent)")
    add_.add_argument(
        "--ask-domain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let the customer type their My Domain in the connect flow (validated first)",
    )
    add_.set_defaults(handler=add)
    lst = ints.add_parser(
        "list", help="list integrations", **examples("tokenworker integrations list --json")
    )
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=list_)


def read_secret(args: argparse.Namespace) -> str:
    if args.client_secret_env:
        value = os.environ.get(args.client_secret_env)
        if value is None:
            raise InputError(f"--client-secret-env: ${args.client_secret_env} is not set")
        return value.strip()
    if args.client_secret_file:
        try:
            return Path(args.client_secret_file).read_text().strip()
        except OSError as error:
            raise InputError(f"--client-secret-file: {error.strerror}") from None
    return sys.stdin.readline().strip()


def add(args: argparse.Namespace) -> int:
    # Checked before anything is saved: a bad option leaves the integration as it was.
    scopes = check_scopes(args.scopes) if args.scopes is not None else None
    prompt = check_prompt(args.prompt) if args.prompt is not None else None
    secret = read_secret(args)

    async def work(rt: Runtime) -> integrations.Added:
        added = await integrations.add(
            rt, args.name, args.provider, args.client_id, secret, args.login_url
        )
        if scopes is None and prompt is None and args.ask_domain is None:
            return added
        options = await set_connect_options(
            rt, args.name, scopes=scopes, prompt=prompt, ask_domain=args.ask_domain
        )
        return integrations.Added(options, added.resumed)

    added = with_runtime(work)
    integration = added.integration
    print(
        f"integration {integration.name}: {integration.provider.value} at "
        f"{integration.login_url}"
        + (f"; {added.resumed} connections resumed" if added.resumed else "")
    )
    return 0


def list_(args: argparse.Namespace) -> int:
    rows = [i.public() for i in with_runtime(integrations.list_all)]
    if args.json:
        output.dump(rows)
        return 0
    output.table(
        ["name", "provider", "status", "introspection", "login_url"],
        [[r["name"], r["provider"], r["status"], r["introspection"], r["login_url"]] for r in rows],
    )
    return 0
