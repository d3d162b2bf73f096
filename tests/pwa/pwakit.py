"""What the PWA browser tests and benchmarks share: the demo server as a real process, Debian's
Chromium driven by Playwright (never a downloaded browser), a phone-sized context signed in as a
demo user, axe-core, and GraphQL as any demo user to check the server's side.

Importable as `pwakit` from tests/pwa and as `pwa.pwakit` from tests/benchmarks.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.conftest import MesProcess, free_port, mes_env

ROOT = Path(__file__).resolve().parents[2]
PWA_DIST = ROOT / "pwa" / "dist"
AXE_JS = ROOT / "pwa" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path("/usr/bin/chromium")
SECRET = "pwa-test-secret-key-0123456789abcdef"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# A phone: the app is made for 360 x 740 first.
PHONE: dict[str, Any] = {
    "viewport": {"width": 360, "height": 740},
    "is_mobile": True,
    "has_touch": True,
    "service_workers": "allow",
    "locale": "en-GB",
}
# Any single wait in the browser (ms): generous for a loaded 2-core machine, never reached
# when things work.
WAIT_MS = 15_000

USERS = {
    "admin": ("Ada Admin", ["ADMIN"]),
    "operator": ("Otto Operator", ["OPERATOR"]),
    "supervisor": ("Sue Supervisor", ["SUPERVISOR"]),
    "quality": ("Quinn Quality", ["QUALITY"]),
}


def password(username: str) -> str:
    return f"{username}-demo-pass"


def require_browser() -> None:
    """Skips (locally) or fails (CI=true) when Chromium is missing; fails when the app is not
    built (make pwa) or axe-core is not installed (npm ci in pwa/)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
        if ON_CI:
            pytest.fail(f"{reason}: under CI the PWA browser tests must run", pytrace=False)
        pytest.skip(f"PWA browser tests: {reason}")
    if not (PWA_DIST / "index.html").exists() or not (PWA_DIST / "sw.js").exists():
        pytest.fail(f"the PWA is not built ({PWA_DIST} has no index.html/sw.js): run `make pwa`",
                    pytrace=False)  # fmt: skip
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} is missing: run `make pwa` (npm ci in pwa/)", pytrace=False)


_serial = itertools.count(1)


def unique(prefix: str) -> str:
    """A number no other test of this session uses (the tests share one server)."""
    return f"{prefix}-{os.getpid() % 1000:03d}{next(_serial):03d}"


# ---------------------------------------------------------------- the server


def start_demo_server(workdir: Path) -> MesProcess:
    """`mes demo --no-equipment` on a SQLite file of its own: migrates, seeds the demo plant
    (users, orders PO-1001..PO-1004, lots, an open deviation) and serves the API and pwa/dist."""
    port = free_port()
    env = mes_env(
        MES_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'mes.db'}", MES_SECRET_KEY=SECRET
    )
    server = MesProcess(
        ["demo", "--no-equipment", "--host", "127.0.0.1", "--port", str(port)], env, workdir, port
    )
    try:
        server.wait_for("/healthz", timeout=90)
    except BaseException:
        server.kill()
        raise
    return server


# ---------------------------------------------------------------- GraphQL as a demo user


class GraphQLError(AssertionError):
    pass


class Api:
    """GraphQL over HTTP as any demo user (tokens cached), for arranging and checking state."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.tokens: dict[str, str] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def token(self, username: str) -> str:
        if username not in self.tokens:
            data = await self.raw(
                "mutation($u: String!, $p: String!) { login(username: $u, password: $p) "
                "{ token errors { message } } }",
                {"u": username, "p": password(username)},
                None,
            )
            login = data["login"]
            assert login["token"], f"login as {username} failed: {login['errors']}"
            self.tokens[username] = login["token"]
        return self.tokens[username]

    async def raw(self, query: str, variables: dict[str, Any] | None, token: str | None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(f"{body['errors']} for {query[:200]}")
        return body["data"]

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, *, as_user: str = "admin"
    ) -> Any:
        return await self.raw(query, variables, await self.token(as_user))

    async def mutate(
        self, field: str, query: str, variables: dict[str, Any], *, as_user: str = "admin"
    ) -> Any:
        """A mutation whose payload must come back without `errors`."""
        data = await self(query, variables, as_user=as_user)
        payload = data[field]
        assert not payload.get("errors"), f"{field} refused: {payload['errors']}"
        return payload

    async def mutate_refused(
        self, field: str, query: str, variables: dict[str, Any], *, as_user: str = "admin"
    ) -> list[dict[str, Any]]:
        """A mutation that must be refused: its payload's `errors`."""
        data = await self(query, variables, as_user=as_user)
        errors: list[dict[str, Any]] = data[field]["errors"]
        assert errors, f"{field} was not refused"
        return errors

    # -- arranging

    async def order(
        self,
        number: str,
        components: Sequence[tuple[str, str]],
        operations: Sequence[str] = ("Mix",),
        work_center: str = "WC-PACK",
        product: str = "TAB-500",
    ) -> None:
        """A RELEASED order of the work center: components (material, quantity) for the first
        step, steps without characteristics (so they complete without inspection)."""
        spec = {
            "externalId": f"T-{number}",
            "number": number,
            "productCode": product,
            "quantity": "100",
            "workCenterCode": work_center,
            "components": [
                {"materialCode": code, "quantity": quantity, "operationSequence": 10}
                for code, quantity in components
            ],
            "operations": [
                {
                    "sequence": 10 * (i + 1),
                    "name": name,
                    "workCenterCode": work_center,
                    "instructions": f"Do {name.lower()}.",
                }
                for i, name in enumerate(operations)
            ],
        }
        await self.mutate(
            "upsertProductionOrder",
            "mutation($i: ProductionOrderInput!) { upsertProductionOrder(input: $i) "
            "{ errors { code message field } } }",
            {"i": spec},
        )
        await self.mutate(
            "releaseProductionOrder",
            "mutation($n: String!) { releaseProductionOrder(number: $n) "
            "{ errors { code message } } }",
            {"n": number},
        )

    async def receive(
        self, number: str, material: str = "MG-STEARATE", quantity: str = "1"
    ) -> None:
        """A lot received as the operator (MG-STEARATE has no incoming inspection: AVAILABLE)."""
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=300)).isoformat()
        await self.mutate(
            "receiveLot",
            "mutation($i: ReceiveLotInput!) { receiveLot(input: $i) { errors { code message } } }",
            {
                "i": {
                    "clientMutationId": unique("cm"),
                    "number": number,
                    "materialCode": material,
                    "quantity": quantity,
                    "expiresAt": expires,
                }
            },
            as_user="operator",
        )

    async def raise_deviation(self, title: str, lots: Sequence[str], *, as_user: str) -> str:
        payload = await self.mutate(
            "raiseDeviation",
            "mutation($i: RaiseDeviationInput!) { raiseDeviation(input: $i) "
            "{ deviation { number } errors { code message } } }",
            {
                "i": {
                    "clientMutationId": unique("cm"),
                    "title": title,
                    "severity": "MINOR",
                    "description": "Raised by the PWA browser tests.",
                    "lotNumbers": list(lots),
                }
            },
            as_user=as_user,
        )
        number: str = payload["deviation"]["number"]
        return number

    # -- reading

    async def lot_status(self, number: str) -> str:
        data = await self("query($n: String!) { lot(number: $n) { status } }", {"n": number})
        status: str = data["lot"]["status"]
        return status

    async def production_order(self, number: str) -> dict[str, Any]:
        data = await self(
            """query($n: String!) { productionOrder(number: $n) {
                 status quantityGood quantityScrap
                 operations { sequence status quantityGood quantityScrap }
                 components { material { code } quantityRequired quantityConsumed
                              consumptions { lot { number status } quantity } } } }""",
            {"n": number},
        )
        order: dict[str, Any] = data["productionOrder"]
        return order


# ---------------------------------------------------------------- the browser


def launch_args(*extra: str) -> dict[str, Any]:
    return {
        "executable_path": str(CHROMIUM),
        "headless": True,
        # Containers: no sandbox (root), /dev/shm may be small.
        "args": ["--no-sandbox", "--disable-dev-shm-usage", *extra],
    }


def device_state(username: str, token: str, work_center: str | None) -> str:
    """An init script that signs the device in as `username` once per tab (what the sign-in
    screen stores), so a test starts on its screen without typing a password each time."""
    display_name, roles = USERS[username]
    items = {
        "mes.token": token,
        "mes.user": json.dumps({"username": username, "displayName": display_name, "roles": roles}),
    }
    if work_center:
        items["mes.workCenter"] = work_center
    return (
        "if (location.protocol.startsWith('http') && !sessionStorage.getItem('mes.test.seeded')) {"
        f" for (const [k, v] of Object.entries({json.dumps(items)})) localStorage.setItem(k, v);"
        " sessionStorage.setItem('mes.test.seeded', '1'); }"
    )


async def service_worker_controls(page: Any) -> None:
    """Waits until the service worker is active and controls the page."""
    await page.evaluate(
        """async () => {
            const reg = await navigator.serviceWorker.ready;
            if (!navigator.serviceWorker.controller) {
                await new Promise((resolve) =>
                    navigator.serviceWorker.addEventListener('controllerchange', resolve,
                                                             { once: true }));
            }
            return reg.active && reg.active.state;
        }"""
    )


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21aa", "wcag22aa"]


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical WCAG 2.2 AA violations on the page as it is now."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE_JS))
    result = await page.evaluate(
        """async (tags) => {
            const r = await axe.run(document, { runOnly: { type: 'tag', values: tags } });
            return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 5).map((n) => ({ target: n.target.join(' '),
                                                        summary: n.failureSummary })) }));
        }""",
        AXE_TAGS,
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def describe_violations(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']}")
        lines.extend(f"    {n['target']}: {n['summary']}" for n in v["nodes"])
    return "\n".join(lines)


@asynccontextmanager
async def playwright_chromium(*extra_args: str) -> AsyncIterator[Any]:
    """Playwright with Debian's Chromium launched (headless)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_args(*extra_args))
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(page: Any, username: str) -> None:
    """Signs in through the sign-in screen, as a person would."""
    from playwright.async_api import expect

    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("User name").fill(username)
    await page.get_by_label("Password").fill(password(username))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_have_count(0)


async def assert_accessible(page: Any, what: str) -> None:
    violations = await axe_violations(page)
    assert not violations, f"axe: serious/critical violations on {what}:\n" + describe_violations(
        violations
    )
