"""The PWA in a real browser: one `mes demo` server (SQLite file, demo data) for the session,
Debian's Chromium through Playwright, and a phone-sized context per test.

They run in the SQLite leg of `make test` only (the server process has its own database either
way). Without /usr/bin/chromium they skip, except under CI (CI=true), where they fail; an
unbuilt app (no pwa/dist) always fails: `make pwa`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pwakit import (
    PHONE,
    WAIT_MS,
    Api,
    MesProcess,
    device_state,
    playwright_chromium,
    require_browser,
    start_demo_server,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_pg = pytest.mark.skip(reason="PWA browser tests run in the SQLite leg only")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)
            if os.environ.get("MES_TEST_DATABASE_URL"):
                item.add_marker(skip_pg)


@pytest.fixture(scope="session")
def pwa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MesProcess]:
    require_browser()
    server = start_demo_server(tmp_path_factory.mktemp("pwa-server"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def base_url(pwa_server: MesProcess) -> str:
    return pwa_server.base_url


@pytest.fixture(scope="session")
async def api(base_url: str) -> AsyncIterator[Api]:
    client = Api(base_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def browser(pwa_server: MesProcess) -> AsyncIterator[Any]:
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    async with playwright_chromium() as chromium:
        yield chromium


OpenApp = Callable[..., Awaitable[Any]]


@pytest.fixture
async def open_app(browser: Any, api: Api, base_url: str) -> AsyncIterator[OpenApp]:
    """`await open_app(user, route)`: a new phone (context) with the app open at `#/route`,
    signed in as `user` (None: signed out) with the device's work center set. The page's
    console errors are collected on `page.errors`."""
    contexts: list[Any] = []

    async def open_(
        user: str | None = "operator",
        route: str = "",
        work_center: str | None = "WC-PACK",
        wait_for_subscription: bool = False,
        **context_options: Any,
    ) -> Any:
        context = await browser.new_context(base_url=base_url, **{**PHONE, **context_options})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        if user is not None:
            await context.add_init_script(device_state(user, await api.token(user), work_center))
        page = await context.new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        if not wait_for_subscription:
            await page.goto(f"/#/{route}")
            return page
        # A live screen: back once its subscription has reached the server (an event
        # committed before that is not pushed; the screen shows it only on its next read).
        subscribed = asyncio.get_running_loop().create_future()

        def on_socket(socket: Any) -> None:
            def on_frame(payload: str | bytes) -> None:
                if '"subscribe"' in str(payload) and not subscribed.done():
                    subscribed.set_result(None)

            socket.on("framesent", on_frame)

        page.on("websocket", on_socket)
        await page.goto(f"/#/{route}")
        await asyncio.wait_for(subscribed, WAIT_MS / 1000)
        return page

    yield open_
    for context in contexts:
        await context.close()
