"""Small vectorised numerical kernels shared by ``labelcore.data`` and ``labelcore.prep``.

Kept dependency-free (numpy only) and below both layers so that the synthetic survey
(data layer) and the preprocessing layer use one implementation.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from labelcore.errors import ValidationError

C_KMS = 299_792.458


def interp_rows(x_new: np.ndarray, x: np.ndarray, y: np.ndarray, fill: float = np.nan
                ) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of every row of ``y`` [N, P] (sampled at ``x`` [P]) at
    ``x_new`` ([Q] shared or [N, Q] per row), fully vectorised (no loop over rows).

    Returns ``(y_new, inside)`` where ``inside`` [N, Q] is False where ``x_new`` falls
    outside ``x`` (those values are ``fill``). Also returns the index of the left neighbour
    implicitly through :func:`interp_weights` for callers that need to carry masks.
    """
    i0, w, inside = interp_weights(x_new, x)
    n = y.shape[0]
    xn = np.broadcast_to(i0, (n, i0.shape[-1]))
    wn = np.broadcast_to(w, (n, i0.shape[-1]))
    y0 = np.take_along_axis(y, xn, axis=1)
    y1 = np.take_along_axis(y, xn + 1, axis=1)
    out = (1.0 - wn) * y0 + wn * y1
    inside = np.broadcast_to(inside, out.shape)
    return np.where(inside, out, fill), inside


def interp_weights(x_new: np.ndarray, x: np.ndarray):
    """Left-neighbour index, weight of the right neighbour and inside-flag for
    linear interpolation of a function sampled on increasing ``x`` at ``x_new``."""
    x_new = np.asarray(x_new, dtype=float)
    frac = np.interp(x_new, x, np.arange(x.size, dtype=float), left=-1.0, right=x.size)
    inside = (frac >= 0) & (frac <= x.size - 1)
    fc = np.clip(frac, 0, x.size - 1 - 1e-9)
    i0 = np.floor(fc).astype(np.intp)
    w = fc - i0
    return i0, w, inside


def doppler_factor(rv_kms) -> np.ndarray:
    """Relativistic Doppler factor lambda_obs / lambda_rest for radial velocity ``rv``."""
    beta = np.asarray(rv_kms, dtype=float) / C_KMS
    return np.sqrt((1.0 + beta) / (1.0 - beta))


def as_real(name: str, a, dtype=np.float64) -> np.ndarray:
    """``a`` as a real floating-point array; :class:`ValidationError` naming ``name`` for
    complex or non-numeric input (strings, objects) instead of a numpy traceback."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:          # ragged nested lists
        raise ValidationError(f"{name} is not a rectangular array of numbers ({exc})") from None
    if np.iscomplexobj(arr):
        raise ValidationError(f"{name} is complex; real numbers are needed")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(dtype)
        except (ValueError, TypeError):
            first = arr.flat[0] if arr.size else None
            raise ValidationError(f"{name} must be numeric; got values of type {arr.dtype} "
                                  f"(e.g. {first!r})") from None
    return arr.astype(dtype, copy=False)


def der_snr_sigma(flux, bad):
    """Per-star noise from the spectrum itself (DER_SNR, Stoehr et al. 2008)."""
    f = np.where(bad, np.nan, flux)
    d = np.abs(2 * f[:, 2:-2] - f[:, :-4] - f[:, 4:])
    sig = 1.482602 / np.sqrt(6.0) * np.nanmedian(d, axis=1)
    return np.where(np.isfinite(sig) & (sig > 0), sig, np.nanstd(f, axis=1))


def median_snr(flux, sigma, bad) -> np.ndarray:
    """Per-star S/N: median good flux over median good uncertainty (``sigma`` [N, P] or
    None for the DER_SNR estimate from the spectrum itself); NaN for an empty spectrum."""
    bad = np.asarray(bad, bool)
    if sigma is None:
        sigma = np.broadcast_to(der_snr_sigma(flux, bad)[:, None], np.shape(flux))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-bad rows: NaN, said in the doc
        return np.nanmedian(np.where(bad, np.nan, flux), axis=1) / np.nanmedian(np.where(bad, np.nan, sigma), axis=1)


def available_memory() -> int:
    """Bytes of memory this machine has available (MemAvailable; total RAM if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory(n_bytes: float, what: str, fraction: float = 0.8) -> None:
    """Refuse, before allocating, work that needs more than ``fraction`` of the available
    memory: :class:`ValidationError` saying what and how much."""
    avail = available_memory()
    if n_bytes > fraction * avail:
        raise ValidationError(f"{what} needs about {n_bytes / 2**30:,.1f} GiB; this machine has "
                              f"{avail / 2**30:,.1f} GiB available. Use fewer latents, pixels or spectra.")
