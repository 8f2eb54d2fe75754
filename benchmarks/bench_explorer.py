"""The Catalogue tab on catalogues of millions of stars, measured in one run.

    python benchmarks/bench_explorer.py [--sizes 1000000,10000000] [--browser]

For each size, writes a Parquet catalogue of that many stars (Kiel-like labels, components
and phases, S/N, errors, ids; row groups of 1M) and times, each in a fresh process (so
compile and cache costs of the first view count, as for a user's first session):

* ``server start: compile``: datashader's aggregations compiled (``panel serve --setup app/warm.py``
  does it before the first visitor);
* ``open``: reading the columns the page needs and building it;
* ``render``: the Kiel and [alpha/M]-[M/H] planes aggregated and turned into Bokeh
  models (what the server does before the browser can draw); ``first render`` = open +
  render of the first session; ``second session render``: a second session's page (the
  columns are shared by the sessions of a process);
* ``zoom`` / ``pan``: one plane re-aggregated on a new x/y range (the RangeXY event the
  browser sends), median of 5;
* ``colour``: colour by [M/H] instead of density, both planes re-rendered;
* ``box``/``lasso``: a selection and both planes updated;
* ``filter``: the halo component switched off.

With ``--browser`` it also serves the app on the 10M (largest) catalogue
(``LABELCORE_CATALOGUE``; ``--setup app/warm.py`` as ``./dev app``) and measures in Debian's
chromium, for three sessions one after the other, the time from navigation to both planes
painted, and from a wheel zoom to the plane's new image (the first zoom of each session,
and the median of the later ones; :func:`browser`). Prints seconds and the ratios to the
targets (first render 5 s, interactions 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"first render": 5.0, "second session render": 5.0, "zoom": 1.0, "pan": 1.0, "colour": 1.0, "box": 1.0,
           "lasso": 1.0, "filter": 1.0}


def write_catalogue(path: Path, n: int, seed: int = 0) -> None:
    """A Kiel-like catalogue of ``n`` stars (dwarfs and giants, three components)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    step = 1_000_000
    for a in range(0, n, step):
        m = min(step, n - a)
        giant = rng.random(m) < 0.45
        teff = np.where(giant, rng.normal(4700, 300, m), rng.normal(5700, 600, m)).astype(np.float32)
        logg = np.where(giant, 2.5 + (teff - 4700) / 600 + rng.normal(0, 0.4, m),
                        4.4 - (teff - 5700) / 3000 + rng.normal(0, 0.15, m)).astype(np.float32)
        comp = rng.choice(3, m, p=[0.8, 0.17, 0.03])
        m_h = (np.array([-0.1, -0.55, -1.4])[comp] + rng.normal(0, [0.25, 0.3, 0.45][0], m)).astype(np.float32)
        alpha = (np.where(comp == 0, 0.03, 0.25) - 0.05 * m_h + rng.normal(0, 0.04, m)).astype(np.float32)
        ids = pc.binary_join_element_wise("SYN", pc.cast(pa.array(np.arange(a, a + m)), pa.string()), "")
        cols = {
            "id": ids, "source_id": pa.array(np.arange(a, a + m, dtype=np.int64) + 4 * 10 ** 15),
            "teff": teff, "logg": logg, "m_h": m_h, "alpha_m": alpha,
            "teff_err": rng.uniform(40, 150, m).astype(np.float32), "logg_err": rng.uniform(0.05, 0.3, m).astype(
                np.float32), "m_h_err": rng.uniform(0.02, 0.1, m).astype(np.float32),
            "alpha_m_err": rng.uniform(0.01, 0.05, m).astype(np.float32),
            "component": pa.DictionaryArray.from_arrays(pa.array(comp.astype(np.int8)),
                                                        pa.array(["thin", "thick", "halo"])),
            "phase": pa.DictionaryArray.from_arrays(pa.array(np.where(giant, 2, 0).astype(np.int8)),
                                                    pa.array(["ms", "sgb", "rgb", "rc", "agb"])),
            "snr": rng.lognormal(np.log(60), 0.6, m).astype(np.float32),
            "ra": rng.uniform(0, 360, m), "dec": rng.uniform(-90, 90, m),
            "g": rng.uniform(8, 17, m).astype(np.float32),
        }
        t = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    writer.close()


def child(path: str) -> dict:
    """All timings on one catalogue, in this (fresh) process."""
    import holoviews as hv

    sys.path.insert(0, str(ROOT))
    from app.pages.catalogue import CataloguePage, warm_up

    res = {}
    t = time.perf_counter()
    warm_up()
    res["server start: compile"] = time.perf_counter() - t
    t = time.perf_counter()
    page = CataloguePage(path)
    res["open"] = time.perf_counter() - t

    def render():
        grid = page.plots()
        for p in grid:
            hv.render(p.object, backend="bokeh")
        return page.planes

    t = time.perf_counter()
    lay = render()
    res["render"] = time.perf_counter() - t
    res["first render"] = res["open"] + res["render"]
    t = time.perf_counter()
    second = CataloguePage(path)               # another session: the columns are shared
    for p in second.plots():
        hv.render(p.object, backend="bokeh")
    res["second session render"] = time.perf_counter() - t
    kiel = lay[0]
    # the RangeXY streams of the Kiel plane's rasterize operations (what a zoom triggers)
    rxy = [s for s in _range_streams(kiel)]
    zooms, pans = [], []
    for i in range(5):
        w = 1500 / (i + 1)
        t = time.perf_counter()
        for s in rxy:
            s.event(x_range=(4200 - w / 2, 4200 + w / 2), y_range=(1.0, 3.5))
        kiel[()]
        zooms.append(time.perf_counter() - t)
        t = time.perf_counter()
        for s in rxy:
            s.event(x_range=(4300 - w / 2 + 50 * i, 4300 + w / 2 + 50 * i), y_range=(1.2, 3.7))
        kiel[()]
        pans.append(time.perf_counter() - t)
    res["zoom"], res["pan"] = statistics.median(zooms), statistics.median(pans)
    t = time.perf_counter()
    page.color_by = "m_h"
    render()
    res["colour"] = time.perf_counter() - t
    page.color_by = "density"
    lay = render()
    t = time.perf_counter()
    page.select_box("teff", "logg", (4000, 1.0, 5200, 3.2))
    for el in lay:
        el[()]
    res["box"] = time.perf_counter() - t
    t = time.perf_counter()
    page.select_lasso("m_h", "alpha_m", [(-1, 0), (0.2, 0), (0.2, 0.35), (-0.4, 0.35), (-1, 0.2)])
    for el in lay:
        el[()]
    res["lasso"] = time.perf_counter() - t
    t = time.perf_counter()
    page.components = ["thin", "thick"]
    for el in lay:
        el[()]
    res["filter"] = time.perf_counter() - t
    res["selected"] = page.n_selected
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def _range_streams(dmap):
    """The RangeXY streams feeding a (nested) DynamicMap's rasterize operations."""
    import holoviews as hv

    seen, out, todo = set(), [], [dmap]
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        for s in getattr(d, "streams", []):
            if isinstance(s, hv.streams.RangeXY):
                out.append(s)
        cb = getattr(d, "callback", None)
        for inp in getattr(cb, "inputs", []) or []:
            todo.append(inp)
    return out


#: in the page from its first script: every change of a Bokeh image source, with the time
INIT_JS = """
window._img = [];
const seen = new Map();
const iv = setInterval(() => {
  if (!window.Bokeh || !Bokeh.documents.length) return;
  for (const d of Bokeh.documents) for (const m of d._all_models.values()) {
    if (m.type === 'ColumnDataSource' && m.data.image && m.data.image[0] && seen.get(m.id) !== m.data.image[0]) {
      seen.set(m.id, m.data.image[0]); window._img.push([performance.now(), m.id]);
    }
  }
}, 5);
"""


def browser(path: Path, sessions: int = 3, zooms: int = 4) -> dict:
    """Served as ``./dev app`` serves (``panel serve --setup app/warm.py``) on the catalogue
    at ``path``: per session, navigation to both planes' images in the page (then two
    animation frames, so they are painted), and wheel zooms on the Kiel diagram, from the
    wheel event to the plane's last new image (the first zoom of a session and the median
    of the later ones)."""
    import socket

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LABELCORE_CATALOGUE=str(path))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "panel"), "serve", str(ROOT / "app" / "main.py"),
                             "--setup", str(ROOT / "app" / "warm.py"), "--address", "127.0.0.1", "--port", str(port),
                             "--allow-websocket-origin", f"127.0.0.1:{port}"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/main"
    try:
        t = time.perf_counter()
        while True:                  # the port opens after the set-up (an HTTP probe would open a session)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t > 600:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.3)
        out = {"browser: server start (set-up)": time.perf_counter() - t}
        painted, first, later = [], [], []
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
            for _ in range(sessions):
                ctx = b.new_context(viewport={"width": 1500, "height": 1100})
                ctx.add_init_script(INIT_JS)
                pg = ctx.new_page()
                pg.goto(url, wait_until="commit", timeout=300_000)
                # 2 planes x (grey + coloured layer)
                pg.wait_for_function("() => new Set(window._img.map(e => e[1])).size >= 4", timeout=300_000,
                                     polling=10)
                pg.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                painted.append(pg.evaluate("() => performance.now()") / 1000)
                time.sleep(2)
                canvas = pg.locator("canvas").first.bounding_box()
                pg.locator('[title="Wheel Zoom"]').first.click()
                time.sleep(1.5)
                pg.mouse.move(canvas["x"] + canvas["width"] * 0.5, canvas["y"] + canvas["height"] * 0.5)
                for k in range(zooms):
                    n0 = pg.evaluate("() => window._img.length")
                    t0 = pg.evaluate("() => performance.now()")
                    pg.mouse.wheel(0, -300)
                    pg.wait_for_function(f"() => window._img.length >= {n0 + 2}", timeout=60_000, polling=10)
                    time.sleep(0.5)      # a layer still on its way counts too
                    last = pg.evaluate(f"() => window._img.slice({n0}).map(e => e[0])")
                    (first if k == 0 else later).append((max(last) - t0) / 1000)
                    time.sleep(1.5)
                ctx.close()
            b.close()
        for i, v in enumerate(painted):
            out[f"browser: session {i + 1} painted"] = v
        out["browser: first zoom (median)"] = statistics.median(first)
        out["browser: later zooms (median)"] = statistics.median(later)
        out["browser: slowest zoom"] = max(first + later)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child)))
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    with tempfile.TemporaryDirectory() as d:
        rows = {}
        for n in sizes:
            path = Path(d) / f"catalogue_{n}.parquet"
            t = time.perf_counter()
            write_catalogue(path, n)
            print(f"{n:,} stars written in {time.perf_counter() - t:.1f} s ({path.stat().st_size / 1e6:.0f} MB)",
                  flush=True)
            r = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                               cwd=ROOT)
            if r.returncode:
                sys.exit(r.stderr[-3000:])
            rows[n] = json.loads(r.stdout.strip().splitlines()[-1])
            if a.browser and n == max(sizes):
                rows[n].update(browser(path))
        keys = [k for k in rows[sizes[0]] if k not in ("selected", "peak_rss_mb")]
        for n in sizes:
            keys += [k for k in rows[n] if k not in keys and k not in ("selected", "peak_rss_mb")]
        print(f"\n{'seconds':30s}" + "".join(f"{n:>14,}" for n in sizes) + "   target   ratio(largest)")
        for k in keys:
            vals = [rows[n].get(k) for n in sizes]
            tgt = (5.0 if k.endswith("painted") else 1.0 if "zoom" in k else None) if k.startswith("browser") \
                else TARGETS.get(k)
            line = f"{k:30s}" + "".join(f"{v:14.2f}" if v is not None else f"{'-':>14s}" for v in vals)
            if tgt and vals[-1] is not None:
                line += f"   {tgt:6.1f}   {vals[-1] / tgt:5.2f}"
            print(line)
        print(f"{'peak memory [MB]':30s}" + "".join(f"{rows[n]['peak_rss_mb']:14.0f}" for n in sizes))


if __name__ == "__main__":
    main()
