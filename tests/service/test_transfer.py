"""worker/service/transfer.py: connections as JSON Lines, validated line by line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.domain.models import Connection, ConnectionStatus, Integration, Provider
from worker.errors import InputError
from worker.service.transfer import decode_input, export_row, parse_line, parse_lines

now = 1_800_000_000.0
INTEGRATIONS = {
    "acme": Integration(
        name="acme",
        provider=Provider.SALESFORCE,
        client_id="3MVG9-acme",
        client_secret="acme-secret",
        login_url="https://login.salesforce.com",
    ),
    "local": Integration(
        name="local",
        provider=Provider.SANDBOX,
        client_id="3MVG9-local",
        client_secret="local-secret",
        login_url="http://127.0.0.1:8080",
    ),
}
REFRESH = "5Aep861TNHzAqJZ7fZrH0bP2YXr"
ACCESS = "00Dxx0000001gPL!AQ4AQFakeAccessToken"


def line(**changes: Any) -> str:
    """A valid import line for acme, with `changes` applied (None removes a field)."""
    data: dict[str, Any] = {
        "id": "c-1",
        "integration": "acme",
        "refresh_token": REFRESH,
        "access_token": ACCESS,
        "instance_url": "https://acme.my.salesforce.com/",
        "issued_at": "1800000000123",
    }
    data.update(changes)
    return json.dumps({key: value for key, value in data.items() if value is not None})


class TestParseLine:
    def test_valid_line(self) -> None:
        """A complete line becomes a Record: ms issued_at in seconds, instance_url unslashed."""
        record = parse_line(line(), 7, INTEGRATIONS)
        assert record is not None
        assert (record.line, record.id, record.integration) == (7, "c-1", "acme")
        assert (record.refresh_token, record.access_token) == (REFRESH, ACCESS)
        assert record.instance_url == "https://acme.my.salesforce.com"
        assert record.issued_at == pytest.approx(1_800_000_000.123)

    def test_only_required_fields(self) -> None:
        """id, integration and refresh_token are enough; the rest is None."""
        record = parse_line(
            line(access_token=None, instance_url=None, issued_at=None), 1, INTEGRATIONS
        )
        assert record is not None
        assert (record.access_token, record.instance_url, record.issued_at) == (None, None, None)

    @pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
    def test_blank_line_is_none(self, blank: str) -> None:
        """A blank line is no record and no problem."""
        assert parse_line(blank, 1, INTEGRATIONS) is None

    @pytest.mark.parametrize(
        "issued_at",
        [1_800_000_000, 1_800_000_000_000, "1800000000", "1800000000000", 1_800_000_000.0],
        ids=["seconds", "ms", "seconds string", "ms string", "seconds float"],
    )
    def test_issued_at_seconds_or_milliseconds(self, issued_at: Any) -> None:
        """issued_at in seconds or milliseconds, string or number, is read as seconds."""
        record = parse_line(line(issued_at=issued_at), 1, INTEGRATIONS)
        assert record is not None
        assert record.issued_at == now

    def test_loopback_instance_for_loopback_integration(self) -> None:
        """An http:// loopback instance is accepted for an integration that logs in there."""
        text = line(integration="local", instance_url="http://127.0.0.1:8080")
        record = parse_line(text, 1, INTEGRATIONS)
        assert record is not None
        assert record.instance_url == "http://127.0.0.1:8080"


class TestParseLineErrors:
    @pytest.mark.parametrize(
        ("text", "field"),
        [
            pytest.param('{"id": "c-1", ', "not valid JSON", id="bad JSON"),
            pytest.param('["c-1", "acme"]', "expected a JSON object", id="not an object"),
            pytest.param(line(token="x"), "unknown field 'token'", id="unknown field"),
            pytest.param(line(refresh_token=None), "field 'refresh_token'",
                         id="missing refresh_token"),
            pytest.param(line(refresh_token=""), "field 'refresh_token'",
                         id="empty refresh_token"),
            pytest.param(line(refresh_token="5Aep 861"), "field 'refresh_token'",
                         id="refresh_token with space"),
            pytest.param(line(access_token=12), "field 'access_token'", id="numeric access_token"),
            pytest.param(line(id=None), "field 'id'", id="missing id"),
            pytest.param(line(id="c 1"), "field 'id'", id="id with space"),
            pytest.param(line(integration="globex"), "field 'integration'",
                         id="unknown integration"),
            pytest.param(line(instance_url="http://na1.salesforce.com"), "field 'instance_url'",
                         id="http instance_url"),
            pytest.param(line(instance_url="http://127.0.0.1:8080"), "field 'instance_url'",
                         id="loopback instance_url for a Salesforce login"),
            pytest.param(line(instance_url="https://evil.example.com"), "field 'instance_url'",
                         id="foreign instance_url"),
            pytest.param(line(instance_url=["https://na1.salesforce.com"]),
                         "field 'instance_url'", id="non-string instance_url"),
            pytest.param(line(issued_at="yesterday"), "field 'issued_at'", id="bad issued_at"),
            pytest.param(line(issued_at=True), "field 'issued_at'", id="boolean issued_at"),
            pytest.param(line(issued_at=12), "field 'issued_at'", id="issued_at before 2000"),
        ],
    )
    def test_error_names_line_and_field(self, text: str, field: str) -> None:
        """Every bad line raises InputError naming the line number and what is wrong."""
        with pytest.raises(InputError) as caught:
            parse_line(text, 3, INTEGRATIONS)
        message = str(caught.value)
        assert message.startswith("line 3: ")
        assert field in message

    def test_errors_never_echo_the_refresh_token(self) -> None:
        """A refresh token with whitespace is reported without being printed."""
        with pytest.raises(InputError) as caught:
            parse_line(line(refresh_token=REFRESH + " tail"), 1, INTEGRATIONS)
        assert REFRESH not in str(caught.value)

    def test_unknown_integration_is_named(self) -> None:
        """The message names the missing integration and how to add it."""
        with pytest.raises(InputError, match=r"'globex'.*integrations add"):
            parse_line(line(integration="globex"), 1, INTEGRATIONS)

    def test_number_too_long_for_json_is_reported_by_line(self) -> None:
        """An integer with more digits than Python will parse is an InputError naming the line."""
        text = '{"id": "c-1", "integration": "acme", "issued_at": ' + "1" * 5000 + "}"
        with pytest.raises(InputError, match=r"^line 4: "):
            parse_line(text, 4, INTEGRATIONS)


class TestParseLines:
    def test_duplicate_id_is_reported_on_its_second_line(self) -> None:
        """A repeated id keeps the first record and reports the second line."""
        records, problems = parse_lines([line(), line(refresh_token="5Aep-other")], INTEGRATIONS)
        assert [record.line for record in records] == [1]
        assert records[0].refresh_token == REFRESH
        assert problems == ["line 2: field 'id': 'c-1' already on line 1"]

    def test_blank_lines_are_ignored_but_counted(self) -> None:
        """Blank lines produce nothing, and later line numbers still match the file."""
        records, problems = parse_lines(
            ["", line(), "   ", line(id="c-2", issued_at="soon")], INTEGRATIONS
        )
        assert [record.line for record in records] == [2]
        assert len(problems) == 1
        assert problems[0].startswith("line 4: field 'issued_at'")

    def test_every_problem_is_reported_and_valid_lines_kept(self) -> None:
        """Bad lines do not stop parsing: all problems come back, with the valid records."""
        records, problems = parse_lines(
            ["{", line(id="c-2"), line(id="c-3", integration="nope"), line(id="c-4")],
            INTEGRATIONS,
        )
        assert [record.id for record in records] == ["c-2", "c-4"]
        assert [problem.split(":")[0] for problem in problems] == ["line 1", "line 3"]


def connection(**changes: Any) -> Connection:
    return Connection(
        id="c-1",
        integration="acme",
        refresh_token=REFRESH,
        access_token=ACCESS,
        instance_url="https://acme.my.salesforce.com",
        issued_at=now + 0.123,
        status=ConnectionStatus.FAILING,
    ).evolve(**changes)


class TestExportRow:
    def test_without_secrets_has_no_token_fields(self) -> None:
        """An export without secrets carries no token and shows the status instead."""
        row = export_row(connection(), with_secrets=False)
        assert row == {
            "id": "c-1",
            "integration": "acme",
            "instance_url": "https://acme.my.salesforce.com",
            "issued_at": 1_800_000_000_123,
            "status": "failing",
        }
        assert REFRESH not in json.dumps(row)
        assert ACCESS not in json.dumps(row)

    def test_with_secrets_round_trips_through_import(self) -> None:
        """An export with secrets is a valid import line for the same connection."""
        row = export_row(connection(), with_secrets=True)
        assert (row["refresh_token"], row["access_token"]) == (REFRESH, ACCESS)
        record = parse_line(json.dumps(row), 1, INTEGRATIONS)
        assert record is not None
        assert (record.id, record.refresh_token, record.access_token) == ("c-1", REFRESH, ACCESS)
        assert record.issued_at == pytest.approx(now + 0.123)

    def test_unknown_fields_are_left_out(self) -> None:
        """A connection without access token, instance or issue time exports only what it has."""
        conn = connection(access_token=None, instance_url=None, issued_at=None)
        assert export_row(conn, with_secrets=True) == {
            "id": "c-1", "integration": "acme", "refresh_token": REFRESH,
        }


class TestInputShape:
    def test_pretty_printed_array_is_one_problem_on_its_first_line(self) -> None:
        """A JSON array (here pretty-printed, after a blank line) is named as such once."""
        text = json.dumps([json.loads(line()), json.loads(line(id="c-2"))], indent=2)
        records, problems = parse_lines(["", *text.splitlines()], INTEGRATIONS)
        assert records == []
        assert problems == [
            "line 2: expected JSON Lines (one object per line), got a JSON array; "
            "convert it with e.g. `jq -c '.[]' FILE`"
        ]

    def test_one_line_array_is_named_too(self) -> None:
        """`[{...}]` on one line gets the same hint instead of 'expected a JSON object'."""
        _, problems = parse_lines([f"[{line()}]"], INTEGRATIONS)
        assert problems[0].startswith("line 1: expected JSON Lines")

    def test_undecodable_bytes_are_a_line_problem_never_a_record(self) -> None:
        """Text carrying surrogates (bytes decoded with surrogateescape) is refused by line
        before anything is saved: it could not be sealed."""
        raw = line(id="c-2").replace(REFRESH, "rt-\udcff")  # as surrogateescape leaves it
        escaped = line(id="c-3", refresh_token="rt-\udcff")  # json.dumps writes "\\udcff"
        records, problems = parse_lines([line(), raw, escaped], INTEGRATIONS)
        assert [r.id for r in records] == ["c-1"]
        assert problems == [
            "line 2: not valid UTF-8 (undecodable bytes)",
            "line 3: field 'refresh_token': not valid Unicode (lone surrogate)",
        ]

    def test_decode_input_names_the_line_of_the_first_bad_byte(self) -> None:
        """Bytes that are not UTF-8 are reported with their line and byte position."""
        data = b'{"a": 1}\n{"b": "\xc3\x28"}\n'
        with pytest.raises(InputError) as caught:
            decode_input(data, "in.jsonl")
        assert str(caught.value) == (
            "in.jsonl: line 2: not valid UTF-8 (byte 0xc3 at byte 8 of the line); "
            "nothing imported"
        )
        assert decode_input("ok ✓\n".encode(), "x") == "ok ✓\n"
