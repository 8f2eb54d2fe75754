"""Lux: a generative, multi-output latent-variable model (Horta et al. 2024), in JAX.

Model (paper section 3.1): every star n has a latent vector z_n (length P); its labels and
its spectrum are both linear read-outs,

    l_n = A z_n + noise(sigma_l),          f_n = B z_n + noise(sqrt(sigma_f^2 + s^2)),

with A [M, P], B [Lambda, P] and a per-pixel extra scatter s. The objective (eq. 8) is the
log-likelihood with an L2 penalty on the latents; here written as the minimisation of

    1/2 chi^2_labels + 1/2 chi^2_flux + Omega * sum_n |z_n|^2 .

Choices (the paper's, unless said):

* **Masks, not placeholders.** Missing labels (NaN) and bad pixels get exactly zero weight,
  which is what the paper's 9999 uncertainties approximate (section 2.1).
* **Label scaling** (section 4.1): labels are rescaled by their median c and
  (97.5th - 2.5th percentile)/4 = d before anything else; outputs are scaled back.
* **Initialisation** (section 4.1): z_n = [1, (l_n - c)/d, 0, ...] (missing labels -> 0),
  A and B uniform U(0, 1) (seeded by ``random_state``), ln s = -8. Every step below is an
  exact weighted least-squares solve taken as the minimum-norm update from the current
  value -- what one Gauss-Newton step gives on these linear problems -- so that, as in
  the paper, the latent directions beyond the labels (zero at the start) are switched on
  through the random initial A and B rather than staying unused.
* **Training** (section 4.2): agenda 1 -- ``n_iter`` (5) rounds of a-, b- and z-steps
  without scatter or regularisation; agenda 2 -- the s-step (per-pixel maximum likelihood
  of s, a batched 1-D root find), then the b-step with weights 1/(sigma^2 + s^2) and the
  z-step with the L2 term. The paper uses Gauss-Newton/LBFGS for these; with the linear
  model each is a weighted linear least-squares problem, solved here in closed form for
  all stars (or pixels, or labels) at once: the weighted Gram matrices of every row are
  one matrix product ``weights [R, K] @ (x_k x_k^T) [K, P(P+1)/2]`` (JAX, jit-compiled),
  followed by a batched Cholesky-backed solve. chi^2 after every step is kept in
  ``chi2_history_`` (the app's learning curve).
* **Test step** (section 4.3): z from the flux at fixed B and s, then labels = A z. How
  the test latents are regularised is left open by the paper and matters as much as
  Omega at training (eq. 10 has no prior; the training objective has Omega |z|^2, a
  zero-mean isotropic Gaussian prior). Our default (``test_prior="latent"``) is the
  empirical-Bayes choice: the Gaussian the *training* latents follow,
  N(mean(z_train), cov(z_train)), so each test latent is the posterior mode
  (B^T W B + C^-1)^-1 (B^T W f + C^-1 mu). It removes the bias towards z = 0 and shrinks
  each latent direction by how much the training set really varies along it; on the
  synthetic RAVE-like benchmark it lowers the Teff scatter from 249 K (L2, Omega_test = 1)
  to 188 K, below the ridge-regression baseline for every label. ``test_prior="l2"``
  with ``omega_test`` gives the paper's form. The reverse direction (z from labels,
  spectra = B z) is :meth:`predict_spectra`.
* **Hyper-parameters** (Appendix A): K-fold CV over P in {1, 2, 4, 8} x M and
  Omega in {0.01, 0.1, 1, 10, 100, 1000} (the paper's grid extended down, see below).
  P = M cannot hold the initial latents [1, labels] (the paper's own requirement
  P >= M + 1), so the smallest grid point is M + 1. For every fold and P
  agenda 1 is run once and shared by all Omega (it does not involve Omega). The metric
  is evaluated on the held-out fold with latents inferred from the flux. Eq. (A1) is
  dominated by its flux term, which improves with every extra latent dimension whatever
  the labels, and its label term weights labels by their catalogue errors. We select by
  default on the held-out label MSE as a fraction of each label's variance, taking the
  worst label (a label the spectra barely constrain, like [Ni/Fe] in RAVE-like spectra,
  must not be fitted to noise for a small gain elsewhere), and report eq. (A1)'s terms,
  the mean fraction and the per-label scatter in ``cv_results_``. Among grid points within one standard error (over
  folds) of the lowest CV label chi^2 we take the simplest (smallest P, then largest
  Omega), the usual guard against choosing noise.
* **Uncertainties**: from the curvature of the test objective (Fisher information of z
  given the flux plus the prior), Cov(z) = (B^T W B + C^-1)^-1, propagated to
  Cov(l) = A Cov(z) A^T. These are formal errors (A and B are taken as exact).
* **Derivative spectra** (eq. 13): dl/df = A B^+ , in physical label units per unit flux.
* **Missing inputs**: ``flux_err=None`` -> a per-star constant noise estimated from the
  spectrum itself (DER_SNR, Stoehr et al. 2008); ``label_err=None`` -> 0.1 d per label
  (d as above). Photometry is not part of this model and is ignored with a warning.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import NamedTuple, Self

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from labelcore._numerics import check_memory, der_snr_sigma
from labelcore.data.containers import Labels, Spectra
from labelcore.errors import ValidationError
from labelcore.methods import capabilities as caps
from labelcore.methods._linear import gram as _gram
from labelcore.methods._linear import scatter_step as _scatter_step
from labelcore.methods._linear import solve as _solve
from labelcore.methods.base import LabelMethod, Prediction, report
from labelcore.methods.params import Param
from labelcore.progress import ProgressCallback


class Latents(NamedTuple):
    """Latent vectors inferred from spectra (:meth:`Lux.transform`)."""

    z: np.ndarray        # [N, P] posterior-mode latents
    weights: np.ndarray  # [N, Lambda] flux weights 1 / (sigma^2 + s^2), 0 at bad pixels
    gram: np.ndarray     # [N, P, P] precision of z (B^T W B + prior precision)


# ---------------------------------------------------------------------------- model
class Lux(LabelMethod):
    """Lux (Horta et al. 2024) with exact masks, closed-form batched steps, K-fold CV.

    Parameters
    ----------
    n_latent : int or "cv"
        Latent dimension P (>= M + 1). ``"cv"``: chosen by K-fold CV from ``latent_grid``.
    omega : float or "cv"
        L2 strength on the latents during agenda 2. ``"cv"``: chosen from ``omega_grid``.
    test_prior : "latent" or "l2"
        Prior on the latents when inferring them from a spectrum at test time.
        ``"latent"`` (default): the Gaussian the training latents follow (their mean and
        covariance). ``"l2"``: the paper's zero-mean L2 term with strength ``omega_test``.
    omega_test : float or None
        With ``test_prior="l2"``: L2 strength at test time; None = same as ``omega``.
    n_iter : int
        Agenda-1 iterations (paper: 5).
    latent_grid, omega_grid : CV grids. P = {1, 2, 4, 8} x M as the paper; Omega from
        0.01 to 1e3 -- the paper's {1, 10, 100, 1000} extended downwards, because the
        scale of Omega depends on how the chi^2 is normalised (1/2 chi^2 here) and on the
        flux uncertainties: on the synthetic RAVE-like set the CV prefers Omega <= 0.1, and
        Omega = 1 loses 15 % in [alpha/M] scatter.
    n_folds : int
        K of the K-fold CV (paper: 5).
    cv_metric : "worst_label_mse_fraction", "label_mse_fraction", "chi2_label" or "chi2"
        What the CV minimises on held-out folds (latents from the flux), with MSE/var the
        held-out MSE of a label as a fraction of that label's variance:
        ``worst_label_mse_fraction`` (default) -- the largest MSE/var over the labels, so
        that no label is sacrificed for the others; ``label_mse_fraction`` -- the mean;
        ``chi2_label`` -- the label term of eq. (A1); ``chi2`` -- all of eq. (A1).
    random_state : int
        Seed of the CV fold assignment.

    Examples
    --------
    >>> model = Lux(n_latent=40, omega=100.0).fit(flux, labels, flux_err=err, label_err=lerr)  # doctest: +SKIP
    >>> y, y_err = model.predict(test_flux, flux_err=test_err, return_std=True)  # doctest: +SKIP
    """

    name = "Lux"
    _format = "labelcore-lux"
    capabilities = frozenset({caps.MODEL_SPECTRA, caps.DERIVATIVE_SPECTRA, caps.LEARNING_CURVES,
                              caps.FIT_QUALITY})
    curve_tables = ("chi2", "cv_grid", "cv_folds")
    param_spec = {
        "n_latent": Param("int", "latent size P (>= number of labels + 1), or cv", low=1, high=4096,
                          choices=("cv",)),
        "omega": Param("float", "L2 strength on the latents in agenda 2, or cv", low=0.0, high=1e8,
                       choices=("cv",)),
        "test_prior": Param("str", "prior on test latents: the training latents' Gaussian, or the paper's L2",
                            choices=("latent", "l2")),
        "omega_test": Param("float", "L2 strength at test time with test_prior=l2 (empty = omega)", low=0.0,
                            high=1e8, allow_none=True),
        "n_iter": Param("int", "agenda-1 iterations (paper: 5)", low=1, high=1000),
        "latent_grid": Param("grid", "CV grid of P as multiples of the number of labels (paper: 1, 2, 4, 8)",
                             low=1, high=64, integer_items=True),
        "omega_grid": Param("grid", "CV grid of omega", low=0.0, high=1e8),
        "n_folds": Param("int", "K of the K-fold CV (paper: 5)", low=2, high=50),
        "cv_metric": Param("str", "what the CV minimises on held-out folds",
                           choices=("worst_label_mse_fraction", "label_mse_fraction", "chi2_label", "chi2")),
        "random_state": Param("int", "seed of the CV folds", low=0, high=2**32 - 1),
    }

    def __init__(self, n_latent="cv", omega="cv", test_prior="latent", omega_test=None, n_iter=5,
                 latent_grid=(1, 2, 4, 8), omega_grid=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), n_folds=5,
                 cv_metric="worst_label_mse_fraction", random_state=0):
        self.cv_metric = cv_metric
        self.n_latent = n_latent
        self.omega = omega
        self.test_prior = test_prior
        self.omega_test = omega_test
        self.n_iter = n_iter
        self.latent_grid = latent_grid
        self.omega_grid = omega_grid
        self.n_folds = n_folds
        self.random_state = random_state

    # ------------------------------------------------------------------ data prep
    def _prepare(self, flux, labels, flux_err, label_err, label_names):
        f, e, bad = self._flux_arrays(flux, flux_err)
        y, ye, names = self._label_arrays(labels, label_err, label_names, n=f.shape[0])
        if f.shape[0] < 3:
            raise ValidationError(f"Lux needs at least 3 training stars; got {f.shape[0]}")
        if e is None:
            e = np.broadcast_to(der_snr_sigma(f, bad)[:, None], f.shape).copy()
            e[bad] = np.inf
        return f, e, bad, y, ye, names

    def _scale_labels(self, y, ye):
        c = np.nanmedian(y, axis=0)
        d = (np.nanpercentile(y, 97.5, axis=0) - np.nanpercentile(y, 2.5, axis=0)) / 4.0
        if np.any(~(d > 0)):
            j = int(np.flatnonzero(~(d > 0))[0])
            raise ValidationError(f"label {self.label_names_[j]!r} has no spread in the training set")
        yt = (y - c) / d
        et = np.full_like(yt, 0.1) if ye is None else ye / d
        wl = np.where(np.isnan(yt), 0.0, 1.0 / et**2)
        return c, d, np.nan_to_num(yt), wl

    # ------------------------------------------------------------------ training core
    @staticmethod
    def _chi2(yt, wl, f, wf, A, B, Z):
        rl = yt - Z @ A.T
        rf = f - Z @ B.T
        return float(np.sum(wl * rl**2)), float(np.sum(wf * rf**2))

    @staticmethod
    def _zstep(yt, wl, f, wf, A, B, omega):
        gf, bf = _gram(wf, f, B)
        g, b = gf, bf
        if wl is not None:
            gl, bl = _gram(wl, yt, A)
            g, b = g + gl, b + bl
        return _solve(g, b, 2.0 * omega)

    @classmethod
    def _train(cls, f, wf0, var, yt, wl, P, omegas, n_iter, history=None, progress=None,
               frac=(0.0, 1.0), seed=0):
        """Agenda 1 then agenda 2 for each omega in ``omegas``. Returns a list of
        (A, B, s, Z) per omega."""
        n, m = yt.shape
        Z = np.zeros((n, P))
        Z[:, 0] = 1.0
        Z[:, 1:m + 1] = yt
        rng = np.random.default_rng(seed)
        A = rng.uniform(0, 1, (m, P))
        B = rng.uniform(0, 1, (f.shape[1], P))
        hist = history if history is not None else []
        t0 = time.perf_counter()
        steps = n_iter + len(omegas)
        for it in range(n_iter):
            ga, ba = _gram(wl.T, yt.T, Z)
            A = _solve(ga, ba, 0.0, start=A)
            gb, bb = _gram(wf0.T, f.T, Z)
            B = _solve(gb, bb, 0.0, start=B)
            Z = cls._zstep(yt, wl, f, wf0, A, B, 0.0)
            cl, cf = cls._chi2(yt, wl, f, wf0, A, B, Z)
            hist.append({"agenda": 1, "iteration": it + 1, "chi2_label": cl, "chi2_flux": cf,
                         "seconds": time.perf_counter() - t0})
            report(progress, frac[0] + (frac[1] - frac[0]) * (it + 1) / steps,
                   f"Lux P={P}: agenda 1, iteration {it + 1}")
        out = []
        mask = wf0 > 0
        s2 = _scatter_step((f - Z @ B.T) ** 2, var, mask)
        s = np.maximum(np.sqrt(s2), np.exp(-8.0))
        wf = np.where(mask, 1.0 / (var + s**2), 0.0)
        gb, bb = _gram(wf.T, f.T, Z)
        B2 = _solve(gb, bb, 0.0, start=B)
        for k, om in enumerate(omegas):
            Z2 = cls._zstep(yt, wl, f, wf, A, B2, om)
            cl, cf = cls._chi2(yt, wl, f, wf, A, B2, Z2)
            hist.append({"agenda": 2, "iteration": 1, "omega": om, "chi2_label": cl,
                         "chi2_flux": cf, "seconds": time.perf_counter() - t0})
            out.append((A, B2, s, Z2))
            report(progress, frac[0] + (frac[1] - frac[0]) * (n_iter + k + 1) / steps,
                   f"Lux P={P}: agenda 2, Omega={om:g}")
        return out

    # ------------------------------------------------------------------ public API
    def fit(self, flux: ArrayLike | Spectra, labels: ArrayLike | Labels, *, flux_err: ArrayLike | None = None,
            label_err: ArrayLike | None = None, photometry: ArrayLike | None = None,
            label_names: Sequence[str] | None = None, wave: ArrayLike | None = None,
            progress: ProgressCallback | None = None) -> Self:
        """Train on spectra and (possibly incomplete) labels. Returns self.

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Training spectra on one grid; NaN/inf flux and non-positive errors are bad
            pixels.
        labels : array [N, M] or Labels
            Training labels, NaN = missing.
        flux_err, label_err : array, optional
            1-sigma uncertainties of the flux [N, P] and of the labels [N, M].
        photometry : array [N, K], optional
            Absolute magnitudes + A_V (methods with capability ``photometry``).
        label_names : sequence of str, optional
            Canonical names of the M labels (default ``label_0``, ...).
        wave : array [P], optional
            The wavelength grid, kept with the model (catalogue prediction checks it).
        progress : callable, optional
            ``progress(fraction, message)``.

        Returns
        -------
        self
        """
        if photometry is not None:
            warnings.warn("Lux does not use photometry; it is ignored", UserWarning, stacklevel=2)
        f, e, bad, y, ye, names = self._prepare(flux, labels, flux_err, label_err, label_names)
        self.label_names_ = names
        self.n_pixels_ = f.shape[1]
        self.wave_ = None if wave is None else np.asarray(wave, float)
        self._set_label_range(y)
        c, d, yt, wl = self._scale_labels(y, ye)
        self.label_center_, self.label_scale_ = c, d
        var = np.where(bad, 1.0, e**2)
        wf0 = np.where(bad, 0.0, 1.0 / var)
        m = y.shape[1]
        largest = max((max(int(g) * m, m + 1) for g in self.latent_grid), default=m + 1) \
            if self.n_latent == "cv" else int(self.n_latent)
        check_memory(8.0 * 2 * max(f.shape[0], f.shape[1]) * largest**2,
                     f"Lux with n_latent P = {largest} on {f.shape[0]} spectra x {f.shape[1]} pixels "
                     "(a P x P Gram matrix per pixel and per star)")
        if self.n_latent == "cv" or self.omega == "cv":
            self.cv_results_ = self._cross_validate(f, wf0, var, yt, wl, progress)
            best = self.cv_results_["best"]
            P, om = best["n_latent"], best["omega"]
        else:
            P, om = int(self.n_latent), float(self.omega)
            self.cv_results_ = None
        if P < m + 1:
            raise ValidationError(f"n_latent P = {P} is too small: Lux needs P >= M + 1 = {m + 1}")
        self.n_latent_, self.omega_ = P, om
        self.chi2_history_ = []
        A, B, s, Z = self._train(f, wf0, var, yt, wl, P, [om], int(self.n_iter),
                                 self.chi2_history_, progress,
                                 (0.5 if self.cv_results_ else 0.0, 1.0), seed=self.random_state)[0]
        self.A_, self.B_, self.s_, self.z_train_ = A, B, s, Z
        self.z_mean_, self.z_precision_ = self._prior(Z, om)
        self._fit_envelope(flux, flux_err)
        report(progress, 1.0, "Lux fitted")
        return self

    def _refit_params(self) -> dict:
        """The error calibration's refits use the (P, Omega) this fit chose: no second CV."""
        return {**self.get_params(), "n_latent": int(self.n_latent_), "omega": float(self.omega_)}

    def _cross_validate(self, f, wf0, var, yt, wl, progress):
        n, m = yt.shape
        k = int(self.n_folds)
        if n < 2 * k:
            raise ValidationError(f"{n} stars are too few for {k}-fold cross-validation")
        Ps = sorted({max(int(g) * m, m + 1) for g in self.latent_grid}) if self.n_latent == "cv" \
            else [int(self.n_latent)]
        oms = [float(o) for o in self.omega_grid] if self.omega == "cv" else [float(self.omega)]
        rng = np.random.default_rng(self.random_state)
        fold = rng.permutation(np.arange(n) % k)
        rows = []
        total = len(Ps) * k
        done = 0
        for P in Ps:
            for i in range(k):
                tr, te = fold != i, fold == i
                fits = self._train(f[tr], wf0[tr], var[tr], yt[tr], wl[tr], P, oms, int(self.n_iter),
                                   progress=progress, frac=(0.5 * done / total, 0.5 * (done + 1) / total),
                                   seed=self.random_state)
                done += 1
                for om, (A, B, s, Ztr) in zip(oms, fits, strict=True):
                    wf = np.where(wf0[te] > 0, 1.0 / (var[te] + s**2), 0.0)
                    Z = self._test_latents(f[te], wf, B, self._prior(Ztr, om))
                    rl = yt[te] - Z @ A.T
                    chi_l = float(np.sum(wl[te] * rl**2))
                    chi_f = float(np.sum(wf * (f[te] - Z @ B.T) ** 2))
                    obs = wl[te] > 0
                    mse = np.sum(np.where(obs, rl**2, 0), 0) / np.maximum(obs.sum(0), 1)
                    yv = np.where(obs, yt[te], np.nan)
                    fr = mse / np.nanvar(yv, axis=0)
                    rows.append({"n_latent": P, "omega": om, "fold": i, "chi2_label": chi_l,
                                 "chi2_flux": chi_f, "chi2": chi_l + chi_f,
                                 "label_mse_fraction": float(np.mean(fr)),
                                 "worst_label_mse_fraction": float(np.max(fr)),
                                 "scatter": (np.sqrt(mse) * self.label_scale_).tolist()})
        grid = {}
        for r in rows:
            grid.setdefault((r["n_latent"], r["omega"]), []).append(r)
        summary = []
        key = self.cv_metric
        for (P, om), rs in sorted(grid.items()):
            cl = np.array([r[key] for r in rs])
            summary.append({"n_latent": P, "omega": om,
                            "metric": float(np.mean(cl)),
                            "metric_se": float(np.std(cl, ddof=1) / np.sqrt(len(cl))) if len(cl) > 1 else 0.0,
                            "chi2_label": float(np.mean([r["chi2_label"] for r in rs])),
                            "label_mse_fraction": float(np.mean([r["label_mse_fraction"] for r in rs])),
                            "worst_label_mse_fraction": float(np.mean([r["worst_label_mse_fraction"] for r in rs])),
                            "chi2_flux": float(np.mean([r["chi2_flux"] for r in rs])),
                            "chi2": float(np.mean([r["chi2"] for r in rs])),
                            "scatter": np.mean([r["scatter"] for r in rs], axis=0).tolist()})
        # one-standard-error rule: the simplest model (smallest P, then largest Omega)
        # whose CV label chi^2 is within one standard error of the best
        top = min(summary, key=lambda r: r["metric"])
        ok = [r for r in summary if r["metric"] <= top["metric"] + top["metric_se"]]
        best = min(ok, key=lambda r: (r["n_latent"], -r["omega"]))
        return {"folds": rows, "grid": summary, "best": best, "lowest": top,
                "metric": f"{key} (mean over folds, one-SE rule)",
                "label_names": list(self.label_names_)}

    def _prior(self, z_train, omega):
        """(mean, precision) of the Gaussian prior on test latents."""
        p = z_train.shape[1]
        if self.test_prior == "latent":
            mu = z_train.mean(axis=0)
            cov = np.cov(z_train, rowvar=False) + 1e-9 * np.eye(p)
            return mu, np.linalg.inv(cov)
        if self.test_prior == "l2":
            om = omega if self.omega_test is None else float(self.omega_test)
            return np.zeros(p), 2.0 * om * np.eye(p)
        raise ValidationError(f"test_prior must be 'latent' or 'l2'; got {self.test_prior!r}")

    @staticmethod
    def _test_latents(f, wf, B, prior, return_gram=False):
        mu, prec = prior
        g, b = _gram(wf, f, B)
        g = g + prec[None]
        b = b + (prec @ mu)[None]
        z = np.linalg.solve(g, b[..., None])[..., 0]
        return (z, g) if return_gram else z

    def transform(self, flux, *, flux_err=None) -> Latents:
        """Latent vectors inferred from spectra (embeddings), with the flux weights and the
        latents' precision (:class:`Latents`)."""
        self._check_fitted()
        f, e, bad = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_)
        if e is None:
            e = np.broadcast_to(der_snr_sigma(f, bad)[:, None], f.shape).copy()
        wf = np.where(bad, 0.0, 1.0 / (np.where(bad, 1.0, e**2) + self.s_**2))
        z, g = self._test_latents(f, wf, self.B_, (self.z_mean_, self.z_precision_), True)
        return Latents(z, wf, g)

    def predict(self, flux: ArrayLike | Spectra, *, flux_err: ArrayLike | None = None,
                photometry: ArrayLike | None = None, return_std: bool = False, wave: ArrayLike | None = None
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Labels [N, M] from spectra (and 1-sigma formal errors with ``return_std``).

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Spectra on the training grid (bad pixels NaN).
        flux_err : array [N, P], optional
            1-sigma flux uncertainties.
        photometry : array [N, K], optional
            Needed when the model was fitted with photometry (``uses_photometry``).
        return_std : bool
            Also return the 1-sigma errors.
        wave : array [P], optional
            The spectra's wavelength grid: refused unless it is the model's (a
            :class:`Spectra` input is checked the same way).

        Returns
        -------
        labels : ndarray [N, M]
        errors : ndarray [N, M]
            Only with ``return_std``.
        """
        self._check_grid(flux, wave)
        return self._labels(self.transform(flux, flux_err=flux_err), return_std)

    def _labels(self, lat: Latents, return_std: bool):
        Z, g = lat.z, lat.gram
        y = Z @ self.A_.T * self.label_scale_ + self.label_center_
        if not return_std:
            return y
        P = self.B_.shape[1]
        X = np.linalg.solve(g, np.broadcast_to(self.A_.T, (g.shape[0], P, self.A_.shape[0])))
        var = np.einsum("mp,npm->nm", self.A_, X)
        return y, np.sqrt(np.maximum(var, 0)) * self.label_scale_

    def predict_spectra(self, labels: ArrayLike, *, label_err: ArrayLike | None = None) -> np.ndarray:
        """Emulator (paper section 4.3, reverse direction): latents from labels at fixed A,
        then spectra = B z. With P > M the labels alone under-determine the latents; the
        same prior as the test step (``test_prior``) picks the solution, so with the
        default the result is the expected spectrum of a star with those labels.

        Parameters
        ----------
        labels : array [N, M]
            Labels in the model's order (``label_names_``).
        label_err : array [N, M], optional
            Their uncertainties (used by a method whose emulator weighs them).

        Returns
        -------
        ndarray [N, P]
            Model flux on the training grid.
        """
        self._check_fitted()
        y, ye, _ = self._label_arrays(labels, label_err, self.label_names_)
        yt = (y - self.label_center_) / self.label_scale_
        et = np.full_like(yt, 0.1) if ye is None else ye / self.label_scale_
        wl = np.where(np.isnan(yt), 0.0, 1.0 / et**2)
        Z = self._test_latents(np.nan_to_num(yt), wl, self.A_, (self.z_mean_, self.z_precision_))
        return Z @ self.B_.T

    def reduced_chi2(self, flux, *, flux_err=None):
        """chi^2 / (good pixels) of each spectrum against its Lux model (section 4.4)."""
        lat = self.transform(flux, flux_err=flux_err)
        return self._reduced_chi2(flux, flux_err, lat)

    def _reduced_chi2(self, flux, flux_err, lat: Latents):
        f, _, _ = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_)
        r = f - lat.z @ self.B_.T
        return np.sum(lat.weights * r**2, axis=1) / np.maximum((lat.weights > 0).sum(1), 1)

    def _predict_details(self, flux, *, flux_err=None, photometry=None) -> Prediction:
        """Labels, formal errors and ``chi2_reduced`` of each spectrum against its model."""
        lat = self.transform(flux, flux_err=flux_err)
        y, e = self._labels(lat, True)
        return Prediction(y, e, {"chi2_reduced": self._reduced_chi2(flux, flux_err, lat)})

    def learning_curves(self) -> dict:
        """Horta 2024 section 4.2 and Appendix A as tables: ``chi2`` (step, agenda,
        iteration, chi2_label, chi2_flux, seconds of the final training) and, when the
        K-fold CV ran, ``cv_grid`` (n_latent, omega, metric, metric_se, chi2 terms, best)
        and ``cv_folds`` (one row per fold and grid point)."""
        self._check_fitted()
        hist = pd.DataFrame(self.chi2_history_)
        hist.insert(0, "step", np.arange(1, len(hist) + 1))
        out = {"chi2": hist}
        cv = self.cv_results_
        if cv:
            grid = pd.DataFrame(cv["grid"]).drop(columns=["scatter"])
            grid["best"] = (grid["n_latent"] == cv["best"]["n_latent"]) & (grid["omega"] == cv["best"]["omega"])
            out["cv_grid"] = grid
            out["cv_folds"] = pd.DataFrame(cv["folds"]).drop(columns=["scatter"])
        return out

    def derivative_spectra(self) -> np.ndarray:
        """dl/df = A B^+ (eq. 13), [M, Lambda], in label units per unit flux."""
        self._check_fitted()
        return (self.A_ @ np.linalg.pinv(self.B_)) * self.label_scale_[:, None]

    # ------------------------------------------------------------------ persistence
    def _state(self):
        meta = {"n_latent": self.n_latent_, "omega": self.omega_, "n_pixels": self.n_pixels_,
                "chi2_history": self.chi2_history_, "cv_results": self.cv_results_}
        arrays = {"A": self.A_, "B": self.B_, "s": self.s_, "label_center": self.label_center_,
                  "label_scale": self.label_scale_, "z_train": self.z_train_,
                  "z_mean": self.z_mean_, "z_precision": self.z_precision_}
        if self.wave_ is not None:
            arrays["wave"] = self.wave_
        return meta, arrays

    def _set_state(self, meta, arrays):
        self.n_latent_, self.omega_ = meta["n_latent"], meta["omega"]
        self.n_pixels_ = meta["n_pixels"]
        self.chi2_history_ = meta["chi2_history"]
        self.cv_results_ = meta["cv_results"]
        self.A_, self.B_, self.s_ = arrays["A"], arrays["B"], arrays["s"]
        self.label_center_, self.label_scale_ = arrays["label_center"], arrays["label_scale"]
        self.z_train_ = arrays["z_train"]
        self.z_mean_, self.z_precision_ = arrays["z_mean"], arrays["z_precision"]
        self.wave_ = arrays.get("wave")
