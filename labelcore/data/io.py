"""Storage: Parquet tables, chunked HDF5 spectra (lazy with dask), FITS interchange.

Every writer is atomic: it writes to a temporary file in the destination folder and
renames it into place only when complete, so a failure never leaves a half-written file.

Atomic writes (:func:`atomic_path`, :func:`atomic_dir`)
-------------------------------------------------------
* Temporary names are unique (``.<name>.<host>-<pid>-<random>.tmp|partial``) and sit beside
  the target, so concurrent writers never share one and a rename never crosses a file
  system.
* A folder is replaced by *rename aside -> rename in -> remove old*: a kill at any point
  leaves the old or the new artifact whole; a kill between the first two renames leaves
  the old one under its aside name, and the next write or :func:`recover_artifact` puts it
  back. An existing folder is replaced only when it is an artifact of the same kind (its
  ``.labelcore-artifact`` marker, or the kind's own signature file for folders written by
  older versions) or empty -- never a user's unrelated folder -- unless ``force=True``.
* File modes follow the umask as for any new file (the file is created with mode 0o666;
  the process-wide umask is never changed).
* Temporary files and folders of writers that died (same host, process gone) are removed
  on the next write of the same target.

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
import json
import os
import re
import shutil
import socket
import uuid
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from labelcore.data.containers import Catalogue, Labels, Spectra
from labelcore.errors import FormatError, MissingInputError, ValidationError

SPECTRA_FORMAT = "labelcore-spectra"


_HOST = socket.gethostname()
#: marker file of every folder artifact written by :func:`atomic_dir`
ARTIFACT_MARKER = ".labelcore-artifact"
#: folder artifact kinds and the signature file that older versions' folders of that kind hold
ARTIFACT_SIGNATURES = {"survey": "survey.json", "training_set": "training_set.json", "model": "params.json",
                       "curves": None}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_name(path: Path, tag: str, suffix: str = "") -> Path:
    return path.parent / f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{tag}{suffix}"


def _stale_temps(path: Path):
    """(temp path, tag) of writers of ``path`` on this host whose process is gone."""
    pat = re.compile(rf"\.{re.escape(path.name)}\.(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{8}}\.(?P<tag>tmp|partial|old)")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    out = []
    for p in entries:
        m = pat.match(p.name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
            out.append((p, m["tag"]))
    return out


def recover_artifact(path: str | os.PathLike) -> None:
    """Finish what a killed writer of ``path`` left: put an old artifact set aside back in
    place if ``path`` is missing, and remove the dead writer's temporary files."""
    path = Path(path)
    stale = _stale_temps(path)
    if not path.exists():
        olds = sorted((p for p, tag in stale if tag == "old"), key=lambda p: p.stat().st_mtime)
        if olds:
            os.rename(olds[-1], path)
            stale = [(p, t) for p, t in stale if p != olds[-1]]
    for p, _tag in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def check_not_input(out: str | os.PathLike, *inputs, what: str = "output") -> None:
    """Refuse an output path that is one of the inputs, or a folder holding one (replacing
    it would delete the input)."""
    o = Path(out).expanduser().resolve()
    for i in inputs:
        if i is None:
            continue
        p = Path(i).expanduser().resolve()
        if o == p or o in p.parents:
            raise ValidationError(f"the {what} {out} is also an input ({i}): refusing to overwrite an input")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; move it into place on success only."""
    path = Path(path)
    if path.is_dir():
        raise ValidationError(f"{path} is a folder; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ValidationError(f"cannot write {path}: its parent {path.parent} is not a folder") from exc
    recover_artifact(path)
    tmp = _temp_name(path, "tmp", suffix)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))   # mode from the umask
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _artifact_kind(path: Path):
    """The kind of the folder artifact at ``path``: its marker, a legacy signature, "" for
    an empty folder, None for anything else."""
    try:
        return json.loads((path / ARTIFACT_MARKER).read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not any(path.iterdir()):
        return ""
    for kind, sig in ARTIFACT_SIGNATURES.items():
        if sig and (path / sig).is_file():
            return kind
    return None


def check_replaceable(path: str | os.PathLike, kind: str, *, force: bool = False) -> None:
    """Raise :class:`ValidationError` unless a folder artifact of ``kind`` may be written at
    ``path``: it does not exist, is empty, or is an artifact of the same kind (or ``force``).
    Called by :func:`atomic_dir`, and by commands before they start long work."""
    if kind not in ARTIFACT_SIGNATURES:
        raise ValueError(f"unknown artifact kind {kind!r}")
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise ValidationError(f"{path} exists and is not a folder: refusing to replace it")
        have = _artifact_kind(path)
        if have not in (kind, "") and not force:
            what = "a folder of other files" if have is None else f"a {have.replace('_', ' ')}"
            raise ValidationError(f"{path} exists and is {what}, not a {kind.replace('_', ' ')}: refusing to "
                                  "replace it (choose another folder, or force)")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str, *, force: bool = False):
    """Yield a fresh temporary folder next to ``path``; on success it replaces ``path``
    (rename aside -> rename in -> remove old), on failure it is removed and ``path`` is left
    as it was. ``kind`` (one of :data:`ARTIFACT_SIGNATURES`) is written as the folder's
    marker; an existing ``path`` that is not an artifact of that kind (nor empty) is not
    replaced unless ``force``: :class:`ValidationError` before anything is written."""
    path = Path(path)
    check_replaceable(path, kind, force=force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ValidationError(f"cannot write {path}: its parent {path.parent} is not a folder") from exc
    recover_artifact(path)
    tmp = _temp_name(path, "partial")
    tmp.mkdir()
    try:
        yield tmp
        (tmp / ARTIFACT_MARKER).write_text(json.dumps({"kind": kind}))
        if path.exists():
            aside = _temp_name(path, "old")
            os.rename(path, aside)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(aside, path)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, path)
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
        raise MissingInputError(f"no table at {path}")
    if path.is_dir():
        raise FormatError(f"{path} is a folder, not a Parquet table file")
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
        raise MissingInputError(f"no spectra file at {path}")
    if path.is_dir():
        raise FormatError(f"{path} is a folder, not a labelcore spectra file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path}: not a labelcore spectra file (not readable as HDF5: {exc})") from exc
    try:
        if f.attrs.get("format") != SPECTRA_FORMAT:
            raise FormatError(f"{path}: not a labelcore spectra file (HDF5 without format {SPECTRA_FORMAT!r})")
        missing = [k for k in ("wave", "flux", "flux_err", "mask", "ids") if k not in f]
        if missing:
            raise FormatError(f"{path}: not a labelcore spectra file (missing datasets {missing})")
        shapes = {k: f[k].shape for k in ("wave", "flux", "flux_err", "mask", "ids")}
        if len(shapes["flux"]) != 2 or len(shapes["wave"]) != 1 or shapes["flux"][1] != shapes["wave"][0]:
            raise FormatError(f"{path}: /flux must be [N, P] with P = len(/wave); got flux {shapes['flux']}, "
                              f"wave {shapes['wave']}")
        bad = [k for k in ("flux_err", "mask") if shapes[k] != shapes["flux"]]
        if bad or shapes["ids"] != shapes["flux"][:1]:
            raise FormatError(f"{path}: datasets disagree in shape: {shapes}")
        if f["flux"].dtype.kind not in "fiu" or f["wave"].dtype.kind not in "fiu":
            raise FormatError(f"{path}: /flux and /wave must be real numbers; got {f['flux'].dtype}, "
                              f"{f['wave'].dtype}")
    except BaseException:
        f.close()
        raise
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
        raise MissingInputError(f"no FITS file at {path}")
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
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no FITS file at {path}")
    try:
        with fits.open(path, memmap=False) as hl:
            if hl[0].data is None or "FLUX_ERR" not in hl or "WAVE" not in hl:
                raise KeyError("HDUs FLUX_ERR, MASK, WAVE and META missing: another kind of FITS file")
            flux = hl[0].data.astype(float)
            err = hl["FLUX_ERR"].data.astype(float)
            mask = hl["MASK"].data.astype(bool)
            wave = np.asarray(hl["WAVE"].data["wave"], float)
            meta = pd.DataFrame(np.asarray(hl["META"].data).tolist(),
                                columns=hl["META"].columns.names)
            name = hl[0].header.get("LCNAME", "")
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
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
