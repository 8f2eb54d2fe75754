"""Storage: Parquet tables, chunked HDF5 spectra (lazy with dask), FITS interchange.

Every writer is atomic: it writes to a temporary file in the destination folder and
renames it into place only when complete, so a failure never leaves a half-written file.

HDF5 spectra layout (``format = "labelcore-spectra"``, ``version = 1``)::

    /wave      [P]    float64
    /flux      [N, P] float32, chunked (chunk_rows, P)
    /flux_err  [N, P] float32, chunked (inf = bad / unknown)
    /mask      [N, P] uint8,   chunked (non-zero = bad)
    /ids       [N]    utf-8 strings
    /meta/<col> [N]   one dataset per metadata column (snr, rv, star_id, ...)
    attrs: format, version, name, plus free attributes (resolution, setup, seed ...)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from labelcore.data.containers import Catalogue, Labels, Spectra
from labelcore.errors import FormatError

SPECTRA_FORMAT = "labelcore-spectra"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; move it into place on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a fresh temporary folder next to ``path``; on success it replaces ``path``
    (a survey, a training set, a saved model), on failure it is removed and ``path`` is
    left as it was."""

    path = Path(path)
    tmp = path.parent / f".{path.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------ tables (Parquet)
def write_table(df: pd.DataFrame | Catalogue, path, **kwargs) -> Path:
    """Write a table (DataFrame or :class:`Catalogue`) to Parquet atomically."""
    if isinstance(df, Catalogue):
        df = df.table
    with atomic_path(path, ".parquet") as tmp:
        df.to_parquet(tmp, index=False, **kwargs)
    return Path(path)


def read_table(path, columns=None, filters=None) -> pd.DataFrame:
    """Read a Parquet table (optionally a column subset / pyarrow filters)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no table at {path}")
    try:
        return pd.read_parquet(path, columns=columns, filters=filters)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise FormatError(f"{path}: not a readable Parquet table ({exc})") from exc


def read_catalogue(path, name: str | None = None) -> Catalogue:
    return Catalogue(read_table(path), name=name or Path(path).stem)


# ------------------------------------------------------------------ spectra (HDF5)
class SpectraWriter:
    """Append spectra chunk by chunk to an HDF5 file (bounded memory); atomic on close.

    >>> with SpectraWriter(path, wave, name="rave") as w:   # doctest: +SKIP
    ...     w.append(flux, flux_err, mask, ids, meta)
    """

    def __init__(self, path, wave, name: str = "", chunk_rows: int = 256, attrs=None):
        self.path = Path(path)
        self.wave = np.asarray(wave, float)
        self.name = name
        self.chunk_rows = chunk_rows
        self.attrs = dict(attrs or {})
        self._ctx = None
        self._n = 0
        self._meta_cols: list[str] | None = None

    def __enter__(self):
        self._ctx = atomic_path(self.path, ".h5")
        tmp = self._ctx.__enter__()
        self._f = h5py.File(tmp, "w")
        f = self._f
        p = self.wave.size
        f.attrs.update({"format": SPECTRA_FORMAT, "version": 1, "name": self.name, **self.attrs})
        f.create_dataset("wave", data=self.wave)
        ch = (min(self.chunk_rows, 1024), p)
        opts = dict(chunks=ch, maxshape=(None, p), compression="gzip", compression_opts=1,
                    shuffle=True)
        f.create_dataset("flux", shape=(0, p), dtype="f4", **opts)
        f.create_dataset("flux_err", shape=(0, p), dtype="f4", **opts)
        f.create_dataset("mask", shape=(0, p), dtype="u1", **opts)
        f.create_dataset("ids", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(),
                         chunks=(4096,))
        f.create_group("meta")
        return self

    def append(self, flux, flux_err, mask, ids, meta: pd.DataFrame | None = None) -> None:
        flux = np.asarray(flux)
        n, p = flux.shape
        if p != self.wave.size:
            raise FormatError(f"appending {p} pixels to a file with {self.wave.size}")
        a, b = self._n, self._n + n
        f = self._f
        for key, arr in (("flux", flux), ("flux_err", flux_err), ("mask", mask)):
            f[key].resize(b, axis=0)
            f[key][a:b] = arr
        f["ids"].resize(b, axis=0)
        f["ids"][a:b] = np.asarray(ids).astype(str).astype(object)
        meta = pd.DataFrame(index=range(n)) if meta is None else meta.reset_index(drop=True)
        if self._meta_cols is None:
            self._meta_cols = list(meta.columns)
            for c in self._meta_cols:
                col = meta[c]
                if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                    f["meta"].create_dataset(c, shape=(0,), maxshape=(None,),
                                             dtype=np.asarray(col).dtype, chunks=(4096,))
                else:
                    f["meta"].create_dataset(c, shape=(0,), maxshape=(None,),
                                             dtype=h5py.string_dtype(), chunks=(4096,))
        elif list(meta.columns) != self._meta_cols:
            raise FormatError(f"metadata columns changed between chunks: {list(meta.columns)}")
        for c in self._meta_cols:
            d = f["meta"][c]
            d.resize(b, axis=0)
            v = meta[c].to_numpy()
            d[a:b] = v.astype(str).astype(object) if d.dtype.kind == "O" else v
        self._n = b

    def __exit__(self, et, ev, tb):
        self._f.close()
        return self._ctx.__exit__(et, ev, tb)


def write_spectra(spectra: Spectra, path, chunk_rows: int = 256, attrs=None) -> Path:
    """Write a :class:`Spectra` to HDF5 atomically."""
    err = spectra.flux_err if spectra.has_errors else np.full_like(spectra.flux, np.inf)
    with SpectraWriter(path, spectra.wave, spectra.name, chunk_rows, attrs) as w:
        w.append(spectra.flux, err, spectra.mask, spectra.ids, spectra.meta)
    return Path(path)


def _open_spectra_file(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no spectra file at {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if f.attrs.get("format") != SPECTRA_FORMAT:
        f.close()
        raise FormatError(f"{path}: HDF5 file is not in {SPECTRA_FORMAT!r} format")
    for key in ("wave", "flux", "flux_err", "mask", "ids"):
        if key not in f:
            f.close()
            raise FormatError(f"{path}: missing dataset /{key}")
    return f


def read_spectra(path, rows=None) -> Spectra:
    """Read spectra (all, or ``rows``: a slice or sorted index array) into memory."""
    with _open_spectra_file(path) as f:
        sel = slice(None) if rows is None else rows
        if isinstance(sel, np.ndarray) and sel.dtype == bool:
            sel = np.flatnonzero(sel)
        flux = f["flux"][sel].astype(np.float64)
        err = f["flux_err"][sel].astype(np.float64)
        mask = f["mask"][sel].astype(bool)
        ids = f["ids"].asstr()[sel]
        # index given so a file written without metadata reads as N rows of no columns
        meta = pd.DataFrame({c: (f["meta"][c].asstr()[sel] if f["meta"][c].dtype.kind == "O"
                                 else f["meta"][c][sel]) for c in f["meta"]}, index=pd.RangeIndex(flux.shape[0]))
        name = str(f.attrs.get("name", ""))
        wave = f["wave"][:]
    if np.isinf(err).all():
        err = None
    return Spectra(wave, flux, err, mask, np.asarray(ids), meta, name)


def spectra_info(path) -> dict:
    """Shape and attributes of a spectra file without reading the arrays."""
    with _open_spectra_file(path) as f:
        return {"n_spectra": f["flux"].shape[0], "n_pixels": f["flux"].shape[1],
                "wave_min": float(f["wave"][0]), "wave_max": float(f["wave"][-1]),
                "meta_columns": list(f["meta"]), **{k: _py(v) for k, v in f.attrs.items()}}


def _py(v):
    return v.item() if hasattr(v, "item") else (v.decode() if isinstance(v, bytes) else v)


def open_spectra_dask(path, chunk_rows: int | None = None):
    """Lazy dask arrays ``(wave, flux, flux_err, mask)`` backed by the HDF5 file.

    The file stays open as long as the arrays are alive (h5py handles are read-only and
    safe for the threaded scheduler; for distributed workers open per task instead).
    """

    f = _open_spectra_file(path)
    rows = chunk_rows or f["flux"].chunks[0]
    out = [f["wave"][:]]
    for key in ("flux", "flux_err", "mask"):
        out.append(da.from_array(f[key], chunks=(rows, f[key].shape[1])))
    return tuple(out)


# ------------------------------------------------------------------ FITS interchange
def write_fits_table(df: pd.DataFrame | Catalogue, path, units: dict | None = None) -> Path:
    """Write a table as a FITS binary table (HDU 1) through astropy, atomically."""

    if isinstance(df, Catalogue):
        df = df.table
    df = df.copy()
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype) or df[c].dtype == object:
            df[c] = df[c].astype(str)
    t = Table.from_pandas(df)
    for c, u in (units or {}).items():
        if c in t.colnames and u:
            t[c].unit = u
    with atomic_path(path, ".fits") as tmp:
        t.write(tmp, format="fits", overwrite=True)
    return Path(path)


def read_fits_table(path, hdu: int | str = 1) -> pd.DataFrame:
    """Read a FITS binary table into a DataFrame (multi-dimensional columns dropped
    into lists is avoided: they are skipped with their names listed in ``df.attrs``)."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no FITS file at {path}")
    try:
        with fits.open(path, memmap=False) as hl:
            t = Table.read(hl[hdu])
    except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read table HDU {hdu!r} ({exc})") from exc
    multi = [c for c in t.colnames if len(t[c].shape) > 1]
    t.remove_columns(multi)
    df = t.to_pandas()
    for c in df.columns:
        if df[c].dtype == object and len(df) and isinstance(df[c].iloc[0], bytes):
            df[c] = df[c].str.decode("utf-8").str.strip()
    df.attrs["skipped_multidim"] = multi
    return df


def write_spectra_fits(spectra: Spectra, path) -> Path:
    """Spectra as FITS: primary = flux [N, P], HDU1 = flux error, HDU2 = mask,
    HDU3 = wavelength table, HDU4 = ids + metadata table."""

    err = spectra.flux_err if spectra.has_errors else np.full_like(spectra.flux, np.nan)
    meta = spectra.meta.copy()
    meta.insert(0, "id", spectra.ids.astype(str))
    hl = fits.HDUList([
        fits.PrimaryHDU(spectra.flux.astype(np.float32)),
        fits.ImageHDU(np.where(np.isinf(err), np.nan, err).astype(np.float32), name="FLUX_ERR"),
        fits.ImageHDU(spectra.mask.astype(np.uint8), name="MASK"),
        fits.BinTableHDU(Table({"wave": spectra.wave}), name="WAVE"),
        fits.BinTableHDU(Table.from_pandas(meta), name="META"),
    ])
    hl[0].header["LCNAME"] = spectra.name
    with atomic_path(path, ".fits") as tmp:
        hl.writeto(tmp, overwrite=True)
    return Path(path)


def read_spectra_fits(path) -> Spectra:
    """Read spectra written by :func:`write_spectra_fits`."""

    try:
        with fits.open(path, memmap=False) as hl:
            flux = hl[0].data.astype(float)
            err = hl["FLUX_ERR"].data.astype(float)
            mask = hl["MASK"].data.astype(bool)
            wave = np.asarray(hl["WAVE"].data["wave"], float)
            meta = pd.DataFrame(np.asarray(hl["META"].data).tolist(),
                                columns=hl["META"].columns.names)
            name = hl[0].header.get("LCNAME", "")
    except (OSError, KeyError) as exc:
        raise FormatError(f"{path}: not a labelcore spectra FITS file ({exc})") from exc
    ids = meta.pop("id").astype(str).to_numpy()
    err = None if np.isnan(err).all() else err
    return Spectra(wave, flux, err, mask, ids, meta, name)


def write_labels(labels: Labels, path) -> Path:
    return write_table(labels.to_frame(), path)


def read_labels(path, names) -> Labels:
    return Labels.from_frame(read_table(path), names)


def read_spectra_meta(path) -> pd.DataFrame:
    """Per-spectrum metadata and ids of a spectra file, without the flux arrays."""
    with _open_spectra_file(path) as f:
        meta = pd.DataFrame({c: (f["meta"][c].asstr()[:] if f["meta"][c].dtype.kind == "O"
                                 else f["meta"][c][:]) for c in f["meta"]}, index=pd.RangeIndex(f["flux"].shape[0]))
        meta.insert(0, "obs_id", f["ids"].asstr()[:])
    meta["row"] = np.arange(len(meta))
    return meta
