"""`mes demo` as a newcomer runs it: it migrates, seeds the demo plant, prints working logins,
serves, and stops cleanly on Ctrl+C."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

LOGIN = """mutation($u: String!, $p: String!) {
  login(username: $u, password: $p) { token user { username roles } errors { message } }
}"""
PLANT = """{
  materials(first: 100) { totalCount edges { node { code } } }
  productionOrders(first: 100) { totalCount edges { node { number status } } }
}"""


def test_demo_seeds_serves_and_stops_on_ctrl_c(launcher: Any, tmp_path: Path) -> None:
    # No MES_SECRET_KEY: the demo makes its own.
    env = launcher.env(MES_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
    demo = launcher.start("demo", env=env, name="demo")
    demo.wait_for("/readyz", timeout=60)

    logins = dict(re.findall(r"^\s+(\w+)\s+password (\S+)", demo.stdout, re.MULTILINE))
    assert "operator" in logins, demo.describe()
    assert f"http://localhost:{demo.port}/" in demo.stdout

    with httpx.Client(base_url=demo.base_url, timeout=10) as client:
        for username, password in logins.items():
            body = client.post(
                "/graphql", json={"query": LOGIN, "variables": {"u": username, "p": password}}
            ).json()
            assert body["data"]["login"]["errors"] == [], (username, body)
        operator = client.post(
            "/graphql",
            json={"query": LOGIN, "variables": {"u": "operator", "p": logins["operator"]}},
        ).json()["data"]["login"]
        assert operator["user"] == {"username": "operator", "roles": ["OPERATOR"]}

        plant = client.post(
            "/graphql",
            json={"query": PLANT},
            headers={"Authorization": f"Bearer {operator['token']}"},
        ).json()
    assert "errors" not in plant, plant
    materials = plant["data"]["materials"]
    orders = plant["data"]["productionOrders"]
    assert materials["totalCount"] >= 3
    assert orders["totalCount"] >= 2
    # Something for the operator to work on.
    assert "RELEASED" in {edge["node"]["status"] for edge in orders["edges"]}

    status = demo.stop(signal.SIGINT)
    # Ctrl+C: a graceful shutdown, and a normal exit.
    assert status == 0, demo.describe()
    assert "Application shutdown complete" in demo.stderr, demo.describe()
    assert "Traceback" not in demo.stderr, demo.describe()
