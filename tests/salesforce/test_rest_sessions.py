"""What a 401 from Salesforce's REST API means (worker/salesforce/sessions.py)."""

from __future__ import annotations

import json

import pytest

from worker.salesforce.sessions import Rejection, classify_401


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
