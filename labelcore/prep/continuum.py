"""Pseudo-continuum normalisation after SLAM (Zhang, Liu & Deng 2020, section 2.1).

"We first use a smoothing spline to smooth the whole spectrum and then exclude those
pixels that deviate from the smoothed spectrum by more than a threshold, e.g. 1.5 times
the standard deviation of the residuals in the wavelength bin. The pseudo-continuum is
then estimated by smoothing the reserved pixels."

Implementation: the smoothing spline is a penalised cubic B-spline (knots every
``knot_spacing`` A, second-difference penalty ``smoothness``; P-spline of Eilers & Marx
1996), fitted to *all spectra at once*: the grid is shared, so the weighted normal
equations of every spectrum are one matrix product ``weights [N, P] @ (B_k B_l) [P, K^2]``
and one batched ``numpy.linalg.solve`` -- no loop over stars or pixels. Clipping uses the
residual standard deviation in wavelength bins of ``bin_width`` A (paper: per bin), with
thresholds ``lower`` below and ``upper`` above (paper default 1.5 both), iterated
``n_iter`` times (paper: once; default 3, which converges on strong-lined spectra).
Bad pixels never enter the fit; their normalised flux is 1 and error inf.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline

from labelcore.data.containers import Spectra
from labelcore.errors import ValidationError


def bspline_basis(wave: np.ndarray, knot_spacing: float) -> np.ndarray:
    lo, hi = wave[0], wave[-1]
    n_int = max(int(np.ceil((hi - lo) / knot_spacing)), 1)
    inner = np.linspace(lo, hi, n_int + 1)
    t = np.concatenate([[lo] * 3, inner, [hi] * 3])
    return BSpline.design_matrix(np.clip(wave, lo, hi), t, 3).toarray()


def fit_continuum(wave, flux, weights, knot_spacing=50.0, smoothness=1.0, lower=1.5,
                  upper=1.5, n_iter=3, bin_width=100.0) -> np.ndarray:
    """Continuum [N, P] for flux [N, P] with weights [N, P] (0 = excluded)."""
    wave = np.asarray(wave, float)
    flux = np.asarray(flux, float)
    w0 = np.asarray(weights, float)
    B = bspline_basis(wave, knot_spacing)  # [P, K]
    k = B.shape[1]
    BB = (B[:, :, None] * B[:, None, :]).reshape(wave.size, k * k)
    D = np.diff(np.eye(k), 2, axis=0)
    # penalty scaled to the data so that ``smoothness`` is dimensionless
    pen = smoothness * (D.T @ D)
    edges = np.arange(wave[0], wave[-1] + bin_width, bin_width)
    bin_idx = np.clip(np.searchsorted(edges, wave, side="right") - 1, 0, edges.size - 2)
    onehot = np.zeros((wave.size, edges.size - 1))
    onehot[np.arange(wave.size), bin_idx] = 1.0
    w = w0.copy()
    scale = np.where(w0.sum(1) > 0, (w0 * flux).sum(1) / np.maximum(w0.sum(1), 1e-300), 1.0)
    scale = np.where(np.abs(scale) > 0, scale, 1.0)[:, None]
    y = flux / scale
    for it in range(n_iter + 1):
        G = (w @ BB).reshape(-1, k, k) + pen[None] * (w.sum(1) / wave.size)[:, None, None]
        rhs = (w * y) @ B
        G[:, np.arange(k), np.arange(k)] += 1e-10
        coef = np.linalg.solve(G, rhs[..., None])[..., 0]
        cont = coef @ B.T
        if it == n_iter:
            break
        r = y - cont
        wr = (w0 > 0).astype(float)
        s2 = ((wr * r**2) @ onehot) / np.maximum(wr @ onehot, 1.0)
        sig = np.sqrt(s2)[:, bin_idx]
        keep = (r > -lower * sig) & (r < upper * sig)
        w = np.where(keep, w0, 0.0)
        # never drop a whole region: fall back to the original weights if too few remain
        few = (w > 0).sum(1) < max(2 * k, 10)
        w[few] = w0[few]
    return cont * scale


def normalise(spectra: Spectra, knot_spacing=50.0, smoothness=1.0, lower=1.5, upper=1.5,
              n_iter=3, bin_width=100.0) -> Spectra:
    """Continuum-normalised copy of ``spectra`` (flux / continuum, errors likewise)."""
    w = (~spectra.mask).astype(float)
    cont = fit_continuum(spectra.wave, spectra.flux, w, knot_spacing, smoothness, lower, upper,
                         n_iter, bin_width)
    bad = spectra.mask | ~(cont > 0)
    if bad.all(axis=1).any():
        i = int(np.flatnonzero(bad.all(axis=1))[0])
        raise ValidationError(f"continuum of spectrum {spectra.ids[i]} is non-positive everywhere")
    safe = np.where(bad, 1.0, cont)
    flux = spectra.flux / safe
    err = spectra.flux_err / safe if spectra.has_errors else None
    meta = spectra.meta.copy()
    return Spectra(spectra.wave, flux, err, bad, spectra.ids, meta, spectra.name)
