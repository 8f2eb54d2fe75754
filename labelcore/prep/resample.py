"""Resampling to a common grid and shifting to the rest frame (vectorised over spectra).

Linear interpolation of flux; the variance is interpolated with the squared weights
(``(1-w)^2 s0^2 + w^2 s1^2``, exact for independent pixels); a new pixel is bad when a
neighbour that contributes to it is bad, or when it falls outside the input grid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelcore._numerics import doppler_factor, interp_weights
from labelcore.data.containers import Spectra, check_wavelength_grid
from labelcore.errors import ValidationError

#: the most pixels a wavelength grid may have (APOGEE's combined grid has 8575; Gaia RVS 2401)
MAX_GRID_PIXELS = 200_000


def _check_grid_args(start, stop, step, what):
    vals = {"start": start, "stop": stop, what: step}
    bad = [k for k, v in vals.items() if not np.isfinite(v)]
    if bad:
        raise ValidationError(f"grid {bad[0]} must be a finite number; got {vals[bad[0]]!r}")
    if start <= 0:
        raise ValidationError(f"grid start must be a positive wavelength; got {start!r}")
    if stop <= start:
        raise ValidationError(f"grid stop ({stop!r}) must be larger than start ({start!r})")
    if step <= 0:
        raise ValidationError(f"grid {what} must be positive; got {step!r}")


def _check_size(n, text):
    if n < 2:
        raise ValidationError(f"grid {text} has {n} pixel(s); at least 2 are needed")
    if n > MAX_GRID_PIXELS:
        raise ValidationError(f"grid {text} would have {n:,} pixels ({n * 4 * 3 / 2**20:,.0f} MiB per 1000 "
                              f"spectra); at most {MAX_GRID_PIXELS:,} are allowed")


def linear_grid(start: float, stop: float, step: float) -> np.ndarray:
    """Grid ``start, start+step, ...`` up to and excluding ``stop`` (RAVE: 8420, 8780, 0.4)."""
    _check_grid_args(start, stop, step, "step")
    n = int(np.floor((stop - start) / step + 1e-9))
    _check_size(n, f"{start:g}:{stop:g}:{step:g}")
    return start + step * np.arange(n)


def log_grid(start: float, stop: float, dlog10: float) -> np.ndarray:
    """Log-linear grid ``start * 10**(dlog10 * k)`` up to ``stop`` (LAMOST, APOGEE)."""
    _check_grid_args(start, stop, dlog10, "dlog10")
    n = int(np.floor(np.log10(stop / start) / dlog10 + 1e-9)) + 1
    _check_size(n, f"log:{start:g}:{stop:g}:{dlog10:g}")
    return start * 10 ** (dlog10 * np.arange(n))


def _resample_arrays(x_new, wave, flux, err, mask):
    i0, w, inside = interp_weights(x_new, wave)
    n = flux.shape[0]
    shape = (n, i0.shape[-1])
    i0 = np.broadcast_to(i0, shape)
    w = np.broadcast_to(w, shape)
    inside = np.broadcast_to(inside, shape)
    f0 = np.take_along_axis(flux, i0, 1)
    f1 = np.take_along_axis(flux, i0 + 1, 1)
    m0 = np.take_along_axis(mask, i0, 1)
    m1 = np.take_along_axis(mask, i0 + 1, 1)
    bad = ~inside | (m0 & (w < 1)) | (m1 & (w > 0))
    out = (1 - w) * f0 + w * f1
    if err is not None:
        e0 = np.take_along_axis(np.where(mask, 0.0, err), i0, 1)
        e1 = np.take_along_axis(np.where(mask, 0.0, err), i0 + 1, 1)
        e = np.sqrt((1 - w) ** 2 * e0**2 + w**2 * e1**2)
        e = np.where(bad, np.inf, e)
    else:
        e = None
    return np.where(bad, 1.0, out), e, bad


def resample(spectra: Spectra, new_wave) -> Spectra:
    """Spectra linearly interpolated on to ``new_wave`` (pixels outside -> bad)."""
    new_wave = check_wavelength_grid(new_wave)
    overlap = (new_wave >= spectra.wave[0]) & (new_wave <= spectra.wave[-1])
    if not overlap.any():
        raise ValidationError(
            f"new grid [{new_wave[0]:.1f}, {new_wave[-1]:.1f}] does not overlap the spectra "
            f"[{spectra.wave[0]:.1f}, {spectra.wave[-1]:.1f}]"
        )
    err = spectra.flux_err if spectra.has_errors else None
    f, e, bad = _resample_arrays(new_wave, spectra.wave, spectra.flux, err, spectra.mask)
    return Spectra(new_wave, f, e, bad, spectra.ids, spectra.meta, spectra.name)


def to_rest_frame(spectra: Spectra, rv_kms, wave=None) -> Spectra:
    """Shift observed-frame spectra to the rest frame, sampled on ``wave`` (default: the
    input grid). ``rv_kms`` [N] (positive = receding). NaN RV raises."""
    rv = np.asarray(rv_kms, float).reshape(-1)
    if rv.size != spectra.n_spectra:
        raise ValidationError(f"{rv.size} radial velocities for {spectra.n_spectra} spectra")
    if not np.all(np.isfinite(rv)):
        i = int(np.flatnonzero(~np.isfinite(rv))[0])
        raise ValidationError(f"radial velocity of spectrum {i} ({spectra.ids[i]}) is not finite")
    wave = spectra.wave if wave is None else check_wavelength_grid(wave)
    x_obs = wave[None, :] * doppler_factor(rv)[:, None]
    err = spectra.flux_err if spectra.has_errors else None
    f, e, bad = _resample_arrays(x_obs, spectra.wave, spectra.flux, err, spectra.mask)
    meta = spectra.meta.copy()
    meta["rv_corrected"] = rv
    return Spectra(wave, f, e, bad, spectra.ids, meta, spectra.name)


def stack(spectra_list, wave) -> Spectra:
    """Resample many single- or multi-spectrum objects on to one grid and stack them."""
    if not spectra_list:
        raise ValidationError("nothing to stack: empty list of spectra")

    parts = [resample(s, wave) for s in spectra_list]
    return Spectra(
        wave,
        np.vstack([p.flux for p in parts]),
        np.vstack([p.flux_err if p.has_errors else np.full_like(p.flux, np.inf) for p in parts]),
        np.vstack([p.mask for p in parts]),
        np.concatenate([p.ids for p in parts]),
        pd.concat([p.meta for p in parts], ignore_index=True),
        parts[0].name,
    )
