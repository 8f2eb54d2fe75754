"""Calibrated label uncertainties: a cross-validated error model per label, on top of each
method's formal error.

Every method reports its paper's *formal* error (Lux: Fisher information with A, B taken
as exact; SLAM: the Jacobian at the maximum likelihood; The Cannon: the curvature with
theta taken as exact; CNN: the spread of the ensemble). None of them accounts for what
the model gets wrong, so on held-out stars the spread of (prediction - truth) / sigma is
rarely one. The *total* error adds what the out-of-fold residuals show, per label j:

    sigma_total^2 = (alpha_j sigma_formal)^2 + c_j^2 + (a_j / (S/N))^2 ,

alpha_j rescales the formal error, c_j is the floor of model error, and a_j / (S/N) a
noise term the formal error misses (the form of SLAM's a exp(-b S/N) + c, Zhang et al.
2020 Table 1, in the 1/(S/N) shape of photon noise). The three numbers are fitted by
maximum likelihood to out-of-fold residuals of the training stars (K-fold refits, see
:meth:`LabelMethod.calibrate_errors`), whose training labels carry their own catalogue
errors e_j: r / sqrt(sigma_total^2 + e_j^2) follows a unit-scale Student t with 4 degrees
of freedom (a Gaussian core with the heavier tails that model misfits give: a Gaussian
likelihood lets a few catastrophic fits inflate every error bar). Last, one factor per
label rescales sigma_total so that the out-of-fold z-spread (below) is exactly one.

How calibration is measured (:func:`zscore_spread`): half the 16-84th percentile range of
z = (prediction - truth) / sigma, which is 1 for Gaussian z with the right sigma and is
not dominated by a few catastrophic outliers as the standard deviation is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from labelcore.errors import ValidationError

PREFIX = "err_"


def zscore_spread(z) -> float:
    """Half of the 16-84th percentile range of the finite values of ``z`` (1 for a
    unit Gaussian); NaN with fewer than 5 values."""
    z = np.asarray(z, float)
    z = z[np.isfinite(z)]
    if z.size < 5:
        return float("nan")
    lo, hi = np.percentile(z, [15.865, 84.135])
    return float(0.5 * (hi - lo))


@dataclass
class ErrorModel:
    """sigma_total^2 = (alpha sigma_formal)^2 + floor^2 + (snr_coef / S/N)^2 per label."""

    alpha: np.ndarray
    floor: np.ndarray
    snr_coef: np.ndarray
    n_stars: np.ndarray

    @classmethod
    def fit(cls, resid, formal, snr, label_err=None) -> ErrorModel:
        """Maximum-likelihood fit to out-of-fold residuals ``resid`` [N, M] (prediction -
        training label) with the formal errors ``formal`` [N, M] and S/N [N] of the same
        stars; ``label_err`` [N, M] the training labels' own errors (NaN/None = 0)."""
        resid = np.asarray(resid, float)
        formal = np.asarray(formal, float)
        snr = np.asarray(snr, float)
        if resid.ndim != 2 or formal.shape != resid.shape or snr.shape != resid.shape[:1]:
            raise ValidationError(f"residuals {resid.shape}, formal errors {formal.shape} and S/N {snr.shape} "
                                  "do not match")
        le = np.zeros_like(resid) if label_err is None else np.nan_to_num(np.asarray(label_err, float), nan=0.0)
        m = resid.shape[1]
        alpha, floor, coef, count = (np.zeros(m) for _ in range(4))
        inv_snr = 1.0 / np.clip(snr, 1.0, 1e4)
        for j in range(m):
            ok = np.isfinite(resid[:, j]) & np.isfinite(formal[:, j]) & (formal[:, j] >= 0) & np.isfinite(inv_snr)
            if ok.sum() < 10:
                raise ValidationError(f"label {j}: {int(ok.sum())} out-of-fold residuals are too few to "
                                      "calibrate its errors (need 10)")
            r, fo, iv, e2 = resid[ok, j], formal[ok, j], inv_snr[ok], le[ok, j] ** 2
            p = _fit_one(r, fo, iv, e2)
            kappa = _spread_factor(r, _var(p, fo, iv), e2)
            alpha[j], floor[j], coef[j] = np.exp(p) * kappa
            count[j] = ok.sum()
        return cls(alpha, floor, coef, count)

    def total(self, formal, snr) -> np.ndarray:
        """sigma_total [N, M] for formal errors [N, M] and S/N [N]."""
        formal = np.asarray(formal, float)
        inv = 1.0 / np.clip(np.asarray(snr, float), 1.0, 1e4)[:, None]
        return np.sqrt((self.alpha * formal) ** 2 + self.floor**2 + (self.snr_coef * inv) ** 2)

    def to_arrays(self) -> dict:
        return {PREFIX + k: np.asarray(getattr(self, k), float) for k in ("alpha", "floor", "snr_coef", "n_stars")}

    @classmethod
    def from_arrays(cls, arrays: dict) -> ErrorModel | None:
        if PREFIX + "alpha" not in arrays:
            return None
        return cls(*(np.asarray(arrays[PREFIX + k], float) for k in ("alpha", "floor", "snr_coef", "n_stars")))

    def table(self, names) -> list[dict]:
        """One record per label (alpha, floor, snr_coef, n_stars), e.g. for a run's metrics."""
        return [{"label": n, "alpha": float(self.alpha[j]), "floor": float(self.floor[j]),
                 "snr_coef": float(self.snr_coef[j]), "n_stars": int(self.n_stars[j])} for j, n in enumerate(names)]


def _var(logp, formal, inv_snr):
    a, c, k = np.exp(logp)
    return (a * formal) ** 2 + c**2 + (k * inv_snr) ** 2


def _fit_one(r, formal, inv_snr, e2, nu: float = 4.0):
    """log(alpha, floor, snr_coef) maximising the Student-t likelihood of r."""
    scale = max(float(1.4826 * np.median(np.abs(r - np.median(r)))), float(np.std(r)) * 1e-3, 1e-12)
    med = float(np.median(formal))
    start = np.log([max(min(scale / med, 1e3), 1e-3) if med > 0 else 1.0, 0.3 * scale,
                    0.3 * scale / float(np.median(inv_snr))])
    lo = np.array([-20.0, np.log(1e-6 * scale), np.log(1e-6 * scale / float(np.max(inv_snr)))])

    def nll(p):
        v = _var(np.maximum(p, lo), formal, inv_snr) + e2 + (1e-9 * scale) ** 2
        return float(np.sum(0.5 * np.log(v) + 0.5 * (nu + 1.0) * np.log1p(r**2 / (nu * v))))

    res = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 4000})
    return np.maximum(res.x, lo)


def _spread_factor(r, var, e2):
    """kappa such that zscore_spread(r / sqrt(kappa^2 var + e2)) = 1 (bisection in log)."""
    lo, hi = -5.0, 5.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if zscore_spread(r / np.sqrt(np.exp(2 * mid) * var + e2 + 1e-300)) > 1.0:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))
