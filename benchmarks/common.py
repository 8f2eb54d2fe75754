"""Shared helpers for the benchmarks: the ridge baseline and per-label statistics."""

from __future__ import annotations

import numpy as np

RIDGE_ALPHAS = tuple(np.logspace(-2, 5, 15))


def ridge_baseline(train_flux, train_labels, test_flux, alphas=RIDGE_ALPHAS):
    """Ridge regression of each label on the standardised flux (bad pixels -> 1), alpha per
    label by efficient leave-one-out CV (sklearn RidgeCV), on the training stars that have
    every label."""
    from sklearn.linear_model import RidgeCV

    X = np.nan_to_num(train_flux, nan=1.0)
    Xt = np.nan_to_num(test_flux, nan=1.0)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    X = (X - mu) / sd
    Xt = (Xt - mu) / sd
    # one SVD for all labels on the stars with every label (alpha chosen per label)
    ok = np.isfinite(train_labels).all(axis=1)
    return RidgeCV(alphas=alphas, alpha_per_target=True).fit(X[ok], train_labels[ok]).predict(Xt)


def label_table(names, pred, truth, snr=None, bins=(0, 20, 40, 60, 100, 1e9), other=None,
                other_name="ridge"):
    """Print bias and scatter per label (overall and per S/N bin)."""
    r = pred - truth
    head = f"{'label':8s} {'bias':>9s} {'scatter':>9s}"
    lines = [head + (f" {other_name + ' scat':>11s}" if other is not None else "")]
    for j, n in enumerate(names):
        s = f"{n:8s} {np.mean(r[:, j]):+9.3f} {np.std(r[:, j]):9.3f}"
        if other is not None:
            s += f" {np.std(other[:, j] - truth[:, j]):11.3f}"
        lines.append(s)
    if snr is not None:
        edges = list(zip(bins[:-1], bins[1:], strict=True))
        lines.append("scatter per S/N bin: " + " | ".join(f"{lo:g}-{hi:g}" for lo, hi in edges))
        for j, n in enumerate(names):
            cells = []
            for lo, hi in edges:
                m = (snr >= lo) & (snr < hi)
                cells.append(f"{np.std(r[m, j]):.3f}({m.sum()})" if m.sum() > 5 else "   -   ")
            lines.append(f"  {n:8s} " + " ".join(cells))
    return "\n".join(lines)
