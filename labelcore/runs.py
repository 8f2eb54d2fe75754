"""Run store and job execution: the one way the CLI, the app and notebooks train a model.

A *run* is a folder under a store root (default ``<data dir>/runs``)::

    config.json          what to do: method, hyper-parameters, data (written once, never changed)
    status.json          state, fraction, message, times, error, pid (rewritten atomically)
    log.txt              one line per progress message
    model/               the fitted model in its safe format (``Method.load(run / "model")``)
    curves/<name>.parquet learning-curve tables (:func:`labelcore.evaluate.learning_curves`)
    curves_live/          while a CNN trains: its curves so far (removed when it ends)
    predictions.parquet  the held-out stars: truth, prediction, 1-sigma error, flags, S/N
    metrics.json         bias/scatter per label, overall and per S/N bin; timings
    catalogue.parquet    (prediction runs) labels of every spectrum of a survey file
    cancel               present when a cancel was requested

Every file is written atomically (temporary name, then rename), so a reader never sees a
half-written file and a crash leaves the previous version. States move
``queued -> running -> done | failed | cancelled``.

Execution
---------
:func:`execute` does a run in the calling process. :class:`JobQueue` runs queued runs one
(``max_workers``) at a time, each in a fresh Python *subprocess* (``python -m
labelcore.runs RUN``): a training cannot block or crash the app that launched it, TF/JAX
threads are never forked (the multiprocessing hangs users of older tools complain about),
and a cancel that the run does not honour within ``grace`` seconds ends the process. With
``client=`` (a ``dask.distributed.Client``) the same :func:`execute` is submitted to the
cluster's workers instead; a run folder on a shared filesystem is all they exchange.

Tasks
-----
``config["task"]`` is ``"train"`` (the default) or ``"predict"``: label every spectrum of a
spectra file with the model of a finished training run (``{"task": "predict", "model_run":
RUN_FOLDER, "spectra": FILE}``, written by :func:`labelcore.catalogue.predict_catalogue`
to the run's ``catalogue.parquet``; ``"join"``: an optional Parquet table, e.g. the survey
catalogue, whose columns are added by ``source_id``, its labels as ``<name>_ref``).

Data
----
``config["data"]`` is either ``{"kind": "synthetic", "setup": "rave", "n_train": 800,
"n_test": 200, "seed": 0, "snr": [20, 300], "labels": [...]}`` (the embedded generator; the
held-out stars carry their *true* labels, so metrics measure accuracy) or ``{"kind":
"training_set", "path": ..., "test_fraction": 0.2, "seed": 0}`` (a folder saved by
:class:`labelcore.prep.training.TrainingSet`; the held-out stars are compared with their
catalogue labels). ``"photometry": true`` feeds the 8 absolute magnitudes + A_V to the CNN.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from labelcore.errors import LabelcoreError, ValidationError

METHODS = ("CNN", "SLAM", "Lux")
STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
#: seconds between writes of a training's curves so far (``curves_live/``, CNN)
LIVE_CURVES_INTERVAL = 5.0


class RunError(LabelcoreError):
    """A run that cannot be created, found or executed as asked."""


class RunCancelled(LabelcoreError):
    """Raised inside a run's progress callback when a cancel was requested."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, doc: dict) -> None:
    from labelcore.data.io import atomic_path

    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------- config
def validate_config(config: dict) -> dict:
    """Check a run config and fill its defaults; raises :class:`ValidationError` naming the
    field that is wrong. Returns a new dict."""
    if not isinstance(config, dict):
        raise ValidationError(f"run config must be a dict; got {type(config).__name__}")
    cfg = json.loads(json.dumps(config, default=_json_default))
    task = cfg.setdefault("task", "train")
    if task == "predict":
        return _validate_predict(cfg)
    if task != "train":
        raise ValidationError(f"config 'task' must be 'train' or 'predict'; got {task!r}")
    method = cfg.get("method")
    if method not in METHODS:
        raise ValidationError(f"config 'method' must be one of {METHODS}; got {method!r}")
    params = cfg.setdefault("params", {})
    if not isinstance(params, dict):
        raise ValidationError("config 'params' must be a dict of hyper-parameters")
    cls = method_class(method)
    valid = cls._param_names()
    bad = [k for k in params if k not in valid]
    if bad:
        raise ValidationError(f"{method} has no hyper-parameter(s) {bad}; valid: {valid}")
    data = cfg.get("data")
    if not isinstance(data, dict) or data.get("kind") not in ("synthetic", "training_set"):
        raise ValidationError("config 'data' must be a dict with kind 'synthetic' or 'training_set'")
    if data["kind"] == "synthetic":
        data.setdefault("setup", "rave")
        data.setdefault("seed", 0)
        data.setdefault("snr", [20, 300])
        for k in ("n_train", "n_test"):
            v = data.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValidationError(f"config data '{k}' must be a positive integer; got {v!r}")
        if data["setup"] not in ("rave", "lamost", "apogee"):
            raise ValidationError(f"config data 'setup' must be rave, lamost or apogee; got {data['setup']!r}")
        labels = data.get("labels")
        if labels is not None:
            from labelcore.data.synth.population import LABEL_ERRORS

            if not isinstance(labels, list) or not labels:
                raise ValidationError("config data 'labels' must be a non-empty list of label names")
            unknown = [n for n in labels if n not in LABEL_ERRORS]
            if unknown:
                raise ValidationError(f"config data 'labels' {unknown} are not labels of the synthetic survey; "
                                      f"known: {sorted(LABEL_ERRORS)}")
    else:
        p = data.get("path")
        if not p or not (Path(p) / "training_set.json").exists():
            raise ValidationError(f"config data 'path' {p!r} is not a saved training set "
                                  "(no training_set.json)")
        tf = data.setdefault("test_fraction", 0.2)
        if not isinstance(tf, int | float) or not 0 < tf < 1:
            raise ValidationError(f"config data 'test_fraction' must be in (0, 1); got {tf!r}")
        data.setdefault("seed", 0)
    data.setdefault("photometry", False)
    if data["photometry"] and method != "CNN":
        raise ValidationError(f"photometry is an input of the CNN only, not of {method}")
    cfg.setdefault("name", f"{method} on {data.get('setup', Path(str(data.get('path'))).name)}")
    return cfg


def _validate_predict(cfg: dict) -> dict:
    mr = cfg.get("model_run")
    try:
        model_run = Run(mr)
    except (RunError, TypeError) as exc:
        raise ValidationError(f"config 'model_run' {mr!r} is not a run folder") from exc
    if model_run.state != "done" or not (model_run.path / "model").exists():
        raise ValidationError(f"config 'model_run' {model_run.id} has no trained model (state {model_run.state})")
    sp = cfg.get("spectra")
    if not sp or not Path(sp).is_file():
        raise ValidationError(f"config 'spectra' {sp!r} is not a file")
    join = cfg.get("join")
    if join is not None and not Path(join).is_file():
        raise ValidationError(f"config 'join' {join!r} is not a file")
    cfg["model_run"] = str(model_run.path.resolve())
    cfg["method"] = model_run.config["method"]
    cfg.setdefault("chunk_rows", 4096)
    cfg.setdefault("name", f"{model_run.config.get('name')} → {Path(sp).name}")
    return cfg


def method_class(name: str):
    from labelcore import methods

    if name not in METHODS:
        raise ValidationError(f"unknown method {name!r}; expected one of {METHODS}")
    return getattr(methods, name)


# ------------------------------------------------------------------------- one run
class Run:
    """A handle on one run folder (cheap: reads files on demand)."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise RunError(f"{self.path} is not a run folder (no config.json)")

    def __repr__(self):
        return f"Run({self.id!r}, {self.status()['state']})"

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def status(self) -> dict:
        try:
            st = json.loads((self.path / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {"state": "failed", "error": "status.json missing or unreadable", "fraction": 0.0}
        if st.get("state") == "running" and st.get("host") == os.uname().nodename \
                and not _pid_alive(st.get("pid")):
            st = dict(st, state="failed", error="the process running this run ended without a result")
        return st

    @property
    def state(self) -> str:
        return self.status()["state"]

    def _set_status(self, **changes) -> dict:
        st = {}
        with contextlib.suppress(OSError, json.JSONDecodeError):
            st = json.loads((self.path / "status.json").read_text())
        st.update(changes)
        _write_json(self.path / "status.json", st)
        return st

    def log(self, msg: str) -> None:
        with open(self.path / "log.txt", "a") as fh:
            fh.write(f"{_now()} {msg}\n")

    def log_text(self) -> str:
        try:
            return (self.path / "log.txt").read_text()
        except OSError:
            return ""

    # -- cancel
    def cancel(self) -> None:
        """Ask the run to stop. A queued run is cancelled at once; a running one stops at its
        next progress report (and :class:`JobQueue` ends its process after a grace time)."""
        (self.path / "cancel").touch()
        if self.state == "queued":
            self._set_status(state="cancelled", finished=_now(), message="cancelled before it started")

    @property
    def cancel_requested(self) -> bool:
        return (self.path / "cancel").exists()

    # -- results
    def model(self):
        if not (self.path / "model").exists():
            raise RunError(f"run {self.id} has no saved model (state {self.state})")
        return method_class(self.config["method"]).load(self.path / "model")

    def metrics(self) -> dict:
        try:
            return json.loads((self.path / "metrics.json").read_text())
        except OSError as exc:
            raise RunError(f"run {self.id} has no metrics (state {self.state})") from exc

    def predictions(self) -> pd.DataFrame:
        from labelcore.data.io import read_table

        p = self.path / "predictions.parquet"
        if not p.exists():
            raise RunError(f"run {self.id} has no predictions (state {self.state})")
        return read_table(p)

    def catalogue(self) -> pd.DataFrame:
        """The label catalogue of a prediction run."""
        from labelcore.data.io import read_table

        p = self.path / "catalogue.parquet"
        if not p.exists():
            raise RunError(f"run {self.id} has no catalogue (task {self.config.get('task', 'train')}, "
                           f"state {self.state})")
        return read_table(p)

    @property
    def task(self) -> str:
        return self.config.get("task", "train")

    def live_curves(self) -> pd.DataFrame | None:
        """A training CNN's curves so far (member, epoch, losses, training), or None."""
        from labelcore.data.io import read_table

        p = self.path / "curves_live" / "epochs.parquet"
        try:
            return read_table(p) if p.exists() else None
        except (OSError, LabelcoreError):
            return None

    def curves(self) -> dict[str, pd.DataFrame]:
        from labelcore.data.io import read_table

        d = self.path / "curves"
        return {p.stem: read_table(p) for p in sorted(d.glob("*.parquet"))} if d.exists() else {}


class RunStore:
    """The runs under one folder (default ``<labelcore data dir>/runs``)."""

    def __init__(self, root=None):
        if root is None:
            from labelcore.data.synth.survey import default_data_dir

            root = default_data_dir() / "runs"
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, config: dict) -> Run:
        """Validate ``config`` and make a queued run folder for it."""
        cfg = validate_config(config)
        rid = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        tmp = self.root / f".{rid}.partial"
        tmp.mkdir(parents=True)
        try:
            _write_json(tmp / "config.json", cfg)
            _write_json(tmp / "status.json", {"state": "queued", "fraction": 0.0, "message": "queued",
                                              "created": _now()})
            os.replace(tmp, self.root / rid)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Run(self.root / rid)

    def runs(self) -> list[Run]:
        """All runs, oldest first."""
        return [Run(p) for p in sorted(self.root.iterdir())
                if p.is_dir() and not p.name.startswith(".") and (p / "config.json").exists()]

    def finished(self, task: str = "train") -> list[Run]:
        """The runs of ``task`` that ended ``done``, oldest first."""
        return [r for r in self.runs() if r.task == task and r.state == "done"]

    def get(self, run_id: str) -> Run:
        p = self.root / run_id
        if not (p / "config.json").exists():
            raise RunError(f"no run {run_id!r} in {self.root}")
        return Run(p)

    def table(self) -> pd.DataFrame:
        """One row per run: id, name, method, state, fraction, message, times."""
        rows = []
        for r in self.runs():
            st, cfg = r.status(), r.config
            rows.append({"id": r.id, "name": cfg.get("name"), "task": cfg.get("task", "train"),
                         "method": cfg["method"],
                         "state": st.get("state"), "progress": float(st.get("fraction", 0.0)),
                         "message": st.get("error") or st.get("message", ""),
                         "created": st.get("created"), "seconds": st.get("seconds")})
        cols = ["id", "name", "task", "method", "state", "progress", "message", "created", "seconds"]
        return pd.DataFrame(rows, columns=cols)

    def delete(self, run_id: str) -> None:
        r = self.get(run_id)
        if r.state == "running":
            raise RunError(f"run {run_id} is running; cancel it first")
        shutil.rmtree(r.path)


# ------------------------------------------------------------------------- data
def load_run_data(data: dict) -> dict:
    """(train, test) arrays of a run's data config: flux, flux_err, labels, label_err,
    photometry, wave, label_names; the test part also ``truth`` and ``snr``."""
    kind = data["kind"]
    if kind == "synthetic":
        from labelcore.data.synth.datasets import labelled_set

        d = labelled_set(data["setup"], data["n_train"] + data["n_test"], seed=int(data["seed"]),
                         label_names=data.get("labels"), snr=tuple(data["snr"]) if data.get("snr") else None)
        tr, te = d.split(data["n_train"])
        out = {}
        for part, s in (("train", tr), ("test", te)):
            out[part] = {"flux": s.flux, "flux_err": s.flux_err, "labels": s.labels, "label_err": s.label_err,
                         "photometry": s.photometry, "snr": s.snr,
                         "truth": s.truth if part == "test" else s.labels,
                         "ids": np.arange(len(s.snr)) + (0 if part == "train" else data["n_train"])}
        out["wave"], out["label_names"] = d.wave, list(d.label_names)
        return out
    from labelcore.prep.photometry import photometry_matrix
    from labelcore.prep.training import TrainingSet

    ts = TrainingSet.load(data["path"])
    n = len(ts)
    n_test = int(round(data["test_fraction"] * n))
    if n_test < 1 or n - n_test < 2:
        raise ValidationError(f"training set {data['path']} has {n} stars: too few for a "
                              f"{data['test_fraction']:.0%} test split")
    perm = np.random.default_rng(int(data["seed"])).permutation(n)
    parts = {"train": np.sort(perm[n_test:]), "test": np.sort(perm[:n_test])}
    s, lab, tab = ts.spectra, ts.labels, ts.table
    snr_col = next((c for c in ("snr", "snr_spec") if c in tab.columns), None)
    phot = ts.photometry if ts.photometry is not None else (
        photometry_matrix(tab) if data.get("photometry") else None)
    out = {}
    for part, idx in parts.items():
        flux = np.where(s.mask[idx], np.nan, s.flux[idx])
        out[part] = {"flux": flux, "flux_err": s.flux_err[idx], "labels": lab.values[idx],
                     "label_err": lab.errors[idx] if not np.isnan(lab.errors).all() else None,
                     "photometry": None if phot is None else phot[idx], "truth": lab.values[idx],
                     "snr": tab[snr_col].to_numpy(float)[idx] if snr_col else np.full(idx.size, np.nan),
                     "ids": np.asarray(s.ids)[idx]}
    out["wave"], out["label_names"] = s.wave, list(lab.names)
    return out


# ------------------------------------------------------------------------- execution
def execute(run, *, min_interval: float = 0.5) -> Run:
    """Do ``run`` (a :class:`Run` or its folder) in this process: load its data, fit, save
    the model, predict the held-out stars, write curves, predictions and metrics. The
    status says ``done``, ``failed`` (with the error) or ``cancelled`` at the end; this
    function does not raise for a failed training (the error is in the status)."""
    from labelcore.data.io import atomic_dir, atomic_path
    from labelcore.evaluate import bias_scatter, learning_curves

    run = run if isinstance(run, Run) else Run(run)
    if run.state in FINAL_STATES:
        raise RunError(f"run {run.id} is already {run.state}")
    t0 = time.perf_counter()
    run._set_status(state="running", started=_now(), pid=os.getpid(), host=os.uname().nodename,
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
        if model is not None and hasattr(model, "curves_so_far") and now - last[1] >= LIVE_CURVES_INTERVAL:
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
        tr, te = data["train"], data["test"]
        names = data["label_names"]
        phot = bool(cfg["data"].get("photometry"))
        progress(0.0, f"data: {len(tr['flux'])} training, {len(te['flux'])} held-out spectra")
        model = method_class(cfg["method"])(**cfg["params"])
        live["model"] = model
        model.fit(tr["flux"], tr["labels"], flux_err=tr["flux_err"], label_err=tr["label_err"],
                  photometry=tr["photometry"] if phot else None, label_names=names, wave=data["wave"],
                  progress=progress)
        fit_seconds = time.perf_counter() - t0
        progress(1.0, "saving the model")
        model.save(run.path / "model")
        run._set_status(fraction=0.92, message="predicting the held-out stars")
        y, y_err = model.predict(te["flux"], flux_err=te["flux_err"],
                                 photometry=te["photometry"] if phot else None, return_std=True)
        flags = model.boundary_flags(y)
        pred = {"id": te["ids"], "snr": te["snr"]}
        for j, n in enumerate(names):
            pred[n] = te["truth"][:, j]
            pred[f"{n}_pred"] = y[:, j]
            pred[f"{n}_pred_err"] = y_err[:, j]
            pred[f"{n}_flag"] = flags[:, j]
        with atomic_path(run.path / "predictions.parquet", ".parquet") as tmp:
            pd.DataFrame(pred).to_parquet(tmp, index=False)
        with atomic_dir(run.path / "curves") as tmp:
            for k, df in learning_curves(model).items():
                df.to_parquet(tmp / f"{k}.parquet", index=False)
        shutil.rmtree(run.path / "curves_live", ignore_errors=True)
        snr = te["snr"] if np.isfinite(te["snr"]).any() else None
        bs = bias_scatter(y, te["truth"], names, snr=snr)
        metrics = {"method": cfg["method"], "n_train": int(len(tr["flux"])), "n_test": int(len(te["flux"])),
                   "label_names": names, "fit_seconds": fit_seconds,
                   "seconds": time.perf_counter() - t0,
                   "truth": "true labels" if cfg["data"]["kind"] == "synthetic" else "catalogue labels",
                   "bias_scatter": bs.replace({np.nan: None}).to_dict("records"),
                   "boundary_flag_fraction": float(flags.mean())}
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
    from labelcore.catalogue import predict_catalogue
    from labelcore.data.io import atomic_path, read_table

    out = run.path / "catalogue.parquet"
    predict_catalogue(cfg["model_run"], cfg["spectra"], out, chunk_rows=int(cfg["chunk_rows"]), progress=progress)
    if cfg.get("join"):
        run._set_status(fraction=0.95, message="joining the catalogue columns")
        cat = read_table(out)
        other = read_table(cfg["join"])
        if "source_id" not in cat.columns or "source_id" not in other.columns:
            raise ValidationError("joining needs a source_id column in the spectra metadata and in the table")
        from labelcore.data.containers import LABEL_UNITS

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


class JobQueue:
    """Runs queued runs of a :class:`RunStore`, ``max_workers`` at a time, in the order
    they were created.

    Locally each run is a subprocess (``python -m labelcore.runs RUN``); with ``client`` (a
    ``dask.distributed.Client``) it is a task on the cluster running the same
    :func:`execute`. Call :meth:`poll` to advance the queue (the app calls it from a
    periodic callback), or :meth:`start` for a background thread that polls, and
    :meth:`wait` to block until given runs end.
    """

    def __init__(self, store: RunStore, max_workers: int = 1, client=None, grace: float = 10.0):
        self.store = store
        self.max_workers = int(max_workers)
        self.client = client
        self.grace = float(grace)
        self._active: dict[str, object] = {}   # run id -> Popen or dask Future
        self._cancel_time: dict[str, float] = {}
        self._lock = threading.RLock()
        self._thread = None
        self._stop = threading.Event()

    def submit(self, config: dict) -> Run:
        run = self.store.create(config)
        self.poll()
        return run

    def _launch(self, run: Run):
        if self.client is not None:
            return self.client.submit(execute, str(run.path), pure=False, key=f"labelcore-run-{run.id}")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(run.path / "process.log", "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "labelcore.runs", str(run.path)],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @staticmethod
    def _finished(handle) -> bool:
        return handle.poll() is not None if isinstance(handle, subprocess.Popen) else handle.done()

    def poll(self) -> None:
        """Reap finished runs, enforce cancels, start queued runs while there is room."""
        with self._lock:
            for rid, h in list(self._active.items()):
                run = self.store.get(rid)
                if self._finished(h):
                    del self._active[rid]
                    self._cancel_time.pop(rid, None)
                    st = run.status()
                    if st["state"] == "running":  # the process died without writing its end
                        code = h.returncode if isinstance(h, subprocess.Popen) else "?"
                        run._set_status(state="failed", finished=_now(),
                                        error=f"the run's process ended with exit code {code}")
                elif run.cancel_requested:
                    t = self._cancel_time.setdefault(rid, time.monotonic())
                    if time.monotonic() - t > self.grace:
                        if isinstance(h, subprocess.Popen):
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(h.pid, 9)
                            h.wait()
                        else:
                            h.cancel()
                        del self._active[rid]
                        self._cancel_time.pop(rid, None)
                        run._set_status(state="cancelled", finished=_now(),
                                        message=f"cancelled (ended after {self.grace:g} s grace)")
            room = self.max_workers - len(self._active)
            if room <= 0:
                return
            for run in self.store.runs():
                if room <= 0:
                    break
                if run.id in self._active or run.state != "queued":
                    continue
                run._set_status(message="starting")
                self._active[run.id] = self._launch(run)
                room -= 1

    @property
    def active(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def start(self, interval: float = 0.5) -> JobQueue:
        """Poll in a daemon thread every ``interval`` seconds."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()

            def loop():
                while not self._stop.wait(interval):
                    self.poll()

            self._thread = threading.Thread(target=loop, daemon=True, name="labelcore-jobqueue")
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait(self, runs=None, timeout: float | None = None, interval: float = 0.2) -> None:
        """Block until ``runs`` (default: all active and queued) have ended."""
        ids = None if runs is None else [r.id if isinstance(r, Run) else r for r in runs]
        t0 = time.monotonic()
        while True:
            self.poll()
            pending = [r for r in self.store.runs() if (ids is None or r.id in ids)
                       and r.state not in FINAL_STATES]
            if not pending:
                return
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise TimeoutError(f"runs still not finished after {timeout} s: {[r.id for r in pending]}")
            time.sleep(interval)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m labelcore.runs RUN_FOLDER", file=sys.stderr)
        return 2
    run = execute(argv[0])
    return 0 if run.state in ("done", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
