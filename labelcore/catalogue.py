"""Chunked prediction of a whole survey: a trained model applied to every spectrum of a
spectra file, written as a label catalogue (Parquet) in bounded memory.

The catalogue has one row per spectrum: ``obs_id``, the file's per-spectrum metadata (S/N,
RV, ``source_id``, ...), and per label ``<name>``, ``<name>_err`` (the method's 1-sigma
formal error: ensemble spread for the CNN, formal errors for SLAM, Lux and The Cannon),
``<name>_err_total`` (the calibrated total error, for a model with ``error_model_``, see
:mod:`labelcore.methods.calibration`) and ``<name>_flag``
(1 outside the training label range, :meth:`boundary_flags`). A method with per-star fit
quality (capability ``fit_quality``) adds its columns from ``predict_details`` (e.g.
``chi2_reduced``; SLAM also ``converged``, ``n_iter``, ``rmse``).

Choices
-------
* **One wavelength grid.** The spectra must be on the model's grid (checked to 1e-6 Å
  relative); resampling is an explicit step (:mod:`labelcore.prep.resample`), never silent.
* **CNN photometry.** A CNN trained with photometry needs, per spectrum, the 8 apparent
  magnitudes, parallax and A_V (``photometry=`` a table keyed by ``obs_id`` or by the
  file's ``source_id``). Spectra without complete photometry or a positive parallax get
  NaN labels and ``no_photometry = True`` instead of stopping the whole catalogue.
* **Atomic.** The Parquet file is written chunk by chunk to a temporary name and renamed
  at the end: an interrupted or failed prediction leaves no partial catalogue.
* **Scale.** ``client=`` (a ``dask.distributed.Client``) predicts the chunks as tasks on
  the cluster; each task loads the saved model and reads its rows itself, so only labels
  travel back. Without a client the chunks run here one after the other (each already
  uses every core through numpy/JAX/TensorFlow).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labelcore.data.io import atomic_path, check_not_input, read_spectra, spectra_info
from labelcore.errors import ValidationError
from labelcore.methods import load_model
from labelcore.prep.photometry import photometry_matrix
from labelcore.progress import report


def _photometry_rows(photometry: pd.DataFrame | None, ids, meta: pd.DataFrame):
    """[n, 9] CNN photometry for the chunk (NaN rows where incomplete)."""
    if "obs_id" in photometry.columns:
        tab = photometry.drop_duplicates("obs_id").set_index("obs_id").reindex(np.asarray(ids).astype(str))
    elif "source_id" in photometry.columns and "source_id" in meta.columns:
        tab = photometry.drop_duplicates("source_id").set_index("source_id").reindex(meta["source_id"].to_numpy())
    else:
        raise ValidationError("photometry table needs an 'obs_id' column, or a 'source_id' column "
                              "matching the spectra file's source_id metadata")
    return photometry_matrix(tab.reset_index(drop=True))


def predict_chunk(model, spectra_path, start: int, stop: int, photometry=None) -> pd.DataFrame:
    """The catalogue rows of spectra ``start:stop`` of ``spectra_path`` (see module doc)."""
    if isinstance(model, str | Path):
        model = load_model(model)
    s = read_spectra(spectra_path, slice(start, stop))
    flux = np.where(s.mask, np.nan, s.flux)
    err = s.flux_err if s.has_errors else None
    names = list(model.label_names_)
    n = flux.shape[0]
    y = np.full((n, len(names)), np.nan)
    e = np.full_like(y, np.nan)
    et = np.full_like(y, np.nan) if getattr(model, "error_model_", None) is not None else None
    out = {"obs_id": np.asarray(s.ids).astype(str)}
    for c in s.meta.columns:
        out[c] = s.meta[c].to_numpy()
    ok = np.ones(n, bool)
    phot = None
    if model.uses_photometry:
        if photometry is None:
            raise ValidationError(f"this {model.name} was trained with photometry: pass photometry= (a table of "
                                  "magnitudes, parallax and A_V keyed by obs_id or source_id)")
        phot = _photometry_rows(photometry, s.ids, s.meta)
        ok = np.isfinite(phot).all(axis=1)
        out["no_photometry"] = ~ok
    extra = {}
    if ok.any():
        fl, er = flux[ok], (None if err is None else err[ok])
        kw = {} if phot is None else {"photometry": phot[ok]}
        d = model.predict_details(fl, flux_err=er, **kw)
        y[ok], e[ok] = d.labels, d.errors
        if et is not None:
            et[ok] = d.total_errors
        extra = {k: np.asarray(v) for k, v in d.quality.items()}
    flags = model.boundary_flags(y)
    for j, nm in enumerate(names):
        out[nm] = y[:, j]
        out[f"{nm}_err"] = e[:, j]
        if et is not None:
            out[f"{nm}_err_total"] = et[:, j]
        out[f"{nm}_flag"] = np.where(np.isfinite(y[:, j]), flags[:, j], 1).astype(np.int8)
    for k, v in extra.items():
        full = np.zeros(n, bool) if v.dtype == bool else np.full(n, np.nan)
        full[ok] = v
        out[k] = full
    return pd.DataFrame(out)


def predict_catalogue(model, spectra_path, out_path, *, chunk_rows: int = 4096, photometry=None,
                      client=None, progress=None) -> Path:
    """Labels for every spectrum of ``spectra_path`` (labelcore HDF5), written to
    ``out_path`` (Parquet), ``chunk_rows`` spectra at a time. ``model``: a fitted method,
    a saved model folder or a run folder (a folder is needed with ``client``). Returns the
    output path."""
    spectra_path = Path(spectra_path)
    check_not_input(out_path, spectra_path, model if isinstance(model, str | Path) else None,
                    what="output catalogue")
    info = spectra_info(spectra_path)
    n = info["n_spectra"]
    if n == 0:
        raise ValidationError(f"{spectra_path} holds no spectra")
    if chunk_rows < 1:
        raise ValidationError(f"chunk_rows must be >= 1; got {chunk_rows}")
    if client is not None and not isinstance(model, str | Path):
        raise ValidationError("with a dask client pass the model as a saved folder (workers load it)")
    fitted = load_model(model) if isinstance(model, str | Path) else model
    with h5py.File(spectra_path, "r") as f:
        wave = f["wave"][:]
    fitted.check_grid(wave, where=str(spectra_path))
    bounds = [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]
    with atomic_path(out_path, ".parquet") as tmp:
        writer = None
        try:
            if client is not None:
                futures = [client.submit(predict_chunk, str(model), str(spectra_path), a, b, photometry,
                                         pure=False) for a, b in bounds]
                parts = (f.result() for f in futures)
            else:
                parts = (predict_chunk(fitted, spectra_path, a, b, photometry) for a, b in bounds)
            done = 0
            for (_a, b), df in zip(bounds, parts, strict=True):
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
                done = b
                report(progress, done / n, f"predicted {done:,} of {n:,} spectra")
        finally:
            if writer is not None:
                writer.close()
    return Path(out_path)


def find_observations(folder, star_id, id_column: str = "star_id") -> list[dict]:
    """The spectra of star ``star_id`` in the labelcore spectra files (``*.h5``) of
    ``folder`` (a survey folder): one ``{"path", "row", "obs_id", "setup", "snr"}`` per
    observation, highest S/N first. Files that are not labelcore spectra are skipped."""
    from labelcore.data.io import read_spectra_meta
    from labelcore.errors import LabelcoreError

    out = []
    for path in sorted(Path(folder).glob("*.h5")):
        try:
            meta = read_spectra_meta(path)
        except (LabelcoreError, OSError):
            continue
        col = id_column if id_column in meta.columns else "obs_id"
        hit = meta[meta[col].astype(str) == str(star_id)]
        for _, r in hit.iterrows():
            out.append({"path": path, "row": int(r["row"]), "obs_id": str(r["obs_id"]),
                        "setup": path.stem.removeprefix("spectra_"),
                        "snr": float(r["snr"]) if "snr" in r and pd.notna(r["snr"]) else float("nan")})
    return sorted(out, key=lambda o: -np.nan_to_num(o["snr"], nan=-1.0))


def star_fit(model, spectra_path, row: int, photometry=None) -> dict:
    """What the star inspector shows of one spectrum under one fitted model: ``row`` (the
    catalogue row :func:`predict_chunk` writes: labels, errors, total errors, flags, fit
    quality, OOD flag), ``wave``, ``flux``, ``flux_err`` and, for a method with model
    spectra, ``model`` (the flux at the predicted labels) and ``residual`` ((observed -
    model) / sigma). Raises ``ValidationError`` when the spectra are on another grid."""
    from labelcore.methods import capabilities as caps

    with h5py.File(spectra_path, "r") as f:
        wave = f["wave"][:]
    model.check_grid(wave, where=str(spectra_path))
    tab = predict_chunk(model, spectra_path, row, row + 1, photometry)
    s = read_spectra(spectra_path, slice(row, row + 1))
    flux = np.where(s.mask[0], np.nan, s.flux[0])
    err = np.where(s.mask[0], np.nan, s.flux_err[0]) if s.has_errors else None
    out = {"row": tab.iloc[0], "wave": wave, "flux": flux, "flux_err": err}
    y = tab[list(model.label_names_)].to_numpy(float)
    if model.supports(caps.MODEL_SPECTRA) and np.isfinite(y).all():
        mod = np.asarray(model.predict_spectra(y), float)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            res = (flux - mod) / err if err is not None else flux - mod
        out["model"] = mod
        out["residual"] = np.where(np.isfinite(res), res, np.nan)
    return out
