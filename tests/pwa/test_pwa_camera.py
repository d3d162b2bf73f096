"""Scanning a GS1 Data Matrix label with the camera: Chromium's fake camera plays a clip of the
label (made by camera_clip.py), "Scan with camera" reads it (the decoder loaded only then), and
the scan goes into the order like a wedge scan, GS separators and all."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from camera_clip import write_datamatrix_y4m
from playwright.async_api import expect
from pwakit import PHONE, WAIT_MS, Api, device_state, playwright_chromium, unique

from backend.demo import demo_gtin


async def test_a_gs1_datamatrix_read_by_the_camera_is_scanned(
    api: Api, base_url: str, tmp_path: Path
) -> None:
    order, lot = unique("PO-C"), unique("MGS-C")
    await api.order(order, [("MG-STEARATE", "1")])
    await api.receive(lot)
    data = await api("query($n: String!) { lot(number: $n) { expiresAt } }", {"n": lot})
    expiry = f"{dt.datetime.fromisoformat(data['lot']['expiresAt']):%y%m%d}"
    code = f"01{demo_gtin(3)}10{lot}\x1d17{expiry}"  # GS after the variable-length lot
    clip = tmp_path / "label.y4m"
    write_datamatrix_y4m(code, clip)

    flags = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip.resolve()}",
    )
    async with playwright_chromium(*flags) as chromium:
        context = await chromium.new_context(base_url=base_url, permissions=["camera"], **PHONE)
        context.set_default_timeout(WAIT_MS)
        await context.add_init_script(device_state("operator", await api.token("operator"), None))
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        loaded: list[str] = []
        page.on("request", lambda request: loaded.append(request.url))
        await page.goto(f"/#/scan/{order}")
        await expect(page.get_by_role("heading", name="Scan", exact=True)).to_be_visible()
        assert not any(url.endswith(".wasm") for url in loaded), "decoder loaded before the camera"

        await page.get_by_role("button", name="Scan with camera").click()
        row = page.get_by_role("list", name="Scans").get_by_role("listitem")
        await expect(row).to_have_count(1, timeout=20_000)
        await expect(row).to_contain_text(f"01{demo_gtin(3)}10{lot}|17{expiry}")
        await expect(row).to_contain_text("Done")
        await expect(row).to_contain_text(lot)
        # One label held in front of the camera is one scan; the camera closes after a read.
        await expect(page.get_by_role("button", name="Scan with camera")).to_be_visible()
        await expect(row).to_have_count(1)
        await expect(page.get_by_label("Scan code")).to_be_focused()
        assert errors == []
        await context.close()

    assert await api.lot_status(lot) == "CONSUMED"
