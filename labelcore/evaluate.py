"""Evaluation: bias and scatter per label (overall and in S/N bins), the table of a run's
held-out metrics, the error model of SLAM's Table 1. Pure numpy/pandas: the app plots and
tabulates these. (A method's learning curves are its own: ``model.learning_curves()``.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from labelcore.constants import SNR_BINS
from labelcore.errors import ValidationError
from labelcore.methods import capabilities as caps
from labelcore.methods.calibration import zscore_spread


def bias_scatter(pred, truth, names, snr=None, bins=SNR_BINS, errors=None, total_errors=None) -> pd.DataFrame:
    """Bias (mean residual) and scatter (std) per label, overall (``snr_lo = nan``) and per
    S/N bin when ``snr`` is given (SLAM eqs. 9-10; NaN truths are skipped). With
    ``errors`` (formal) and/or ``total_errors`` (calibrated) [N, M]: also ``z_formal`` /
    ``z_total``, the z-spread of (pred - truth) / sigma
    (:func:`labelcore.methods.calibration.zscore_spread`; 1 when the errors are right)."""
    pred = np.asarray(pred, float)
    truth = np.asarray(truth, float)
    if pred.shape != truth.shape or pred.ndim != 2 or pred.shape[1] != len(names):
        raise ValidationError(f"pred {pred.shape} and truth {truth.shape} must be [N, {len(names)}]")
    sig = {k: np.asarray(v, float) for k, v in (("z_formal", errors), ("z_total", total_errors)) if v is not None}
    for k, v in sig.items():
        if v.shape != pred.shape:
            raise ValidationError(f"{k[2:]} errors {v.shape} must match the predictions {pred.shape}")
    rows = []

    def add(sel, lo, hi):
        for j, n in enumerate(names):
            r = pred[sel, j] - truth[sel, j]
            ok = np.isfinite(r)
            row = {"label": n, "snr_lo": lo, "snr_hi": hi, "n": int(ok.sum()),
                   "bias": r[ok].mean() if ok.any() else np.nan,
                   "scatter": r[ok].std(ddof=1) if ok.sum() > 1 else np.nan}
            for k, v in sig.items():
                with np.errstate(invalid="ignore", divide="ignore"):
                    row[k] = zscore_spread(r[ok] / v[sel, j][ok])
            rows.append(row)

    add(np.ones(len(pred), bool), np.nan, np.nan)
    if snr is not None:
        snr = np.asarray(snr, float)
        for lo, hi in zip(bins[:-1], bins[1:], strict=True):
            add((snr >= lo) & (snr < hi), lo, hi)
    return pd.DataFrame(rows)


def snr_bin_labels(snr_lo, snr_hi) -> list[str]:
    """Labels of :func:`bias_scatter`'s S/N bins: "all" for the overall row, "20–40",
    "≥ 150" for an open last bin."""
    out = []
    for lo, hi in zip(snr_lo, snr_hi, strict=True):
        if lo is None or (isinstance(lo, float) and np.isnan(lo)):
            out.append("all")
        elif np.isinf(hi):
            out.append(f"≥ {lo:g}")
        else:
            out.append(f"{lo:g}–{hi:g}")
    return out


def _model(s, a, b, c):
    return a * np.exp(-b * s) + c


def fit_error_model(snr, resid, bins=SNR_BINS, min_count=10) -> dict:
    """Fit sigma(S/N) = a exp(-b S/N) + c (Zhang et al. 2020, Table 1) to the scatter of
    ``resid`` [N] in S/N bins (bin centre = median S/N of its stars). Returns a, b, c and
    the binned points."""
    snr = np.asarray(snr, float)
    resid = np.asarray(resid, float)
    xs, ys = [], []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        m = (snr >= lo) & (snr < hi) & np.isfinite(resid)
        if m.sum() >= min_count:
            xs.append(np.median(snr[m]))
            ys.append(np.std(resid[m], ddof=1))
    if len(xs) < 3:
        raise ValidationError(f"need >= 3 S/N bins with >= {min_count} stars to fit a exp(-b S/N) + c")
    xs, ys = np.array(xs), np.array(ys)
    p0 = (max(ys[0] - ys[-1], 1e-6) * np.exp(0.05 * xs[0]), 0.05, max(ys.min(), 1e-9))
    popt, _ = curve_fit(_model, xs, ys, p0=p0, bounds=([0, 0, 0], [np.inf, 5, np.inf]), maxfev=20000)
    return {"a": float(popt[0]), "b": float(popt[1]), "c": float(popt[2]), "snr": xs, "scatter": ys}


def error_from_snr(snr, model: dict):
    return _model(np.asarray(snr, float), model["a"], model["b"], model["c"])


def metrics_table(metrics: dict) -> pd.DataFrame:
    """A run's held-out bias/scatter records (``metrics.json``'s ``bias_scatter``) as a
    table: one row per label and S/N bin with at least one star (label, S/N, n, bias,
    scatter, and the z-spreads ``z_formal``/``z_total`` when the run has them)."""
    df = pd.DataFrame(metrics["bias_scatter"])
    df["S/N"] = snr_bin_labels(df.snr_lo, df.snr_hi)
    df = df[df["n"] > 0]
    cols = ["label", "S/N", "n", "bias", "scatter"] + [c for c in ("z_formal", "z_total") if c in df]
    return df[cols].reset_index(drop=True)


def spectrum_fits(model, flux, flux_err=None) -> dict[str, np.ndarray]:
    """What the Spectra page shows of each spectrum, computed by the core once: the
    model's ``labels`` and ``errors`` [N, M] and, for a method with model spectra
    (capability ``model_spectra``), the ``model`` flux at those labels [N, P] and the
    ``residual`` (observed - model) / sigma [N, P] (observed - model without errors; NaN on
    bad pixels). Also ``derivative`` [M, P] for a method with derivative spectra."""
    flux = np.asarray(flux, float)
    y, e = model.predict(flux, flux_err=flux_err, return_std=True)
    out = {"labels": np.asarray(y, float), "errors": np.asarray(e, float)}
    if model.supports(caps.MODEL_SPECTRA):
        ok = np.isfinite(y).all(axis=1)
        mod = np.full(flux.shape, np.nan)
        if ok.any():
            mod[ok] = model.predict_spectra(y[ok])
        with np.errstate(invalid="ignore", divide="ignore"):
            res = (flux - mod) / np.asarray(flux_err, float) if flux_err is not None else flux - mod
        out["model"] = mod
        out["residual"] = np.where(np.isfinite(res), res, np.nan)
    if model.supports(caps.DERIVATIVE_SPECTRA):
        out["derivative"] = np.asarray(model.derivative_spectra(), float)
    return out
