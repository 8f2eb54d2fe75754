"""Shared data store for the app pages: loads (and caches) the default survey catalogue."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from labelcore.data.io import read_table
from labelcore.data.synth.survey import ensure_survey

#: columns the catalogue page offers for colouring (numeric)
CATALOGUE_COLUMNS = None

_QUEUES: dict = {}


def run_store(root: str | None = None):
    """The run store the app's Train, Learning-curves and Compare tabs share (default
    ``<labelcore data dir>/runs``)."""
    from labelcore.runs import RunStore

    return RunStore(root)


def run_choices(store, task: str = "train") -> dict[str, str]:
    """{"name — id": id} of the store's finished runs of ``task``, newest first (what the
    pages' run selectors offer)."""
    return {f"{r.config.get('name')} — {r.id}": r.id for r in reversed(store.finished(task))}


def job_queue(store=None):
    """One job queue per store and server process, shared by every browser session (so two
    sessions never start the same queued run twice), polling in a background thread so
    that queued runs start even when no browser has the Train tab open."""
    from labelcore.runs import JobQueue

    store = store or run_store()
    key = str(store.root.resolve())
    if key not in _QUEUES:
        _QUEUES[key] = JobQueue(store).start()
    return _QUEUES[key]


def survey_path(survey_dir: str | None = None) -> Path:
    """``survey_dir``, or the embedded default survey (built on first use, cached on disk)."""
    return Path(survey_dir) if survey_dir else ensure_survey()


def training_sets_root() -> Path:
    """Where the Training-set tab saves and the Train tab finds training sets."""
    from labelcore.data.synth.survey import default_data_dir

    return default_data_dir() / "training_sets"


@functools.lru_cache(maxsize=4)
def load_catalogue(survey_dir: str | None = None) -> pd.DataFrame:
    """The catalogue table of ``survey_dir`` (default: the embedded survey, built on first
    use and cached on disk)."""
    path = survey_path(survey_dir)
    df = read_table(path / "catalogue.parquet")
    for c in ("phase", "component"):
        if c in df.columns:
            df[c] = df[c].astype("category")
    return df


DEMO_LABELS = ("teff", "logg", "m_h", "alpha_m")
DEMO_PARAMS = {"setup": "rave", "n_train": 800, "n_show": 200, "seed": 11, "snr": [20, 300],
               "labels": list(DEMO_LABELS), "slam": {"n_folds": 3}, "lux": {}}


def load_spectra_demo(data_dir: str | None = None):
    """The Spectra page's default content: RAVE-like spectra from the synthetic generator,
    SLAM and Lux trained on 800 of them (SLAM with 3-fold CV, to keep the first start near a
    minute; Lux at its defaults), SLAM's CODs on the training set, and 200 other spectra
    to show. Trained models are cached on disk in their safe formats (under
    ``data_dir``/app_models, default the labelcore data folder), keyed by these settings and
    the labelcore version, and written to a temporary folder first, so an interrupted
    start leaves no half-written cache. Returns (display set, {"SLAM": ..., "Lux": ...},
    cods)."""
    import json
    import os
    import shutil
    import tempfile

    import numpy as np

    from labelcore import __version__
    from labelcore.data.synth.datasets import labelled_set
    from labelcore.data.synth.survey import default_data_dir
    from labelcore.methods import SLAM, Lux

    p = DEMO_PARAMS
    d = labelled_set(p["setup"], p["n_train"] + p["n_show"], seed=p["seed"], label_names=DEMO_LABELS,
                     snr=tuple(p["snr"]))
    tr, show = d.split(p["n_train"])
    root = Path(data_dir) if data_dir else default_data_dir()
    folder = root / "app_models"
    key = {"params": p, "labelcore_version": __version__}
    try:
        ok = json.loads((folder / "key.json").read_text()) == key
    except (OSError, json.JSONDecodeError):
        ok = False
    if not ok:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".app_models-", dir=root))
        try:
            slam = SLAM(**p["slam"]).fit(tr.flux, tr.labels, flux_err=tr.flux_err, label_names=DEMO_LABELS,
                                         wave=tr.wave)
            lux = Lux(**p["lux"]).fit(tr.flux, tr.labels, flux_err=tr.flux_err, label_names=DEMO_LABELS,
                                      wave=tr.wave)
            cods = slam.cods(tr.flux, tr.labels)
            slam.save(tmp / "slam")
            lux.save(tmp / "lux")
            np.savez(tmp / "cods.npz", **cods)
            (tmp / "key.json").write_text(json.dumps(key))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    models = {"SLAM": SLAM.load(folder / "slam"), "Lux": Lux.load(folder / "lux")}
    with np.load(folder / "cods.npz") as z:
        cods = {k: z[k] for k in z.files}
    return show, models, cods
