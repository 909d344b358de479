"""Login hosts, endpoint URLs, and which hosts may receive credentials or be stored.

Salesforce-owned domains come from Salesforce's "Allowlist Salesforce IP Addresses and Domains"
help page and the My Domain formats (`*.my.salesforce.com`, `*.sandbox.my.salesforce.com`,
`*.lightning.force.com`, `*.my.site.com`, Government Cloud `*.salesforce.mil`); keep the list
here and nowhere else. Plain http:// is accepted only for loopback hosts: the emulator and tests.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from worker.domain.models import Provider
from worker.errors import InputError

DEFAULT_LOGIN_URLS = {
    Provider.SALESFORCE: "https://login.salesforce.com",
    Provider.SANDBOX: "https://test.salesforce.com",
}

SALESFORCE_DOMAINS = (
    "salesforce.com",
    "force.com",
    "site.com",
    "cloudforce.com",
    "database.com",
    "visualforce.com",
    "salesforce-sites.com",
    "salesforce-setup.com",
    "salesforce.mil",
    "sfcrmproducts.cn",
    "sfcrmapps.cn",
)

TOKEN_PATH = "/services/oauth2/token"
INTROSPECT_PATH = "/services/oauth2/introspect"
REVOKE_PATH = "/services/oauth2/revoke"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_salesforce_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in SALESFORCE_DOMAINS)


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InputError(f"{url!r} is not a valid URL") from None
    if parts.username or parts.password:
        raise InputError("URLs must not carry credentials")
    return parts.scheme, (parts.hostname or ""), port


def normalize_login_url(url: str) -> str:
    """Validate an integration's login URL and return its origin (no path, no slash).

    https:// on a Salesforce-owned domain, or http(s):// on a loopback host.
    """
    scheme, host, port = _origin(url.strip())
    if not host:
        raise InputError(f"login URL {url!r}: expected https://HOST")
    if (scheme == "https" and is_salesforce_host(host)) or (
        scheme in ("http", "https") and is_loopback(host)
    ):
        pass
    elif scheme == "http":
        raise InputError(
            f"login URL {url!r}: plain http:// is only allowed for loopback hosts; use https://"
        )
    else:
        raise InputError(
            f"login URL {url!r}: expected https:// on a Salesforce domain "
            "(login.salesforce.com, test.salesforce.com or a My Domain like "
            "https://acme.my.salesforce.com)"
        )
    shown_host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown_host}" + (f":{port}" if port else "")


def instance_url_problem(instance_url: str, login_url: str) -> str | None:
    """Why an instance_url from Salesforce must not be stored, or None when it is fine."""
    try:
        scheme, host, _ = _origin(instance_url)
    except InputError as error:
        return str(error)
    if not host:
        return "instance_url has no host"
    if scheme == "https" and is_salesforce_host(host):
        return None
    _, login_host, _ = _origin(login_url)
    if scheme in ("http", "https") and is_loopback(host) and is_loopback(login_host):
        return None
    return f"instance_url host {host!r} is not a Salesforce domain"


def endpoint(login_url: str, path: str) -> str:
    return login_url.rstrip("/") + path


# -- My Domain hosts typed by end users (the connect flow's --ask-domain) ----------------------

AUTHORIZE_PATH = "/services/oauth2/authorize"
# Suffixes of hosts that serve Salesforce's OAuth login for an org: My Domains (production,
# sandbox, Government Cloud, Alibaba Cloud) and the generic login hosts.
MY_DOMAIN_SUFFIXES = (".my.salesforce.com", ".my.salesforce.mil", ".my.sfcrmproducts.cn")
LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def my_domain_login_url(typed: str, provider: Provider, integration_login_url: str) -> str:
    """The login URL (`https://HOST`) for what an end user typed as their My Domain, or
    InputError saying what is wrong, before anything is sent there.

    Accepts `acme`, `acme--dev` (expanded to `.my.salesforce.com`, or `.sandbox.my.salesforce.com`
    for the sandbox provider), a My Domain host, or `https://HOST` with no path. Lightning
    (`*.lightning.force.com`) and Setup hosts are not login hosts and are refused with a hint.
    A loopback host is accepted only when the integration itself logs in on loopback (the
    emulator); then `http://HOST:PORT` is kept as typed.
    """
    text = typed.strip().lower()
    if not text or len(text) > 253:
        raise InputError("enter your My Domain, e.g. acme.my.salesforce.com")
    loopback = _loopback_login(text, integration_login_url)
    if loopback is not None:
        return loopback
    host = text.removeprefix("https://").rstrip("/")
    if "/" in host or "@" in host or ":" in host or "?" in host or "#" in host:
        raise InputError("enter only the host of your My Domain, e.g. acme.my.salesforce.com")
    if "." not in host:  # a bare My Domain name
        host += (".sandbox" if provider is Provider.SANDBOX else "") + MY_DOMAIN_SUFFIXES[0]
    if not all(_LABEL.match(label) for label in host.split(".")):
        raise InputError(f"{host!r} is not a valid host name")
    if host.endswith((".lightning.force.com", ".salesforce-setup.com")):
        name = host.split(".", 1)[0]
        raise InputError(
            f"{host!r} is a Lightning or Setup address, not a login host; "
            f"use your My Domain, e.g. {name}.my.salesforce.com"
        )
    if host not in LOGIN_HOSTS and not host.endswith(MY_DOMAIN_SUFFIXES):
        raise InputError(
            f"{host!r} is not a Salesforce My Domain (expected NAME.my.salesforce.com)"
        )
    if provider is Provider.SALESFORCE and _looks_like_sandbox(host):
        raise InputError(f"{host!r} is a sandbox; connect it with the sandbox integration")
    if provider is Provider.SANDBOX and host == "login.salesforce.com":
        raise InputError("login.salesforce.com is for production orgs; enter your sandbox's")
    return f"https://{host}"


def _looks_like_sandbox(host: str) -> bool:
    return (
        host == "test.salesforce.com"
        or ".sandbox." in host
        or "--" in host.split(".", maxsplit=1)[0]
    )


def _loopback_login(text: str, integration_login_url: str) -> str | None:
    if not text.startswith(("http://", "https://")):
        return None
    try:
        scheme, host, _ = _origin(text)
    except InputError:
        return None
    _, login_host, _ = _origin(integration_login_url)
    if is_loopback(host) and is_loopback(login_host) and urlsplit(text).path in ("", "/"):
        return normalize_login_url(text)
    del scheme
    return None
