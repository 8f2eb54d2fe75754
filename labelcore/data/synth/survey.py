"""Build a complete synthetic survey on disk: catalogue, spectra for three set-ups, and a
second "label survey" with its own zero-points.

Layout of a survey folder::

    survey.json            generation parameters, versions, counts (the cache key)
    catalogue.parquet      one row per star: ids, observed (APOGEE-like) labels + errors,
                           true labels (``true_<label>``), photometry, parallax, A_V,
                           positions, kinematics, S/N per set-up
    spectra_<setup>.h5     chunked HDF5 (see :mod:`labelcore.data.io`), one row per
                           observation (repeat visits are extra rows with the same star_id)
    labels_galah.parquet   the second label survey (GALAH-like offsets, some labels missing)

The stars with spectra are drawn from a common "spectroscopic pool" so that the set-ups
overlap, as RAVE, LAMOST and APOGEE do on the sky, which the cross-match and
label-transfer work needs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labelcore import __version__, settings
from labelcore.data.io import SpectraWriter, atomic_dir, write_table
from labelcore.data.synth.population import LABEL_ERRORS, make_population, observe_labels
from labelcore.data.synth.setups import SETUPS
from labelcore.data.synth.spectra import LineModel, observe

#: median S/N per pixel and the magnitude column driving it, per set-up
SNR_MODEL = {"rave": (45.0, "g"), "lamost": (60.0, "g"), "apogee": (150.0, "h")}
#: zero-point offsets of the GALAH-like label survey relative to the truth
GALAH_OFFSETS = {"teff": 35.0, "logg": 0.06, "fe_h": -0.04, "m_h": -0.03, "mg_fe": 0.03,
                 "si_fe": -0.02, "ca_fe": 0.02, "al_fe": 0.05, "o_fe": 0.08}
GALAH_LABELS = ("teff", "logg", "fe_h", "mg_fe", "si_fe", "ca_fe", "al_fe", "o_fe", "ni_fe",
                "mn_fe")

DEFAULT_PARAMS = {
    "n_catalogue": 200_000,
    "n_spectra": {"rave": 4000, "lamost": 3000, "apogee": 1500},
    "seed": 42,
    "normalised": True,
    "rest_frame": True,
    "repeat_fraction": 0.05,
    "label_survey_fraction": 0.5,
}


def default_data_dir() -> Path:
    """Where the embedded default survey lives: ``$LABELCORE_DATA_DIR`` or
    ``~/.cache/labelcore``."""
    return settings.data_dir()


def spectra_snr(mag: np.ndarray, setup: str, rng) -> np.ndarray:
    med, _ = SNR_MODEL[setup]
    snr = med * 10 ** (-0.2 * (mag - np.median(mag))) * rng.lognormal(0, 0.25, mag.size)
    return np.clip(snr, 5.0, 1000.0)


def make_catalogue(n_stars: int, seed: int = 42) -> pd.DataFrame:
    """Population + observed labels + truth columns, as in ``catalogue.parquet``."""
    pop = make_population(n_stars, seed=seed)
    obs = observe_labels(pop, seed=seed + 1)
    truth = pop[list(LABEL_ERRORS)].add_prefix("true_")
    rest = pop.drop(columns=list(LABEL_ERRORS))
    return pd.concat([rest, obs, truth], axis=1)


def make_survey(path, n_catalogue: int | None = None, n_spectra: dict | None = None,
                seed: int | None = None, normalised: bool | None = None,
                rest_frame: bool | None = None, repeat_fraction: float | None = None,
                label_survey_fraction: float | None = None, chunk_rows: int = 1000,
                progress=None, force: bool = False) -> dict:
    """Generate a survey folder (see module docstring). Returns the ``survey.json`` dict.

    Everything is written to a temporary sibling folder and renamed into place at the end,
    so an interrupted run never leaves a half-built survey; an existing ``path`` is
    replaced only if it is a survey (or empty), unless ``force``. Memory is bounded by
    ``chunk_rows`` spectra at a time.
    """
    p = dict(DEFAULT_PARAMS)
    for k, v in (("n_catalogue", n_catalogue), ("n_spectra", n_spectra), ("seed", seed),
                 ("normalised", normalised), ("rest_frame", rest_frame),
                 ("repeat_fraction", repeat_fraction),
                 ("label_survey_fraction", label_survey_fraction)):
        if v is not None:
            p[k] = v
    unknown = set(p["n_spectra"]) - set(SETUPS)
    if unknown:
        raise ValueError(f"unknown set-ups {sorted(unknown)}; choose from {sorted(SETUPS)}")
    n_cat = int(p["n_catalogue"])
    n_pool = max(p["n_spectra"].values(), default=0)
    if n_pool > n_cat:
        raise ValueError(f"asked for {n_pool} spectra from a catalogue of {n_cat} stars")
    path = Path(path)
    report = progress or (lambda frac, msg: None)
    timings = {}
    with atomic_dir(path, "survey", force=force) as tmp:
        t0 = time.perf_counter()
        cat = make_catalogue(n_cat, seed=p["seed"])
        timings["catalogue_s"] = time.perf_counter() - t0
        rng = np.random.default_rng(p["seed"] + 100)
        # spectroscopic pool: the first stars (random draws already), 1.3x the largest
        # sample so that set-ups overlap substantially
        pool = min(n_cat, int(1.3 * n_pool) + 1)
        counts = {}
        for si, (setup, n_sp) in enumerate(sorted(p["n_spectra"].items())):
            if n_sp <= 0:
                continue
            report(si / max(len(p["n_spectra"]), 1), f"spectra {setup}")
            rows = np.sort(rng.choice(pool, size=n_sp, replace=False))
            band = SNR_MODEL[setup][1]
            snr = spectra_snr(cat[band].to_numpy()[rows], setup, rng)
            col = np.full(n_cat, np.nan)
            col[rows] = snr
            cat[f"snr_{setup}"] = col
            n_rep = int(round(p["repeat_fraction"] * n_sp))
            rep = rng.choice(n_sp, size=n_rep, replace=False)
            obs_rows = np.concatenate([np.arange(n_sp), rep])
            visit = np.concatenate([np.zeros(n_sp, int), np.ones(n_rep, int)])
            obs_snr = np.concatenate([snr, snr[rep] * rng.lognormal(0, 0.2, n_rep)])
            t1 = time.perf_counter()
            counts[setup] = _write_setup(tmp / f"spectra_{setup}.h5", setup, cat, rows, obs_rows,
                                         visit, obs_snr, p, rng, chunk_rows)
            dt = time.perf_counter() - t1
            timings[f"spectra_{setup}_per_s"] = counts[setup] / dt
        # second label survey (GALAH-like) for a subset of the pool
        n_lab = int(p["label_survey_fraction"] * pool)
        lab_rows = np.sort(rng.choice(pool, size=n_lab, replace=False))
        sub = cat.iloc[lab_rows]
        truth = sub[[f"true_{s}" for s in GALAH_LABELS]].set_axis(list(GALAH_LABELS), axis=1)
        gal = observe_labels(truth, seed=p["seed"] + 7, names=GALAH_LABELS, error_scale=1.4,
                             offsets=GALAH_OFFSETS, missing_fraction=0.15)
        gal.insert(0, "source_id", sub["source_id"].to_numpy())
        gal.insert(0, "id", np.char.add("GAL", np.char.zfill(np.arange(n_lab).astype(str), 7)))
        gal["snr"] = np.clip(rng.lognormal(np.log(60), 0.5, n_lab), 10, 400)
        write_table(gal.reset_index(drop=True), tmp / "labels_galah.parquet")
        write_table(cat, tmp / "catalogue.parquet")
        info = {
            "format": "labelcore-synthetic-survey", "labelcore_version": __version__,
            "params": p, "n_catalogue": n_cat, "n_observations": counts,
            "n_label_survey": n_lab, "timings": timings,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (tmp / "survey.json").write_text(json.dumps(info, indent=2))
    report(1.0, "done")
    return info


def _write_setup(fname, setup, cat, rows, obs_rows, visit, obs_snr, p, rng, chunk_rows) -> int:
    model = LineModel(setup)
    stars = cat.iloc[rows[obs_rows]].reset_index(drop=True)
    n_obs = len(stars)
    rv = rng.normal(0, 40, n_obs) + np.where(stars["component"].to_numpy() == "halo",
                                             rng.normal(0, 120, n_obs), 0.0)
    attrs = {"setup": setup, "resolution": SETUPS[setup].resolution,
             "normalised": bool(p["normalised"]), "rest_frame": bool(p["rest_frame"]),
             "air_wavelengths": SETUPS[setup].air, "seed": int(p["seed"])}
    with SpectraWriter(fname, model.wave, name=setup, chunk_rows=256, attrs=attrs) as w:
        for a in range(0, n_obs, chunk_rows):
            b = min(a + chunk_rows, n_obs)
            s = stars.iloc[a:b]
            labels = {c[5:]: s[c].to_numpy() for c in s.columns if c.startswith("true_")}
            flux, err, mask = observe(setup, labels, obs_snr[a:b], rng,
                                      rv=None if p["rest_frame"] else rv[a:b],
                                      normalised=p["normalised"], model=model)
            obs_id = [f"{setup.upper()}-{sid}-{v}" for sid, v in zip(s["id"], visit[a:b], strict=True)]
            meta = pd.DataFrame({"star_id": s["id"].to_numpy(),
                                 "source_id": s["source_id"].to_numpy(),
                                 "snr": obs_snr[a:b], "rv": rv[a:b], "visit": visit[a:b]})
            w.append(flux, err, mask.astype(np.uint8), obs_id, meta)
    return n_obs


def ensure_survey(path=None, **params) -> Path:
    """Return the survey folder, generating it first if missing or made with other
    parameters (the cache key is ``survey.json``'s params and the labelcore version)."""
    path = Path(path) if path else settings.default_survey_dir()
    want = dict(DEFAULT_PARAMS, **{k: v for k, v in params.items() if v is not None})
    meta = path / "survey.json"
    if meta.exists():
        try:
            info = json.loads(meta.read_text())
            if info.get("params") == want and info.get("labelcore_version") == __version__:
                return path
        except (OSError, json.JSONDecodeError):
            pass
    make_survey(path, **want)
    return path
