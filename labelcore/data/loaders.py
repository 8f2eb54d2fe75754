"""Readers for survey spectrum files, registered by name (the manifests' ``loader`` key).

Each reader takes a path and returns a :class:`~labelcore.data.containers.Spectra` on the
file's native wavelength grid (Angstrom). Bad pixels (survey masks, zero inverse variance,
non-finite values) are flagged in ``mask``. Any file that is not what the reader expects
raises :class:`~labelcore.errors.FormatError` naming the file and what is missing.

Registered loaders

==================  ===========================================================
``apogee_apstar``   APOGEE apStar: HDU1 flux, HDU2 error, HDU3 APOGEE_PIXMASK;
                    log-linear grid from CRVAL1/CDELT1; row 0 = combined spectrum
                    (``row=`` picks another); meta: SNR, VHELIO, NVISITS, RA, DEC
``apogee_aspcapstar`` APOGEE aspcapStar: HDU1 normalised flux, HDU2 error (zeros in the
                    chip gaps are flagged bad); rest frame
``lamost_lrs``      LAMOST low-resolution: DR8+ ``COADD`` binary table (FLUX, IVAR,
                    WAVELENGTH, ANDMASK, ORMASK) or the DR5-7 5-row primary image;
                    bad = ORMASK != 0 or IVAR <= 0; meta: OBSID, SNRG, SNRR, HELIO_RV/Z
``gaia_rvs``        Gaia DR3 RVS mean spectra: DataLink CSV or FITS table, long format
                    (source_id, wavelength [nm], flux, flux_error); many sources per file
``rave_spectrum``   RAVE DR6 normalised spectrum: FITS table (wavelength, flux,
                    flux_err) or primary image with a linear CRVAL1/CDELT1 grid
``galah_spectrum``  GALAH DR3 per-CCD file: HDU4 normalised flux (HDU0 if absent),
                    HDU1 relative error; linear grid from CRVAL1/CDELT1/CRPIX1
``labelcore_hdf5``  the project's own chunked HDF5 (:mod:`labelcore.data.io`)
==================  ===========================================================
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from labelcore.data.containers import Spectra
from labelcore.data.io import read_fits_table, read_spectra
from labelcore.errors import FormatError, MissingInputError

LOADERS: dict[str, Callable[..., Spectra]] = {}
C_KMS = 299_792.458


def register_loader(name: str):
    def deco(fn):
        LOADERS[name] = fn
        return fn
    return deco


def get_loader(name: str):
    try:
        return LOADERS[name]
    except KeyError:
        raise FormatError(f"no spectrum loader {name!r}; have {sorted(LOADERS)}") from None


def open_fits(path):
    """The HDU list of a FITS file, read whole into memory (every HDU's data read now, so
    a truncated or damaged file fails here, and no file handle stays open on failure)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"no such file: {path}")
    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    raw = path.read_bytes()
    hl = None
    try:
        with warnings.catch_warnings():
            # a truncated or damaged file is an error here, not a warning
            warnings.simplefilter("error", AstropyUserWarning)
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            hl = fits.open(io.BytesIO(raw), memmap=False)
            for h in hl:  # read every HDU now: detects truncation before any use
                _ = h.data
        return hl
    except (OSError, ValueError, TypeError, IndexError, AttributeError, KeyError, AstropyUserWarning,
            fits.verify.VerifyWarning) as exc:
        if hl is not None:
            hl.close()
        raise FormatError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from exc


def _linear_or_log_grid(hdr, n, path, log=False):
    try:
        crval = float(hdr["CRVAL1"])
        cdelt = float(hdr.get("CDELT1", hdr.get("CD1_1")))
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{path}: header lacks CRVAL1/CDELT1 wavelength keywords") from exc
    crpix = float(hdr.get("CRPIX1", 1.0))
    x = crval + cdelt * (np.arange(n) + 1 - crpix)
    return 10.0**x if log else x


def _snr_meta(d):
    return pd.DataFrame({k: [v] for k, v in d.items()})


APOGEE_BAD_BITS = (0, 1, 2, 3, 4, 5, 6, 7, 9, 12)


@register_loader("apogee_apstar")
def read_apogee_apstar(path, row: int = 0, bad_bits=APOGEE_BAD_BITS) -> Spectra:
    with open_fits(path) as hl:
        if len(hl) < 4:
            raise FormatError(f"{path}: apStar needs HDUs 1-3 (flux, error, mask); has {len(hl)}")
        flux, err, mask = (np.atleast_2d(np.asarray(hl[k].data, float)) for k in (1, 2, 3))
        if not (flux.shape == err.shape == mask.shape):
            raise FormatError(f"{path}: flux/error/mask shapes differ {flux.shape, err.shape, mask.shape}")
        if isinstance(row, bool) or not isinstance(row, int | np.integer) or not 0 <= row < flux.shape[0]:
            raise FormatError(f"{path}: row {row} requested; the file has rows 0-{flux.shape[0] - 1} "
                              "(0 and 1 are the combined spectra, 2... the visits)")
        wave = _linear_or_log_grid(hl[1].header, flux.shape[1], path, log=True)
        h0 = hl[0].header
        meta = _snr_meta({"snr": h0.get("SNR", np.nan), "rv": h0.get("VHELIO", np.nan),
                          "nvisits": h0.get("NVISITS", 1), "ra": h0.get("RA", np.nan),
                          "dec": h0.get("DEC", np.nan)})
        oid = str(h0.get("OBJID", Path(path).stem)).strip()
    bitmask = np.sum([1 << b for b in bad_bits])
    bad = (mask[row].astype(np.int64) & bitmask) != 0
    bad |= (err[row] <= 0) | (flux[row] == 0)
    return Spectra(wave, flux[row][None], err[row][None], bad[None], np.array([oid]), meta,
                   "apogee")


@register_loader("apogee_aspcapstar")
def read_apogee_aspcapstar(path) -> Spectra:
    with open_fits(path) as hl:
        if len(hl) < 3:
            raise FormatError(f"{path}: aspcapStar needs HDU1 (flux) and HDU2 (error)")
        flux = np.asarray(hl[1].data, float).ravel()
        err = np.asarray(hl[2].data, float).ravel()
        if flux.shape != err.shape:
            raise FormatError(f"{path}: flux and error lengths differ")
        wave = _linear_or_log_grid(hl[1].header, flux.size, path, log=True)
        oid = str(hl[0].header.get("OBJID", Path(path).stem)).strip()
        snr = hl[0].header.get("SNR", np.nan)
    bad = (flux <= 0) | ~np.isfinite(flux) | (err <= 0)
    return Spectra(wave, flux[None], err[None], bad[None], np.array([oid]),
                   _snr_meta({"snr": snr}), "apogee")


@register_loader("lamost_lrs")
def read_lamost_lrs(path) -> Spectra:
    with open_fits(path) as hl:
        h0 = hl[0].header
        if "COADD" in [h.name for h in hl]:
            t = hl["COADD"].data
            names = [c.upper() for c in t.columns.names]
            need = ["FLUX", "IVAR", "WAVELENGTH", "ORMASK"]
            miss = [c for c in need if c not in names]
            if miss:
                raise FormatError(f"{path}: COADD table lacks columns {miss}")
            flux = np.asarray(t["FLUX"][0], float)
            ivar = np.asarray(t["IVAR"][0], float)
            wave = np.asarray(t["WAVELENGTH"][0], float)
            ormask = np.asarray(t["ORMASK"][0], np.int64)
        else:
            img = hl[0].data
            if img is None or img.ndim != 2 or img.shape[0] < 5:
                raise FormatError(
                    f"{path}: neither a COADD table (DR8+) nor a 5-row primary image (DR5-7)")
            flux, ivar, wave = (np.asarray(img[k], float) for k in range(3))
            ormask = np.asarray(img[4], np.int64)
        z = h0.get("Z", np.nan)
        rv = h0.get("HELIO_RV", np.nan)
        if not np.isfinite(rv) and np.isfinite(z):
            rv = z * C_KMS
        meta = _snr_meta({"obsid": h0.get("OBSID", Path(path).stem), "snr": h0.get("SNRG", np.nan),
                          "snr_r": h0.get("SNRR", np.nan), "rv": rv, "ra": h0.get("RA", np.nan),
                          "dec": h0.get("DEC", np.nan), "star_class": str(h0.get("CLASS", "")),
                          "subclass": str(h0.get("SUBCLASS", "")),
                          "vacuum": bool(h0.get("VACUUM", True))})
        oid = str(h0.get("OBSID", Path(path).stem))
    with np.errstate(divide="ignore"):
        err = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)
    bad = (ormask != 0) | (ivar <= 0)
    order = np.argsort(wave)
    return Spectra(wave[order], flux[order][None], err[order][None], bad[order][None],
                   np.array([oid]), meta, "lamost")


@register_loader("gaia_rvs")
def read_gaia_rvs(path) -> Spectra:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"no such file: {path}")
    if path.suffix.lower() in (".fits", ".fit"):

        df = read_fits_table(path)
    else:
        try:
            df = pd.read_csv(path, comment="#")
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: not a readable CSV ({exc})") from exc
    df.columns = [c.lower() for c in df.columns]
    need = ["source_id", "wavelength", "flux", "flux_error"]
    miss = [c for c in need if c not in df.columns]
    if miss:
        raise FormatError(f"{path}: Gaia RVS table lacks columns {miss}")
    if df.empty:
        raise FormatError(f"{path}: Gaia RVS table has no rows")
    # long -> wide without a Python loop over sources
    piv = df.pivot_table(index="source_id", columns="wavelength", values=["flux", "flux_error"],
                         aggfunc="first", sort=True)
    wave_nm = piv["flux"].columns.to_numpy(float)
    flux = piv["flux"].to_numpy(float)
    err = piv["flux_error"].to_numpy(float)
    ids = piv.index.astype(str).to_numpy()
    return Spectra(wave_nm * 10.0, flux, err, ~np.isfinite(flux), ids,
                   pd.DataFrame({"source_id": piv.index.to_numpy()}), "gaia_rvs")


@register_loader("rave_spectrum")
def read_rave_spectrum(path) -> Spectra:
    with open_fits(path) as hl:
        tab = next((h for h in hl if getattr(h, "columns", None) is not None), None)
        if tab is not None:
            cols = {c.lower(): c for c in tab.columns.names}
            miss = [c for c in ("wavelength", "flux") if c not in cols]
            if miss:
                raise FormatError(f"{path}: RAVE spectrum table lacks columns {miss}")
            d = tab.data
            wave = np.asarray(d[cols["wavelength"]], float).ravel()
            flux = np.asarray(d[cols["flux"]], float).ravel()
            ecol = cols.get("flux_err") or cols.get("error")
            err = np.asarray(d[ecol], float).ravel() if ecol else None
        else:
            if hl[0].data is None:
                raise FormatError(f"{path}: no spectrum table and no primary image")
            flux = np.asarray(hl[0].data, float).ravel()
            wave = _linear_or_log_grid(hl[0].header, flux.size, path)
            err = np.asarray(hl[1].data, float).ravel() if len(hl) > 1 and hl[1].data is not None else None
        h0 = hl[0].header
        oid = str(h0.get("RAVE_OBS_ID", h0.get("OBS_ID", Path(path).stem)))
    return Spectra(wave, flux[None], None if err is None else err[None], None, np.array([oid]),
                   None, "rave")


@register_loader("galah_spectrum")
def read_galah_spectrum(path) -> Spectra:
    with open_fits(path) as hl:
        k = 4 if len(hl) > 4 and hl[4].data is not None else 0
        if hl[k].data is None:
            raise FormatError(f"{path}: GALAH spectrum has no flux image")
        flux = np.asarray(hl[k].data, float).ravel()
        wave = _linear_or_log_grid(hl[k].header, flux.size, path)
        err = None
        if len(hl) > 1 and hl[1].data is not None and hl[1].data.size == flux.size:
            rel = np.asarray(hl[1].data, float).ravel()
            err = np.abs(rel * flux)
        oid = str(hl[0].header.get("SOBJ_ID", Path(path).stem))
    return Spectra(wave, flux[None], None if err is None else err[None], None, np.array([oid]),
                   None, "galah")


@register_loader("labelcore_hdf5")
def read_labelcore_hdf5(path, rows=None) -> Spectra:

    return read_spectra(path, rows)
