"""An integration's connect-flow options: OAuth scopes, prompt, and whether end users may
type their My Domain (`integrations add --scopes/--prompt/--ask-domain`)."""

from __future__ import annotations

import re
from dataclasses import replace

from worker.domain.models import Integration
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError

_SCOPE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
REFRESH_SCOPES = ("refresh_token", "offline_access")  # either makes Salesforce issue one
PROMPTS = ("login", "consent", "select_account")  # Salesforce's prompt values
MAX_SCOPES = 32


def check_scopes(scopes: str) -> str:
    """Space-separated scope names, normalised; a refresh scope is required, since a
    connection without a refresh token cannot be kept alive."""
    names = list(dict.fromkeys(scopes.split()))
    if not names or len(names) > MAX_SCOPES or not all(_SCOPE.match(name) for name in names):
        raise InputError(
            f"--scopes {scopes!r:.80}: expected space-separated scope names, e.g. "
            '"api refresh_token"'
        )
    if not any(name in REFRESH_SCOPES for name in names):
        raise InputError(
            f"--scopes {scopes!r:.80}: add refresh_token (or offline_access); without it "
            "Salesforce issues no refresh token and the connection dies with its session"
        )
    return " ".join(names)


def check_prompt(prompt: str) -> str:
    """One or more of login, consent, select_account (space-separated), normalised."""
    names = list(dict.fromkeys(prompt.split()))
    if not names or any(name not in PROMPTS for name in names):
        raise InputError(f"--prompt {prompt!r:.80}: expected one or more of {', '.join(PROMPTS)}")
    return " ".join(names)


async def set_connect_options(
    rt: Runtime,
    name: str,
    *,
    scopes: str | None = None,
    prompt: str | None = None,
    ask_domain: bool | None = None,
) -> Integration:
    """Set the options given (None leaves one as stored) on an existing integration."""
    integration = await rt.store.get_integration(name)
    if integration is None:
        raise NotFoundError(f"no integration named {name!r}")
    updated = replace(
        integration,
        scopes=check_scopes(scopes) if scopes is not None else integration.scopes,
        prompt=check_prompt(prompt) if prompt is not None else integration.prompt,
        ask_domain=integration.ask_domain if ask_domain is None else ask_domain,
    )
    await rt.store.save_integration(updated)
    return updated
