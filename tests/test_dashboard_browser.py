"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright; nothing is
downloaded): no console errors, no request leaves 127.0.0.1, the charts render, choosing a sweep updates
them, the page refreshes while a sweep writes, and the exported file works from file:// with the server gone.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

from analysis.dashboard import export_dashboard, make_server
from analysis.synthetic import SyntheticRun, demo_store, write_run

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("RAYGEN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
WAIT_MS = 300_000  # a hang guard for a slow shared machine, not a performance limit

if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver, or set RAYGEN_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return demo_store(tmp_path_factory.mktemp("store"))


@contextmanager
def serving(root):
    srv = make_server(root, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def server(store):
    with serving(store) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Watched:
    """A page that records console errors, page errors and every request to a host other than 127.0.0.1."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.external: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)

    def _route(self, route) -> None:
        url = urlparse(route.request.url)
        if url.scheme in ("data", "blob", "file") or url.hostname == "127.0.0.1":
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def wait_for_sweep(self, sweep_id: str | None = None) -> str:
        cond = ("document.body.dataset.error !== undefined || " +
                (f"document.body.dataset.sweep === {sweep_id!r}" if sweep_id else "document.body.dataset.sweep !== undefined"))
        self.page.wait_for_function(cond, timeout=WAIT_MS)
        assert self.page.evaluate("document.body.dataset.error") is None, self.page.evaluate("document.body.dataset.error")
        return self.page.evaluate("document.body.dataset.sweep")

    def trial_rows(self) -> int:
        return self.page.locator("#trials tr").count() - 1  # minus the header row

    def svg_paths(self, selector: str) -> int:
        return self.page.locator(f"{selector} svg path").count()

    def check_clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.external, self.external


def _check_first_sweep(w: Watched) -> None:
    assert w.wait_for_sweep() == "infusion-omega"
    assert w.page.locator(".js-plotly-plot").count() >= 4  # parcoords, importance, history, curves
    for chart in ("#parcoords", "#importance", "#history", "#curves"):
        assert w.svg_paths(chart) > 0, chart
    assert w.page.locator("#parcoords g.y-axis").count() == 6  # 5 parameters + the objective
    assert w.trial_rows() == 24
    assert not w.page.locator("#pareto-section").is_visible()
    assert w.page.locator("#images img").count() >= 1
    _check_nothing_left_loading(w)


def _check_nothing_left_loading(w: Watched) -> None:
    """Once the data are drawn no "loading…" remains: not in the status line, not as a panel's ::after text."""
    status = w.page.locator("#status").inner_text()
    assert "loading" not in status and "trials" in status, status
    assert w.page.locator(".loading").count() == 0


def _check_second_sweep(w: Watched) -> None:
    w.page.select_option("#sweep-select", "pf-pareto")
    w.wait_for_sweep("pf-pareto")
    assert w.trial_rows() == 12
    assert w.page.locator("#parcoords g.y-axis").count() == 4  # 2 parameters + 2 objectives
    assert w.page.locator("#pareto-section").is_visible() and w.svg_paths("#pareto") > 0
    labels = w.page.locator("#parcoords .axis-heading").all_text_contents()
    assert any("gate_high" in t for t in labels)
    assert w.page.locator("#curves .scatterlayer .trace").count() == 5  # the top 5 trials are preselected
    _check_nothing_left_loading(w)
    # 12 trials: the importance bars carry the few-trials caveat, on the chart and under it.
    assert "fewer than 20" in w.page.locator("#importance-caveat").inner_text()
    assert "fewer than 20" in w.page.locator("#importance .annotation").first.text_content()


def test_served_page_renders_and_switches_sweeps(browser, server):
    w = Watched(browser)
    w.page.goto(server)
    _check_first_sweep(w)
    ARTIFACTS.mkdir(exist_ok=True)
    w.page.screenshot(path=str(ARTIFACTS / "dashboard-server.png"), full_page=True)
    _check_second_sweep(w)
    # Sorting by a column reorders the rows (the objective column, twice = descending).
    header = w.page.locator("#trials th", has_text="valid/bpc")
    header.click()
    header.click()
    first = w.page.locator("#trials tr").nth(1).locator("td").nth(5).inner_text()
    values = [float(t) for t in w.page.locator("#trials tr td:nth-child(6)").all_inner_texts() if t]
    assert float(first) == max(values)
    w.page.screenshot(path=str(ARTIFACTS / "dashboard-server-pareto.png"), full_page=True)
    w.check_clean()
    w.page.close()


def test_page_refreshes_while_a_sweep_writes(browser, tmp_path):
    store = demo_store(tmp_path / "live")  # its own store: this test adds a trial
    with serving(store) as url:
        w = Watched(browser)
        w.page.goto(url)
        _check_page_follows_a_writing_sweep(w, store)


def _check_page_follows_a_writing_sweep(w: Watched, store: Path) -> None:
    w.wait_for_sweep("infusion-omega")
    assert w.trial_rows() == 24
    write_run(store, SyntheticRun("sweep-infusion-late", "infusion", "mnist", sweep_id="infusion-omega",
                                  trial_id="00024", params={"algo.omega": 0.05, "algo.steps": 10, "train.lr": 1e-4,
                                                            "algo.schedule": "increasing", "algo.alpha0": None},
                                  finals={"valid/lower_bound": 1500.0}))
    w.page.wait_for_function("document.querySelectorAll('#trials tr').length === 26", timeout=WAIT_MS)
    assert "1500" in w.page.locator("#sweep-list").inner_text()
    w.check_clean()
    w.page.close()


def test_exported_file_works_from_file_url_without_a_server(browser, store, tmp_path):
    out = export_dashboard(store, tmp_path / "dashboard.html", top_k=5)
    w = Watched(browser)
    w.page.goto(out.as_uri())
    _check_first_sweep(w)
    ARTIFACTS.mkdir(exist_ok=True)
    w.page.screenshot(path=str(ARTIFACTS / "dashboard-export.png"), full_page=True)
    _check_second_sweep(w)
    w.check_clean()
    w.page.close()


def test_awkward_sweep_shapes_and_an_empty_store_render_without_errors(browser, tmp_path):
    from tests.test_dashboard import edge_store

    store = edge_store(tmp_path / "edge")
    with serving(store) as url:
        w = Watched(browser)
        w.page.goto(url)
        first = w.wait_for_sweep()
        for sid in ("one", "failing", "starting"):
            if sid != first:
                w.page.select_option("#sweep-select", sid)
                w.wait_for_sweep(sid)
            assert w.page.locator("#parcoords .js-plotly-plot, #parcoords.js-plotly-plot").count() == 1
            assert "at least 2 completed trials" in w.page.locator("#importance-note").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        w.page.screenshot(path=str(ARTIFACTS / "dashboard-edge.png"), full_page=True)
        w.check_clean()
        w.page.close()
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    with serving(empty) as url:
        w = Watched(browser)
        w.page.goto(url)
        assert w.wait_for_sweep() == ""
        assert "no runs" in w.page.locator("#status").inner_text()
        w.check_clean()
        w.page.close()


def test_hostile_strings_render_as_text_in_the_export_and_the_served_page(browser, tmp_path):
    """Stored strings with <!--<script>, </script>, tags, entities and U+2028 in every rendered field: the page
    still runs (no errors, all trials listed) and shows them as typed, nowhere as markup."""
    from tests.test_dashboard import HOSTILE, hostile_store

    store, sid = hostile_store(tmp_path / "hostile")
    out = export_dashboard(store, tmp_path / "hostile.html")
    with serving(store) as url:
        for target in (out.as_uri(), url):
            w = Watched(browser)
            w.page.on("dialog", lambda d, errors=w.errors: errors.append(f"dialog: {d.message}"))
            w.page.goto(target)
            assert w.wait_for_sweep() == sid
            assert w.trial_rows() == 4
            assert HOSTILE in w.page.locator("#sweep-title").text_content()
            assert w.page.locator("#trials b, #sweep-list b, #trials img").count() == 0
            # Shown as typed everywhere: no escape entity leaks into what the reader sees (HOSTILE has none
            # of these two), charts included.
            shown = w.page.locator("body").inner_text() + w.page.locator("#parcoords").text_content()
            assert "&lt;" not in shown and "&gt;" not in shown
            plain = "runs: algo" + HOSTILE  # the pseudo-sweep of a run outside any sweep
            w.page.select_option("#sweep-select", plain)
            assert w.wait_for_sweep(plain) == plain and w.trial_rows() == 1
            assert w.page.locator("#parcoords .js-plotly-plot, #parcoords.js-plotly-plot").count() == 1
            w.check_clean()
            w.page.close()


def test_a_failing_request_replaces_loading_with_what_failed(browser, server):
    w = Watched(browser)
    w.page.route("**/api/sweep?*", lambda route: route.fulfill(status=500, body="{}"))
    w.page.goto(server)
    w.page.wait_for_function("document.body.dataset.error !== undefined", timeout=WAIT_MS)
    status = w.page.locator("#status").inner_text()
    assert "loading" not in status and "opening the dashboard failed" in status, status
    assert "api/sweep: HTTP 500" in status and w.page.locator(".loading").count() == 0
    w.page.close()


def test_a_long_chain_is_shown_at_a_legible_height(browser, tmp_path):
    import numpy as np

    from analysis.synthetic import png_bytes

    chain = np.tile(np.linspace(0, 1, 28)[None, :], (28, 60))  # 60 frames of 28 x 28 in one row: 1680 x 28
    root = tmp_path / "chain"
    write_run(root, SyntheticRun("c-0", "walkback", "mnist", sweep_id="c", trial_id="0", params={"x": 0.0},
                                 finals={"valid/lower_bound": 1.0}, images={"long_chain.png": png_bytes(chain)}))
    with serving(root) as url:
        w = Watched(browser)
        w.page.goto(url)
        assert w.wait_for_sweep() == "c"
        img = w.page.locator("#images img.strip")
        box = img.bounding_box()
        # Frames scaled up to 96 px (not squeezed into 320 px: 5 px high), the strip scrolled inside its row.
        assert box["height"] == pytest.approx(96, abs=1) and box["width"] == pytest.approx(96 * 60, abs=2)
        figure = w.page.locator("#images figure.strip")
        assert figure.evaluate("f => f.scrollWidth > f.clientWidth && f.clientWidth <= window.innerWidth")
        ARTIFACTS.mkdir(exist_ok=True)
        w.page.screenshot(path=str(ARTIFACTS / "dashboard-long-chain.png"), full_page=True)
        w.check_clean()
        w.page.close()
