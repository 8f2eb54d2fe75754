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
            [str(panel), "serve", str(ROOT / "app" / "main.py"), "--setup", str(ROOT / "app" / "warm.py"),
             "--address", "127.0.0.1",
             "--port", str(port), "--allow-websocket-origin", f"127.0.0.1:{port}"],
            env=dict(os.environ, **env), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/main"
    deadline = time.time() + 180
    while time.time() < deadline:      # up (after the warm-up) once it serves a static file; no session made
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/static/js/bokeh.min.js", timeout=10).status == 200:
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


def _plane_boxes(page):
    """Bounding boxes of the plot canvases, one per plot (Bokeh draws each plot on two
    stacked canvases), left to right, top to bottom."""
    boxes = []
    for i in range(page.locator("canvas").count()):
        b = page.locator("canvas").nth(i).bounding_box()
        if b and b["width"] > 200 and not any(abs(b["x"] - o["x"]) < 2 and abs(b["y"] - o["y"]) < 2 for o in boxes):
            boxes.append(b)
    return sorted(boxes, key=lambda b: (round(b["y"]), b["x"]))


def _counts(page):
    """(selected, on the Kiel diagram, on the [alpha/M]-[M/H] plane) from the counts line."""
    import re

    text = page.locator("text=/selected: /").first.inner_text()
    m = re.search(r"([0-9,]+) selected: ([0-9,]+) on the Kiel diagram, ([0-9,]+) on the", text)
    assert m, text
    return tuple(int(g.replace(",", "")) for g in m.groups())


def _drag(page, points):
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def _wait_change(page, before, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            now = _counts(page)
            if now != before:
                return now
        except (AssertionError, Exception):  # noqa: BLE001 - the line is being redrawn
            pass
        time.sleep(0.3)
    raise AssertionError(f"the selection counts did not change from {before}")


def test_catalogue_box_lasso_export_and_star_inspector_in_chromium(server, small_survey, tmp_path):
    """A box on the Kiel diagram selects on the [alpha/M]-[M/H] plane too, a lasso there
    changes both counts, the exported file holds exactly the selected rows, a tap opens the
    inspector on the tapped star (its id also in the URL), and nothing errors."""
    import pandas as pd
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open_app(p, server, height=1300)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        assert _wait_for_canvases(page, 4) >= 4
        time.sleep(3)
        kiel, chem = _plane_boxes(page)[:2]
        # a box on the Kiel diagram around the red clump and lower giant branch
        x0, y0 = kiel["x"] + 0.35 * kiel["width"], kiel["y"] + 0.3 * kiel["height"]
        _drag(page, [(x0, y0), (x0 + 0.25 * kiel["width"], y0 + 0.3 * kiel["height"])])
        n1, k1, c1 = _wait_change(page, None)
        assert n1 == k1 > 50 and 0 < c1 <= n1                # the other plane shows the selection too
        # a lasso on the [alpha/M]-[M/H] plane replaces it
        page.locator('[title="Lasso Select"]').nth(1).click()
        f = lambda a, b: (chem["x"] + a * chem["width"], chem["y"] + b * chem["height"])  # noqa: E731
        _drag(page, [f(0.3, 0.3), f(0.65, 0.3), f(0.65, 0.65), f(0.3, 0.65), f(0.3, 0.31)])
        n2, k2, c2 = _wait_change(page, (n1, k1, c1))
        assert n2 == c2 > 50 and k2 <= n2 and (n2, k2) != (n1, k1)
        # export writes exactly the selection
        page.get_by_role("button", name="Export selection").click()
        page.wait_for_selector("text=/Download \\(parquet/", timeout=60_000)
        with page.expect_download(timeout=60_000) as dl:
            page.get_by_text("Download (parquet").first.click()
        out = tmp_path / "selection.parquet"
        dl.value.save_as(out)
        got = pd.read_parquet(out)
        assert len(got) == n2 and got["id"].is_unique
        cat = pd.read_parquet(small_survey / "catalogue.parquet")
        assert set(got.columns) == set(cat.columns)
        # a tap on a star opens the inspector on it
        page.locator('[title="Lasso Select"]').nth(1).click()          # back to the box tool there
        for fx, fy in ((0.55, 0.45), (0.5, 0.5), (0.6, 0.4), (0.45, 0.85)):
            page.mouse.click(kiel["x"] + fx * kiel["width"], kiel["y"] + fy * kiel["height"])
            try:
                page.wait_for_selector("text=/Star SYN/", timeout=8_000)
                break
            except Exception:  # noqa: BLE001 - empty sky there: tap elsewhere
                continue
        head = page.locator("text=/Star SYN/").first.inner_text()
        star = head.split()[1]
        assert star in set(cat["id"])
        deadline = time.time() + 10
        while f"star={star}" not in page.url and time.time() < deadline:
            time.sleep(0.3)
        assert f"star={star}" in page.url                  # the view can be bookmarked
        shot = tmp_path / "catalogue.png"
        page.screenshot(path=str(shot), full_page=True)
        assert not errors, errors
        browser.close()
    out = os.environ.get("LABELCORE_SCREENSHOT")
    if out:
        from PIL import Image

        Image.open(shot).save(out)


_IMAGES_JS = """() => { const out = [];
  for (const d of Bokeh.documents) for (const m of d._all_models.values())
    if (m.type === 'Figure' || m.type === 'Plot') for (const r of m.renderers)
      if (r.glyph && r.glyph.type === 'Image') { const s = r.data_source.data, im = s.image[0];
        if (im.shape && im.shape[0] > 1) out.push({x0: m.x_range.start, x1: m.x_range.end, ix: s.x[0],
                                                   idw: s.dw[0], shape: Array.from(im.shape)}); }
  return out; }"""


def test_a_wheel_zoom_re_aggregates_the_plane_over_its_new_range(server):
    """A wheel zoom on the Kiel diagram brings a new image from the server that spans the
    zoomed x-range (the aggregate of the stars in view, not the old image stretched), at
    the same resolution."""
    from playwright.sync_api import sync_playwright

    from app.pages.catalogue import KIEL

    with sync_playwright() as p:
        browser, page = _open_app(p, server, height=1200)
        assert _wait_for_canvases(page, 4) >= 4
        page.wait_for_function(f"() => ({_IMAGES_JS})().length >= 2", timeout=60_000)
        before = page.evaluate(_IMAGES_JS)[0]
        assert abs(before["ix"] - KIEL[2][0]) < 1 and abs(before["ix"] + before["idw"] - KIEL[2][1]) < 1
        kiel = _plane_boxes(page)[0]
        page.locator('[title="Wheel Zoom"]').first.click()
        page.mouse.move(kiel["x"] + 0.5 * kiel["width"], kiel["y"] + 0.5 * kiel["height"])
        page.mouse.wheel(0, -400)
        page.wait_for_function(f"() => ({_IMAGES_JS})()[0].idw < {before['idw'] * 0.9}", timeout=60_000)
        after = page.evaluate(_IMAGES_JS)[0]
        lo, hi = sorted((after["x0"], after["x1"]))
        assert hi - lo < 0.9 * (KIEL[2][1] - KIEL[2][0])            # zoomed in
        assert abs(after["ix"] - lo) < 0.01 * (hi - lo) and abs(after["ix"] + after["idw"] - hi) < 0.01 * (hi - lo)
        assert after["shape"] == before["shape"]
        browser.close()


def test_a_bookmarked_view_opens_where_it_was(server, small_survey):
    """The URL keeps the tab and the inspected star: opening it shows them again."""
    import pandas as pd
    from playwright.sync_api import sync_playwright

    star = pd.read_parquet(small_survey / "catalogue.parquet")["id"].iloc[17]
    with sync_playwright() as p:
        browser, page = _open_app(p, f"{server}?star={star}", height=1200)
        page.wait_for_selector(f"text=Star {star}", timeout=60_000)
        page.goto(f"{server}?tab=3", wait_until="domcontentloaded")
        page.wait_for_selector("text=Launch", timeout=120_000)
        assert page.get_by_role("button", name="Launch").is_visible()
        browser.close()


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
        # a line window sets the x-range of the spectrum plots (and "full range" resets it)
        ranges_js = """() => Bokeh.documents.flatMap(d => [...d.all_models])
            .filter(m => m.start !== undefined && m.end !== undefined && m.bounds !== undefined)
            .map(m => [m.start, m.end])"""
        page.locator("select:has(option:text('Ca II 8542'))").first.select_option(label="Ca II 8542")
        deadline = time.time() + 60
        while time.time() < deadline and [8522, 8562] not in page.evaluate(ranges_js):
            time.sleep(0.5)
        assert [8522, 8562] in page.evaluate(ranges_js)
        # another window, then the whole grid again: new figures with those ranges (the
        # document also keeps the replaced figures' ranges, so count the new ones)
        page.locator("select:has(option:text('Ca II 8542'))").first.select_option(label="Ca II 8662")
        deadline = time.time() + 60
        while time.time() < deadline and [8642, 8682] not in page.evaluate(ranges_js):
            time.sleep(0.5)
        assert [8642, 8682] in page.evaluate(ranges_js)
        full = lambda: sum(r[0] < 8430 and r[1] > 8770 for r in page.evaluate(ranges_js))  # noqa: E731
        n_full = full()
        page.locator("select:has(option:text('Ca II 8542'))").first.select_option(label="full range")
        deadline = time.time() + 60
        while time.time() < deadline and full() <= n_full:
            time.sleep(0.5)
        assert full() > n_full
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
        # the save tool of a plot writes an SVG file at once (no file-name prompt)
        page.get_by_text("Compare", exact=True).first.click()
        page.wait_for_selector("text=Scatter and bias", timeout=60_000)
        time.sleep(3)
        saves = page.locator('[title="Save"]')
        visible = [i for i in range(saves.count()) if saves.nth(i).is_visible()]
        assert visible
        with page.expect_download(timeout=30_000) as dl:
            saves.nth(visible[0]).click()
        assert dl.value.suggested_filename.endswith(".svg")
        path = dl.value.path()
        with open(path, "rb") as fh:
            head = fh.read(200)
        assert b"<svg" in head
        browser.close()


def test_a_second_session_is_responsive_while_the_demo_models_build(small_survey, finished_runs, tmp_path):
    """The first Spectra open queues the demo runs (built in subprocesses, progress shown);
    meanwhile another browser session loads the Catalogue and Train tabs promptly."""
    from playwright.sync_api import sync_playwright

    from labelcore.runs import RunStore

    data = tmp_path / "data"              # no demo runs built yet
    gen = _serve({"LABELCORE_SURVEY": str(small_survey), "LABELCORE_DATA_DIR": str(data),
                  "LABELCORE_RUNS": str(finished_runs["store"].root)}, tmp_path / "panel.log")
    url = next(gen)
    try:
        with sync_playwright() as p:
            browser, first = _open_app(p, url, height=1000)
            first.get_by_text("Spectra", exact=True).first.click()
            first.wait_for_selector("text=Building the demo models", timeout=60_000)
            t0 = time.time()
            second = browser.new_page(viewport={"width": 1400, "height": 1000})
            second.goto(url, wait_until="domcontentloaded", timeout=120_000)
            second.wait_for_selector("text=Colour by", timeout=60_000)
            assert _wait_for_canvases(second, 2, timeout=60) >= 2
            second.get_by_text("Train", exact=True).first.click()
            second.wait_for_selector("text=Launch", timeout=30_000)
            took = time.time() - t0
            # the demo runs are building (queued or running), not finished in this process
            states = {r.state for r in RunStore(data / "demo_runs").runs()}
            assert states and states <= {"queued", "running", "done"}
            assert took < 60, took
            assert first.locator("text=Building the demo models").count() >= 1
            browser.close()
    finally:
        for r in RunStore(data / "demo_runs").runs():          # do not leave trainings running
            r.cancel()
        gen.close()
