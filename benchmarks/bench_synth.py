"""Synthetic survey throughput, measured in one run.

    python benchmarks/bench_synth.py [--n-stars 1000000] [--n-spectra 5000]

Prints the time to draw a 1,000,000-star catalogue (target < 120 s on the 2-core machine),
spectra per second per set-up when written to chunked HDF5, and the peak resident memory
of chunked writing compared with holding all spectra in memory (bounded-memory check).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from labelcore.data.synth.setups import SETUPS
from labelcore.data.synth.survey import make_catalogue, make_survey


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-stars", type=int, default=1_000_000)
    ap.add_argument("--n-spectra", type=int, default=5000)
    a = ap.parse_args()
    t = time.perf_counter()
    cat = make_catalogue(a.n_stars, seed=1)
    dt = time.perf_counter() - t
    print(f"catalogue: {len(cat):,} stars x {cat.shape[1]} columns in {dt:.1f} s "
          f"(target 120 s: {120 / dt:.0f}x under)")
    with tempfile.TemporaryDirectory() as d:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n = a.n_spectra
        t = time.perf_counter()
        info = make_survey(Path(d) / "s", n_catalogue=max(2 * n, 10_000),
                           n_spectra={"rave": n, "lamost": n, "apogee": n}, chunk_rows=1000)
        total = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for s in ("rave", "lamost", "apogee"):
            p = SETUPS[s].wave.size
            rate = info["timings"][f"spectra_{s}_per_s"]
            full_mb = info["n_observations"][s] * p * 9 / 1e6  # flux+err f4 + mask u1
            print(f"spectra {s:6s}: {p} px, {rate:,.0f} spectra/s; all {info['n_observations'][s]} "
                  f"in memory would be {full_mb:,.0f} MB")
        print(f"whole survey ({n} spectra per set-up): {total:.1f} s; "
              f"peak RSS grew {rss1 - rss0:,.0f} MB while writing in 1000-row chunks")
    print(f"memory bounded: peak growth / APOGEE array size = "
          f"{(rss1 - rss0) / max(info['n_observations']['apogee'] * SETUPS['apogee'].wave.size * 9 / 1e6, 1):.2f}")


if __name__ == "__main__":
    main()
