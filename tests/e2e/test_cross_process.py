"""Two `mes serve` processes on one PostgreSQL database and one Redis: a change made through
one process reaches a subscriber of the other (graphql-transport-ws over a real WebSocket)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from backend.migrate import upgrade

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

PASSWORD = "cross-process-pw"
ORDER = f"XP-{uuid.uuid4().hex[:8].upper()}"  # unique: other suites may share this Redis


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A database of this module's own, migrated; dropped at the end."""
    base = make_url(os.environ["MES_TEST_DATABASE_URL"])
    name = f"{base.database}_cross_process"
    admin = create_engine(
        base.set(drivername="postgresql+psycopg", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    drop = text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with admin.connect() as conn:
        conn.execute(drop)
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(drop)
        admin.dispose()


@pytest.fixture(scope="module")
def pair(launcher: Any, secret: str, postgres_url: str) -> Iterator[tuple[Any, Any]]:
    """Users made with `mes create-user`, then processes A and B, both ready."""
    env = launcher.env(
        MES_DATABASE_URL=postgres_url,
        MES_SECRET_KEY=secret,
        MES_REDIS_URL=os.environ["MES_TEST_REDIS_URL"],
    )
    # The servers boot (seconds) while the users are made.
    a = launcher.start("serve", env=env, name="process-a")
    b = launcher.start("serve", env=env, name="process-b")
    try:
        for name, role in (("watcher", "OPERATOR"), ("planner", "ERP")):
            launcher.run("create-user", name, "--password", PASSWORD, "--role", role, env=env)
        a.wait_for("/readyz")
        b.wait_for("/readyz")
        yield a, b
    finally:
        launcher.end_all()


def gql(client: httpx.Client, query: str, token: str | None = None, **variables: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


LOGIN = """mutation($u: String!, $p: String!) {
  login(username: $u, password: $p) { token errors { message } }
}"""
MATERIALS = """mutation {
  upsertMaterials(input: [
    {code: "XP-RAW", name: "Raw", kind: RAW, unit: "kg", lotControlled: true},
    {code: "XP-FIN", name: "Finished", kind: FINISHED, unit: "pcs", lotControlled: true}
  ]) { errors { message field } }
}"""
ORDER_UPSERT = """mutation($n: String!) {
  upsertProductionOrder(input: {
    externalId: $n, number: $n, productCode: "XP-FIN", quantity: "10",
    components: [{materialCode: "XP-RAW", quantity: "5"}],
    operations: [{sequence: 10, name: "Make"}]
  }) { errors { message field } }
}"""
RELEASE = "mutation($n: String!) { releaseProductionOrder(number: $n) { errors { message } } }"
HOLD = """mutation($n: String!) {
  holdProductionOrder(number: $n, reason: "test") { errors { message } }
}"""
RESUME = "mutation($n: String!) { resumeProductionOrder(number: $n) { errors { message } } }"
SUBSCRIBE = """subscription($n: String) {
  productionOrderChanged(number: $n) { number status }
}"""


def login(client: httpx.Client, username: str) -> str:
    data = gql(client, LOGIN, u=username, p=PASSWORD)
    assert data["login"]["errors"] == [], data
    token: str = data["login"]["token"]
    return token


def mutate(client: httpx.Client, token: str, query: str, payload: str, **variables: Any) -> Any:
    result = gql(client, query, token, **variables)[payload]
    assert result["errors"] == [], result
    return result


def receive(ws: ClientConnection, timeout: float) -> dict[str, Any] | None:
    """The next message, or None when none comes within `timeout` seconds."""
    try:
        message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    except TimeoutError:
        return None
    return message


def test_change_through_one_process_reaches_a_subscriber_of_the_other(
    pair: tuple[Any, Any],
) -> None:
    a, b = pair
    with httpx.Client(base_url=b.base_url, timeout=10) as on_b:
        planner = login(on_b, "planner")
        mutate(on_b, planner, MATERIALS, "upsertMaterials")
        mutate(on_b, planner, ORDER_UPSERT, "upsertProductionOrder", n=ORDER)
        mutate(on_b, planner, RELEASE, "releaseProductionOrder", n=ORDER)

    with httpx.Client(base_url=a.base_url, timeout=10) as on_a:
        watcher = login(on_a, "watcher")

    ws_url = a.base_url.replace("http://", "ws://") + "/graphql"
    protocol = Subprotocol("graphql-transport-ws")
    with connect(ws_url, subprotocols=[protocol], open_timeout=10) as ws:
        init = {"authorization": f"Bearer {watcher}"}
        ws.send(json.dumps({"type": "connection_init", "payload": init}))
        ack = receive(ws, 10)
        assert ack is not None
        assert ack["type"] == "connection_ack", ack
        subscribe = {"query": SUBSCRIBE, "variables": {"n": ORDER}}
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))

        # Nothing says when the subscription listens in Redis: change the order on B (hold,
        # resume, hold, ...) until an event comes on A, for a few seconds at most.
        changes = [(HOLD, "holdProductionOrder", "ON_HOLD"),
                   (RESUME, "resumeProductionOrder", "RELEASED")]  # fmt: skip
        states: list[str] = []
        event = None
        deadline = time.monotonic() + 8
        with httpx.Client(base_url=b.base_url, timeout=10) as on_b:
            while event is None and time.monotonic() < deadline:
                query, payload, state = changes[len(states) % 2]
                mutate(on_b, planner, query, payload, n=ORDER)
                states.append(state)
                event = receive(ws, 1.0)
        assert event is not None, f"no event on process A after {len(states)} changes on B"
        assert event["type"] == "next", event
        assert event["id"] == "1"
        changed = event["payload"]["data"]["productionOrderChanged"]
        assert changed["number"] == ORDER
        assert changed["status"] in states
