"""The served app in Debian's chromium (headless, driven by Playwright): the catalogue page
renders its datashader Kiel diagram and [alpha/M]-[M/H] plane, the Spectra tab its
spectrum, residual, COD and derivative-spectrum plots, and the Train, Learning-curves and
Compare tabs their run table and plots."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(p):
    """Debian's chromium, headless, without network chatter."""
    return p.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"])


def _open_app(p, url, height):
    """Chromium on the served app, once the catalogue tab's controls are there."""
    browser = _launch(p)
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(url, wait_until="domcontentloaded", timeout=120_000)
    page.wait_for_selector("text=Colour by", timeout=120_000)
    return browser, page


def _wait_for_canvases(page, n, timeout=90):
    """Wait until ``n`` bokeh canvases exist (Playwright's CSS engine pierces the shadow
    DOM); returns how many there are."""
    deadline = time.time() + timeout
    while page.locator("canvas").count() < n and time.time() < deadline:
        time.sleep(1)
    return page.locator("canvas").count()


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """The Spectra tab's demo runs, built once here by the CLI as ``./dev app`` does (about
    90 s), so the served app finds them done."""
    from labelcore.runs import RunStore, ensure_demo_runs

    root = tmp_path_factory.mktemp("labelcore_data")
    env = dict(os.environ, LABELCORE_DATA_DIR=str(root))
    out = subprocess.run([str(Path(sys.executable).parent / "labelcore"), "demo"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    store = RunStore(root / "demo_runs")
    runs = ensure_demo_runs(store)
    assert {r.config["method"] for r in runs} == {"SLAM", "Lux", "Cannon"} and all(r.state == "done" for r in runs)
    assert len(store.runs()) == 3                      # reused, not made again
    assert (runs[0].path / "cods.npz").exists() and all((r.path / "spectra.npz").exists() for r in runs)
    return root


def _serve(env, log):
    """``panel serve app/main.py`` on a free port with ``env``; yields its URL (server
    output to ``log``)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    port = _free_port()
    panel = Path(sys.executable).parent / "panel"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(panel), "serve", str(ROOT / "app" / "main.py"), "--address", "127.0.0.1",
             "--port", str(port), "--allow-websocket-origin", f"127.0.0.1:{port}"],
            env=dict(os.environ, **env), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/main"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        proc.wait()
        pytest.fail("panel serve did not come up: " + Path(log).read_text()[-2000:])
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(small_survey, demo_cache, finished_runs, tmp_path_factory):
    yield from _serve({"LABELCORE_SURVEY": str(small_survey), "LABELCORE_DATA_DIR": str(demo_cache),
                       "LABELCORE_RUNS": str(finished_runs["store"].root)},
                      tmp_path_factory.mktemp("server") / "panel.log")


XSS = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(scope="module")
def hostile_server(small_survey, demo_cache, finished_runs, tmp_path_factory):
    """The app on a store whose only run is named like an attack."""
    import json
    import shutil

    root = tmp_path_factory.mktemp("hostile_runs")
    src = finished_runs["Lux"].path
    dst = root / (src.name + "-x")
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["name"] = XSS
    (dst / "config.json").write_text(json.dumps(cfg))
    yield from _serve({"LABELCORE_SURVEY": str(small_survey), "LABELCORE_DATA_DIR": str(demo_cache),
                       "LABELCORE_RUNS": str(root)}, tmp_path_factory.mktemp("server") / "panel.log")


def test_a_hostile_run_name_is_shown_never_executed(hostile_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_app(p, hostile_server, height=1200)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for tab, ready in [("Learning curves", "text=Held-out bias and scatter"), ("Train", "text=Launch"),
                           ("Compare", "text=Scatter and bias")]:
            page.get_by_text(tab, exact=True).first.click()
            page.wait_for_selector(ready, timeout=60_000)
            time.sleep(1.5)
        assert page.evaluate("window.__xss") is None              # the onerror handler never ran
        page.get_by_text("Learning curves", exact=True).first.click()
        page.wait_for_selector("text=Held-out bias and scatter", timeout=60_000)
        # the name is on the page as text
        assert page.get_by_text("onerror=", exact=False).count() >= 1
        assert page.evaluate("window.__xss") is None
        assert not errors, errors
        browser.close()


def test_catalogue_page_renders_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_app(p, server, height=900)
        page.wait_for_function("document.querySelector('body') !== null", timeout=60_000)
        assert _wait_for_canvases(page, 2) >= 2
        time.sleep(4)  # let bokeh paint the rasterized images
        shot = tmp_path / "catalogue.png"
        page.screenshot(path=str(shot), full_page=True)
        assert page.locator("text=Colour by").count() >= 1
        browser.close()
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # datashaded points: many coloured (non-grey) pixels in the plot area
    sat = img.max(axis=2) - img.min(axis=2)
    assert (sat > 60).sum() > 5000
    out = os.environ.get("LABELCORE_SCREENSHOT")
    if out:
        Image.open(shot).save(out)


def test_spectra_tab_renders_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_app(p, server, height=1400)
        page.locator("text=Spectra").first.click()
        page.wait_for_selector("text=Label (COD / derivative)", timeout=120_000)
        page.wait_for_selector("text=SLAM labels", timeout=60_000)   # the label line (Markdown)
        # the catalogue's 2 plots plus spectrum, residuals, COD and derivative spectrum
        assert _wait_for_canvases(page, 6) >= 6
        assert page.locator("text=SLAM labels").count() >= 1
        browser.close()


def test_run_tabs_render_in_chromium(server, finished_runs):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_app(p, server, height=1400)
        page.get_by_text("Training set", exact=True).first.click()
        page.wait_for_selector("text=Paper preset (cuts)", timeout=60_000)
        n_before = page.locator("canvas").count()
        page.get_by_role("button", name="Build").click()
        page.wait_for_selector("text=Save it to train on it", timeout=120_000)
        assert _wait_for_canvases(page, n_before + 2) >= n_before + 2   # Kiel diagram and S/N histogram
        page.get_by_text("Train", exact=True).first.click()
        page.wait_for_selector("text=Launch", timeout=60_000)
        page.wait_for_selector("text=SLAM hyper-parameters", timeout=60_000)
        # the run table lists the store's finished runs
        page.wait_for_selector("text=Lux test", timeout=60_000)
        page.get_by_text("Learning curves", exact=True).first.click()
        page.wait_for_selector("text=Held-out bias and scatter", timeout=60_000)
        n0 = page.locator("canvas").count()
        assert n0 >= 3        # the catalogue's two plots plus at least the newest run's chi2 curve
        page.get_by_text("Compare", exact=True).first.click()
        page.wait_for_selector("text=Scatter and bias", timeout=60_000)
        assert _wait_for_canvases(page, n0 + 2) >= n0 + 2   # one-to-one and residual plots
        browser.close()


def test_svg_figures_on_request(server):
    """``?figures=svg`` draws every plot as SVG (the save tool then writes SVG files)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_app(p, server + "?figures=svg", height=1200)
        page.get_by_text("Learning curves", exact=True).first.click()
        page.wait_for_selector("text=Held-out bias and scatter", timeout=60_000)
        deadline = time.time() + 60
        while page.locator("svg").count() < 4 and time.time() < deadline:
            time.sleep(1)
        assert page.locator("svg").count() >= 4
        assert page.locator("canvas").count() == 0
        browser.close()
