"""/openapi.json documents every mounted route; /docs renders it with no outside asset; the
probes answer without a key; the events page reads the stream."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

from starlette.routing import Route
from starlette.testclient import TestClient

from config.settings import Settings
from tests.api.conftest import Api
from worker.api.server import build_app
from worker.store.apikeys import Scope


def test_every_mounted_route_is_documented_with_its_scope(api: Api) -> None:
    """Each (path, method) the app serves is in the document; keyed ones name their scope."""
    doc = api.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    served = {
        (re.sub(r"{(\w+):\w+}", r"{\1}", route.path), method.lower())
        for route in api.client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and route.include_in_schema  # the console is no API
        for method in (route.methods or ()) - {"HEAD"}
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    # Probes, the document itself, and the two pages the customer's browser visits.
    open_paths = {"/healthz", "/readyz", "/openapi.json", "/docs"}
    open_paths |= {"/connect/{session_id}", "/oauth/callback"}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert ("x-scope" in op) is (path not in open_paths), path
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', api.client.get("/openapi.json").text))
    assert refs <= set(doc["components"]["schemas"])


def test_the_docs_page_is_self_contained(api: Api) -> None:
    """Every path appears; no script and no asset from elsewhere (this box has no internet)."""
    page = api.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in api.client.get("/openapi.json").json()["paths"]:
        assert path in page.text
    assert "<script" not in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text)


def test_probes_need_no_key(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_readyz_is_503_when_the_store_is_unreachable(
    settings_for: Callable[..., Settings],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scheme = settings_for().redis_url.partition("://")[0]  # rediss under make test-tls
    settings = settings_for(redis_url=f"{scheme}://127.0.0.1:{port}/0")
    with TestClient(build_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        down = client.get("/readyz")
        assert down.status_code == 503 and down.json()["error"] == "not_ready"


def test_the_events_page_reads_after_an_id(api: Api) -> None:
    """Oldest first; `after` continues where a page ended; a malformed id is 422."""

    async def emit(n: int) -> None:
        await api.rt.sink.emit("token.refreshed", None, None, n=n)

    for n in range(3):
        api.call(emit, n)
    first = api.get("/events?limit=2", Scope.READ).json()
    newest = [item["n"] for item in first["items"]]
    assert newest == [1, 2]
    everything = api.get("/events?after=0", Scope.READ).json()
    assert [item["n"] for item in everything["items"]] == [0, 1, 2]
    start = everything["items"][0]["id"]
    rest = api.get(f"/events?after={start}&limit=1", Scope.READ).json()
    assert [item["n"] for item in rest["items"]] == [1]
    assert rest["next_after"] == rest["items"][0]["id"]
    for bad in ("after=abc", "after=1-2-3", "limit=0", "limit=5000"):
        answer = api.get(f"/events?{bad}", Scope.READ)
        assert answer.status_code == 422, bad
