"""The proxy's pure rules: the target URL, and what a 401 from Salesforce means."""

from __future__ import annotations

import json

import pytest

from worker.api.errors import ApiError
from worker.api.proxy_rules import Rejection, check_path, classify_401, target


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


class TestClassify401:
    def test_invalid_session_id_means_expired(self) -> None:
        body = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
        assert classify_401(json.dumps(body).encode()) is Rejection.EXPIRED

    def test_not_valid_for_this_api_is_the_policy_case(self) -> None:
        """Same errorCode, different meaning: a refresh cannot fix an API-access policy."""
        body = [
            {
                "message": "This session is not valid for use with the REST API",
                "errorCode": "INVALID_SESSION_ID",
            }
        ]
        assert classify_401(json.dumps(body).encode()) is Rejection.POLICY

    @pytest.mark.parametrize("body", [b"", b"<html>", b'{"error": "x"}', b"[1, 2]", b'"x"'])
    def test_anything_else_is_passed_back(self, body: bytes) -> None:
        assert classify_401(body) is Rejection.OTHER
