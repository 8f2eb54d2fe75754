"""Survey spectrum files -> one labelcore spectra file: the bridge from real archives to
training sets, runs and catalogues.

:func:`ingest` reads each file with a registered loader (``apogee_apstar``, ``lamost_lrs``,
``gaia_rvs``, ... see :mod:`labelcore.data.loaders`), puts every spectrum on one wavelength
grid -- shifted to the rest frame with the file's own radial velocity if asked
(:func:`labelcore.prep.resample.to_rest_frame`), else linearly resampled -- optionally
continuum-normalises it (SLAM's P-spline continuum, :func:`labelcore.prep.continuum.normalise`),
and appends it to a chunked HDF5 file with the loader's metadata (S/N, RV, ...) and the
source file name. The output is written atomically: a failure leaves no file.

Choices
-------
* Resampling before normalisation: the continuum is fitted on the common grid, so every
  spectrum gets the same knots.
* Pixels of the grid outside a spectrum's range are bad (masked), never extrapolated.
* A file that cannot be read stops the ingest with its name (``on_error="raise"``), or is
  skipped and reported (``on_error="skip"``): a half-read archive is never silent.
* Metadata columns that differ between files are filled with NaN/"" so that every
  spectrum has the same columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from labelcore.data.io import SpectraWriter, check_not_input
from labelcore.data.loaders import get_loader
from labelcore.errors import FormatError, LabelcoreError, ValidationError
from labelcore.prep.continuum import normalise
from labelcore.prep.resample import linear_grid, log_grid, resample, to_rest_frame
from labelcore.progress import report


def parse_grid(text: str) -> np.ndarray:
    """A wavelength grid from ``"START:STOP:STEP"`` (linear, Angstrom, STOP excluded) or
    ``"log:START:STOP:DLOG10"`` (log-linear)."""

    parts = text.split(":")
    try:
        if parts[0] == "log" and len(parts) == 4:
            return log_grid(float(parts[1]), float(parts[2]), float(parts[3]))
        if len(parts) == 3:
            return linear_grid(float(parts[0]), float(parts[1]), float(parts[2]))
    except ValueError as exc:
        raise ValidationError(f"grid {text!r}: {exc}") from exc
    raise ValidationError(f"grid {text!r} is not START:STOP:STEP or log:START:STOP:DLOG10")


def _prepare(s, wave, rest_frame, normalise_continuum, knot_spacing):

    if rest_frame:
        if "rv" not in s.meta.columns:
            raise ValidationError("no radial velocity ('rv') in the file's metadata for the rest frame")
        s = to_rest_frame(s, s.meta["rv"].to_numpy(float), wave=wave)
    else:
        s = resample(s, wave)
    if normalise_continuum:
        s = normalise(s, knot_spacing=knot_spacing)
    return s


def ingest(files, loader: str, out, *, wave, rest_frame: bool = False, normalise: bool = False,
           knot_spacing: float = 50.0, on_error: str = "raise", chunk: int = 256, progress=None) -> dict:
    """Write the spectra of ``files`` (read by ``loader``) on the grid ``wave`` to ``out``
    (labelcore HDF5). Returns ``{"n_spectra", "n_files", "skipped": {file: reason}}``."""

    files = [Path(f) for f in files]
    if not files:
        raise ValidationError("no files to ingest")
    if on_error not in ("raise", "skip"):
        raise ValidationError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
    read = get_loader(loader)
    wave = np.asarray(wave, float)
    skipped: dict[str, str] = {}
    parts = []
    n_written = 0
    check_not_input(out, *files, what="output spectra file")
    writer = SpectraWriter(out, wave, name=loader, attrs={"loader": loader, "rest_frame": bool(rest_frame),
                                                          "normalised": bool(normalise)})
    columns: list[str] | None = None

    def flush():
        nonlocal n_written, columns
        if not parts:
            return
        meta = pd.concat([p.meta for p in parts], ignore_index=True)
        if columns is None:
            columns = list(meta.columns)
        for c in columns:
            if c not in meta.columns:
                meta[c] = np.nan
        meta = meta[columns]
        for c in meta.columns:   # one dtype per column whatever the file: float, bool or str
            if pd.api.types.is_bool_dtype(meta[c]):
                continue
            if pd.api.types.is_numeric_dtype(meta[c]):
                meta[c] = meta[c].astype(np.float64)
            else:
                meta[c] = meta[c].fillna("").astype(str)
        writer.append(np.vstack([p.flux for p in parts]).astype(np.float32),
                      np.vstack([p.flux_err if p.has_errors else np.full_like(p.flux, np.inf) for p in parts]),
                      np.vstack([p.mask for p in parts]), np.concatenate([p.ids for p in parts]), meta)
        n_written += meta.shape[0]
        parts.clear()

    with writer:
        for i, f in enumerate(files):
            try:
                s = _prepare(read(f), wave, rest_frame, normalise, knot_spacing)
            except (LabelcoreError, OSError, ValueError) as exc:
                if on_error == "raise":
                    raise FormatError(f"{f}: {exc}") from exc
                skipped[str(f)] = f"{type(exc).__name__}: {exc}"
                continue
            s.meta["file"] = f.name
            parts.append(s)
            if sum(p.n_spectra for p in parts) >= chunk:
                flush()
            report(progress, (i + 1) / len(files), f"{i + 1} of {len(files)} files")
        flush()
        if n_written == 0:
            raise ValidationError(f"none of the {len(files)} files could be read: "
                                  + "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:3]))
    return {"n_spectra": n_written, "n_files": len(files) - len(skipped), "skipped": skipped}
