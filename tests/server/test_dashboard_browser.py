"""GET /dashboard in a real headless Chromium: the page polls /v1/status and shows the requests sent here
(class counts) and the reason a request was refused; behind an API key it sends the key from #key=... as a
Bearer token, and says that it needs one when it has none.

Chromium is Debian's package (`make test` installs it when it can, see the Makefile); Playwright drives it
through executable_path and never downloads a browser. SLICESERVE_DASHBOARD_PNG=docs/dashboard.png saves the
screenshot there (how the one in docs/ was made); otherwise it goes to a temporary directory.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from tests.server.helpers import LiveServer, make_state, wait_until, wrap

CHROMIUM = os.environ.get("SLICESERVE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
KEY = "dash-test-key"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium only where apt-get may "
                    "run as root; install it, or point SLICESERVE_CHROMIUM at one")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _require_key(app) -> None:
    """Stand-in for the server's `--api-key` middleware: Bearer KEY on every route but the probes and the
    page itself (it holds no data; its own requests carry the key)."""
    from starlette.responses import JSONResponse

    @app.middleware("http")
    async def bearer(request, call_next):
        if request.url.path in ("/health", "/ready", "/dashboard"):
            return await call_next(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "invalid API key"}}, status_code=401)
        return await call_next(request)


def _complete(url: str, cls: str, max_tokens: int, out: list, **extra) -> None:
    body = {"model": "tiny", "prompt": "hello dashboard " * 4, "max_tokens": max_tokens, "ignore_eos": True,
            "slo_class": cls, **extra}
    out.append(httpx.post(url + "/v1/completions", json=body, timeout=60, headers={"Authorization": f"Bearer {KEY}"}))


def _send_traffic(url: str) -> list[httpx.Response]:
    """Seven requests in three classes at once (so the mask shows a shared batch) and one refused: a TTFT bound
    no device meets."""
    out: list[httpx.Response] = []
    jobs = [("realtime", 12)] * 3 + [("interactive", 16)] * 2 + [("batch", 24)] * 2
    threads = [threading.Thread(target=_complete, args=(url, c, n, out)) for c, n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _complete(url, "realtime", 4, out, slo={"ttft_ms": 0.001})
    return out


def test_dashboard_shows_class_counts_and_refusal_reason(browser, tiny_loaded_factory, tmp_path):
    # A slowed runner keeps requests in flight for a few polls: the queue and mask panels have something.
    loaded = wrap(tiny_loaded_factory(), delay_s=0.01)
    server = LiveServer(make_state(loaded, policy="slice", max_model_len=512))
    _require_key(server.server.config.app)
    with server as live:
        keyless = browser.new_page()
        keyless.goto(live.url + "/dashboard?interval_ms=200")
        keyless.wait_for_function("document.getElementById('conn').textContent.includes('needs API key (401)')",
                                  timeout=15000)
        keyless.close()
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sent_auth: list[str | None] = []
        page.on("request", lambda r: sent_auth.append(r.headers.get("authorization"))
                if r.url.endswith("/v1/status") else None)
        page.goto(live.url + f"/dashboard?interval_ms=200#key={KEY}")
        page.wait_for_function("Number(document.body.dataset.updated) >= 1", timeout=15000)
        responses = _send_traffic(live.url)
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 7 + [400], [r.text for r in responses]
        refused = next(r for r in responses if r.status_code == 400).json()["error"]["message"]
        assert "cannot be met" in refused
        # The page catches up on its own: realtime 3 finished and 1 refused, interactive and batch 2 each.
        page.wait_for_function(
            """() => {
                const row = c => document.querySelector(`#classes tr[data-cls="${c}"]`);
                const n = (c, k) => row(c) ? row(c).querySelector("td." + k).textContent : null;
                return n("realtime", "finished") === "3" && n("realtime", "refused") === "1"
                    && n("interactive", "finished") === "2" && n("batch", "finished") === "2"
                    && n("batch", "refused") === "0";
            }""", timeout=15000)
        reason = page.locator('#refusals tr[data-cls="realtime"] td.reason').first.inner_text()
        assert reason == refused
        # The mask drew cells for the requests that decoded; the latency panel pairs both series.
        assert page.locator("#mask rect").count() > 0
        assert page.locator("#latency polyline").count() == 2
        assert sent_auth and all(a == f"Bearer {KEY}" for a in sent_auth)
        assert "#key" not in page.url   # the key leaves the address bar once stored for the tab
        target = Path(os.environ.get("SLICESERVE_DASHBOARD_PNG") or tmp_path / "dashboard.png")
        page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000
        page.close()


def test_dashboard_page_is_self_contained(tiny_loaded_factory):
    """No CDN: the page loads nothing from another origin (no src=/href= to http(s) URLs)."""
    with LiveServer(make_state(tiny_loaded_factory())) as live:
        r = httpx.get(live.url + "/dashboard")
        status = httpx.get(live.url + "/v1/status").json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<svg" in r.text and "http://" not in r.text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in r.text
    act = status["activity"]
    assert act["counts"] == {} and act["refusals"] == [] and set(act["slo_classes"]) >= {"realtime", "batch"}
