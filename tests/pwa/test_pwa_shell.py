"""The app shell: signing in through the form, installability (manifest, icons, a service
worker that controls the page after the first visit), and opening offline from the service
worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect
from pwakit import (
    PHONE,
    assert_accessible,
    launch_args,
    service_worker_controls,
    sign_in,
)


async def test_sign_in_through_the_form(open_app: Any) -> None:
    page = await open_app(user=None)
    await assert_accessible(page, "the sign-in screen")
    await sign_in(page, "operator")
    await expect(page.get_by_role("heading", name="My work")).to_be_visible()
    # The header says who can send what: online, nothing waiting.
    await expect(page.get_by_role("status").filter(has_text="Online")).to_be_visible()
    await expect(page.get_by_role("link", name="Sync: All sent")).to_be_visible()
    assert page.errors == []


async def test_a_wrong_password_is_told_and_stays(open_app: Any) -> None:
    page = await open_app(user=None)
    await page.get_by_label("User name").fill("operator")
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_installable_with_a_service_worker(
    browser: Any, base_url: str, tmp_path: Path
) -> None:
    # The manifest and its icons.
    context = await browser.new_context(base_url=base_url, **PHONE)
    try:
        page = await context.new_page()
        await page.goto("/")
        await expect(page.locator("link[rel=manifest]")).to_have_count(1)
        manifest_href = await page.locator("link[rel=manifest]").get_attribute("href")
        assert manifest_href
        manifest = await (await page.request.get(manifest_href)).json()
        assert manifest["display"] == "standalone"
        assert manifest["start_url"] == "/"
        sizes = {icon["sizes"] for icon in manifest["icons"]}
        assert {"192x192", "512x512"} <= sizes
        for icon in manifest["icons"]:
            answer = await page.request.get("/" + icon["src"].lstrip("/"))
            assert answer.ok, icon
            assert answer.headers["content-type"] == "image/png"
            assert (await answer.body())[:8] == b"\x89PNG\r\n\x1a\n"
        # After the first visit a service worker controls the page (no reload needed).
        await service_worker_controls(page)
        assert await page.evaluate("() => navigator.serviceWorker.controller.scriptURL") == (
            f"{base_url}/sw.js"
        )
    finally:
        await context.close()


async def test_chromium_finds_no_installability_errors(base_url: str, tmp_path: Path) -> None:
    # Installability is judged in a persistent profile only (a fresh context is "incognito").
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            **launch_args(),
            base_url=base_url,
            viewport=PHONE["viewport"],
            service_workers="allow",
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto("/")
            await service_worker_controls(page)
            cdp = await context.new_cdp_session(page)
            answer = await cdp.send("Page.getInstallabilityErrors")
            assert answer["installabilityErrors"] == []
            manifest = await cdp.send("Page.getAppManifest")
            assert manifest["errors"] == [], manifest
        finally:
            await context.close()
