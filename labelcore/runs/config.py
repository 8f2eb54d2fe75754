"""Typed run configurations: what a run does, checked in full before anything is queued.

A run config is a :class:`TrainConfig` or a :class:`PredictConfig`; both are built from (and
saved as) a plain JSON mapping (``config.json`` of the run folder). Construction validates
every field -- the method's hyper-parameters against its declared
:attr:`~labelcore.methods.LabelMethod.param_spec`, the data against its source -- and raises
:class:`~labelcore.errors.ValidationError` naming the field. :func:`build_config` is the one
builder the CLI, the app and notebooks use.

Data sources
------------
``data["kind"]`` names a source in :data:`DATA_SOURCES`: ``"synthetic"`` (the embedded
generator; the held-out stars carry their *true* labels) or ``"training_set"`` (a folder
saved by :class:`labelcore.prep.training.TrainingSet`; held-out stars are compared with
their catalogue labels). A source is ``"module:object"`` with ``validate(spec) -> spec`` and
``load(spec) -> dict`` (train/test arrays), loaded lazily, so a run of a real training set
never imports the synthetic generator.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from labelcore._lazy import load
from labelcore.errors import ValidationError
from labelcore.methods import capabilities as caps
from labelcore.methods import method_class, method_names
from labelcore.methods.calibration import DEFAULT_CALIBRATION_FOLDS

#: data kind -> "module:object" with ``validate(spec)`` and ``load(spec)``
DATA_SOURCES: dict[str, str] = {
    "synthetic": "labelcore.data.synth.datasets:RUN_SOURCE",
    "training_set": "labelcore.prep.training:RUN_SOURCE",
}
TASKS = ("train", "predict")


def data_source(kind: str):
    """The source registered as ``kind``."""
    if kind not in DATA_SOURCES:
        raise ValidationError(f"config data 'kind' must be one of {sorted(DATA_SOURCES)}; got {kind!r}")
    return load(DATA_SOURCES[kind])


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _plain(doc):
    """A JSON round trip: plain types only (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(doc, default=_json_default))




@dataclass(frozen=True)
class TrainConfig:
    """Train ``method`` with ``params`` on ``data``; predict its held-out stars.

    Attributes
    ----------
    method : str
        A registered method (:func:`labelcore.methods.method_names`).
    params : dict
        Hyper-parameters (only those that differ from the paper defaults need be given),
        validated against the method's parameter spec.
    data : dict
        ``{"kind": "synthetic", "setup", "n_train", "n_test", "seed", "snr", "labels",
        "photometry"}`` or ``{"kind": "training_set", "path", "test_fraction", "seed",
        "photometry"}``; ``photometry`` feeds absolute magnitudes + A_V to a method that
        takes them (capability ``photometry``).
    name : str
        Shown in the run lists (default: "<method> on <data>").
    cods : bool
        Also compute the coefficients of dependence on the training set (methods with
        capability ``cods``), kept in the run as ``cods.npz``.
    calibration_folds : int
        K of the K-fold refits that calibrate the total errors
        (:meth:`~labelcore.methods.LabelMethod.calibrate_errors`; default
        :data:`DEFAULT_CALIBRATION_FOLDS`); 0 = formal errors only.
    """

    method: str
    params: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    name: str = ""
    cods: bool = False
    calibration_folds: int = DEFAULT_CALIBRATION_FOLDS
    task: str = "train"

    def __post_init__(self):
        if self.method not in method_names():
            raise ValidationError(f"config 'method' must be one of {method_names()}; got {self.method!r}")
        cls = method_class(self.method)
        params = cls.validate_params(self.params or {})
        if not isinstance(self.data, dict):
            raise ValidationError("config 'data' must be a mapping with a 'kind'")
        data = data_source(self.data.get("kind")).validate(dict(self.data))
        phot = data.setdefault("photometry", False)
        if not isinstance(phot, bool):
            raise ValidationError(f"config data 'photometry' must be true or false; got {phot!r}")
        if phot and not cls.supports(caps.PHOTOMETRY):
            raise ValidationError(f"photometry is not an input of {self.method}")
        if not isinstance(self.cods, bool):
            raise ValidationError(f"config 'cods' must be true or false; got {self.cods!r}")
        if self.cods and not cls.supports(caps.CODS):
            raise ValidationError(f"{self.method} has no coefficients of dependence (cods)")
        k = self.calibration_folds
        if isinstance(k, bool) or not isinstance(k, int) or not (k == 0 or 2 <= k <= 10):
            raise ValidationError(f"config 'calibration_folds' must be 0 (off) or an integer 2-10; got {k!r}")
        name = self.name
        if not isinstance(name, str):
            raise ValidationError(f"config 'name' must be text; got {name!r}")
        name = name.strip()[:200] or f"{self.method} on {data.get('setup') or Path(str(data.get('path'))).name}"
        object.__setattr__(self, "params", _plain(params))
        object.__setattr__(self, "data", _plain(data))
        object.__setattr__(self, "name", name)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class PredictConfig:
    """Label every spectrum of ``spectra`` with the model of the finished training run
    ``model_run``; optionally join the columns of ``join`` (a Parquet table keyed by
    ``source_id``, e.g. the survey catalogue; its labels become ``<name>_ref``)."""

    model_run: str
    spectra: str
    join: str | None = None
    chunk_rows: int = 4096
    name: str = ""
    method: str = ""
    task: str = "predict"

    def __post_init__(self):
        mr = Path(str(self.model_run))
        try:
            cfg = json.loads((mr / "config.json").read_text())
            status = json.loads((mr / "status.json").read_text())
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise ValidationError(f"config 'model_run' {self.model_run!r} is not a run folder") from exc
        if status.get("state") != "done" or not (mr / "model" / "params.json").exists():
            raise ValidationError(f"config 'model_run' {mr.name} has no trained model "
                                  f"(state {status.get('state')})")
        if not self.spectra or not Path(self.spectra).is_file():
            raise ValidationError(f"config 'spectra' {self.spectra!r} is not a file")
        if self.join is not None and not Path(self.join).is_file():
            raise ValidationError(f"config 'join' {self.join!r} is not a file")
        if isinstance(self.chunk_rows, bool) or not isinstance(self.chunk_rows, int) or not \
                1 <= self.chunk_rows <= 1_000_000:
            raise ValidationError(f"config 'chunk_rows' must be an integer in [1, 1000000]; got {self.chunk_rows!r}")
        object.__setattr__(self, "model_run", str(mr.resolve()))
        object.__setattr__(self, "spectra", str(Path(self.spectra).resolve()))
        if self.join is not None:
            object.__setattr__(self, "join", str(Path(self.join).resolve()))
        object.__setattr__(self, "method", cfg["method"])
        name = str(self.name or "").strip()[:200] or f"{cfg.get('name')} → {Path(self.spectra).name}"
        object.__setattr__(self, "name", name)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


RunConfig = TrainConfig | PredictConfig


def parse_config(doc) -> RunConfig:
    """A :class:`TrainConfig` or :class:`PredictConfig` from a JSON mapping (``task``
    default ``"train"``); unknown fields are refused by name."""
    if isinstance(doc, TrainConfig | PredictConfig):
        return doc
    if not isinstance(doc, dict):
        raise ValidationError(f"run config must be a mapping; got {type(doc).__name__}")
    doc = dict(doc)
    task = doc.get("task", "train")
    if task not in TASKS:
        raise ValidationError(f"config 'task' must be one of {list(TASKS)}; got {task!r}")
    cls = TrainConfig if task == "train" else PredictConfig
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValidationError(f"{task} config has no field(s) {unknown}; valid: {sorted(known)}")
    if task == "predict":
        doc.pop("method", None)          # taken from the model run
    return cls(**doc)


def build_config(method: str | None = None, params: dict | None = None, *, setup: str | None = None,
                 n_train: int | None = None, n_test: int | None = None, labels=None, snr=None,
                 training_set=None, test_fraction: float = 0.2, seed: int = 0, photometry: bool | None = None,
                 name: str = "", cods: bool = False,
                 calibration_folds: int = DEFAULT_CALIBRATION_FOLDS) -> TrainConfig:
    """The one builder of training-run configurations (CLI, app and notebooks).

    Give ``training_set`` (a saved training-set folder) or the synthetic set-up
    (``setup``, ``n_train``, ``n_test``, optional ``labels`` and ``snr``). ``photometry``
    defaults to what the method's paper uses: on for a method that takes photometry
    (the CNN, Guiglion 2020 section 3.2), off otherwise.
    """
    if method is None:
        raise ValidationError("give a method: one of " + ", ".join(method_names()))
    cls = method_class(method)
    if photometry is None:
        photometry = cls.supports(caps.PHOTOMETRY)
    if training_set is not None:
        data = {"kind": "training_set", "path": str(training_set), "test_fraction": test_fraction, "seed": seed}
    else:
        data = {"kind": "synthetic", "setup": setup or "rave", "n_train": n_train, "n_test": n_test, "seed": seed}
        if labels is not None:
            data["labels"] = list(labels)
        if snr is not None:
            data["snr"] = list(snr)
    data["photometry"] = bool(photometry)
    return TrainConfig(method=method, params=dict(params or {}), data=data, name=name, cods=cods,
                       calibration_folds=calibration_folds)
