"""`mes serve` as a real process on a migrated SQLite database: health, readiness, GraphiQL,
GraphQL over GET, the body limit, several workers, and readiness without Redis."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backend.migrate import upgrade

pytestmark = pytest.mark.slow

ONE_MIB = 1024 * 1024


@pytest.fixture(scope="module")
def servers(launcher: Any, secret: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three servers on one migrated database, started at once (each takes seconds to boot):
    a plain one, one with two workers, and one whose Redis does not answer."""
    path = tmp_path_factory.mktemp("serve") / "mes.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    env = launcher.env(MES_DATABASE_URL=url, MES_SECRET_KEY=secret)
    dead_redis = f"redis://127.0.0.1:{launcher.free_port()}/0"
    started = {
        "plain": launcher.start("serve", env=env, name="plain"),
        "workers": launcher.start("serve", "--workers", "2", env=env, name="workers"),
        "no-redis": launcher.start(
            "serve", env={**env, "MES_REDIS_URL": dead_redis}, name="no-redis"
        ),
    }
    yield started
    launcher.end_all()


@pytest.fixture(scope="module")
def server(servers: dict[str, Any]) -> Any:
    servers["plain"].wait_for("/healthz")
    return servers["plain"]


@pytest.fixture
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def test_healthz_and_readyz(http: httpx.Client) -> None:
    health = http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "database": "ok"})


def test_graphiql_in_a_browser(http: httpx.Client) -> None:
    page = http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "graphiql" in page.text.lower()


def test_graphql_over_get(http: httpx.Client) -> None:
    response = http.get("/graphql", params={"query": "{__typename}"})
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}

    # A query that needs a token gets a top-level error and no data over GET too.
    refused = http.get("/graphql", params={"query": "{ me { username } }"}).json()
    assert refused["data"] is None
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_mutations_are_not_run_over_get(http: httpx.Client) -> None:
    query = 'mutation { login(username: "x", password: "yyyyyyyy") { token } }'
    response = http.get("/graphql", params={"query": query})
    assert response.status_code >= 400
    assert "token" not in response.text


def _padded_body(size: int) -> bytes:
    """A valid GraphQL request of exactly `size` bytes (padded inside the query string)."""
    empty = json.dumps({"query": "{__typename}"}).encode()
    body = json.dumps({"query": "{__typename}" + " " * (size - len(empty))}).encode()
    assert len(body) == size
    return body


def test_request_body_limit(http: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    under = http.post("/graphql", content=_padded_body(ONE_MIB - 1024), headers=headers)
    assert under.status_code == 200, under.text
    assert under.json() == {"data": {"__typename": "Query"}}

    over = http.post("/graphql", content=_padded_body(ONE_MIB + 1), headers=headers)
    assert over.status_code == 413

    # Without a Content-Length (chunked), the body is counted as it arrives.
    def chunks() -> Iterator[bytes]:
        body = _padded_body(2 * ONE_MIB)
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    chunked = http.post("/graphql", content=chunks(), headers=headers)
    assert chunked.status_code == 413


def test_two_workers(servers: dict[str, Any]) -> None:
    server = servers["workers"]
    server.wait_for("/readyz")
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(10):
            response = client.get("/graphql", params={"query": "{__typename}"})
            assert response.json() == {"data": {"__typename": "Query"}}
    # Each worker logs its own start; the second may come up a little after the first answers.
    workers = server.wait_for_log(r"Started server process \[(\d+)\]", count=2)
    assert len(workers) == 2, server.describe()

    server.stop(signal.SIGTERM)
    assert server.group_ends(), "a worker outlived `mes serve`"
    assert "Traceback" not in server.stderr, server.describe()


def test_not_ready_while_redis_does_not_answer(servers: dict[str, Any]) -> None:
    server = servers["no-redis"]
    server.wait_for("/healthz")
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    assert body["database"] == "ok"
    assert body["redis"] == "failed"


def test_stops_on_sigterm(servers: dict[str, Any]) -> None:
    server = servers["plain"]
    server.wait_for("/healthz")
    status = server.stop(signal.SIGTERM)
    # uvicorn shuts down, then ends by the signal it was sent (as a supervisor expects).
    assert status in (0, -signal.SIGTERM), server.describe()
    assert "Application shutdown complete" in server.stderr
    assert "Traceback" not in server.stderr, server.describe()
