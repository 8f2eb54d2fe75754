"""Lux on the synthetic survey, next to the ridge baseline, measured in one run.

    python benchmarks/bench_lux.py [--quick]

1. RAVE-like: 3000 training + 2000 test stars, 900 pixels, 9 labels, survey-like S/N;
   the default fit (K-fold CV over P and Omega) and the test step.
2. APOGEE-like: 5000 training + 10000 test giants, ~7800 pixels, 12 labels; the training
   at the CV-chosen (P, Omega) of a CV run on the training set (timed separately) and the
   10000-star test step.
Targets (issue #5): APOGEE-like training < 120 s, 10000-star test step < 15 s; every label
at least as accurate as the ridge baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import label_table, ridge_baseline  # noqa: E402

from labelcore.data.synth.datasets import labelled_set  # noqa: E402
from labelcore.methods import Lux  # noqa: E402


def run(setup, n_train, n_test, giants, cv_kwargs):
    t = time.perf_counter()
    d = labelled_set(setup, n_train + n_test, seed=11, giants_only=giants)
    tr, te = d.split(n_train)
    print(f"\n== {setup}-like: {n_train} train, {n_test} test, {d.flux.shape[1]} pixels, "
          f"{len(d.label_names)} labels (data made in {time.perf_counter() - t:.0f} s)")
    t = time.perf_counter()
    cv = Lux(**cv_kwargs).fit(tr.flux, tr.labels, flux_err=tr.flux_err, label_err=tr.label_err,
                              label_names=d.label_names)
    t_cv = time.perf_counter() - t
    print(f"CV ({cv.n_folds}-fold, P x Omega grid) + final fit: {t_cv:.1f} s -> P = {cv.n_latent_}, "
          f"Omega = {cv.omega_:g}")
    for g in cv.cv_results_["grid"]:
        print(f"   P={g['n_latent']:3d} Omega={g['omega']:7g}  worst MSE/var={g['worst_label_mse_fraction']:.3f}"
              f"  mean MSE/var={g['label_mse_fraction']:.3f}  chi2_label={g['chi2_label']:.4g}"
              f"  chi2_flux={g['chi2_flux']:.4g}")
    t = time.perf_counter()
    m = Lux(n_latent=cv.n_latent_, omega=cv.omega_).fit(tr.flux, tr.labels, flux_err=tr.flux_err,
                                                         label_err=tr.label_err, label_names=d.label_names)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    y, ye = m.predict(te.flux, flux_err=te.flux_err, return_std=True)
    t_pred = time.perf_counter() - t
    t = time.perf_counter()
    yr = ridge_baseline(tr.flux, tr.labels, te.flux)
    t_ridge = time.perf_counter() - t
    print(f"training at fixed (P, Omega): {t_fit:.1f} s; test step for {n_test} stars: {t_pred:.2f} s "
          f"({n_test / t_pred:,.0f} stars/s); ridge baseline {t_ridge:.1f} s")
    print(label_table(d.label_names, y, te.truth, te.snr, other=yr))
    worse = [n for j, n in enumerate(d.label_names)
             if np.std(y[:, j] - te.truth[:, j]) > np.std(yr[:, j] - te.truth[:, j])]
    print("labels where Lux is worse than ridge:", worse or "none")
    print("median formal error / actual scatter: "
          + " ".join(f"{n}={np.median(ye[:, j]) / np.std(y[:, j] - te.truth[:, j]):.2f}"
                     for j, n in enumerate(d.label_names)))
    return t_fit, t_pred


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sets (a smoke run)")
    a = ap.parse_args()
    if a.quick:
        run("rave", 1000, 500, False, dict(latent_grid=(1, 2), omega_grid=(1.0, 100.0), n_folds=3))
        return
    run("rave", 3000, 2000, False, {})
    t_fit, t_pred = run("apogee", 5000, 10000, True, dict(latent_grid=(1, 2, 4), n_folds=3))
    print(f"\nAPOGEE-like targets: training {t_fit:.1f} s / 120 s = {t_fit / 120:.2f}; "
          f"test step {t_pred:.1f} s / 15 s = {t_pred / 15:.2f}")


if __name__ == "__main__":
    main()
