"""In-memory containers: :class:`Spectra`, :class:`Labels` and :class:`Catalogue`.

All validate on construction and raise :class:`labelcore.errors.ValidationError` with a
message naming the offending field and, where useful, the first bad row.

Conventions
-----------
* ``Spectra``: one wavelength grid ``wave`` [P] (strictly increasing, Angstrom, vacuum unless
  the manifest says otherwise) for all ``N`` spectra; ``flux`` [N, P]; ``flux_err`` [N, P]
  (1-sigma, strictly positive where the pixel is usable); ``mask`` [N, P] bool, True = bad.
  Non-finite flux or non-finite / non-positive uncertainties are *bad pixels*: they are
  folded into ``mask`` on construction (never silently propagated), and the stored flux of
  a bad pixel is set to 1 (continuum) and its error to ``inf`` so that any weighted sum
  gives it zero weight.
* ``Labels``: values [N, M] with NaN = missing, uncertainties [N, M] (NaN allowed where the
  value is missing; otherwise > 0), canonical lower-case names and units.
* ``Catalogue``: a thin wrapper around a :class:`pandas.DataFrame` with a unique ``id``
  column and helpers to pull labels/photometry out of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from labelcore._numerics import as_real
from labelcore.constants import LABEL_UNITS, PHOT_BANDS
from labelcore.errors import EmptySelectionError, ValidationError

__all__ = ["LABEL_UNITS", "PHOT_BANDS", "Catalogue", "Labels", "Spectra"]

def _as_2d_float(name: str, a, n: int | None = None, p: int | None = None) -> np.ndarray:
    arr = as_real(name, a)
    if arr.ndim == 1 and p is not None and arr.shape[0] == p and n in (None, 1):
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValidationError(f"{name} must be 2-D [N, P]; got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValidationError(f"{name} has {arr.shape[0]} rows; expected {n}")
    if p is not None and arr.shape[1] != p:
        raise ValidationError(f"{name} has {arr.shape[1]} columns; expected {p}")
    return arr


def check_wavelength_grid(wave) -> np.ndarray:
    """Return ``wave`` as float64 1-D array; raise unless finite and strictly increasing."""
    w = as_real("wavelength grid", wave)
    if w.ndim != 1 or w.size < 2:
        raise ValidationError(f"wavelength grid must be 1-D with >= 2 pixels; got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        i = int(np.flatnonzero(~np.isfinite(w))[0])
        raise ValidationError(f"wavelength grid has a non-finite value at pixel {i}")
    d = np.diff(w)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValidationError(
            f"wavelength grid is not strictly increasing at pixel {i + 1} "
            f"({w[i]!r} -> {w[i + 1]!r})"
        )
    return w


@dataclass
class Spectra:
    """A set of spectra on one common wavelength grid.

    Parameters
    ----------
    wave : array [P]
        Strictly increasing wavelength grid (Angstrom).
    flux : array [N, P]
    flux_err : array [N, P], optional
        1-sigma uncertainties. ``None`` means unknown: they are stored as NaN and
        :meth:`ivar` raises, so that methods needing them fail loudly instead of assuming
        a value.
    mask : bool array [N, P], optional
        True marks a bad pixel. Non-finite flux and non-finite/non-positive errors are added.
    ids : array [N], optional
        Unique identifiers; default ``0..N-1`` as strings.
    meta : DataFrame, optional
        Per-spectrum metadata with N rows (``snr``, ``rv``, survey flags, ...).
    """

    wave: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray | None = None
    mask: np.ndarray | None = None
    ids: np.ndarray | None = None
    meta: pd.DataFrame | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.wave = check_wavelength_grid(self.wave)
        p = self.wave.size
        self.flux = _as_2d_float("flux", self.flux, p=p)
        n = self.flux.shape[0]
        if n == 0:
            raise ValidationError("Spectra needs at least one spectrum; got 0 rows")
        if self.flux_err is None:
            self.flux_err = np.full((n, p), np.nan)
            known_err = False
        else:
            self.flux_err = _as_2d_float("flux_err", self.flux_err, n=n, p=p)
            known_err = True
        if self.mask is None:
            mask = np.zeros((n, p), dtype=bool)
        else:
            mask = np.asarray(self.mask)
            if mask.shape != (n, p):
                raise ValidationError(f"mask has shape {mask.shape}; expected {(n, p)}")
            mask = mask.astype(bool, copy=True)
        bad = ~np.isfinite(self.flux)
        if known_err:
            bad |= ~np.isfinite(self.flux_err) | (self.flux_err <= 0)
        mask |= bad
        if mask.all(axis=1).any():
            i = int(np.flatnonzero(mask.all(axis=1))[0])
            raise ValidationError(f"spectrum at row {i} has no usable pixel (all masked/NaN)")
        if mask.any():
            self.flux = np.where(mask, 1.0, self.flux)
            if known_err:
                self.flux_err = np.where(mask, np.inf, self.flux_err)
        self.mask = mask
        if self.ids is None:
            self.ids = np.arange(n).astype(str)
        else:
            self.ids = np.asarray(self.ids)
            if self.ids.shape != (n,):
                raise ValidationError(f"ids has shape {self.ids.shape}; expected ({n},)")
            uniq, first, counts = np.unique(self.ids.astype(str), return_index=True, return_counts=True)
            if (counts > 1).any():
                k = int(np.flatnonzero(counts > 1)[0])
                raise ValidationError(f"spectra {self.name!r}: duplicate id {uniq[k]!r} ({counts[k]} times, first at "
                                      f"row {first[k]}); ids must be unique")
        if self.meta is None:
            self.meta = pd.DataFrame(index=pd.RangeIndex(n))
        else:
            self.meta = pd.DataFrame(self.meta).reset_index(drop=True)
            if len(self.meta) != n:
                raise ValidationError(f"meta has {len(self.meta)} rows; expected {n}")

    # ------------------------------------------------------------------ helpers
    @property
    def n_spectra(self) -> int:
        return self.flux.shape[0]

    @property
    def n_pixels(self) -> int:
        return self.wave.size

    @property
    def has_errors(self) -> bool:
        return not np.isnan(self.flux_err).all()

    def ivar(self) -> np.ndarray:
        """Inverse variance, 0 on bad pixels. Raises if the errors are unknown."""
        if not self.has_errors:
            raise ValidationError(f"spectra {self.name!r} carry no flux uncertainties")
        with np.errstate(divide="ignore"):
            iv = 1.0 / self.flux_err**2
        iv[self.mask] = 0.0
        return iv

    def subset(self, idx) -> Spectra:
        """Rows ``idx`` (indices or boolean mask) as a new :class:`Spectra`."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.size == 0:

            raise EmptySelectionError(f"selection of spectra {self.name!r} is empty")
        return Spectra(
            self.wave,
            self.flux[idx],
            self.flux_err[idx] if self.has_errors else None,
            self.mask[idx],
            self.ids[idx],
            self.meta.iloc[idx].reset_index(drop=True),
            self.name,
        )

    def __len__(self) -> int:
        return self.n_spectra


@dataclass
class Labels:
    """Stellar labels: values [N, M] (NaN = missing), uncertainties [N, M], names, units.

    Parameters
    ----------
    values : array [N, M]
    names : sequence of str
        Canonical lower-case names; must be unique.
    errors : array [N, M], optional
        1-sigma uncertainties; where a value is present its error must be > 0 (or NaN =
        unknown). Infinite values raise.
    units : sequence of str, optional
        Default from :data:`LABEL_UNITS` (``""`` for unknown names).
    ids : array [N], optional
    flags : int array [N, M], optional
        Survey quality flags per label (0 = good).
    """

    values: np.ndarray
    names: list[str]
    errors: np.ndarray | None = None
    units: list[str] | None = None
    ids: np.ndarray | None = None
    flags: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.names = [str(s) for s in self.names]
        m = len(self.names)
        if len(set(self.names)) != m:
            dup = sorted({s for s in self.names if self.names.count(s) > 1})
            raise ValidationError(f"duplicate label names {dup} in {self.names}: names must be unique")
        vals = as_real("label values", self.values)
        if vals.ndim == 2 and vals.shape[1] != m:
            raise ValidationError(f"{m} label names {self.names} for {vals.shape[1]} label columns")
        self.values = _as_2d_float("label values", vals, p=m)
        n = self.values.shape[0]
        if np.isinf(self.values).any():
            r, c = np.argwhere(np.isinf(self.values))[0]
            raise ValidationError(f"label {self.names[c]!r} is infinite at row {r}")
        if self.errors is None:
            self.errors = np.full((n, m), np.nan)
        else:
            self.errors = _as_2d_float("label errors", self.errors, n=n, p=m)
            bad = np.isfinite(self.values) & (np.isinf(self.errors) | (self.errors <= 0))
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ValidationError(
                    f"label {self.names[c]!r} has a non-positive or infinite uncertainty "
                    f"({self.errors[r, c]!r}) at row {r}"
                )
        if self.units is None:
            self.units = [LABEL_UNITS.get(s, "") for s in self.names]
        elif len(self.units) != m:
            raise ValidationError(f"{len(self.units)} units given for {m} labels")
        if self.ids is None:
            self.ids = np.arange(n).astype(str)
        else:
            self.ids = np.asarray(self.ids)
            if self.ids.shape != (n,):
                raise ValidationError(f"ids has shape {self.ids.shape}; expected ({n},)")
        if self.flags is None:
            self.flags = np.zeros((n, m), dtype=np.int64)
        else:
            self.flags = np.asarray(self.flags, dtype=np.int64)
            if self.flags.shape != (n, m):
                raise ValidationError(f"flags has shape {self.flags.shape}; expected {(n, m)}")

    @property
    def missing(self) -> np.ndarray:
        """Boolean [N, M], True where a label is missing."""
        return np.isnan(self.values)

    def column(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise ValidationError(f"no label {name!r}; have {self.names}") from None

    def select(self, names) -> Labels:
        """Labels restricted to ``names`` (in that order)."""
        missing = [s for s in names if s not in self.names]
        if missing:
            raise ValidationError(f"labels {missing} not present; have {self.names}")
        j = [self.names.index(s) for s in names]
        return Labels(
            self.values[:, j], list(names), self.errors[:, j],
            [self.units[k] for k in j], self.ids, self.flags[:, j],
        )

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.values, columns=self.names)
        for k, s in enumerate(self.names):
            df[f"{s}_err"] = self.errors[:, k]
        df.insert(0, "id", self.ids)
        return df

    @classmethod
    def from_frame(cls, df: pd.DataFrame, names, id_col: str = "id") -> Labels:
        """Build from a table with columns ``name`` and optionally ``name_err``."""
        missing = [s for s in names if s not in df.columns]
        if missing:
            raise ValidationError(f"table lacks label columns {missing}")
        vals = df[list(names)].to_numpy(dtype=float)
        errs = np.column_stack(
            [df[f"{s}_err"].to_numpy(dtype=float) if f"{s}_err" in df else np.full(len(df), np.nan)
             for s in names]
        ) if len(names) else None
        ids = df[id_col].to_numpy() if id_col in df else None
        return cls(vals, list(names), errs, ids=ids)

    def __len__(self) -> int:
        return self.values.shape[0]


@dataclass
class Catalogue:
    """A survey catalogue table with a unique ``id`` column.

    Expected (not required) columns: canonical labels and ``<label>_err``; photometry
    ``g, bp, rp, j, h, ks, w1, w2`` and ``<band>_err``; ``parallax``, ``parallax_err`` (mas);
    ``a_v``; ``ra, dec``; ``r_gc, z_gc`` (kpc), ``v_phi`` (km/s); ``snr``; ``source_id``
    (Gaia); ``flags``.
    """

    table: pd.DataFrame
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.table, pd.DataFrame):
            self.table = pd.DataFrame(self.table)
        if "id" not in self.table.columns:
            raise ValidationError(f"catalogue {self.name!r} has no 'id' column")
        if self.table["id"].isna().any():
            i = int(np.flatnonzero(self.table["id"].isna().to_numpy())[0])
            raise ValidationError(f"catalogue {self.name!r}: missing id at row {i}")
        dup = self.table["id"].duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise ValidationError(
                f"catalogue {self.name!r}: duplicate id {self.table['id'].iloc[i]!r} at row {i}"
            )
        for col in self.table.columns:
            if col.endswith("_err") and pd.api.types.is_numeric_dtype(self.table[col]):
                v = self.table[col].to_numpy(dtype=float)
                bad = np.isfinite(v) & (v <= 0)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise ValidationError(
                        f"catalogue {self.name!r}: column {col!r} has a non-positive "
                        f"uncertainty ({v[i]!r}) at row {i}"
                    )

    def __len__(self) -> int:
        return len(self.table)

    @property
    def columns(self) -> list[str]:
        return list(self.table.columns)

    def require(self, columns) -> None:
        missing = [c for c in columns if c not in self.table.columns]
        if missing:
            raise ValidationError(f"catalogue {self.name!r} lacks columns {missing}")

    def labels(self, names) -> Labels:
        self.require(names)
        return Labels.from_frame(self.table, names)

    def photometry(self, bands=PHOT_BANDS) -> np.ndarray:
        self.require(bands)
        return self.table[list(bands)].to_numpy(dtype=float)
