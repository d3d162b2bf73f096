"""The PWA's files as `mes serve` serves them: hashed assets cached for a year, the rest
revalidated on each load, text gzipped. Uses a throwaway dist folder, not the real build."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from backend import app as app_module
from backend.app import create_app
from backend.settings import Settings


@pytest.fixture
def dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>MES</title>" + " " * 2000)
    (root / "sw.js").write_text("self.addEventListener('fetch', () => {});" + ";" * 2000)
    (root / "manifest.webmanifest").write_text('{"name": "MES"}')
    (root / "assets" / "index-abc123.js").write_text("console.log(1);" * 200)
    monkeypatch.setattr(app_module, "PWA_DIST", root)
    return root


async def test_the_shell_is_revalidated_and_hashed_assets_are_immutable(
    dist: Path, settings: Settings
) -> None:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mes.test") as client:
        index = await client.get("/", headers={"accept-encoding": "gzip"})
        assert index.status_code == 200
        assert index.headers["cache-control"] == "no-cache"
        assert index.headers["content-encoding"] == "gzip"
        assert "<title>MES</title>" in index.text

        sw = await client.get("/sw.js")
        assert sw.headers["cache-control"] == "no-cache"
        assert "javascript" in sw.headers["content-type"]

        manifest = await client.get("/manifest.webmanifest")
        assert manifest.headers["content-type"] == "application/manifest+json"

        asset = await client.get("/assets/index-abc123.js", headers={"accept-encoding": "gzip"})
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["content-encoding"] == "gzip"

        assert (await client.get("/assets/missing.js")).status_code == 404
        # The API is still the API.
        assert (await client.get("/healthz")).status_code == 200
