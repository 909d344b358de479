"""The proxy's pure rules: the target URL."""

from __future__ import annotations

import pytest

from worker.api.errors import ApiError
from worker.api.proxy_rules import check_path, target


class TestTarget:
    def test_the_path_joins_the_instance_url_with_one_slash(self) -> None:
        """instance_url + "/" + path, query kept, encoding untouched, origin unchanged."""
        url = target("https://acme.my.salesforce.com/", "services/data/a%2Fb", "q=1+2")
        assert str(url) == "https://acme.my.salesforce.com/services/data/a%2Fb?q=1+2"

    def test_an_instance_url_with_a_path_keeps_it(self) -> None:
        url = target("http://127.0.0.1:8443/sf", check_path("services/data"), "")
        assert str(url) == "http://127.0.0.1:8443/sf/services/data"

    @pytest.mark.parametrize(
        "instance_url", ["ftp://acme.my.salesforce.com", "https://u:p@acme.my.salesforce.com", "x"]
    )
    def test_an_unusable_stored_instance_url_sends_nothing(self, instance_url: str) -> None:
        with pytest.raises(ApiError) as raised:
            target(instance_url, "services", "")
        assert raised.value.status == 500


def test_a_connection_without_an_instance_url_sends_nothing() -> None:
    with pytest.raises(ApiError) as raised:
        target(None, "services", "")
    assert (raised.value.status, raised.value.code) == (409, "no_instance_url")
