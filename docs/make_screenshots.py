"""Screenshots of every tab for the README, and the first-open time of each tab.

    python docs/make_screenshots.py --url http://127.0.0.1:5006/main [--out docs/img]

Drives Debian's chromium (headless, Playwright) through a served app (``./dev app``): opens
each tab once, waits until its content is drawn, saves ``<out>/<tab>.png`` and prints how
long the tab took to open (from the click to its content being there; the Catalogue tab
from navigation). The Catalogue shot has a box selection and an inspected star.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

#: (tab, text that says its content is there, canvases expected at least)
TABS = [
    ("Catalogue", "text=Colour by", 4),
    ("Spectra", "text=Label (COD / derivative)", 6),
    ("Training set", "text=Paper preset (cuts)", 0),
    ("Train", "text=Launch", 0),
    ("Learning curves", "text=Held-out bias and scatter", 1),
    ("Compare", "text=Scatter and bias", 2),
]


def _canvases(page, n, timeout=120):
    deadline = time.time() + timeout
    while page.locator("canvas").count() < n and time.time() < deadline:
        time.sleep(0.1)


def main():
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:5006/main")
    ap.add_argument("--out", default=str(Path(__file__).parent / "img"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1500, "height": 1150})
        t = time.perf_counter()
        page.goto(a.url, wait_until="domcontentloaded", timeout=300_000)
        page.wait_for_selector(TABS[0][1], timeout=300_000)
        _canvases(page, TABS[0][2])
        times["Catalogue"] = time.perf_counter() - t
        time.sleep(2)
        boxes = []
        for i in range(page.locator("canvas").count()):
            bb = page.locator("canvas").nth(i).bounding_box()
            if bb and bb["width"] > 200 and not any(abs(bb["x"] - o["x"]) < 2 for o in boxes):
                boxes.append(bb)
        k = boxes[0]
        page.mouse.move(k["x"] + 0.35 * k["width"], k["y"] + 0.3 * k["height"])
        page.mouse.down()
        page.mouse.move(k["x"] + 0.6 * k["width"], k["y"] + 0.6 * k["height"], steps=8)
        page.mouse.up()
        page.wait_for_selector("text=/selected: /", timeout=60_000)
        for fx, fy in ((0.55, 0.45), (0.5, 0.5), (0.45, 0.85)):
            page.mouse.click(k["x"] + fx * k["width"], k["y"] + fy * k["height"])
            try:
                page.wait_for_selector("text=/Star SYN/", timeout=8_000)
                break
            except Exception:  # noqa: BLE001 - empty sky there: tap elsewhere
                continue
        time.sleep(3)
        page.screenshot(path=str(out / "catalogue.png"), full_page=True)
        for tab, ready, n in TABS[1:]:
            t = time.perf_counter()
            page.get_by_text(tab, exact=True).first.click()
            page.wait_for_selector(ready, timeout=600_000)
            if n:
                _canvases(page, n)            # the tabs are dynamic: only the shown tab's plots exist
            times[tab] = time.perf_counter() - t
            if tab == "Training set":
                page.get_by_role("button", name="Build").click()
                page.wait_for_selector("text=Save it to train on it", timeout=120_000)
            time.sleep(3)
            page.screenshot(path=str(out / f"{tab.lower().replace(' ', '_')}.png"), full_page=True)
        b.close()
    print("first open of each tab [s]:")
    for tab, s in times.items():
        print(f"  {tab:16s} {s:6.1f}")


if __name__ == "__main__":
    main()
