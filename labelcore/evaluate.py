"""Evaluation: bias and scatter per label (overall and in S/N bins), the error model of
SLAM's Table 1, learning-curve tables. Pure numpy/pandas: the app plots these."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from labelcore.errors import ValidationError

SNR_BINS = (5, 20, 40, 60, 80, 100, 120, np.inf)


def bias_scatter(pred, truth, names, snr=None, bins=SNR_BINS) -> pd.DataFrame:
    """Bias (mean residual) and scatter (std) per label, overall (``snr_lo = nan``) and per
    S/N bin when ``snr`` is given (SLAM eqs. 9-10; NaN truths are skipped)."""
    pred = np.asarray(pred, float)
    truth = np.asarray(truth, float)
    if pred.shape != truth.shape or pred.ndim != 2 or pred.shape[1] != len(names):
        raise ValidationError(f"pred {pred.shape} and truth {truth.shape} must be [N, {len(names)}]")
    rows = []

    def add(sel, lo, hi):
        for j, n in enumerate(names):
            r = pred[sel, j] - truth[sel, j]
            r = r[np.isfinite(r)]
            rows.append({"label": n, "snr_lo": lo, "snr_hi": hi, "n": r.size,
                         "bias": r.mean() if r.size else np.nan,
                         "scatter": r.std(ddof=1) if r.size > 1 else np.nan})

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


# ------------------------------------------------------------------ learning curves
def learning_curves(model) -> dict[str, pd.DataFrame]:
    """The training diagnostics of a fitted model as tidy tables (what the app's learning-
    curve page plots, and what a run stores under ``curves/``).

    CNN (Guiglion 2020 Fig. 5)
        ``epochs``: member, epoch, train_loss, test_loss, test_mae, kept;
        ``members``: member, stop_epoch, final_test_loss, kept, loss_cut (the
        percentile cut of the final test loss above which members are dropped).
    SLAM (Zhang 2020 sections 2.2, 3.3)
        ``pixels``: pixel, wave, C, gamma, cv_mse, cv_md, mse, md (the chosen grid point);
        ``grid``: pixel, wave, C, gamma, cv_mse, cv_md, refined, chosen (every grid point).
    Lux (Horta 2024 section 4.2, Appendix A)
        ``chi2``: step, agenda, iteration, chi2_label, chi2_flux, seconds (final training);
        ``cv_grid``: n_latent, omega, metric, metric_se, chi2..., best (when CV was run);
        ``cv_folds``: one row per fold and grid point.
    """
    name = type(model).__name__
    if not hasattr(model, "label_names_"):
        raise ValidationError(f"this {name} is not fitted; it has no learning curves")
    wave = getattr(model, "wave_", None)
    if name == "CNN":
        lc = model.learning_curves_
        n_mem, n_ep = lc["test_loss"].shape
        kept = np.asarray(model.kept_members_, bool)
        ep = pd.DataFrame({"member": np.repeat(np.arange(n_mem), n_ep),
                           "epoch": np.tile(np.arange(1, n_ep + 1), n_mem),
                           **{k: np.asarray(v, float).ravel() for k, v in lc.items()},
                           "kept": np.repeat(kept, n_ep)})
        ep = ep[np.isfinite(ep["test_loss"])].reset_index(drop=True)
        mem = pd.DataFrame({"member": np.arange(n_mem), "stop_epoch": np.asarray(model.stop_epoch_),
                            "final_test_loss": np.asarray(model.final_test_loss_, float), "kept": kept,
                            "loss_cut": float(model.loss_cut_)})
        return {"epochs": ep, "members": mem}
    if name == "SLAM":
        J = model.n_pixels_
        w = np.asarray(wave, float) if wave is not None else np.arange(J, dtype=float)
        pix = pd.DataFrame({"pixel": np.arange(J), "wave": w, "C": model.C_, "gamma": model.gamma_,
                            "cv_mse": model.cv_mse_, "cv_md": model.cv_md_, "mse": model.mse_,
                            "md": model.md_})
        g = np.asarray(model.cv_mse_grid_)           # [J, n_C, n_gamma]
        nc, ng = g.shape[1], g.shape[2]
        Cs, gams = np.asarray(model.C_grid, float), np.asarray(model.gammas_, float)
        flat = g.reshape(J, -1)
        chosen = np.zeros(flat.shape, bool)
        chosen[np.arange(J), np.nanargmin(flat, axis=1)] = True
        grid = pd.DataFrame({"pixel": np.repeat(np.arange(J), nc * ng), "wave": np.repeat(w, nc * ng),
                             "C": np.tile(np.repeat(Cs, ng), J), "gamma": np.tile(np.tile(gams, nc), J),
                             "cv_mse": g.ravel(), "cv_md": np.asarray(model.cv_md_grid_).ravel(),
                             "refined": np.asarray(model.cv_refined_grid_, bool).ravel(),
                             "chosen": chosen.ravel()})
        return {"pixels": pix, "grid": grid}
    if name == "Lux":
        hist = pd.DataFrame(model.chi2_history_)
        hist.insert(0, "step", np.arange(1, len(hist) + 1))
        out = {"chi2": hist}
        cv = model.cv_results_
        if cv:
            grid = pd.DataFrame(cv["grid"]).drop(columns=["scatter"])
            grid["best"] = (grid["n_latent"] == cv["best"]["n_latent"]) & (grid["omega"] == cv["best"]["omega"])
            out["cv_grid"] = grid
            out["cv_folds"] = pd.DataFrame(cv["folds"]).drop(columns=["scatter"])
        return out
    raise ValidationError(f"no learning curves for a {name}")
