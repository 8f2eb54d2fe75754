"""Runs: the one way the CLI, the app and notebooks train a model or label a survey.

A *run* is a folder under a store root (default :func:`labelcore.settings.runs_dir`)::

    config.json          what to do (a TrainConfig or PredictConfig; written once)
    status.json          state, fraction, message, times, error, pid (rewritten atomically)
    log.txt              one line per progress message
    model/               the fitted model in its safe format (``labelcore.methods.load_model``)
    curves/<name>.parquet learning-curve tables (``model.learning_curves()``)
    curves_live/          while a method with live curves trains: its curves so far
    cods.npz             coefficients of dependence (train runs with ``cods: true``)
    predictions.parquet  the held-out stars: truth, prediction, 1-sigma error, flags, S/N
    metrics.json         bias/scatter per label, overall and per S/N bin; timings
    catalogue.parquet    (prediction runs) labels of every spectrum of a survey file
    cancel               present when a cancel was requested

Every file is written atomically (temporary name, then rename). States move ``queued ->
running -> done | failed | cancelled``.

Modules, by job:

* :mod:`~labelcore.runs.config` -- typed run configurations, validated in full before a
  run is queued; :func:`build_config`, the one builder;
* :mod:`~labelcore.runs.store` -- :class:`Run` and :class:`RunStore`;
* :mod:`~labelcore.runs.tasks` -- :func:`execute` (train, predict) and the demo runs;
* :mod:`~labelcore.runs.queue` -- :class:`JobQueue` (subprocesses or a dask cluster).
"""

from labelcore.runs.config import (
    DATA_SOURCES,
    DEFAULT_CALIBRATION_FOLDS,
    PredictConfig,
    RunConfig,
    TrainConfig,
    build_config,
    parse_config,
)
from labelcore.runs.queue import JobQueue
from labelcore.runs.store import FINAL_STATES, STATES, Run, RunError, RunStore
from labelcore.runs.tasks import (
    LIVE_CURVES_INTERVAL,
    RunCancelled,
    demo_configs,
    ensure_demo_runs,
    execute,
    load_run_data,
)

__all__ = ["DATA_SOURCES", "DEFAULT_CALIBRATION_FOLDS", "FINAL_STATES", "LIVE_CURVES_INTERVAL", "STATES",
           "JobQueue", "PredictConfig", "Run", "RunCancelled", "RunConfig", "RunError", "RunStore", "TrainConfig",
           "build_config", "demo_configs", "ensure_demo_runs", "execute", "load_run_data", "parse_config"]
