"""SLAM's coefficients of dependence (Zhang, Liu & Deng 2020, section 6, eqs. 12-13): how
much of each pixel's flux variance each label explains, from leave-one-label-out CV at
the pixel's chosen (C, gamma)."""

from __future__ import annotations

import numpy as np

from labelcore.methods.slam.lm import model_flux
from labelcore.progress import report


def cods(model, flux, labels, *, progress=None) -> dict[str, np.ndarray]:
    """Coefficients of dependence (section 6, eqs. 12-13) on a training set.

    COD_full = 1 - MSE_full (k-fold CV MSE with every label, at each pixel's chosen
    (C, gamma)); COD(l) = COD_full (MSE_l - MSE_full) / sum_l (MSE_l - MSE_full) with
    MSE_l from leave-one-label-out training at the same per-pixel hyper-parameters.
    Returns {"full": [P], <label>: [P], ...}; pixels where no label matters get 0.

    ``model`` is a fitted :class:`~labelcore.methods.slam.SLAM`; ``flux`` [N, P] and
    ``labels`` [N, M] are its training set (every label present)."""
    f, _, bad = model._flux_arrays(flux, None, n_pixels=model.n_pixels_)
    y, _, _ = model._label_arrays(labels, None, model.label_names_, n=f.shape[0], allow_missing=False)
    m = (~bad).astype(float)
    x = model.label_scaler_.transform(y)
    ys = np.where(bad, 0.0, model.flux_scaler_.transform(f))

    def cv_mse(xx):
        n = xx.shape[0]
        k = int(model.n_folds)
        fold = np.random.default_rng(model.random_state).permutation(np.arange(n) % k)
        sse = np.zeros(ys.shape[1])
        for i in range(k):
            tr, te = fold != i, fold == i
            lm, co, bias = model._fit_fixed(xx[tr], ys[tr], m[tr], model.C_, model.gamma_index_,
                                           list(model.gammas_))
            pred = model_flux(xx[te], model.gammas_, model.gamma_index_, lm, co, bias)
            sse += (((pred - ys[te]) * m[te]) ** 2).sum(0)
        return sse / np.maximum(m.sum(0), 1)

    full = cv_mse(x)
    out = {"full": np.clip(1.0 - full, 0.0, 1.0)}
    losses = []
    M = x.shape[1]
    for j in range(M):
        losses.append(np.maximum(cv_mse(np.delete(x, j, axis=1)) - full, 0.0))
        report(progress, (j + 1) / M, f"COD: leave out {model.label_names_[j]}")
    tot = np.sum(losses, axis=0)
    for j, name in enumerate(model.label_names_):
        out[name] = np.where(tot > 0, out["full"] * losses[j] / np.where(tot > 0, tot, 1), 0.0)
    return out
