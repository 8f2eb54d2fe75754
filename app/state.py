"""One app state: what every page of a browser session shares and watches.

:class:`AppState` holds the run store, the job queue (one per store and server process,
shared by every session, polling in a background thread so queued runs start with no
browser open), the survey folder, the selection and the current run. Pages take the state
and *watch* it: :attr:`AppState.runs_version` goes up whenever a run is created, changes
state or ends (one cheap check of the store's status files per second, made by the
session's periodic callback), and pages that list runs refresh then -- not on a tab index,
and not by re-reading run folders on every render.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pandas as pd
import param

from labelcore import settings
from labelcore._lazy import load
from labelcore.data.io import read_table
from labelcore.runs import JobQueue, RunStore

_QUEUES: dict[str, JobQueue] = {}
_QUEUES_LOCK = threading.Lock()


def shared_queue(store: RunStore) -> JobQueue:
    """The job queue of ``store`` in this process (created and started on first use)."""
    key = str(store.root.resolve())
    with _QUEUES_LOCK:
        if key not in _QUEUES:
            _QUEUES[key] = JobQueue(store).start()
        return _QUEUES[key]


def survey_path(survey_dir=None) -> Path:
    """``survey_dir``, ``$LABELCORE_SURVEY``, or the embedded default survey (built on first
    use and cached on disk; the generator is loaded only then)."""
    path = survey_dir or settings.survey_dir()
    if path:
        return Path(path)
    return load("labelcore.data.synth.survey:ensure_survey")()


def catalogue_path() -> Path:
    """The catalogue the Catalogue tab opens on: ``$LABELCORE_CATALOGUE`` or the survey's."""
    return settings.catalogue_path() or survey_path() / "catalogue.parquet"


@functools.lru_cache(maxsize=4)
def load_catalogue(survey_dir: str | None = None) -> pd.DataFrame:
    """The catalogue table of a survey folder (default :func:`survey_path`)."""
    df = read_table(survey_path(survey_dir) / "catalogue.parquet")
    for c in ("phase", "component"):
        if c in df.columns:
            df[c] = df[c].astype("category")
    return df


def store_signature(store: RunStore) -> tuple:
    """What changes when a run is created, deleted, changes state or ends: the run folders
    and the modification times of their status files (no file is parsed)."""
    out = []
    try:
        entries = sorted(store.root.iterdir())
    except OSError:
        return ()
    for p in entries:
        if p.name.startswith("."):
            continue
        try:
            out.append((p.name, (p / "status.json").stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(out)


class AppState(param.Parameterized):
    """The state a browser session's pages share.

    Parameters
    ----------
    store : RunStore
        The run store (default :func:`labelcore.settings.runs_dir`).
    queue : JobQueue
        Its job queue (default: the process's shared queue of ``store``).
    survey_dir : Path
        The survey folder shown and labelled (default :func:`survey_path`).
    demo_store : RunStore
        Where the Spectra tab's demo runs live (default
        :func:`labelcore.settings.demo_models_dir`).
    """

    store = param.ClassSelector(class_=RunStore)
    queue = param.ClassSelector(class_=JobQueue)
    demo_store = param.ClassSelector(class_=RunStore)
    survey_dir = param.Parameter(default=None, doc="the survey folder shown and labelled")
    training_sets_root = param.Parameter(default=None, doc="where training sets are saved and listed")
    runs_version = param.Integer(default=0, doc="goes up when any run of the store changes")
    current_run = param.String(default=None, allow_None=True, doc="the run id last launched or chosen")
    selection = param.Parameter(default=None, doc="ids of the stars selected on the Catalogue tab")
    data_roots = param.List(default=None, allow_None=True, doc="folders typed paths may name (settings)")

    def __init__(self, **params):
        params.setdefault("store", RunStore())
        super().__init__(**params)
        if self.queue is None:
            self.queue = shared_queue(self.store)
        if self.demo_store is None:
            self.demo_store = RunStore(settings.demo_models_dir())
        if self.training_sets_root is None:
            self.training_sets_root = str(settings.training_sets_dir())
        if self.data_roots is None:     # the settings' roots, and the folders this state itself uses
            extra = [p for p in (self.training_sets_root, self.survey_dir) if p is not None]
            self.data_roots = [str(p) for p in settings.data_roots()] + [str(Path(p).resolve()) for p in extra]
        self._signature = store_signature(self.store)
        self._callback = None

    def check_runs(self) -> bool:
        """Bump :attr:`runs_version` if the store changed since the last check; True then."""
        sig = store_signature(self.store)
        if sig != self._signature:
            self._signature = sig
            self.runs_version += 1
            return True
        return False

    def start(self, period_ms: int = 1000):
        """Check the store every ``period_ms`` in this session (served or in a notebook)."""
        import panel as pn

        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.check_runs, period=period_ms)
        return self

    def stop(self) -> None:
        """Stop checking the store (:meth:`start`)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def run_submitted(self, run) -> None:
        """A page queued ``run``: make it the current run and let every page know."""
        self.check_runs()
        self.current_run = run.id
