"""Cross-match survey tables by Gaia ``source_id`` (Guiglion 2020: RAVE x APOGEE by Gaia
DR2 id; Horta 2024: APOGEE x GALAH), or by any other id column (a survey's own ids)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelcore.errors import EmptySelectionError, ValidationError


def dedupe(df: pd.DataFrame, on="source_id", policy="best_snr", snr_col="snr") -> pd.DataFrame:
    """One row per ``on`` value. ``policy``: ``best_snr`` keeps the highest-S/N row (repeat
    observations), ``first`` the first row, ``error`` raises naming a duplicated id."""
    dup = df[on].duplicated(keep=False) & df[on].notna()
    if not dup.any():
        return df
    if policy == "error":
        v = df.loc[dup, on].iloc[0]
        v = int(v) if isinstance(v, (float, np.floating)) and float(v).is_integer() else v
        raise ValidationError(f"duplicate {on} {v} ({int(dup.sum())} rows)")
    if policy == "best_snr":
        if snr_col not in df.columns:
            raise ValidationError(f"policy best_snr needs column {snr_col!r}")
        order = np.argsort(-df[snr_col].fillna(-np.inf).to_numpy(), kind="stable")
        df = df.iloc[order]
    out = df.drop_duplicates(subset=[on], keep="first")
    return out.sort_index()


def _match_keys(a: pd.Series, b: pd.Series):
    """Both id columns as integers when every id of both is an integer (Gaia source_id,
    LAMOST obsid, read as float or text alike), else as stripped strings (APOGEE 2MASS
    ids): the same id never fails to match because one table stored it differently."""
    na, nb = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    numeric = (na.notna() | a.isna()).all() and (nb.notna() | b.isna()).all()
    if numeric:
        integral = all(np.all(np.mod(x.dropna().to_numpy(float), 1) == 0) for x in (na, nb))
        if integral:
            return na.astype("Int64"), nb.astype("Int64")
    return a.astype(str).str.strip(), b.astype(str).str.strip()


def crossmatch(left: pd.DataFrame, right: pd.DataFrame, on="source_id",
               suffixes=("", "_2"), duplicates="best_snr", how="inner") -> pd.DataFrame:
    """Join two tables on ``on`` (rows with a missing id never match). Duplicated ids in
    ``right`` are reduced by :func:`dedupe` first; ``left`` keeps all its rows (each
    spectrum of a star gets the star's labels)."""
    for name, df in (("left", left), ("right", right)):
        if on not in df.columns:
            raise ValidationError(f"{name} table has no cross-match column {on!r}")
    r = dedupe(right[right[on].notna()], on, duplicates)
    l = left[left[on].notna()] if how == "inner" else left
    key_l, key_r = _match_keys(l[on], r[on])
    out = l.assign(**{on: key_l}).merge(r.assign(**{on: key_r}), on=on, how=how,
                                         suffixes=suffixes)
    if how == "inner" and out.empty:
        raise EmptySelectionError(f"cross-match on {on!r} found no common star "
                                  f"({len(l)} x {len(r)} rows)")
    return out
