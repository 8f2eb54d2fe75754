"""Labelling a whole survey file in chunks (labelcore.catalogue), measured in one run.

    python benchmarks/bench_catalogue.py [--n 50000] [--chunk-rows 4096] [--method Lux|SLAM]

Writes N RAVE-like spectra to a labelcore HDF5 file, trains a model on 1500 other stars,
then times (a) one in-memory ``predict`` of all N spectra (read at once) and (b)
``predict_catalogue`` reading, predicting and writing the Parquet catalogue chunk by
chunk. Prints spectra per second of both, their ratio, and the peak resident memory each
added above the process's level before it (chunking should cost little time and hold
memory to one chunk). The two outputs are checked to agree.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind, model_dir, spectra, out, chunk_rows):
    """One measurement in a fresh process, so each peak-memory figure is its own."""
    from labelcore.catalogue import predict_catalogue
    from labelcore.data.io import read_spectra, read_table
    from labelcore.methods import load_model

    model = load_model(model_dir)
    base = _rss_mb()
    t = time.perf_counter()
    if kind == "memory":
        s = read_spectra(spectra)
        y = model.predict(np.where(s.mask, np.nan, s.flux), flux_err=s.flux_err)
        n = len(y)
        np.save(out, y)
    else:
        predict_catalogue(model, spectra, out, chunk_rows=chunk_rows)
        n = len(read_table(out, columns=["obs_id"]))
    dt = time.perf_counter() - t
    print(f"{dt} {n} {_rss_mb() - base}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--method", default="Lux", choices=["Lux", "SLAM"])
    ap.add_argument("--child", nargs=5)
    a = ap.parse_args()
    if a.child:
        kind, model_dir, spectra, out, chunk = a.child
        child(kind, model_dir, spectra, out, int(chunk))
        return

    from labelcore.data.containers import Spectra
    from labelcore.data.io import SpectraWriter, read_table
    from labelcore.data.synth.datasets import labelled_set
    from labelcore.methods import SLAM, Lux

    names = ["teff", "logg", "m_h", "alpha_m"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter()
        tr = labelled_set("rave", 1500, seed=1, label_names=names, snr=(20, 300))
        model = (Lux() if a.method == "Lux" else SLAM(n_folds=3)).fit(
            tr.flux, tr.labels, flux_err=tr.flux_err, label_names=names, wave=tr.wave)
        model.save(d / "model")
        print(f"{a.method} trained on 1500 stars in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        with SpectraWriter(d / "spectra.h5", tr.wave, name="rave") as w:
            for k in range(0, a.n, 10_000):
                m = min(10_000, a.n - k)
                s = labelled_set("rave", m, seed=100 + k, label_names=names, snr=(20, 300))
                bad = ~np.isfinite(s.flux)
                sp = Spectra(s.wave, np.where(bad, 1.0, s.flux), s.flux_err, bad, [f"s{k + i}" for i in range(m)])
                w.append(sp.flux, sp.flux_err, sp.mask, sp.ids)
        print(f"{a.n} spectra written in {time.perf_counter() - t:.0f} s")
        res = {}
        for kind, out in (("memory", d / "y.npy"), ("chunked", d / "cat.parquet")):
            r = subprocess.run([sys.executable, __file__, "--child", kind, str(d / "model"), str(d / "spectra.h5"),
                                str(out), str(a.chunk_rows)], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{kind} measurement failed:\n{r.stderr[-3000:]}")
            dt, n, mem = r.stdout.strip().splitlines()[-1].split()
            res[kind] = (float(dt), int(n), float(mem))
        y_mem = np.load(d / "y.npy")
        cat = read_table(d / "cat.parquet")
        diff = np.nanmax(np.abs(cat[names].to_numpy() - y_mem) / np.nanstd(y_mem, axis=0))
    (tm, n, mm), (tc, _, mc) = res["memory"], res["chunked"]
    print(f"\nin memory : {n / tm:8.0f} spectra/s ({tm:.1f} s), peak memory +{mm:.0f} MB")
    print(f"chunked   : {n / tc:8.0f} spectra/s ({tc:.1f} s, chunks of {a.chunk_rows}, Parquet written), "
          f"peak memory +{mc:.0f} MB")
    print(f"time ratio chunked / in memory: {tc / tm:.2f}; memory ratio: {mc / max(mm, 1):.2f}")
    print(f"largest label difference: {diff:.2e} of each label's spread")


if __name__ == "__main__":
    main()
