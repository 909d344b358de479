"""worker/service/connect_options.py and the Integration's connect fields in the codec."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from tests.conftest import run
from worker.domain.models import DEFAULT_PROMPT, DEFAULT_SCOPES, Integration, Provider
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError
from worker.service import integrations
from worker.service.connect_options import check_prompt, check_scopes, set_connect_options
from worker.store import codec
from worker.store.crypto import Cipher, generate_key

CIPHER = Cipher((base64.urlsafe_b64decode(generate_key()),))


class TestScopes:
    def test_normalised_and_deduplicated(self) -> None:
        """Extra spaces and repeats go; the order stays."""
        assert check_scopes("  api  refresh_token api id ") == "api refresh_token id"

    @pytest.mark.parametrize("scopes", ["", "   ", "api,refresh_token", "api refresh-token!"])
    def test_malformed_lists_are_refused(self, scopes: str) -> None:
        """Only space-separated names of letters, digits and underscores."""
        with pytest.raises(InputError, match="--scopes"):
            check_scopes(scopes)

    def test_a_refresh_scope_is_required(self) -> None:
        """Without refresh_token or offline_access the connection could not be kept alive."""
        with pytest.raises(InputError, match="refresh_token"):
            check_scopes("api id")
        assert check_scopes("api offline_access") == "api offline_access"


class TestPrompt:
    def test_salesforce_prompts_only(self) -> None:
        """login, consent, select_account, alone or together; anything else is refused."""
        assert check_prompt("login  consent") == "login consent"
        for bad in ("", "none", "consent,login", "CONSENT"):
            with pytest.raises(InputError, match="--prompt"):
                check_prompt(bad)


class TestCodec:
    def test_connect_fields_round_trip(self) -> None:
        """scopes, prompt and ask_domain survive the store."""
        integration = Integration(
            "acme", Provider.SANDBOX, "cid", "secret", "https://test.salesforce.com",
            scopes="api offline_access", prompt="login", ask_domain=True,
        )  # fmt: skip
        fields = codec.integration_fields(integration, CIPHER)
        raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
        back = codec.integration_from_raw("acme", raw, CIPHER)
        assert (back.scopes, back.prompt, back.ask_domain) == ("api offline_access", "login", True)

    def test_a_stored_integration_without_them_gets_the_defaults(self) -> None:
        """Integrations stored before the connect flow read as `api refresh_token`, `consent`,
        no domain question."""
        integration = Integration(
            "old", Provider.SALESFORCE, "cid", "s", "https://login.salesforce.com"
        )
        fields = codec.integration_fields(integration, CIPHER)
        for name in ("scopes", "prompt", "ask_domain"):
            del fields[name]
        raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
        back = codec.integration_from_raw("old", raw, CIPHER)
        assert (back.scopes, back.prompt, back.ask_domain) == (
            DEFAULT_SCOPES,
            DEFAULT_PROMPT,
            False,
        )


def test_set_connect_options_changes_only_what_is_given(
    runtime_for: Callable[..., Runtime],
) -> None:
    """Given options are validated and stored; the others, and the secret, stay."""

    async def go() -> tuple[Integration, Integration | None]:
        rt = runtime_for()
        try:
            await integrations.add(rt, "acme", "salesforce", "cid", "the-secret", None)
            await set_connect_options(rt, "acme", scopes="api refresh_token id")
            updated = await set_connect_options(rt, "acme", ask_domain=True)
            with pytest.raises(InputError):
                await set_connect_options(rt, "acme", prompt="never")
            with pytest.raises(NotFoundError):
                await set_connect_options(rt, "nope", ask_domain=True)
            return updated, await rt.store.get_integration("acme")
        finally:
            await rt.close()

    updated, stored = run(go())
    assert stored is not None
    assert stored.public() == updated.public()
    assert (stored.scopes, stored.prompt, stored.ask_domain) == (
        "api refresh_token id", DEFAULT_PROMPT, True,
    )  # fmt: skip
    assert stored.client_secret == "the-secret"
    assert stored.public()["ask_domain"] is True
