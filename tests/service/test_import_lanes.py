"""transfer.import_records: records imported `lanes` at a time, the first error stopping the
import as itself (pure scheduling, over a stand-in for import_record; the saves themselves
are tested against a real Redis in tests/store/test_store_records.py and tests/cli)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.errors import ConflictError
from worker.service import transfer
from worker.service.transfer import ImportReport, Record


def _records(count: int) -> list[Record]:
    return [Record(n, f"c{n}", "acme", "rt", None, None, None) for n in range(count)]


class Standin:
    """import_record that takes a moment, counts how many run at once, fails on `fail`."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.running = 0
        self.most = 0
        self.started: list[str] = []

    async def __call__(self, store: Any, record: Record, now: float) -> str:
        self.started.append(record.id)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.01)
            if record.id == self.fail:
                raise ConflictError(f"line {record.line}: {record.id}: kept changing")
            return "created" if int(record.id[1:]) % 2 else "unchanged"
        finally:
            self.running -= 1


async def test_lanes_run_at_once_and_every_outcome_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin = Standin()
    monkeypatch.setattr(transfer, "import_record", standin)
    report, progress = ImportReport(), []
    await transfer.import_records(None, _records(100), 0.0, report, progress.append, lanes=8)  # type: ignore[arg-type]
    assert standin.most == 8
    assert (report.created, report.unchanged) == (50, 50)
    assert progress == list(range(1, 101))


async def test_the_first_error_stops_the_import_and_is_raised_as_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin = Standin(fail="c20")
    monkeypatch.setattr(transfer, "import_record", standin)
    report = ImportReport()
    with pytest.raises(ConflictError, match="c20"):
        await transfer.import_records(None, _records(100), 0.0, report, lanes=4)  # type: ignore[arg-type]
    # The lanes under way finish their record; none starts one after the failure.
    assert len(standin.started) <= 20 + 4
    assert standin.running == 0
    assert report.created + report.unchanged == len(standin.started) - 1
