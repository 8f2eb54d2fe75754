"""Is a spectrum like the training spectra? One out-of-distribution test for every method.

A data-driven method labels anything it is given; a spectrum unlike its training set
(non-stellar, absurd values, pure noise, another instrument) still gets plausible labels.
So every method keeps, from ``fit``, an *envelope* of its training spectra and
``predict_details`` flags spectra outside it (``quality["ood"]``, with ``ood_score``; > 1
is outside). The test needs nothing from the method, so it is the same for the CNN, SLAM,
Lux and any method added later.

The envelope (:class:`SpectrumEnvelope`)
---------------------------------------
* The training flux (bad pixels filled with each pixel's median) is reduced by PCA to
  ``K`` components (K = min(20, N/10, P)).
* For a spectrum ``f`` with uncertainties ``sigma`` (from ``flux_err``, or DER_SNR when
  none are given) two numbers are computed:

  - ``residual``: the reduced chi^2 of ``f`` against its own PCA reconstruction,
    ``mean_j (r_j^2 / (sigma_j^2 + m_j^2))`` over good pixels, where ``m_j^2`` is the
    spread the reconstruction leaves in *training* spectra beyond their noise (estimated
    out of fold). Lines the training spectra never had, absurd values and the wrong
    instrument show up here.
  - ``distance``: the Mahalanobis distance of the PCA coefficients,
    ``mean_k z_k^2 / (lambda_k + s^2)`` with ``lambda_k`` the component variance of the
    training spectra net of their noise and ``s^2`` the spectrum's mean noise variance.
    Spectra with the right lines in the wrong amounts (a star far outside the training
    labels, a noise spectrum) show up here.

  - ``line signal``: how much better the spectrum is described by the model than by a
    featureless continuum at its median, ``(chi2_flat - chi2_model) / sqrt(2 n)``, about a
    z-score. Noise around a continuum, which the PCA can mimic with hot, weak-lined stars,
    has none. A spectrum without significant line signal (< 1, or below the 0.5 %
    quantile of the training spectra if that is lower) is flagged: no data-driven method
    can label it. The test is off when the training spectra themselves include
    featureless ones (their 0.5 % quantile <= 0).

  The first two are divided by their thresholds: the ``quantile`` (99.5 %) of the same statistic
  over training spectra scored *out of fold* (2-fold: the PCA of one half scores the other,
  so the thresholds are those of unseen spectra of the same kind), times ``margin``
  (1.25). ``ood_score`` is the largest of the ratios.
* A spectrum whose S/N (median flux / median sigma) is below half the lowest training S/N
  quantile (0.5 %) is flagged too: labels are not trusted where the method never saw such
  noise. Non-finite input (overflow) is flagged with a score of inf.

Measured on synthetic held-out sets of the three set-ups (``tests/methods/test_ood.py``):
good held-out spectra are flagged at < 2 %; pure noise without a continuum, absurd values
(1e300, overflow, negative flux), a broad emission line and a sloped featureless continuum
and noise around a continuum (S/N 5-50, with or without its errors) at > 95 %, in the
RAVE-, LAMOST- and APOGEE-like set-ups.
"""

from __future__ import annotations

import warnings

import numpy as np

from labelcore._numerics import der_snr_sigma, median_snr


class SpectrumEnvelope:
    """The training spectra's envelope (see the module docstring)."""

    def __init__(self, quantile: float = 0.995, margin: float = 1.25, max_components: int = 20):
        self.quantile, self.margin, self.max_components = quantile, margin, max_components

    # ------------------------------------------------------------------ fitting
    @staticmethod
    def _fill(f, bad, median):
        return np.where(bad, median[None, :], f)

    def _basis(self, f, K):
        mu = f.mean(axis=0)
        x = f - mu
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        lam = s[:K] ** 2 / max(f.shape[0] - 1, 1)
        return mu, vt[:K].T, lam

    def fit(self, flux: np.ndarray, err: np.ndarray | None, bad: np.ndarray, seed: int = 0) -> SpectrumEnvelope:
        """Fit on training flux [N, P] (bad pixels flagged in ``bad``), uncertainties
        ``err`` (inf at bad pixels) or None."""
        f = np.asarray(flux, float)
        n, p = f.shape
        sig = self._sigma(f, err, bad)
        median = np.nanmedian(np.where(bad, np.nan, f), axis=0)
        median = np.where(np.isfinite(median), median, 1.0)
        ff = self._fill(f, bad, median)
        K = int(max(1, min(self.max_components, n // 10, p)))
        # out-of-fold scores of the training spectra: each half scored by the other's PCA
        fold = np.random.default_rng(seed).permutation(np.arange(n) % 2)
        resid_sq = np.zeros_like(ff)
        zz = np.zeros((n, K))
        lam_f = []
        for k in (0, 1):
            tr, te = fold != k, fold == k
            mu, V, lam = self._basis(ff[tr], K)
            z = (ff[te] - mu) @ V
            resid_sq[te] = (ff[te] - mu - z @ V.T) ** 2
            zz[te] = z
            lam_f.append(lam)
        good = ~bad
        noise2 = np.where(good, sig**2, np.nan)
        # intrinsic spread of the reconstruction beyond the noise, per pixel
        extra = np.nanmedian(np.where(good, resid_sq, np.nan) - noise2, axis=0)
        self.m2_ = np.maximum(np.where(np.isfinite(extra), extra, 0.0), 1e-8)
        self.mu_, self.V_, lam = self._basis(ff, K)
        noise_mean = float(np.nanmean(noise2))
        self.lam_ = np.maximum(lam - noise_mean, 1e-3 * lam.max())
        self.median_ = median
        r_tr, d_tr = self._stats(resid_sq, zz, sig, good)
        self.thr_residual_ = float(np.quantile(r_tr, self.quantile) * self.margin)
        self.thr_distance_ = float(np.quantile(d_tr, self.quantile) * self.margin)
        # no significant line signal (< 1 sigma better than a flat continuum), where the
        # training spectra do show lines (their 0.5 % quantile on the full-data basis > 0)
        z_in = (ff - self.mu_) @ self.V_
        line_tr = self._line_signal(f, ff, (ff - self.mu_ - z_in @ self.V_.T) ** 2, sig, bad)
        low = float(np.quantile(line_tr, 1.0 - self.quantile))
        self.thr_line_ = min(1.0, low) if low > 0 else -np.inf
        snr = median_snr(f, sig, bad)
        self.min_snr_ = float(0.5 * np.quantile(snr[np.isfinite(snr)], 0.005)) if np.isfinite(snr).any() else 0.0
        return self

    # ------------------------------------------------------------------ scoring
    @staticmethod
    def _sigma(f, err, bad):
        if err is not None:
            return np.where(bad, np.inf, np.asarray(err, float))
        return np.broadcast_to(der_snr_sigma(f, bad)[:, None], f.shape).copy()

    def _line_signal(self, f, ff, resid_sq, sig, bad):
        """How much better the spectrum is described by the training spectra's model than
        by a featureless continuum at its median: (chi2_flat - chi2_model) / sqrt(2 n)."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            w = np.where(bad, 0.0, 1.0 / (sig**2 + self.m2_[None, :]))
            cont = np.nanmedian(np.where(bad, np.nan, f), axis=1)[:, None]
            gain = np.sum(w * (np.where(bad, 0.0, (ff - cont) ** 2) - np.where(bad, 0.0, resid_sq)), axis=1)
            return gain / np.sqrt(2.0 * np.maximum((~bad).sum(1), 1))

    def _stats(self, resid_sq, z, sig, good):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            w = np.where(good, 1.0 / (sig**2 + self.m2_[None, :]), 0.0)
            r = np.sum(w * np.where(good, resid_sq, 0.0), axis=1) / np.maximum(good.sum(1), 1)
            s2 = np.nanmean(np.where(good, sig**2, np.nan), axis=1)
            d = np.mean(z**2 / (self.lam_[None, :] + s2[:, None]), axis=1)
        return r, d

    def score(self, flux: np.ndarray, err: np.ndarray | None, bad: np.ndarray) -> np.ndarray:
        """``ood_score`` [N]: > 1 outside the envelope (inf for non-finite or absurd input)."""
        with warnings.catch_warnings():          # all-NaN rows and overflow are scored, not warned about
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._score(flux, err, bad)

    def _score(self, flux, err, bad):
        f = np.asarray(flux, float)
        absurd = ~np.isfinite(np.where(bad, 0.0, f)).all(axis=1) | (np.abs(np.where(bad, 0.0, f)).max(axis=1) > 1e6)
        f = np.where(absurd[:, None], 0.0, f)
        sig = self._sigma(f, err, bad)
        ff = self._fill(f, bad, self.median_)
        z = (ff - self.mu_) @ self.V_
        resid_sq = (ff - self.mu_ - z @ self.V_.T) ** 2
        r, d = self._stats(resid_sq, z, sig, ~bad)
        out = np.maximum(r / self.thr_residual_, d / self.thr_distance_)
        if np.isfinite(self.thr_line_):   # no significant lines: > 1 below the threshold
            line = self._line_signal(f, ff, resid_sq, sig, bad)
            out = np.maximum(out, 1.0 + (self.thr_line_ - line) / (abs(self.thr_line_) + 1.0))
        snr = median_snr(f, sig, bad)
        low = ~(snr >= self.min_snr_)
        out = np.where(low, np.maximum(out, 1.0 + 1e-9 + np.where(np.isfinite(snr), 0.0, 1.0)), out)
        return np.where(absurd | ~np.isfinite(out), np.inf, out)

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ood_mu": self.mu_, "ood_V": self.V_, "ood_lam": self.lam_, "ood_m2": self.m2_,
                "ood_median": self.median_,
                "ood_thresholds": np.array([self.thr_residual_, self.thr_distance_, self.min_snr_,
                                            self.thr_line_])}

    @classmethod
    def from_arrays(cls, a: dict) -> SpectrumEnvelope | None:
        if "ood_mu" not in a:
            return None                     # a model saved before envelopes existed
        env = cls()
        env.mu_, env.V_, env.lam_, env.m2_ = a["ood_mu"], a["ood_V"], a["ood_lam"], a["ood_m2"]
        env.median_ = a["ood_median"]
        t = [float(x) for x in a["ood_thresholds"]]
        env.thr_residual_, env.thr_distance_, env.min_snr_ = t[:3]
        env.thr_line_ = t[3] if len(t) > 3 else -np.inf
        return env
