"""Quality cuts and presets (the papers' sample selections) on canonical tables.

A cut is a small mapping:

* ``{column: c, op: OP, value: v}`` with OP one of ``< <= > >= == != between in not_in``
  (``between`` takes ``[lo, hi]``, open interval as in the papers' "a < x < b");
  ``column`` may be a list, meaning the cut applies to each column (all must pass);
* ``{notnull: [c1, c2, ...]}`` -- all listed columns present (not NaN);
* ``{expr: "parallax_err / parallax < 0.15"}`` -- a :meth:`pandas.DataFrame.eval`
  expression over columns (arithmetic and comparisons only);
* ``optional: true`` -- skip (and report as skipped) when a column is absent, instead of
  raising.

:func:`apply_cuts` returns the boolean selection and a table of counts after each cut,
which the app and the CLI show so a user sees where a sample shrinks. NaN never passes a
comparison (a missing value fails ``teff > 4000``), which is the papers' behaviour.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from labelcore.data.cutspec import describe_cut, validate_cuts
from labelcore.errors import EmptySelectionError, ValidationError


def _columns_of(c: dict, df: pd.DataFrame) -> list[str]:
    if "notnull" in c:
        return list(c["notnull"])
    if "expr" in c:
        # names, not the exponents of numbers (1e5)
        return [t for t in re.findall(r"(?<![\w.])[A-Za-z_]\w*", c["expr"]) if t not in ("and", "or", "not")]
    return c["column"] if isinstance(c["column"], list) else [c["column"]]


def evaluate_cut(df: pd.DataFrame, c: dict) -> np.ndarray:
    """Boolean [len(df)] for one cut. Raises ValidationError naming absent columns."""
    cols = _columns_of(c, df)
    absent = [x for x in cols if x not in df.columns]
    if absent:
        raise ValidationError(f"cut '{describe_cut(c)}' needs columns {absent} absent from the table")
    if "notnull" in c:
        return df[cols].notna().all(axis=1).to_numpy()
    if "expr" in c:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = df.eval(c["expr"])
        return np.asarray(r, dtype=bool) & ~pd.isna(r).to_numpy()
    ok = np.ones(len(df), bool)
    for col in cols:
        s = df[col]
        v = c["value"]
        op = c["op"]
        if op in ("in", "not_in"):
            r = s.isin(v if isinstance(v, list) else [v]).to_numpy()
            r = r if op == "in" else ~r & s.notna().to_numpy()
        else:
            x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float) if op != "==" or \
                pd.api.types.is_numeric_dtype(s) else s.to_numpy()
            with np.errstate(invalid="ignore"):
                if op == "between":
                    r = (x > v[0]) & (x < v[1])
                elif op == "<":
                    r = x < v
                elif op == "<=":
                    r = x <= v
                elif op == ">":
                    r = x > v
                elif op == ">=":
                    r = x >= v
                elif op == "==":
                    r = x == v
                else:
                    r = (x != v) & pd.notna(x)
        ok &= np.asarray(r, dtype=bool)
    return ok


def apply_cuts(df: pd.DataFrame, cuts, allow_empty: bool = False):
    """Apply ``cuts`` in order. Returns ``(selection, counts)``; ``counts`` is a DataFrame
    with one row per cut: description, stars passing this cut alone, stars left after it,
    and whether it was skipped (optional cut on an absent column).

    Raises :class:`EmptySelectionError` if nothing is left (unless ``allow_empty``).
    """
    validate_cuts(cuts)
    sel = np.ones(len(df), bool)
    rows = [{"cut": "input", "passing": len(df), "remaining": len(df), "skipped": False}]
    for c in cuts:
        cols = _columns_of(c, df)
        if c.get("optional") and any(x not in df.columns for x in cols):
            rows.append({"cut": describe_cut(c), "passing": len(df), "remaining": int(sel.sum()),
                         "skipped": True})
            continue
        m = evaluate_cut(df, c)
        sel &= m
        rows.append({"cut": describe_cut(c), "passing": int(m.sum()), "remaining": int(sel.sum()),
                     "skipped": False})
    counts = pd.DataFrame(rows)
    if not allow_empty and not sel.any():
        raise EmptySelectionError(
            "no star passes the cuts; counts after each cut:\n" + counts.to_string(index=False)
        )
    return sel, counts
