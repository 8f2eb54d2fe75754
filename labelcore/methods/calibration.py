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
errors e_j: r ~ N(0, sigma_total^2 + e_j^2) for most stars, and a fitted fraction of
catastrophic fits (at most half) widened by a fitted width of at least three times the
residuals' robust scale (the "good plus bad" mixture of Hogg, Bovy & Lang 2010): a
Gaussian likelihood lets a few catastrophic fits inflate every error bar. Earlier versions
used a Student t (4 degrees of freedom) with e_j inside its scale; where the label noise
is much larger than the method's error (the CNN's Teff: 25 K against the catalogue's 60-80
K) its narrower core pushes sigma_total towards zero, so calibrated errors came out far
too small. The mixture's core is Gaussian and unbiased there.

The part the formal error misses depends on the star, not only on its S/N: a hot dwarf's
Teff is pinned by strong Balmer lines, a metal-poor giant's [alpha/M] by weak ones. Given the
stars' predicted labels (out of fold, as the model will know them at prediction time), the
floor and the noise term are scaled by a log-linear factor in the standardised predicted
labels x:

    sigma_total^2 = (alpha sigma_formal)^2 + (c^2 + (a / (S/N))^2) exp(2 clip(beta_j . x, +-2)),

the form of APOGEE's uncertainty model (ln sigma linear in Teff, [M/H] and S/N, fitted to
repeat observations; Holtzman et al. 2015, Joensson et al. 2020), fitted with the rest
(L-BFGS from the label-free fit, then Nelder-Mead). The clip keeps a star far outside the
training labels from a factor beyond e^2. On the saved held-out runs of
``benchmarks/bench_accuracy.py`` (9 method x set-up runs) it raised the label x S/N bins
within 0.8-1.25 from 173 to 179 of 180, and the bins of each label's z-spread in the
terciles of each true label from 343 to 410 of 432. A log-linear factor follows the trend,
not every turn of it: SLAM's LAMOST-like Teff error at S/N 60-80 was 60 K for every star;
it is now 46-50 K above 5200 K and 59-61 K below, where the residuals are 17-31 K and
66-69 K.

Then factors rescale sigma_total so that the out-of-fold z-spread (below) is one: first
over all stars (the mixture's Gaussian core is not the 16-84 % range of every residual
distribution), then in four S/N quartiles, where the law's shape misses (the
three-parameter law alone left the z-spread of Lux's APOGEE-like [Mg/Fe] at 0.74 in the
lowest S/N bin); the quartile factors are interpolated linearly in log S/N between the
quartiles' median S/N (constant beyond). Each factor is shrunk towards one by its own
uncertainty (a log-normal prior of width 0.25, :data:`KAPPA_PRIOR`, times the z-spread's
sampling error over its sensitivity to the factor): a quartile of 750 stars whose residuals
are dominated by label noise cannot measure its own error to better than ~30 %, and the
unregularised factor there gave z-spreads of 1.40 on held-out stars (the CNN's Teff at
S/N 100-150).

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

#: K of the error-calibration refits (``LabelMethod.calibrate_errors``, training runs, the
#: CLI). The refits train on (K-1)/K of the stars and are worse than the final model where
#: it still gains from more stars, so the calibrated errors come out conservative: the
#: CNN's 2-fold refits left 10 of 20 label x S/N bins at z-spreads of 0.57-0.78, its 5-fold
#: refits 1 (benchmarks/bench_accuracy.py).
DEFAULT_CALIBRATION_FOLDS = 5


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
    """sigma_total^2 = (alpha sigma_formal)^2 + (floor^2 + (snr_coef / S/N)^2) g(x) per label,
    times the S/N-quartile factors; g(x) = exp(2 clip(label_slope_j . x, +-LABEL_CLIP)) with x
    the predicted labels standardised by ``label_mean`` and ``label_scale`` (g = 1 for a
    model fitted without labels)."""

    alpha: np.ndarray
    floor: np.ndarray
    snr_coef: np.ndarray
    n_stars: np.ndarray
    snr_knots: np.ndarray | None = None     # [K] median S/N of the quartiles
    kappa: np.ndarray | None = None         # [M, K] z-spread factors at the knots
    label_mean: np.ndarray | None = None    # [M] of the predicted labels the slopes see
    label_scale: np.ndarray | None = None   # [M]
    label_slope: np.ndarray | None = None   # [M, M]: row j scales label j's floor + noise term

    @classmethod
    def fit(cls, resid, formal, snr, label_err=None, labels=None) -> ErrorModel:
        """Maximum-likelihood fit to out-of-fold residuals ``resid`` [N, M] (prediction -
        training label) with the formal errors ``formal`` [N, M] and S/N [N] of the same
        stars; ``label_err`` [N, M] the training labels' own errors (NaN/None = 0);
        ``labels`` [N, M] the out-of-fold *predicted* labels, for the label-dependent term
        (None: no label dependence)."""
        resid = np.asarray(resid, float)
        formal = np.asarray(formal, float)
        snr = np.asarray(snr, float)
        if resid.ndim != 2 or formal.shape != resid.shape or snr.shape != resid.shape[:1]:
            raise ValidationError(f"residuals {resid.shape}, formal errors {formal.shape} and S/N {snr.shape} "
                                  "do not match")
        le = np.zeros_like(resid) if label_err is None else np.nan_to_num(np.asarray(label_err, float), nan=0.0)
        m = resid.shape[1]
        mean = scale = slope = x = None
        if labels is not None:
            labels = np.asarray(labels, float)
            if labels.shape != resid.shape:
                raise ValidationError(f"predicted labels {labels.shape} do not match the residuals {resid.shape}")
            fin_l = np.where(np.isfinite(labels), labels, np.nan)
            if np.all(np.isnan(fin_l), axis=0).any():
                raise ValidationError("a label has no finite out-of-fold prediction")
            mean, scale = np.nanmean(fin_l, axis=0), np.nanstd(fin_l, axis=0)
            scale = np.where(scale > 0, scale, 1.0)
            x = _standardise(fin_l, mean, scale)
            slope = np.zeros((m, m))
        alpha, floor, coef, count = (np.zeros(m) for _ in range(4))
        inv_snr = 1.0 / np.clip(snr, 1.0, 1e4)
        fin = np.isfinite(snr)
        edges = np.quantile(snr[fin], [0.0, 0.25, 0.5, 0.75, 1.0]) if fin.sum() >= 80 else None
        knots = None if edges is None else np.array(
            [np.median(snr[fin & (snr >= lo) & (snr <= hi)]) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
        kappa = None if knots is None else np.ones((m, len(knots)))
        for j in range(m):
            ok = np.isfinite(resid[:, j]) & np.isfinite(formal[:, j]) & (formal[:, j] >= 0) & np.isfinite(inv_snr)
            if ok.sum() < 10:
                raise ValidationError(f"label {j}: {int(ok.sum())} out-of-fold residuals are too few to "
                                      "calibrate its errors (need 10)")
            r, fo, iv, e2 = resid[ok, j], formal[ok, j], inv_snr[ok], le[ok, j] ** 2
            xj = None if x is None else x[ok]
            law = _fit_law(r, fo, iv, e2)
            if xj is not None:
                law, slope[j] = _fit_label_law(r, fo, iv, e2, xj, law)
            sj_ = None if slope is None else slope[j]
            law = law + np.log(_shrunk_spread_factor(r, _var(law, fo, iv, sj_, xj), e2))
            alpha[j], floor[j], coef[j] = np.exp(law)
            count[j] = ok.sum()
            if knots is not None:
                var = _var(law, fo, iv, sj_, xj)
                sj = snr[ok]
                for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
                    sel = (sj >= lo) & (sj <= hi)
                    if sel.sum() >= 20:
                        kappa[j, b] = _shrunk_spread_factor(r[sel], var[sel], e2[sel])
        return cls(alpha, floor, coef, count, knots, kappa, mean, scale, slope)

    def total(self, formal, snr, labels=None) -> np.ndarray:
        """sigma_total [N, M] for formal errors [N, M], S/N [N] and, for a model fitted with
        labels, the predicted labels [N, M] of the same stars (a star's non-finite label
        counts as the training mean)."""
        formal = np.asarray(formal, float)
        snr = np.clip(np.asarray(snr, float), 1.0, 1e4)
        rest = self.floor**2 + (self.snr_coef / snr[:, None]) ** 2
        if self.label_slope is not None:
            if labels is None:
                raise ValidationError("this error model depends on the predicted labels: pass labels=")
            labels = np.asarray(labels, float)
            if labels.shape != formal.shape:
                raise ValidationError(f"predicted labels {labels.shape} do not match the formal errors {formal.shape}")
            rest = rest * _label_factor(_standardise(labels, self.label_mean, self.label_scale), self.label_slope.T)
        tot = np.sqrt((self.alpha * formal) ** 2 + rest)
        if self.snr_knots is not None:
            x = np.log(np.where(np.isfinite(snr), snr, np.median(self.snr_knots)))
            k = np.stack([np.interp(x, np.log(self.snr_knots), kj) for kj in self.kappa], axis=1)
            tot = tot * k
        return tot

    _FIELDS = ("alpha", "floor", "snr_coef", "n_stars", "snr_knots", "kappa", "label_mean", "label_scale",
               "label_slope")

    def to_arrays(self) -> dict:
        return {PREFIX + k: np.asarray(getattr(self, k), float) for k in self._FIELDS
                if getattr(self, k) is not None}

    @classmethod
    def from_arrays(cls, arrays: dict) -> ErrorModel | None:
        if PREFIX + "alpha" not in arrays:
            return None
        return cls(*(np.asarray(arrays[PREFIX + k], float) if PREFIX + k in arrays else None for k in cls._FIELDS))

    def table(self, names) -> list[dict]:
        """One record per label (alpha, floor, snr_coef, n_stars and, with a label term,
        its slope per standardised predicted label), e.g. for a run's metrics."""
        out = []
        for j, n in enumerate(names):
            rec = {"label": n, "alpha": float(self.alpha[j]), "floor": float(self.floor[j]),
                   "snr_coef": float(self.snr_coef[j]), "n_stars": int(self.n_stars[j])}
            if self.label_slope is not None:
                rec["label_slope"] = {k: float(self.label_slope[j, i]) for i, k in enumerate(names)}
            out.append(rec)
        return out


#: bound of |beta . x|: the label factor on a star's floor and noise term stays within e^+-2
LABEL_CLIP = 2.0


def _standardise(labels, mean, scale):
    """(labels - mean) / scale with non-finite values at 0 (the mean)."""
    x = (np.asarray(labels, float) - mean) / scale
    return np.where(np.isfinite(x), x, 0.0)


def _label_factor(x, slope):
    """exp(2 clip(x @ slope, +-LABEL_CLIP)): variance factor of the floor and noise term;
    ``slope`` [M] (one label) or [M, M'] (columns per label)."""
    return np.exp(2.0 * np.clip(x @ slope, -LABEL_CLIP, LABEL_CLIP))


def _var(logp, formal, inv_snr, slope=None, x=None):
    a, c, k = np.exp(logp)
    rest = c**2 + (k * inv_snr) ** 2
    if slope is not None:
        rest = rest * _label_factor(x, slope)
    return (a * formal) ** 2 + rest


#: prior width of log(kappa), a factor on the fitted law: the law is trusted to ~25 % where
#: the residuals cannot tell (label noise much larger than the error)
KAPPA_PRIOR = 0.25


def _log_mixture(r, v, frac, wide):
    """Per-star log likelihood of r: a Gaussian of variance v, a fraction ``frac`` of it
    widened by ``wide``^2 (the catastrophic fits)."""
    core = -0.5 * (np.log(2 * np.pi * v) + r**2 / v)
    vw = v + wide**2
    out = -0.5 * (np.log(2 * np.pi * vw) + r**2 / vw)
    return np.logaddexp(np.log1p(-frac) + core, np.log(frac) + out)


def _robust_scale(r):
    return max(float(1.4826 * np.median(np.abs(r - np.median(r)))), float(np.std(r)) * 1e-3, 1e-12)


def _law_bounds(r, inv_snr):
    """The residuals' robust scale and the bounds of log(alpha, floor, snr_coef): from
    negligible to a thousand times what the residuals show (no overflow while searching)."""
    scale = _robust_scale(r)
    lo = np.array([-20.0, np.log(1e-6 * scale), np.log(1e-6 * scale / float(np.max(inv_snr)))])
    hi = np.array([np.log(1e6), np.log(1e3 * scale), np.log(1e3 * scale / float(np.min(inv_snr)))])
    return scale, lo, hi


def _outliers(p, scale):
    """The catastrophic-fit fraction (at most a half) and width (>= 3 x scale) of
    unconstrained parameters p[-2:]."""
    return (0.5 / (1.0 + np.exp(-np.clip(p[-2], -20.0, 20.0))),
            scale * (3.0 + np.exp(np.clip(p[-1], -20.0, 10.0))))


def _fit_law(r, formal, inv_snr, e2):
    """log(alpha, floor, snr_coef) maximising the mixture likelihood of r
    (:func:`_log_mixture`, variance law + e2; the outlier fraction and width fitted too)."""
    scale, lo, hi = _law_bounds(r, inv_snr)
    med = float(np.median(formal))
    start = np.array([np.log(max(min(scale / med, 1e3), 1e-3)) if med > 0 else 0.0, np.log(0.3 * scale),
                      np.log(0.3 * scale / float(np.median(inv_snr))), np.log(0.02 / 0.48), np.log(7.0)])
    tiny = (1e-9 * scale) ** 2

    def nll(p):
        frac, wide = _outliers(p, scale)
        return -float(np.sum(_log_mixture(r, _var(np.clip(p[:3], lo, hi), formal, inv_snr) + e2 + tiny, frac, wide)))

    res = minimize(nll, start, method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 6000, "maxfev": 6000})
    return np.clip(res.x[:3], lo, hi)


def _fit_label_law(r, formal, inv_snr, e2, x, law0):
    """The law with its label term: log(alpha, floor, snr_coef) and the slopes [M] of the
    label factor (:func:`_label_factor`) maximising the mixture likelihood, from the
    label-free fit ``law0`` (L-BFGS, then Nelder-Mead to finish where the bounds' kinks
    stop it)."""
    scale, lo, hi = _law_bounds(r, inv_snr)
    m = x.shape[1]
    tiny = (1e-9 * scale) ** 2
    b_lo = np.r_[lo, np.full(m, -LABEL_CLIP), -20.0, -20.0]
    b_hi = np.r_[hi, np.full(m, LABEL_CLIP), 20.0, 10.0]

    def nll(p):
        p = np.clip(p, b_lo, b_hi)
        frac, wide = _outliers(p, scale)
        v = _var(p[:3], formal, inv_snr, p[3:3 + m], x)
        return -float(np.sum(_log_mixture(r, v + e2 + tiny, frac, wide)))

    start = np.clip(np.r_[law0, np.zeros(m), np.log(0.02 / 0.48), np.log(7.0)], b_lo + 1e-3, b_hi - 1e-3)
    res = minimize(nll, start, method="L-BFGS-B", bounds=list(zip(b_lo, b_hi, strict=True)))
    res = minimize(nll, res.x, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-6})
    p = np.clip(res.x, b_lo, b_hi)
    return p[:3], p[3:3 + m]


def _spread_factor(r, var, e2):
    """kappa such that zscore_spread(r / sqrt(kappa^2 var + e2)) = 1 (bisection in log)."""
    lo, hi = -5.0, 5.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if zscore_spread(r / np.sqrt(np.exp(2 * mid) * var + e2 + 1e-300)) > 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _shrunk_spread_factor(r, var, e2):
    """The z-spread factor kappa (:func:`_spread_factor`) shrunk towards one by its own
    uncertainty: log kappa ~ N(log kappa_hat, se^2) times a N(0, KAPPA_PRIOR^2) prior. se is the
    z-spread's sampling error (0.96 / sqrt(n) for Gaussian z) divided by the spread's
    sensitivity to kappa, which vanishes where the label noise e2 dominates: there the
    residuals cannot say what the error is and the fitted law stands."""
    lk = _spread_factor(r, var, e2)
    h = 0.05
    s_up = zscore_spread(r / np.sqrt(np.exp(2 * (lk + h)) * var + e2 + 1e-300))
    s_dn = zscore_spread(r / np.sqrt(np.exp(2 * (lk - h)) * var + e2 + 1e-300))
    slope = abs(np.log(s_dn) - np.log(s_up)) / (2 * h)       # -d log spread / d log kappa
    se2 = (0.96**2 / r.size) / max(slope, 1e-6) ** 2
    return float(np.exp(lk * KAPPA_PRIOR**2 / (KAPPA_PRIOR**2 + se2)))
