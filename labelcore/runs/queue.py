"""The job queue: queued runs of a store started ``max_workers`` at a time, each in a
fresh Python subprocess (``python -m labelcore.runs RUN``) or as a task on a
``dask.distributed`` cluster running the same :func:`labelcore.runs.tasks.execute`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from labelcore.runs.store import FINAL_STATES, HOST, Run, RunError, RunStore, _now
from labelcore.runs.tasks import execute

#: every run subprocess this process started and has not yet seen end: kept (so a queue that
#: is dropped never leaves an unreaped child) and reaped by any queue's poll
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()


def _reap_children() -> None:
    with _CHILDREN_LOCK:
        for p in list(_CHILDREN):
            if p.poll() is not None:
                _CHILDREN.discard(p)


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
        self._owner = f"queue {HOST} pid {os.getpid()} {id(self):x}"
        self._thread = None
        self._stop = threading.Event()

    def submit(self, config) -> Run:
        """Create a queued run of ``config`` and advance the queue."""
        run = self.store.create(config)
        self.poll()
        return run

    def submit_now(self, config) -> Run:
        """Create a run of ``config`` born claimed by this queue and launch it at once
        (``labelcore train --background``): no other poller can take it, and it does not wait
        behind other queued runs."""
        run = self.store.create(config, claim=self._owner)
        with self._lock:
            self._active[run.id] = self._launch(run, run.claim_token)
        return run

    def _launch(self, run: Run, token: str):
        if self.client is not None:
            return self.client.submit(execute, str(run.path), token=token, pure=False, key=f"labelcore-run-{run.id}")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(run.path / "process.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "labelcore.runs", str(run.path), token],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with _CHILDREN_LOCK:
            _CHILDREN.add(proc)
        return proc

    @staticmethod
    def _finished(handle) -> bool:
        return handle.poll() is not None if isinstance(handle, subprocess.Popen) else handle.done()

    def poll(self) -> None:
        """Reap finished runs, enforce cancels, start queued runs while there is room."""
        _reap_children()
        with self._lock:
            for rid, h in list(self._active.items()):
                try:
                    run = self.store.get(rid)
                except RunError:                  # deleted meanwhile
                    if self._finished(h):
                        del self._active[rid]
                    continue
                if self._finished(h):
                    del self._active[rid]
                    self._cancel_time.pop(rid, None)
                    if run.raw_status().get("state") in ("running", "queued"):   # died without its end
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
                if run.id in self._active:
                    continue
                token = run.claim(self._owner)       # exactly one poller anywhere wins a run
                if token is None:
                    continue
                self._active[run.id] = self._launch(run, token)
                room -= 1

    def start_run(self, run: Run) -> bool:
        """Claim and launch ``run`` now (whatever else is queued); False if it was not
        queued or someone else claimed it."""
        with self._lock:
            token = run.claim(self._owner)
            if token is None:
                return False
            self._active[run.id] = self._launch(run, token)
            return True

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
