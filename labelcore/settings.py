"""Settings, one place: where labelcore keeps its data and runs, which folders a served app
may read, where the survey manifests are, and the environment variables that change them.

===========================  ==================================================  =================================
environment variable         meaning                                             default
===========================  ==================================================  =================================
``LABELCORE_DATA_DIR``       the data folder: default survey, runs, training     ``~/.cache/labelcore``
                             sets, cached demo models
``LABELCORE_RUNS``           the run store                                       ``<data dir>/runs``
``LABELCORE_SURVEY``         the survey folder the app shows                     ``<data dir>/default_survey``
``LABELCORE_DATA_ROOTS``     folders (``os.pathsep``-separated) whose files the  the data folder and the current
                             app may open                                        working directory
``LABELCORE_MANIFESTS``      a folder of survey manifests to use instead of the  the manifests shipped in the
                             shipped ones                                        package (``labelcore/data_manifests``)
``LABELCORE_HEARTBEAT``      seconds without a heartbeat after which a running   30
                             run reads as failed
``LABELCORE_MAX_QUEUED``     queued runs one app session may have at once        4
===========================  ==================================================  =================================

Every function reads the environment when called (so tests and notebooks may change it).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def data_dir() -> Path:
    """The labelcore data folder (``$LABELCORE_DATA_DIR`` or ``~/.cache/labelcore``)."""
    return Path(os.environ.get("LABELCORE_DATA_DIR") or Path.home() / ".cache" / "labelcore")


def runs_dir() -> Path:
    """The run store's folder (``$LABELCORE_RUNS`` or ``<data dir>/runs``)."""
    env = os.environ.get("LABELCORE_RUNS")
    return Path(env) if env else data_dir() / "runs"


def survey_dir() -> Path | None:
    """The survey folder given by ``$LABELCORE_SURVEY``, or None (the default survey)."""
    env = os.environ.get("LABELCORE_SURVEY")
    return Path(env) if env else None


def catalogue_path() -> Path | None:
    """A catalogue the Catalogue tab shows instead of the survey's own
    (``$LABELCORE_CATALOGUE``: a Parquet file with at least ``teff, logg, m_h, alpha_m``;
    read a column at a time, so tens of millions of rows are fine), or None."""
    env = os.environ.get("LABELCORE_CATALOGUE")
    return Path(env).expanduser() if env else None


def default_survey_dir() -> Path:
    """Where the embedded default survey is cached (``<data dir>/default_survey``)."""
    return data_dir() / "default_survey"


def training_sets_dir() -> Path:
    """Where the app saves and lists training sets (``<data dir>/training_sets``)."""
    return data_dir() / "training_sets"


def demo_models_dir() -> Path:
    """Where the Spectra tab's demo run lives (``<data dir>/demo_runs``)."""
    return data_dir() / "demo_runs"


def data_roots() -> list[Path]:
    """The folders whose files a served app may open (``$LABELCORE_DATA_ROOTS``, else the
    data folder, the survey folder and the current working directory), resolved."""
    env = os.environ.get("LABELCORE_DATA_ROOTS")
    if env:
        roots = [Path(p) for p in env.split(os.pathsep) if p]
    else:
        roots = [data_dir(), Path.cwd()]
        if survey_dir() is not None:
            roots.append(survey_dir())
    return [r.expanduser().resolve() for r in roots]


def manifest_dir() -> Path:
    """``$LABELCORE_MANIFESTS`` or the manifests shipped as package data."""
    env = os.environ.get("LABELCORE_MANIFESTS")
    if env:
        return Path(env)
    return Path(str(resources.files("labelcore") / "data_manifests"))


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which a running run reads as failed
    (``$LABELCORE_HEARTBEAT``, default 30)."""
    try:
        return max(1.0, float(os.environ.get("LABELCORE_HEARTBEAT", 30.0)))
    except ValueError:
        return 30.0


def max_queued_per_session() -> int:
    """Queued runs one app session may have at once (``$LABELCORE_MAX_QUEUED``, default 4)."""
    try:
        return max(1, int(os.environ.get("LABELCORE_MAX_QUEUED", 4)))
    except ValueError:
        return 4


def resolve_user_path(text, *, roots=None, what: str = "path") -> Path:
    """A path typed by a user of the served app, resolved (symlinks followed) and accepted
    only inside one of ``roots`` (default :func:`data_roots`); relative paths are taken
    from the first root. Raises :class:`~labelcore.errors.ValidationError` otherwise,
    saying only that the path is outside the allowed folders -- never whether it exists."""
    from labelcore.errors import ValidationError

    raw = "" if text is None else str(text).strip()
    if not raw:
        raise ValidationError(f"no {what} given")
    roots = [Path(r).expanduser().resolve() for r in (roots or data_roots())]
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = roots[0] / p
    try:
        p = p.resolve()
    except (OSError, RuntimeError) as exc:      # symlink loops
        raise ValidationError(f"{what} {raw!r} cannot be resolved") from exc
    if not any(p == r or r in p.parents for r in roots):
        raise ValidationError(f"{what} {raw!r} is outside the folders this app may read "
                              f"({', '.join(str(r) for r in roots)}); LABELCORE_DATA_ROOTS sets them")
    return p
