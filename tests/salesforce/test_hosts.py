"""worker/salesforce/hosts.py: which hosts may receive credentials or be stored."""

from __future__ import annotations

import pytest

from worker.errors import InputError
from worker.salesforce.hosts import instance_url_problem, normalize_login_url

SALESFORCE_LOGIN = "https://login.salesforce.com"
LOOPBACK_LOGIN = "http://127.0.0.1:8080"


class TestNormalizeLoginUrl:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            pytest.param("https://login.salesforce.com", "https://login.salesforce.com",
                         id="production"),
            pytest.param("https://test.salesforce.com/", "https://test.salesforce.com",
                         id="sandbox"),
            pytest.param("https://acme.my.salesforce.com", "https://acme.my.salesforce.com",
                         id="my domain"),
            pytest.param("https://acme--uat.sandbox.my.salesforce.com",
                         "https://acme--uat.sandbox.my.salesforce.com", id="sandbox my domain"),
            pytest.param("https://Login.Salesforce.COM", "https://login.salesforce.com",
                         id="mixed case"),
            pytest.param("  https://login.salesforce.com  ", "https://login.salesforce.com",
                         id="surrounding spaces"),
            pytest.param("https://login.salesforce.com:443", "https://login.salesforce.com:443",
                         id="explicit port"),
        ],
    )
    def test_salesforce_https_is_accepted(self, url: str, expected: str) -> None:
        """https:// on a Salesforce domain (incl. My Domain) comes back as its origin."""
        assert normalize_login_url(url) == expected

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://localhost:9000/", "http://localhost:9000"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ],
    )
    def test_loopback_http_is_accepted(self, url: str, expected: str) -> None:
        """Plain http:// is allowed for loopback hosts (the emulator and tests)."""
        assert normalize_login_url(url) == expected

    def test_trailing_path_is_stripped(self) -> None:
        """A pasted token endpoint URL is reduced to the origin."""
        url = "https://acme.my.salesforce.com/services/oauth2/token?x=1#frag"
        assert normalize_login_url(url) == "https://acme.my.salesforce.com"

    @pytest.mark.parametrize("url", ["http://login.salesforce.com", "http://10.0.0.5:8080"])
    def test_http_on_a_non_loopback_host_is_rejected(self, url: str) -> None:
        """Plain http:// elsewhere is refused, and the message says http:// is the problem."""
        with pytest.raises(InputError, match="http://"):
            normalize_login_url(url)

    @pytest.mark.parametrize(
        "url",
        [
            "https://evil.example.com",
            "https://salesforce.com.evil.com",
            "https://evilsalesforce.com",
            "ftp://login.salesforce.com",
        ],
    )
    def test_foreign_host_is_rejected(self, url: str) -> None:
        """https:// on a domain Salesforce does not own (or a lookalike) is refused."""
        with pytest.raises(InputError, match="Salesforce domain"):
            normalize_login_url(url)

    @pytest.mark.parametrize(
        "url",
        ["https://admin:hunter2@login.salesforce.com", "https://admin@login.salesforce.com"],
    )
    def test_credentials_in_url_are_rejected(self, url: str) -> None:
        """A URL carrying credentials is refused, and the message does not echo them."""
        with pytest.raises(InputError, match="credentials") as caught:
            normalize_login_url(url)
        assert "hunter2" not in str(caught.value)

    @pytest.mark.parametrize(
        "url", ["", "https://", "login.salesforce.com", "https://login.salesforce.com:99999"]
    )
    def test_malformed_url_is_rejected(self, url: str) -> None:
        """A URL without scheme or host, or with a bad port, is an InputError."""
        with pytest.raises(InputError):
            normalize_login_url(url)


class TestInstanceUrlProblem:
    @pytest.mark.parametrize(
        "instance_url",
        [
            "https://na1.salesforce.com",
            "https://acme.my.salesforce.com/",
            "https://acme--uat.sandbox.my.salesforce.com",
        ],
    )
    def test_salesforce_host_is_fine(self, instance_url: str) -> None:
        """An https:// instance on a Salesforce domain may be stored."""
        assert instance_url_problem(instance_url, SALESFORCE_LOGIN) is None

    @pytest.mark.parametrize(
        "instance_url", ["https://evil.example.com", "https://salesforce.com.evil.com"]
    )
    def test_foreign_host_is_rejected(self, instance_url: str) -> None:
        """An instance on a foreign or lookalike domain is a problem naming the host."""
        problem = instance_url_problem(instance_url, SALESFORCE_LOGIN)
        assert problem is not None
        assert instance_url.removeprefix("https://") in problem

    def test_http_salesforce_host_is_rejected(self) -> None:
        """Plain http:// on a Salesforce host is not stored."""
        assert instance_url_problem("http://na1.salesforce.com", SALESFORCE_LOGIN) is not None

    def test_loopback_instance_with_loopback_login_is_fine(self) -> None:
        """A loopback instance is fine when the integration itself logs in on loopback."""
        assert instance_url_problem("http://127.0.0.1:8080", LOOPBACK_LOGIN) is None

    def test_loopback_instance_with_salesforce_login_is_rejected(self) -> None:
        """A loopback instance from a real Salesforce login is a problem (SSRF to ourselves)."""
        assert instance_url_problem("http://127.0.0.1:8080", SALESFORCE_LOGIN) is not None
        assert instance_url_problem("https://localhost", SALESFORCE_LOGIN) is not None

    def test_credentials_in_instance_url_are_rejected(self) -> None:
        """An instance URL carrying credentials is a problem."""
        problem = instance_url_problem("https://u:p@na1.salesforce.com", SALESFORCE_LOGIN)
        assert problem is not None
        assert "credentials" in problem

    @pytest.mark.parametrize("instance_url", ["", "not a url", "https://"])
    def test_hostless_instance_url_is_rejected(self, instance_url: str) -> None:
        """An instance URL without a host is a problem."""
        assert instance_url_problem(instance_url, SALESFORCE_LOGIN) == "instance_url has no host"
