"""/docs in a real headless browser: Debian's chromium, driven by Playwright, against the real server process.

The page must render Swagger UI from the service alone (the edge has no internet): every request the browser makes
goes to the server's own loopback address and succeeds, nothing is refused by the page's CSP, the operations are
listed, and "Try it out" on /predict with the documented example answers 200. The headers, the caching and the
list of files served are checked without a browser at the end.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from runtime.http.app import create_app
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
KEY = "docs-page-key-0123456789"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = "needs /usr/bin/chromium (scripts/test.sh installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    """`python -m runtime` on a free loopback port, serving the committed model, with an API key."""
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGE_API_KEYS": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"server exited with {proc.returncode}:\n{output}")
            try:
                if _status(port, "/ready") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server did not become ready in 30 s")
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def test_docs_page_renders_from_the_service_alone_and_try_it_out_works(
    chromium: Path, server_port: int, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    origin = f"http://127.0.0.1:{server_port}"
    requested: list[str] = []
    bad: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("request", lambda r: requested.append(r.url))
            page.on("requestfailed", lambda r: bad.append(f"failed {r.url}: {r.failure}"))
            page.on("response", lambda r: bad.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            response = page.goto(f"{origin}/docs")
            assert response is not None and response.status == 200
            assert "default-src 'none'" in (response.header_value("content-security-policy") or "")
            # Rendered operations: one per documented route, /predict among them.
            predict = page.locator('.opblock-summary-path[data-path="/predict"]')
            predict.wait_for(timeout=30_000)
            paths = page.locator(".opblock-summary-path").evaluate_all("els => els.map(e => e.dataset.path)")
            assert {"/predict", "/predict/batch", "/health", "/v2/models/{model_name}/infer"} <= set(paths), paths

            # Authorize with the API key, then Try it out -> Execute on /predict with the documented example.
            page.click("button.btn.authorize")
            page.fill(".auth-container input", KEY)
            page.click(".auth-btn-wrapper button.authorize")
            page.click("button.btn-done")
            operation = page.locator("#operations-signals-predict")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tr.response .response-col_status")
            status.wait_for(timeout=30_000)
            assert status.inner_text().strip() == "200", operation.locator(".live-responses-table").inner_text()
            page.screenshot(path=os.environ.get("DOCS_SCREENSHOT", str(tmp_path / "docs.png")), full_page=False)
        finally:
            browser.close()

    elsewhere = [url for url in requested if not url.startswith(f"{origin}/")]
    assert not elsewhere, f"the page reached beyond the service: {elsewhere}"
    assert {urlsplit(url).path for url in requested} >= {
        "/docs",
        "/docs/static/swagger-ui-bundle.js",
        "/docs/static/swagger-ui.css",
        "/openapi.json",
        "/predict",
    }, requested
    assert not bad, bad
    assert not errors, errors


# -- without a browser ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(committed_model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=committed_model_dir, intra_op_threads=1, api_keys=[KEY], drift_sample_rate=0)
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_page_needs_no_key_loads_only_its_own_assets_and_is_not_cached(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("docs/static/") and "?v=" in s for s in sources), sources
    for source in sources:
        asset = client.get(f"/{source}")
        assert asset.status_code == 200, source
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.content


def test_assets_are_revalidated_by_etag_and_nothing_else_is_served(client: TestClient) -> None:
    bundle = client.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8"
    assert bundle.content == (REPO / "runtime" / "http" / "swagger_ui" / "swagger-ui-bundle.js").read_bytes()
    again = client.get("/docs/static/swagger-ui-bundle.js", headers={"If-None-Match": bundle.headers["etag"]})
    assert again.status_code == 304 and not again.content
    for name in ("README.md", "LICENSE", "..%2Fdocs.py", "swagger-ui.css.map"):
        missing = client.get(f"/docs/static/{name}")
        assert missing.status_code == 404, name
        assert missing.json()["code"] == "NOT_FOUND"
