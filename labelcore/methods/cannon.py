"""The Cannon (Ness et al. 2015; L1 regularisation as Casey et al. 2016): the flux at every
pixel a polynomial in the labels, with a per-pixel intrinsic scatter.

Model (Ness 2015, eqs. 1-4): for star n and pixel lambda,

    f_n,lambda = theta_lambda . v(l_n) + noise,   noise ~ N(0, sigma_n,lambda^2 + s_lambda^2),

where v(l) is the *vectoriser* -- here every monomial of the standardised labels up to
``order`` (1, l_1..l_M, l_i l_j for i <= j, ...; Ness 2015 uses order 2) -- theta_lambda
its coefficients and s_lambda^2 the pixel's intrinsic variance.

Choices (the papers', unless said):

* **Standardised labels** as in Casey's ``thecannon``: l' = (l - median) / (97.5th - 2.5th
  percentile). Without regularisation this only conditions the problem; with it, it sets
  the scale on which the L1 penalty acts.
* **Training step** (Ness 2015 eq. 4): per pixel, theta and s^2 maximise the likelihood.
  Here by alternation, every step exact and batched over all pixels: theta given s^2 is a
  weighted linear least-squares solve (the normal equations of every pixel are one
  float64 matrix product, :func:`labelcore.methods._linear.gram`); s^2 given theta is a
  1-D maximum-likelihood root (vectorised bisection). ``n_scatter_iter`` alternations
  (default 8; stops earlier once s changes by < 0.1 %), then a last theta at the final s.
* **L1 regularisation** (Casey 2016 eq. 5): ``regularization`` = Lambda adds
  Lambda * sum_{j>0} |theta_j| to the chi^2 of each pixel (the constant term is not
  penalised); solved by FISTA (accelerated proximal gradient), batched over pixels and
  started from the unregularised solution. 0 (the default) is Ness 2015. Casey 2016
  chooses Lambda by validation per pixel; one Lambda for all pixels is offered here.
* **Test step** (Ness 2015 eq. 5): labels maximise the likelihood at fixed theta, s^2.
  Because the model is linear in v, chi^2(l) = v^T G v - 2 b^T v + c with
  G = sum_lambda w theta theta^T per star: the pixels enter once (one matrix product for
  all stars), then a Levenberg-Marquardt in label space runs for every star at once
  (analytic Jacobian of v; no per-star loop). Two starts per star, keeping the lower
  chi^2: the training median, and the linear-algebra guess (v solved freely, its linear
  terms taken as labels; Casey's ``thecannon`` uses the same idea) -- the quadratic
  model can have more than one minimum.
* **Errors**: the formal 1-sigma errors from the curvature, Cov(l) = (J^T W J)^-1 at the
  solution (theta taken as exact, as Ness 2015). Per-star reduced chi^2 is in
  ``predict_details(...).quality["chi2_reduced"]``.
* **Missing inputs**: the training step needs every label of a star (v(l) is undefined
  otherwise): stars with a missing (NaN) label are dropped, counted in
  ``n_dropped_missing_`` (as SLAM). Label uncertainties are not used (Ness 2015
  treats the training labels as exact). ``flux_err=None``: a per-star noise estimated
  from the spectrum (DER_SNR), as Lux. Photometry is not part of the model (ignored with
  a warning). Pixels with fewer good training stars than terms get zero weight.
* **Derivative spectra**: dl/df [M, Lambda] (the contract's meaning, as Lux's eq. 13):
  the least-squares response of the labels of the median training star to a change of
  its flux, (D^T W D)^-1 D^T W with D = df/dl there and W = 1/(sigma_typ^2 + s^2).
  The model's own df/dl at any labels is :meth:`flux_derivatives`.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from labelcore._numerics import check_memory, der_snr_sigma
from labelcore.data.containers import Labels, Spectra
from labelcore.errors import ValidationError
from labelcore.methods import capabilities as caps
from labelcore.methods._linear import gram, scatter_step, solve
from labelcore.methods.base import LabelMethod, Prediction, report
from labelcore.methods.params import Param
from labelcore.progress import ProgressCallback

#: memory budget of one block of normal equations (bytes)
_BLOCK_BYTES = 256 * 2**20


def exponents(n_labels: int, order: int) -> np.ndarray:
    """The vectoriser's monomials as integer exponents [T, M]: the constant, the linear
    terms, then every product of 2 (up to ``order``) labels, i <= j <= ..."""
    rows = [np.zeros(n_labels, int)]
    for deg in range(1, order + 1):
        for combo in itertools.combinations_with_replacement(range(n_labels), deg):
            e = np.zeros(n_labels, int)
            for i in combo:
                e[i] += 1
            rows.append(e)
    return np.array(rows)


def vectorise(x: np.ndarray, E: np.ndarray) -> np.ndarray:
    """v(x) [N, T] for standardised labels x [N, M]."""
    return np.prod(x[:, None, :] ** E[None, :, :], axis=2)


def vectorise_jacobian(x: np.ndarray, E: np.ndarray) -> np.ndarray:
    """dv/dx [N, T, M]: d/dx_k prod_m x_m^E_tm = E_tk x_k^(E_tk - 1) prod_{m != k} x_m^E_tm."""
    m = E.shape[1]
    Ek = E[None, :, :] - np.eye(m, dtype=int)[:, None, :]           # [K, T, M]
    powered = x[:, None, None, :] ** np.maximum(Ek, 0)[None]        # [N, K, T, M]
    d = np.prod(powered, axis=3) * E.T[None]                        # [N, K, T]
    return np.swapaxes(d, 1, 2)


class Cannon(LabelMethod):
    """The Cannon (Ness et al. 2015), optionally L1-regularised (Casey et al. 2016).

    Parameters
    ----------
    order : int
        Polynomial order of the vectoriser in the labels: 1 (linear), 2 (quadratic,
        Ness 2015) or 3.
    regularization : float
        L1 strength Lambda on the non-constant coefficients (Casey 2016); 0 = none.
    n_scatter_iter : int
        Alternations of coefficients and intrinsic scatter in training (default 8).
    max_iter : int
        Levenberg-Marquardt iterations per start at test time.
    random_state : int
        Seed of the out-of-distribution envelope's calibration folds.

    Examples
    --------
    >>> model = Cannon().fit(flux, labels, flux_err=err, label_names=["teff", "logg", "m_h"])  # doctest: +SKIP
    >>> y, y_err = model.predict(test_flux, flux_err=test_err, return_std=True)              # doctest: +SKIP
    """

    name = "Cannon"
    _format = "labelcore-cannon"
    capabilities = frozenset({caps.MODEL_SPECTRA, caps.DERIVATIVE_SPECTRA, caps.LEARNING_CURVES,
                              caps.FIT_QUALITY})
    curve_tables = ("iterations", "pixel_scatter")
    param_spec = {
        "order": Param("int", "polynomial order of the model in the labels (Ness 2015: 2, quadratic)",
                       low=1, high=3),
        "regularization": Param("float", "L1 strength on the non-constant coefficients (Casey 2016; 0 = none)",
                                low=0.0, high=1e10),
        "n_scatter_iter": Param("int", "alternations of coefficients and intrinsic scatter in training",
                                low=1, high=100),
        "max_iter": Param("int", "Levenberg-Marquardt iterations per star and start at test time",
                          low=1, high=1000),
        "random_state": Param("int", "seed of the out-of-distribution envelope", low=0, high=2**32 - 1),
    }
    quick_params = {}   # the paper's settings train in seconds

    def __init__(self, order=2, regularization=0.0, n_scatter_iter=8, max_iter=100, random_state=0):
        self.order = order
        self.regularization = regularization
        self.n_scatter_iter = n_scatter_iter
        self.max_iter = max_iter
        self.random_state = random_state

    # ------------------------------------------------------------------ training
    def fit(self, flux: ArrayLike | Spectra, labels: ArrayLike | Labels, *, flux_err: ArrayLike | None = None,
            label_err: ArrayLike | None = None, photometry: ArrayLike | None = None,
            label_names: Sequence[str] | None = None, wave: ArrayLike | None = None,
            progress: ProgressCallback | None = None) -> Self:
        """Fit theta and s^2 of every pixel. Returns self.

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Training spectra on one grid; NaN/inf flux and non-positive errors are bad
            pixels.
        labels : array [N, M] or Labels
            Training labels; stars with a missing (NaN) label are dropped (counted in
            ``n_dropped_missing_``).
        flux_err : array [N, P], optional
            1-sigma flux uncertainties (default: DER_SNR per star).
        label_err : array [N, M], optional
            Accepted and not used (Ness 2015 takes training labels as exact).
        photometry : array, optional
            Not part of the model; ignored with a warning.
        label_names : sequence of str, optional
            Names of the M labels.
        wave : array [P], optional
            The wavelength grid, kept with the model.
        progress : callable, optional
            ``progress(fraction, message)``.

        Returns
        -------
        self
        """
        if photometry is not None:
            warnings.warn("The Cannon does not use photometry; it is ignored", UserWarning, stacklevel=2)
        t0 = time.perf_counter()
        f, e, bad = self._flux_arrays(flux, flux_err)
        y, _, names = self._label_arrays(labels, label_err, label_names, n=f.shape[0])
        keep = np.isfinite(y).all(axis=1)
        self.n_dropped_missing_ = int((~keep).sum())
        f, bad, y = f[keep], bad[keep], y[keep]
        e = None if e is None else e[keep]
        m = y.shape[1]
        E = exponents(m, int(self.order))
        t = len(E)
        if len(y) < t + 1:
            raise ValidationError(f"The Cannon of order {self.order} with {m} labels has {t} coefficients per "
                                  f"pixel and needs more than {t} complete training stars; got {len(y)}")
        self.label_names_ = names
        self.n_pixels_ = f.shape[1]
        self.wave_ = None if wave is None else np.asarray(wave, float)
        self._set_label_range(y)
        self.label_center_ = np.median(y, axis=0)
        self.label_scale_ = np.percentile(y, 97.5, axis=0) - np.percentile(y, 2.5, axis=0)
        if np.any(~(self.label_scale_ > 0)):
            j = int(np.flatnonzero(~(self.label_scale_ > 0))[0])
            raise ValidationError(f"label {names[j]!r} has no spread in the training set")
        self.exponents_ = E
        if e is None:
            e = np.broadcast_to(der_snr_sigma(f, bad)[:, None], f.shape).copy()
        good = ~bad
        var = np.where(good, e**2, 1.0)
        X = vectorise(self._standardise(y), E)
        check_memory(8.0 * (4 * f.size + min(f.shape[1], self._rows_per_block(t)) * t * t * 3),
                     f"The Cannon with {t} coefficients on {f.shape[0]} spectra x {f.shape[1]} pixels")
        self.pixel_ok_ = good.sum(axis=0) > t
        s2 = np.zeros(f.shape[1])
        self.history_ = []
        n_it = int(self.n_scatter_iter)
        for it in range(n_it):
            w = np.where(good, 1.0 / (var + s2), 0.0)
            theta = self._coefficients(w, f, X, progress, (it / (n_it + 1), (it + 1) / (n_it + 1)))
            r2 = (f - X @ theta.T) ** 2
            s2_new = scatter_step(r2, var, good)
            chi = float(np.sum(w * r2))
            self.history_.append({"iteration": it + 1, "chi2_reduced": chi / max(int(good.sum()), 1),
                                  "median_scatter": float(np.median(np.sqrt(s2_new))),
                                  "seconds": time.perf_counter() - t0})
            change = np.max(np.abs(np.sqrt(s2_new) - np.sqrt(s2)) / (np.sqrt(s2_new) + 1e-6 * np.sqrt(var.mean())))
            s2 = s2_new
            report(progress, (it + 1) / (n_it + 1), f"The Cannon: iteration {it + 1}, median scatter "
                                                    f"{np.median(np.sqrt(s2)):.3g}")
            if change < 1e-3:
                break
        w = np.where(good, 1.0 / (var + s2), 0.0)
        self.theta_ = self._coefficients(w, f, X, None, (0, 1))
        self.theta_[~self.pixel_ok_] = 0.0
        self.s2_ = s2
        self.typical_var_ = np.median(np.where(good, e**2, np.nan), axis=0) if good.any() else np.ones(f.shape[1])
        self.typical_var_ = np.where(np.isfinite(self.typical_var_), self.typical_var_, 1.0)
        self.fit_seconds_ = time.perf_counter() - t0
        self._fit_envelope(flux, flux_err)
        report(progress, 1.0, "The Cannon fitted")
        return self

    @staticmethod
    def _rows_per_block(t):
        return max(1, int(_BLOCK_BYTES // (8 * t * t * 3)))

    def _coefficients(self, w, f, X, progress, frac):
        """theta [P, T] of every pixel given the weights w [N, P] (WLS, then L1)."""
        t = X.shape[1]
        p = f.shape[1]
        out = np.zeros((p, t))
        step = self._rows_per_block(t)
        lam = float(self.regularization)
        for i, a in enumerate(range(0, p, step)):
            sl = slice(a, min(p, a + step))
            G, b = gram(w[:, sl].T, f[:, sl].T, X, exact=True)
            theta = solve(G, b, 0.0)
            if lam > 0:
                theta = _l1_fista(G, b, theta, lam)
            out[sl] = theta
            report(progress, frac[0] + (frac[1] - frac[0]) * min(1.0, (i + 1) * step / p),
                   "The Cannon: coefficients")
        return out

    def _standardise(self, y):
        return (y - self.label_center_) / self.label_scale_

    # ------------------------------------------------------------------ test step
    def _weights(self, flux, flux_err):
        f, e, bad = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_)
        if e is None:
            e = np.broadcast_to(der_snr_sigma(f, bad)[:, None], f.shape).copy()
        good = ~bad & self.pixel_ok_[None, :]
        w = np.where(good, 1.0 / (np.where(good, e**2, 1.0) + self.s2_), 0.0)
        return f, w, good

    def _solve_labels(self, f, w):
        """Standardised labels [N, M], their covariance [N, M, M] and chi^2 [N] (LM over all
        stars of a block at once, two starts, the lower chi^2 kept)."""
        E, theta = self.exponents_, self.theta_
        t, m = E.shape
        n = f.shape[0]
        x_out, cov_out, chi_out = np.zeros((n, m)), np.zeros((n, m, m)), np.zeros(n)
        step = self._rows_per_block(t)
        for a in range(0, n, step):
            sl = slice(a, min(n, a + step))
            G, b = gram(w[sl], f[sl], theta, exact=True)
            c = np.sum(w[sl] * f[sl] ** 2, axis=1)
            best = None
            for x0 in (self._linear_start(G, b), np.zeros((G.shape[0], m))):
                x, H, chi = _lm(x0, G, b, c, E, int(self.max_iter))
                if best is None:
                    best = [x, H, chi]
                else:
                    better = chi < best[2]
                    best = [np.where(better[:, None], x, best[0]), np.where(better[:, None, None], H, best[1]),
                            np.where(better, chi, best[2])]
            x, H, chi = best
            x_out[sl], chi_out[sl] = x, chi
            cov_out[sl] = np.linalg.pinv(H, hermitian=True)
        return x_out, cov_out, chi_out

    def _linear_start(self, G, b):
        """The linear-algebra guess: v solved freely (v_0 = 1) at fixed theta; its linear
        terms, clipped to the training range, as labels."""
        m = self.exponents_.shape[1]
        A = G[:, 1:, 1:]
        rhs = b[:, 1:] - G[:, 1:, 0]
        tr = np.trace(A, axis1=1, axis2=2)[:, None, None] / A.shape[1]
        v = np.linalg.solve(A + 1e-8 * (tr + 1e-12) * np.eye(A.shape[1]), rhs[..., None])[..., 0]
        lo, hi = self._standardise(self.label_min_), self._standardise(self.label_max_)
        return np.clip(v[:, :m], lo, hi)

    def predict(self, flux: ArrayLike | Spectra, *, flux_err: ArrayLike | None = None,
                photometry: ArrayLike | None = None, return_std: bool = False, wave: ArrayLike | None = None
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Labels [N, M] of spectra by maximum likelihood (and formal 1-sigma errors).

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Spectra on the training grid (bad pixels NaN).
        flux_err : array [N, P], optional
            1-sigma flux uncertainties (default: DER_SNR per star).
        photometry : array, optional
            Not used by The Cannon.
        return_std : bool
            Also return the formal 1-sigma errors.
        wave : array [P], optional
            The spectra's grid: refused unless it is the model's.

        Returns
        -------
        labels : ndarray [N, M]
        errors : ndarray [N, M]
            Only with ``return_std``.
        """
        self._check_grid(flux, wave)
        y, err, _ = self._predict_all(flux, flux_err)
        return (y, err) if return_std else y

    def _predict_all(self, flux, flux_err):
        f, w, good = self._weights(flux, flux_err)
        x, cov, chi = self._solve_labels(f, w)
        y = x * self.label_scale_ + self.label_center_
        err = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0)) * self.label_scale_
        dof = np.maximum(good.sum(axis=1) - x.shape[1], 1)
        return y, err, chi / dof

    def _predict_details(self, flux, *, flux_err=None, photometry=None) -> Prediction:
        """Labels, formal errors and ``chi2_reduced`` of each spectrum against its model."""
        y, err, chi2r = self._predict_all(flux, flux_err)
        return Prediction(y, err, {"chi2_reduced": chi2r})

    # ------------------------------------------------------------------ generative side
    def predict_spectra(self, labels: ArrayLike, *, label_err: ArrayLike | None = None) -> np.ndarray:
        """Model flux theta . v(l) [N, P] at labels [N, M] (``label_err`` is not used).

        Parameters
        ----------
        labels : array [N, M]
            Labels in the model's order (``label_names_``), all finite.
        label_err : array [N, M], optional
            Not used (the model spectrum is the mean at the labels).

        Returns
        -------
        ndarray [N, P]
        """
        self._check_fitted()
        y, _, _ = self._label_arrays(labels, None, self.label_names_, allow_missing=False)
        return vectorise(self._standardise(y), self.exponents_) @ self.theta_.T

    def flux_derivatives(self, labels: ArrayLike | None = None) -> np.ndarray:
        """df/dl [N, M, P] of the model at ``labels`` [N, M] (default: the median training
        star, [1, M, P]), per unit of each label."""
        self._check_fitted()
        if labels is None:
            y = self.label_center_[None, :]
        else:
            y, _, _ = self._label_arrays(labels, None, self.label_names_, allow_missing=False)
        D = vectorise_jacobian(self._standardise(y), self.exponents_)          # [N, T, M]
        return np.einsum("ntm,pt->nmp", D, self.theta_) / self.label_scale_[None, :, None]

    def derivative_spectra(self) -> np.ndarray:
        """dl/df [M, P] at the median training star: (D^T W D)^-1 D^T W with D = df/dl and
        W = 1 / (typical training sigma^2 + s^2) (zero on unusable pixels)."""
        D = self.flux_derivatives()[0].T                                     # [P, M]
        W = np.where(self.pixel_ok_, 1.0 / (self.typical_var_ + self.s2_), 0.0)
        DW = D.T * W[None, :]
        return np.linalg.solve(DW @ D, DW)

    def learning_curves(self) -> dict:
        """Training diagnostics: ``iterations`` (reduced chi^2 and median intrinsic scatter
        after each alternation) and ``pixel_scatter`` (wavelength or pixel index, s, and
        whether the pixel is used), the Cannon's classic per-pixel diagnostic."""
        self._check_fitted()
        it = pd.DataFrame(self.history_)
        x = self.wave_ if self.wave_ is not None else np.arange(self.n_pixels_, dtype=float)
        pix = pd.DataFrame({"wave": x, "scatter": np.sqrt(self.s2_), "used": self.pixel_ok_})
        return {"iterations": it, "pixel_scatter": pix}

    # ------------------------------------------------------------------ persistence
    def _state(self):
        meta = {"n_pixels": self.n_pixels_, "n_dropped_missing": self.n_dropped_missing_,
                "history": self.history_, "fit_seconds": self.fit_seconds_}
        arrays = {"theta": self.theta_, "s2": self.s2_, "exponents": self.exponents_,
                  "label_center": self.label_center_, "label_scale": self.label_scale_,
                  "pixel_ok": self.pixel_ok_, "typical_var": self.typical_var_}
        if self.wave_ is not None:
            arrays["wave"] = self.wave_
        return meta, arrays

    def _set_state(self, meta, arrays):
        self.n_pixels_ = int(meta["n_pixels"])
        self.n_dropped_missing_ = int(meta["n_dropped_missing"])
        self.history_ = list(meta["history"])
        self.fit_seconds_ = float(meta["fit_seconds"])
        self.theta_, self.s2_ = arrays["theta"], arrays["s2"]
        self.exponents_ = arrays["exponents"].astype(int)
        self.label_center_, self.label_scale_ = arrays["label_center"], arrays["label_scale"]
        self.pixel_ok_ = arrays["pixel_ok"].astype(bool)
        self.typical_var_ = arrays["typical_var"]
        self.wave_ = arrays.get("wave")
        t, m = self.exponents_.shape
        if self.theta_.shape != (self.n_pixels_, t) or m != len(self.label_names_):
            raise ValueError(f"coefficients {self.theta_.shape} do not match {self.n_pixels_} pixels x {t} terms")


# ---------------------------------------------------------------------------- solvers
def _chi2(x, G, b, c, E):
    v = vectorise(x, E)
    return np.einsum("st,stu,su->s", v, G, v) - 2.0 * np.einsum("st,st->s", b, v) + c


def _lm(x0, G, b, c, E, max_iter, tol=1e-4):
    """Levenberg-Marquardt (Marquardt's diagonal damping) of chi^2(x) = v^T G v - 2 b^T v + c
    for every star s at once; G [S, T, T], b [S, T], c [S]. Returns the labels, the
    Gauss-Newton curvature J^T W J = D^T G D at them [S, M, M] and chi^2."""
    x = x0.copy()
    s, m = x.shape
    lam = np.full(s, 1e-3)
    chi = _chi2(x, G, b, c, E)
    done = np.zeros(s, bool)
    eye = np.eye(m)
    for _ in range(max_iter):
        live = ~done
        if not live.any():
            break
        xl = x[live]
        v = vectorise(xl, E)
        D = vectorise_jacobian(xl, E)                                        # [L, T, M]
        GD = G[live] @ D                                                     # [L, T, M]
        H = np.swapaxes(D, 1, 2) @ GD                                        # [L, M, M]
        g = np.einsum("ltm,lt->lm", D, np.einsum("ltu,lu->lt", G[live], v) - b[live])
        dH = np.diagonal(H, axis1=1, axis2=2)
        damp = lam[live][:, None, None] * eye * (dH[:, None, :] + 1e-12)
        try:
            stepv = np.linalg.solve(H + damp, -g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            stepv = -np.einsum("lmn,ln->lm", np.linalg.pinv(H + damp), g)
        xn = xl + stepv
        cn = _chi2(xn, G[live], b[live], c[live], E)
        acc = np.isfinite(cn) & (cn < chi[live])
        gain = np.where(acc, chi[live] - cn, 0.0)
        idx = np.flatnonzero(live)
        # a small gain means convergence only for a nearly undamped (Gauss-Newton) step
        conv = (acc & (gain < tol) & (lam[idx] < 0.1)) | (~acc & (lam[idx] > 1e10))
        x[idx[acc]] = xn[acc]
        chi[idx[acc]] = cn[acc]
        lam[idx] = np.where(acc, np.maximum(lam[idx] / 3.0, 1e-9), lam[idx] * 4.0)
        done[idx[conv]] = True
    D = vectorise_jacobian(x, E)
    H = np.swapaxes(D, 1, 2) @ (G @ D)
    return x, H, chi


def _l1_fista(G, b, theta0, lam, n_iter=500, tol=1e-8):
    """argmin_theta theta^T G theta - 2 b^T theta + lam sum_{j>0} |theta_j| for every row
    (pixel) of G [R, T, T], b [R, T]: FISTA from ``theta0``."""
    L = 2.0 * np.linalg.eigvalsh(G)[:, -1]
    step = 1.0 / np.maximum(L, 1e-300)
    x = theta0.copy()
    yk = x.copy()
    tk = 1.0
    thr = (step * lam)[:, None]
    for _ in range(n_iter):
        grad = 2.0 * (np.einsum("rtu,ru->rt", G, yk) - b)
        z = yk - step[:, None] * grad
        z[:, 1:] = np.sign(z[:, 1:]) * np.maximum(np.abs(z[:, 1:]) - thr, 0.0)
        tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
        yk = z + ((tk - 1.0) / tn) * (z - x)
        delta = np.max(np.abs(z - x))
        x, tk = z, tn
        if delta < tol * (1.0 + np.max(np.abs(x))):
            break
    return x
