"""What a run does, in the process that runs it: :func:`execute` reads the run's config and
does its task -- ``train`` (load the data through its source, fit, save the model, curves,
held-out predictions and metrics, and the CODs when asked) or ``predict`` (label every
spectrum of a survey file with a finished run's model, :mod:`labelcore.catalogue`). The
Spectra tab's demo models are ordinary training runs (:func:`demo_configs`,
:func:`ensure_demo_runs`). Every failure is recorded in the run's status; nothing here
raises for a failed training."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from labelcore import settings
from labelcore.catalogue import predict_catalogue
from labelcore.constants import LABEL_UNITS
from labelcore.data.io import atomic_dir, atomic_path, read_table
from labelcore.errors import LabelcoreError, ValidationError
from labelcore.evaluate import bias_scatter, spectrum_fits
from labelcore.methods import capabilities as caps
from labelcore.methods import method_class, method_names
from labelcore.runs.config import TrainConfig, build_config, data_source
from labelcore.runs.store import HEARTBEAT_INTERVAL, HOST, Run, RunError, RunStore, _now, _write_json

#: seconds between writes of a training's curves so far (``curves_live/``)
LIVE_CURVES_INTERVAL = 5.0
#: held-out spectra whose fits a train run keeps for the Spectra page (``spectra.npz``)
SPECTRA_SHOWN = 300


class RunCancelled(LabelcoreError):
    """Raised inside a run's progress callback when a cancel was requested."""


def load_run_data(data: dict) -> dict:
    """(train, test) arrays of a run's data config through its source
    (:data:`labelcore.runs.config.DATA_SOURCES`): flux, flux_err, labels, label_err,
    photometry, ids; the test part also ``truth`` and ``snr``; and ``wave``,
    ``label_names``, ``truth_kind``."""
    return data_source(data["kind"]).load(data)


class _Heartbeat:
    """Refresh a run's heartbeat every HEARTBEAT_INTERVAL seconds from a daemon thread."""

    def __init__(self, run: Run):
        self.run, self._stop = run, threading.Event()
        run.beat()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"heartbeat-{run.id}")
        self._thread.start()

    def _loop(self):
        # a quarter of the timeout at most, so a live run is never mistaken for a dead one
        interval = min(HEARTBEAT_INTERVAL, settings.heartbeat_timeout() / 4)
        while not self._stop.wait(interval):
            with contextlib.suppress(OSError):
                self.run.beat()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


def execute(run, *, token: str | None = None, min_interval: float = 0.5) -> Run:
    """Do ``run`` (a :class:`Run` or its folder) in this process: load its data, fit, save
    the model, predict the held-out stars, write curves, predictions and metrics. The
    status says ``done``, ``failed`` (with the error) or ``cancelled`` at the end; this
    function does not raise for a failed training (the error is in the status).

    Exactly once: ``token`` is the claim a queue took for this process
    (:meth:`Run.claim`); without one, ``execute`` claims the run itself. A run that is not
    queued, or claimed by someone else, raises :class:`RunError` and is left untouched."""
    run = run if isinstance(run, Run) else Run(run)
    if token is None:
        token = run.claim(f"execute pid {os.getpid()}")
        if token is None:
            state = run.state
            raise RunError(f"run {run.id} is already {state}" if state != "queued" else
                           f"run {run.id} is claimed by another process ({(run.claim_info() or {}).get('owner')})")
    else:
        info = run.claim_info() or {}
        if info.get("token") != token:
            raise RunError(f"run {run.id}: the claim token does not match (claimed by {info.get('owner')})")
    if run.cancel_requested:
        run._set_status(state="cancelled", finished=_now(), message="cancelled before it started")
        return run
    heart = _Heartbeat(run)
    try:
        return _execute(run, min_interval)
    finally:
        heart.stop()


def _execute(run: Run, min_interval: float) -> Run:
    t0 = time.perf_counter()
    run._set_status(state="running", started=_now(), pid=os.getpid(), host=HOST,
                    fraction=0.0, message="loading data")
    run.log("started")
    last = [0.0, 0.0]
    live = {}     # the model in training, for its curves so far (CNN)

    def progress(frac, msg):
        if run.cancel_requested:
            raise RunCancelled("cancel requested")
        now = time.perf_counter()
        if now - last[0] >= min_interval or frac >= 1.0:
            last[0] = now
            run._set_status(fraction=0.05 + 0.85 * float(frac), message=msg)
            run.log(msg)
        model = live.get("model")
        if model is not None and model.supports(caps.LIVE_CURVES) and now - last[1] >= LIVE_CURVES_INTERVAL:
            last[1] = now
            df = model.curves_so_far()
            if df is not None:
                (run.path / "curves_live").mkdir(exist_ok=True)
                with atomic_path(run.path / "curves_live" / "epochs.parquet", ".parquet") as tmp:
                    df.to_parquet(tmp, index=False)

    try:
        cfg = run.config
        if cfg.get("task") == "predict":
            _execute_predict(run, cfg, progress, t0)
            return run
        data = load_run_data(cfg["data"])
        progress(0.0, "data loaded")
        tr, te = data["train"], data["test"]
        names = data["label_names"]
        phot = bool(cfg["data"].get("photometry"))
        progress(0.0, f"data: {len(tr['flux'])} training, {len(te['flux'])} held-out spectra")
        cls = method_class(cfg["method"])
        model = cls(**cls.validate_params(cfg["params"]))
        live["model"] = model
        k = int(cfg.get("calibration_folds", 0) or 0)
        share = 1.0 if not k else 0.6       # of the progress bar: the fit, then the K refits
        model.fit(tr["flux"], tr["labels"], flux_err=tr["flux_err"], label_err=tr["label_err"],
                  photometry=tr["photometry"] if phot else None, label_names=names, wave=data["wave"],
                  progress=lambda fr, msg: progress(share * fr, msg))
        fit_seconds = time.perf_counter() - t0
        live.pop("model")
        if k:
            run._set_status(message=f"calibrating the errors ({k}-fold refits)")
            model.calibrate_errors(tr["flux"], tr["labels"], flux_err=tr["flux_err"], label_err=tr["label_err"],
                                   photometry=tr["photometry"] if phot else None, n_folds=k,
                                   progress=lambda fr, msg: progress(share + (1 - share) * fr, msg))
        progress(1.0, "saving the model")
        model.save(run.path / "model")
        run._set_status(fraction=0.92, message="predicting the held-out stars")
        det = model.predict_details(te["flux"], flux_err=te["flux_err"],
                                    photometry=te["photometry"] if phot else None)
        y, y_err, y_tot = det.labels, det.errors, det.total_errors
        flags = model.boundary_flags(y)
        pred = {"id": te["ids"], "snr": te["snr"]}
        for j, n in enumerate(names):
            pred[n] = te["truth"][:, j]
            pred[f"{n}_pred"] = y[:, j]
            pred[f"{n}_pred_err"] = y_err[:, j]
            if y_tot is not None:
                pred[f"{n}_pred_err_total"] = y_tot[:, j]
            pred[f"{n}_flag"] = flags[:, j]
        with atomic_path(run.path / "predictions.parquet", ".parquet") as tmp:
            pd.DataFrame(pred).to_parquet(tmp, index=False)
        if model.supports(caps.LEARNING_CURVES):
            with atomic_dir(run.path / "curves", "curves") as tmp:
                for k, df in model.learning_curves().items():
                    df.to_parquet(tmp / f"{k}.parquet", index=False)
        if model.supports(caps.MODEL_SPECTRA):
            run._set_status(fraction=0.94, message="model spectra of the held-out stars")
            k = slice(0, min(SPECTRA_SHOWN, len(te["flux"])))
            fits = spectrum_fits(model, te["flux"][k], te["flux_err"][k] if te["flux_err"] is not None else None)
            arrays = {"wave": np.asarray(data["wave"], float), "flux": te["flux"][k], "truth": te["truth"][k],
                      "ids": np.asarray(te["ids"][k]).astype(str), **fits}
            if te["flux_err"] is not None:
                arrays["flux_err"] = te["flux_err"][k]
            with atomic_path(run.path / "spectra.npz", ".npz") as tmp:
                np.savez(tmp, **arrays)
        if cfg.get("cods"):
            run._set_status(fraction=0.95, message="coefficients of dependence on the training set")
            cods = model.cods(tr["flux"], tr["labels"])
            with atomic_path(run.path / "cods.npz", ".npz") as tmp:
                np.savez(tmp, **cods)
        shutil.rmtree(run.path / "curves_live", ignore_errors=True)
        snr = te["snr"] if np.isfinite(te["snr"]).any() else None
        bs = bias_scatter(y, te["truth"], names, snr=snr, errors=y_err, total_errors=y_tot)
        metrics = {"method": cfg["method"], "n_train": int(len(tr["flux"])), "n_test": int(len(te["flux"])),
                   "label_names": names, "fit_seconds": fit_seconds,
                   "seconds": time.perf_counter() - t0,
                   "truth": data["truth_kind"],
                   "bias_scatter": bs.replace({np.nan: None}).to_dict("records"),
                   "boundary_flag_fraction": float(flags.mean()),
                   "error_model": model.error_model_.table(names) if y_tot is not None else None}
        _write_json(run.path / "metrics.json", metrics)
        run._set_status(state="done", fraction=1.0, finished=_now(), seconds=metrics["seconds"],
                        message=f"done in {metrics['seconds']:.1f} s")
        run.log("done")
    except RunCancelled:
        shutil.rmtree(run.path / "curves_live", ignore_errors=True)
        run._set_status(state="cancelled", finished=_now(), seconds=time.perf_counter() - t0,
                        message="cancelled")
        run.log("cancelled")
    except Exception as exc:  # the run records every failure; the caller reads the status
        shutil.rmtree(run.path / "curves_live", ignore_errors=True)
        run._set_status(state="failed", finished=_now(), seconds=time.perf_counter() - t0,
                        error=f"{type(exc).__name__}: {exc}")
        run.log("failed:\n" + traceback.format_exc())
    return run


def _execute_predict(run: Run, cfg: dict, progress, t0: float) -> None:
    out = run.path / "catalogue.parquet"
    predict_catalogue(Path(cfg["model_run"]) / "model", cfg["spectra"], out, chunk_rows=int(cfg["chunk_rows"]),
                      progress=progress)
    if cfg.get("join"):
        run._set_status(fraction=0.95, message="joining the catalogue columns")
        cat = read_table(out)
        other = read_table(cfg["join"])
        if "source_id" not in cat.columns or "source_id" not in other.columns:
            raise ValidationError("joining needs a source_id column in the spectra metadata and in the table")
        # the table's own labels (and errors) come along as <name>_ref / <name>_err_ref, so a
        # reference value is never mistaken for a prediction; other columns keep their names
        ref = {c: f"{c}_ref" for c in other.columns
               if c in LABEL_UNITS or (c.endswith("_err") and c[:-4] in LABEL_UNITS)}
        other = other.rename(columns=ref)
        keep = ["source_id", *[c for c in other.columns if c != "source_id" and c not in cat.columns]]
        other = other[keep].drop_duplicates("source_id")
        cat = cat.merge(other, on="source_id", how="left")
        with atomic_path(out, ".parquet") as tmp:
            cat.to_parquet(tmp, index=False)
    n = len(read_table(out, columns=["obs_id"]))
    secs = time.perf_counter() - t0
    _write_json(run.path / "metrics.json", {"task": "predict", "n_spectra": n, "seconds": secs,
                                            "spectra_per_second": n / secs, "method": cfg["method"]})
    run._set_status(state="done", fraction=1.0, finished=_now(), seconds=secs,
                    message=f"{n:,} spectra labelled in {secs:.1f} s")
    run.log("done")




# ------------------------------------------------------------------------- demo
#: the Spectra tab's demo: SLAM (3-fold CV, with CODs) and Lux at its defaults on 800
#: RAVE-like spectra; 200 held-out spectra to show
DEMO_DATA = {"setup": "rave", "n_train": 800, "n_test": 200, "seed": 11, "snr": [20, 300],
             "labels": ["teff", "logg", "m_h", "alpha_m"]}


def demo_configs() -> list[TrainConfig]:
    """The demo runs: every method with model spectra, on :data:`DEMO_DATA`, with its
    CODs where it has them (quick settings and formal errors only -- the Spectra page
    shows model fits, not error bars -- so a first start takes about a minute)."""

    out = []
    for name in method_names():
        cls = method_class(name)
        if cls.supports(caps.MODEL_SPECTRA):
            out.append(build_config(name, cls.quick_params, photometry=False, cods=cls.supports(caps.CODS),
                                    name=f"Demo: {name} on synthetic RAVE-like spectra", calibration_folds=0,
                                    **DEMO_DATA))
    return out


def ensure_demo_runs(store: RunStore, submit=None) -> list[Run]:
    """The demo runs of ``store`` (one per :func:`demo_configs` entry): existing ones that
    are done or still going are reused; missing or failed ones are created (queued) and,
    if given, passed to ``submit`` (e.g. a queue's ``poll``). Returns the runs."""
    wanted = [c.to_dict() for c in demo_configs()]
    have = {}
    for r in store.runs():
        cfg = r.config
        key = (cfg.get("method"), cfg.get("name"))
        st = r.state
        if st in ("failed", "cancelled"):
            continue
        have[key] = r
    out = []
    for cfg in wanted:
        r = have.get((cfg["method"], cfg["name"]))
        if r is None or r.config.get("data") != cfg["data"] or r.config.get("params") != cfg["params"]:
            r = store.create(cfg)
        out.append(r)
    if submit is not None:
        submit()
    return out
