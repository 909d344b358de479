"""worker/salesforce/hosts.py `my_domain_login_url`: what an end user may type as their My
Domain (--ask-domain), checked before any code or secret goes there."""

from __future__ import annotations

import pytest

from worker.domain.models import Provider
from worker.errors import InputError
from worker.salesforce.hosts import my_domain_login_url

PRODUCTION = "https://login.salesforce.com"
LOOPBACK = "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("typed", "provider", "expected"),
    [
        ("acme", Provider.SALESFORCE, "https://acme.my.salesforce.com"),
        ("acme--uat", Provider.SANDBOX, "https://acme--uat.sandbox.my.salesforce.com"),
        ("ACME.my.salesforce.com", Provider.SALESFORCE, "https://acme.my.salesforce.com"),
        ("https://acme.my.salesforce.com/", Provider.SALESFORCE, "https://acme.my.salesforce.com"),
        (" acme.my.salesforce.com ", Provider.SALESFORCE, "https://acme.my.salesforce.com"),
        ("acme--uat.sandbox.my.salesforce.com", Provider.SANDBOX,
         "https://acme--uat.sandbox.my.salesforce.com"),
        ("agency.my.salesforce.mil", Provider.SALESFORCE, "https://agency.my.salesforce.mil"),
        ("login.salesforce.com", Provider.SALESFORCE, "https://login.salesforce.com"),
        ("test.salesforce.com", Provider.SANDBOX, "https://test.salesforce.com"),
    ],
)  # fmt: skip
def test_my_domains_and_login_hosts_are_accepted(
    typed: str, provider: Provider, expected: str
) -> None:
    """A name, a host or an https origin on a Salesforce login domain becomes `https://HOST`."""
    assert my_domain_login_url(typed, provider, PRODUCTION) == expected


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", "enter your My Domain"),
        ("evil.example.com", "not a Salesforce My Domain"),
        ("acme.my.salesforce.com.evil.com", "not a Salesforce My Domain"),
        ("my.salesforce.com", "not a Salesforce My Domain"),
        ("salesforce.com", "not a Salesforce My Domain"),
        ("acme.force.com", "not a Salesforce My Domain"),
        ("acme.lightning.force.com", "Lightning or Setup address"),
        ("acme.my.salesforce-setup.com", "Lightning or Setup address"),
        ("http://acme.my.salesforce.com", "only the host"),
        ("https://acme.my.salesforce.com/services/oauth2/authorize", "only the host"),
        ("acme.my.salesforce.com:8443", "only the host"),
        ("user@acme.my.salesforce.com", "only the host"),
        ("evil.com#.my.salesforce.com", "only the host"),
        ("evil.com?.my.salesforce.com", "only the host"),
        ("acme_x.my.salesforce.com", "not a valid host name"),
        ("-acme.my.salesforce.com", "not a valid host name"),
        ("acme..my.salesforce.com", "not a valid host name"),
        ("http://127.0.0.1:8080", "only the host"),
        ("acme--uat.sandbox.my.salesforce.com", "is a sandbox"),
        ("test.salesforce.com", "is a sandbox"),
        ("a" * 254, "enter your My Domain"),
    ],
)
def test_anything_else_is_refused_with_the_reason(typed: str, reason: str) -> None:
    """Foreign hosts, look-alikes, paths, ports, credentials, non-login Salesforce hosts and
    (for a production integration) sandboxes are refused, saying why."""
    with pytest.raises(InputError, match=reason):
        my_domain_login_url(typed, Provider.SALESFORCE, PRODUCTION)


def test_a_sandbox_integration_refuses_the_production_login_host() -> None:
    """login.salesforce.com cannot log a sandbox user in."""
    with pytest.raises(InputError, match="production"):
        my_domain_login_url("login.salesforce.com", Provider.SANDBOX, PRODUCTION)


def test_loopback_only_when_the_integration_itself_is_on_loopback() -> None:
    """The emulator's http://127.0.0.1:PORT is accepted for an emulator integration only."""
    assert my_domain_login_url("http://127.0.0.1:9000/", Provider.SALESFORCE, LOOPBACK) == (
        "http://127.0.0.1:9000"
    )
    with pytest.raises(InputError):
        my_domain_login_url("http://127.0.0.1:9000", Provider.SALESFORCE, PRODUCTION)
    with pytest.raises(InputError):
        my_domain_login_url("http://127.0.0.1:9000/x", Provider.SALESFORCE, LOOPBACK)
