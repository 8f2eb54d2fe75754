"""Absolute magnitudes from parallaxes (Guiglion et al. 2020, section 3.2).

``M = m + 5 log10(parallax / mas) - 10`` (equivalently ``m - 5 log10(d/pc) + 5``), with
optional extinction correction ``- (A_lambda/A_V) A_V``. Errors propagate
``sigma_M^2 = sigma_m^2 + (5 / ln 10 * sigma_plx / plx)^2``. Non-positive or missing
parallaxes give NaN (never a silent wrong distance); callers decide the policy.

Below the data layer (numpy/pandas only) so that the synthetic survey and the preparation
of real catalogues share one implementation; the public home is
:mod:`labelcore.prep.photometry`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelcore.constants import EXTINCTION_COEFF, PHOT_BANDS
from labelcore.errors import ValidationError


def absolute_magnitude(m, parallax_mas, m_err=None, parallax_err=None, a_lambda=None):
    m = np.asarray(m, float)
    plx = np.asarray(parallax_mas, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        M = np.where(plx > 0, m + 5.0 * np.log10(np.where(plx > 0, plx, 1.0)) - 10.0, np.nan)
        if a_lambda is not None:
            M = M - np.asarray(a_lambda, float)
        if m_err is None and parallax_err is None:
            return M
        em = np.zeros_like(M) if m_err is None else np.asarray(m_err, float)
        ep = np.zeros_like(M) if parallax_err is None else np.asarray(parallax_err, float)
        eM = np.sqrt(em**2 + (5.0 / np.log(10) * ep / plx) ** 2)
    return M, np.where(np.isfinite(M), eM, np.nan)


def absolute_magnitudes(table: pd.DataFrame, bands=PHOT_BANDS, extinction_correct=False,
                        prefix="abs_") -> pd.DataFrame:
    """``abs_<band>`` and ``abs_<band>_err`` columns for a catalogue with ``parallax``,
    ``parallax_err`` and apparent magnitudes (``<band>``, ``<band>_err``)."""
    need = ["parallax", *bands] + (["a_v"] if extinction_correct else [])
    miss = [c for c in need if c not in table.columns]
    if miss:
        raise ValidationError(f"absolute magnitudes need columns {miss}")
    out = {}
    for b in bands:
        a = EXTINCTION_COEFF[b] * table["a_v"].to_numpy(float) if extinction_correct else None
        m_err = table[f"{b}_err"].to_numpy(float) if f"{b}_err" in table else None
        p_err = table["parallax_err"].to_numpy(float) if "parallax_err" in table else None
        res = absolute_magnitude(table[b].to_numpy(float), table["parallax"].to_numpy(float), m_err, p_err, a)
        # without any error column there is no error to propagate: NaN, not a made-up zero
        M, eM = res if isinstance(res, tuple) else (res, np.full(len(table), np.nan))
        out[prefix + b] = M
        out[prefix + b + "_err"] = eM
    return pd.DataFrame(out, index=table.index)


def photometry_matrix(table: pd.DataFrame, bands=PHOT_BANDS) -> np.ndarray:
    """The CNN's photometric input (Guiglion 2020): 8 absolute magnitudes + A_V, [N, 9]."""
    absm = absolute_magnitudes(table, bands)
    if "a_v" not in table.columns:
        raise ValidationError("photometric input needs column 'a_v' (extinction)")
    return np.column_stack([absm[[f"abs_{b}" for b in bands]].to_numpy(),
                            table["a_v"].to_numpy(float)])
