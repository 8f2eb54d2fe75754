"""The run store: a run is a folder (see :mod:`labelcore.runs`); :class:`Run` reads one,
:class:`RunStore` lists, creates and deletes them.

Exactly once
------------
A queued run is started only by whoever *claims* it: :meth:`Run.claim` creates the run's
``claim`` file with ``O_CREAT | O_EXCL``, which exactly one process succeeds at, across
processes and hosts sharing the store (local file systems and NFS v3+). The claim holds a
token that the executing process must present (:func:`labelcore.runs.tasks.execute`). While
a run executes, its process refreshes the run's ``heartbeat`` file every
``HEARTBEAT_INTERVAL`` seconds; a run whose heartbeat is older than
:func:`labelcore.settings.heartbeat_timeout` (default 30 s) reads as *failed*, with the
reason, whatever its PID (a reused PID cannot keep a dead run "running"), and a run
claimed but not started within that time reads as failed too ("claimed but never
started"): nothing is ever started twice, and nothing is silently re-run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import time
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
#: seconds between heartbeats of an executing run
HEARTBEAT_INTERVAL = 2.0
HOST = socket.gethostname()


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
        #: the token of a claim this handle's creator holds (see RunStore.create)
        self.claim_token = None

    def __repr__(self):
        return f"Run({self.id!r}, {self.status()['state']})"

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def status(self) -> dict:
        """The run's status (``state``, ``fraction``, ``message``, times, ``error``). A run
        whose executing process stopped (no heartbeat for :func:`settings.heartbeat_timeout`
        seconds, or its process gone on this host) reads as failed, with the reason."""
        try:
            st = json.loads((self.path / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {"state": "failed", "error": "status.json missing or unreadable", "fraction": 0.0}
        state = st.get("state")
        if state not in ("running", "queued"):
            return st
        timeout = settings.heartbeat_timeout()
        beat = self.heartbeat_age()
        if state == "running":
            if st.get("host") == HOST and st.get("pid") and not _pid_alive(st.get("pid")):
                return dict(st, state="failed", error="the process running this run ended without a result")
            if beat is None or beat > timeout:
                return dict(st, state="failed", error=f"no heartbeat for more than {timeout:g} s: the process "
                                                      "running this run stopped (killed, crashed or its machine "
                                                      "went down)")
            return st
        claim = self.claim_info()
        if claim is not None and (beat is None or beat > timeout) and time.time() - claim.get("time", 0) > timeout:
            return dict(st, state="failed", error=f"claimed by {claim.get('owner')} on {claim.get('host')} but "
                                                  f"never started within {timeout:g} s (it will not be re-run; "
                                                  "launch it again)")
        return st

    def raw_status(self) -> dict:
        """status.json as written (no liveness check); {} if unreadable."""
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    # -- claims and heartbeats (exactly-once execution; see the module docstring)
    def claim(self, owner: str) -> str | None:
        """Claim this queued run for execution: a token if this caller won it, None if it
        is not queued, a cancel was asked, or someone else holds the claim."""
        if self.cancel_requested or self.status().get("state") != "queued":
            return None
        token = uuid.uuid4().hex
        doc = {"token": token, "owner": owner, "host": HOST, "pid": os.getpid(), "time": time.time()}
        try:
            fd = os.open(self.path / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(doc))
        return token

    def claim_info(self) -> dict | None:
        """Who claimed the run (owner, host, pid, time, token), or None."""
        p = self.path / "claim"
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {"owner": "?", "host": "?", "time": p.stat().st_mtime if p.exists() else 0.0}

    def beat(self) -> None:
        """Refresh the heartbeat (the executing process does, every HEARTBEAT_INTERVAL s)."""
        hb = self.path / "heartbeat"
        hb.touch()
        os.utime(hb)

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat, or None if there was none."""
        try:
            return max(0.0, time.time() - (self.path / "heartbeat").stat().st_mtime)
        except OSError:
            return None

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
        """Ask the run to stop. A queued run is cancelled at once (its claim is taken, so no
        one starts it); a running one stops at its next progress report (and
        :class:`JobQueue` ends its process after a grace time); a run whose process
        stopped (no heartbeat) is marked cancelled."""
        if self.status().get("state") == "queued" and self.claim("cancel") is not None:
            (self.path / "cancel").touch()
            self._set_status(state="cancelled", finished=_now(), message="cancelled before it started")
            return
        (self.path / "cancel").touch()
        st = self.status()
        if st.get("state") == "failed" and self.raw_status().get("state") in ("running", "queued"):
            self._set_status(state="cancelled", finished=_now(), message=f"cancelled ({st.get('error')})")

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

    def create(self, config: dict | RunConfig, *, claim: str | None = None) -> Run:
        """Validate ``config`` (:func:`~labelcore.runs.config.parse_config`) and make a
        queued run folder for it. With ``claim`` (an owner name) the run is born claimed by
        the caller (``run.claim_token``): no poller can start it first."""
        cfg = parse_config(config).to_dict()
        rid = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        tmp = self.root / f".{rid}.{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
        tmp.mkdir(parents=True)
        token = None
        try:
            _write_json(tmp / "config.json", cfg)
            _write_json(tmp / "status.json", {"state": "queued", "fraction": 0.0, "message": "queued",
                                              "created": _now()})
            if claim is not None:
                token = uuid.uuid4().hex
                (tmp / "claim").write_text(json.dumps({"token": token, "owner": claim, "host": HOST,
                                                       "pid": os.getpid(), "time": time.time()}))
            os.rename(tmp, self.root / rid)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        run = Run(self.root / rid)
        run.claim_token = token
        return run

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
        """One row per run: id, name, method, state, fraction, message, times (``created``
        ISO 8601 UTC; ``seconds`` the run time, for a running run the time since it
        started)."""
        rows = []
        now = pd.Timestamp.now(tz="UTC")
        for r in self.runs():
            st, cfg = r.status(), r.config
            secs = st.get("seconds")
            if secs is None and st.get("state") == "running" and st.get("started"):
                try:
                    secs = max(0.0, (now - pd.Timestamp(st["started"])).total_seconds())
                except (ValueError, TypeError):
                    secs = None
            rows.append({"id": r.id, "name": cfg.get("name"), "task": cfg.get("task", "train"),
                         "method": cfg["method"],
                         "state": st.get("state"), "progress": float(st.get("fraction", 0.0)),
                         "message": st.get("error") or st.get("message", ""),
                         "created": st.get("created"), "seconds": secs})
        cols = ["id", "name", "task", "method", "state", "progress", "message", "created", "seconds"]
        return pd.DataFrame(rows, columns=cols)

    def delete(self, run_id: str) -> None:
        """Remove a run and its files (not while it runs; a stale run can be deleted). The
        folder is renamed aside first, so no reader sees a half-deleted run."""
        r = self.get(run_id)
        st = r.state
        if st == "running":
            raise RunError(f"run {run_id} is running; cancel it first")
        if st == "queued" and r.claim("delete") is None:
            raise RunError(f"run {run_id} is being started; cancel it first")
        aside = self.root / f".{run_id}.deleting-{uuid.uuid4().hex[:8]}"
        os.rename(r.path, aside)
        shutil.rmtree(aside, ignore_errors=True)
