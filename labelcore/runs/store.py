"""The run store: a run is a folder (see :mod:`labelcore.runs`); :class:`Run` reads one,
:class:`RunStore` lists, creates and deletes them."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd

from labelcore import settings
from labelcore.data.io import atomic_path, read_table
from labelcore.errors import LabelcoreError
from labelcore.methods import load_model
from labelcore.runs.config import RunConfig, _json_default, parse_config

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")


class RunError(LabelcoreError):
    """A run that cannot be created, found or executed as asked."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, doc: dict) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=_json_default))


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
        return load_model(self.path / "model")

    def metrics(self) -> dict:
        try:
            return json.loads((self.path / "metrics.json").read_text())
        except OSError as exc:
            raise RunError(f"run {self.id} has no metrics (state {self.state})") from exc

    def predictions(self) -> pd.DataFrame:
        p = self.path / "predictions.parquet"
        if not p.exists():
            raise RunError(f"run {self.id} has no predictions (state {self.state})")
        return read_table(p)

    def catalogue(self) -> pd.DataFrame:
        """The label catalogue of a prediction run."""
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
        p = self.path / "curves_live" / "epochs.parquet"
        try:
            return read_table(p) if p.exists() else None
        except (OSError, LabelcoreError):
            return None

    def curves(self) -> dict[str, pd.DataFrame]:
        d = self.path / "curves"
        return {p.stem: read_table(p) for p in sorted(d.glob("*.parquet"))} if d.exists() else {}


class RunStore:
    """The runs under one folder (default ``<labelcore data dir>/runs``)."""

    def __init__(self, root=None):
        if root is None:
            root = settings.runs_dir()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, config: dict | RunConfig) -> Run:
        """Validate ``config`` (:func:`~labelcore.runs.config.parse_config`) and make a
        queued run folder for it."""
        cfg = parse_config(config).to_dict()
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
