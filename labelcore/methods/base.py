"""What the three methods share: the contract of ARCHITECTURE.md section 3.

* hyper-parameters are constructor arguments (stored as given; no logic in ``__init__``),
  with ``get_params()`` / ``set_params()`` as in scikit-learn;
* ``fit`` returns self; fitted attributes end in ``_``;
* inputs are plain numpy arrays or the project's containers, checked with clear errors;
* ``boundary_flags`` marks predictions outside the training label range;
* ``save``/``load`` use safe formats only: a folder with ``params.json`` (hyper-parameters,
  names, version) and ``arrays.npz`` (``allow_pickle=False``); the CNN adds Keras files.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from labelcore import __version__
from labelcore.data.containers import Labels, Spectra
from labelcore.errors import ValidationError


class NotFittedError(ValidationError):
    """A method used before ``fit``."""


class LabelMethod:
    """Base class of CNN, SLAM and Lux."""

    #: saved-file format tag; subclasses override
    _format = "labelcore-method"

    # ------------------------------------------------------------- params
    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self" and
                sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}; valid: {valid}")
            setattr(self, k, v)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self):
        if not hasattr(self, "label_names_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    # ------------------------------------------------------------- inputs
    @staticmethod
    def _flux_arrays(flux, flux_err=None, n_pixels=None, name="flux"):
        """(flux, flux_err or None, bad mask) as float arrays; containers accepted.

        Non-finite flux, and non-finite or non-positive uncertainties, are bad pixels
        (zero weight), never an error -- unless a whole spectrum is bad."""
        mask = None
        if isinstance(flux, Spectra):
            s = flux
            flux = s.flux
            flux_err = s.flux_err if s.has_errors else flux_err
            mask = s.mask
        f = np.array(flux, dtype=np.float64, copy=True)
        if f.ndim == 1:
            f = f[None, :]
        if f.ndim != 2:
            raise ValidationError(f"{name} must be 2-D [N, P]; got shape {f.shape}")
        if f.shape[0] == 0:
            raise ValidationError(f"{name} has no spectra (0 rows)")
        if n_pixels is not None and f.shape[1] != n_pixels:
            raise ValidationError(f"{name} has {f.shape[1]} pixels; the model was fitted on {n_pixels}")
        bad = ~np.isfinite(f) if mask is None else (np.asarray(mask, bool) | ~np.isfinite(f))
        e = None
        if flux_err is not None:
            e = np.array(flux_err, dtype=np.float64, copy=True)
            if e.ndim == 1:
                e = e[None, :]
            if e.shape != f.shape:
                raise ValidationError(f"flux_err has shape {e.shape}; flux has {f.shape}")
            bad |= ~np.isfinite(e) | (e <= 0)
            e[bad] = np.inf
        if bad.all(axis=1).any():
            i = int(np.flatnonzero(bad.all(axis=1))[0])
            raise ValidationError(f"spectrum at row {i} has no usable pixel")
        f[bad] = 0.0
        return f, e, bad

    @staticmethod
    def _label_arrays(labels, label_err=None, label_names=None, n=None, allow_missing=True):
        if isinstance(labels, Labels):
            label_names = label_names or labels.names
            if label_err is None and not np.isnan(labels.errors).all():
                label_err = labels.errors
            labels = labels.values
        y = np.array(labels, dtype=np.float64, copy=True)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            raise ValidationError(f"labels must be 2-D [N, M]; got shape {y.shape}")
        if n is not None and y.shape[0] != n:
            raise ValidationError(f"labels have {y.shape[0]} rows; flux has {n}")
        if np.isinf(y).any():
            r, c = np.argwhere(np.isinf(y))[0]
            raise ValidationError(f"label {c} is infinite at row {r}")
        names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(y.shape[1])]
        if len(names) != y.shape[1]:
            raise ValidationError(f"{len(names)} label names for {y.shape[1]} label columns")
        miss = np.isnan(y)
        if miss.all(axis=0).any():
            j = int(np.flatnonzero(miss.all(axis=0))[0])
            raise ValidationError(f"label {names[j]!r} is missing for every star")
        if not allow_missing and miss.any():
            r, c = np.argwhere(miss)[0]
            raise ValidationError(f"label {names[c]!r} is missing (NaN) at row {r}")
        e = None
        if label_err is not None:
            e = np.array(label_err, dtype=np.float64, copy=True)
            if e.ndim == 1:
                e = e[:, None]
            if e.shape != y.shape:
                raise ValidationError(f"label_err has shape {e.shape}; labels have {y.shape}")
            badl = ~miss & (~np.isfinite(e) | (e <= 0))
            if badl.any():
                r, c = np.argwhere(badl)[0]
                raise ValidationError(f"label {names[c]!r} has uncertainty {e[r, c]!r} at row {r}")
        return y, e, names

    # ------------------------------------------------------------- flags
    def _set_label_range(self, y):
        self.label_min_ = np.nanmin(y, axis=0)
        self.label_max_ = np.nanmax(y, axis=0)

    def boundary_flags(self, y) -> np.ndarray:
        """int [N, M]: 1 where a predicted label lies outside the training range."""
        self._check_fitted()
        y = np.asarray(y, float)
        if y.ndim != 2 or y.shape[1] != len(self.label_names_):
            raise ValidationError(f"expected predictions [N, {len(self.label_names_)}]; got {y.shape}")
        out = (y < self.label_min_) | (y > self.label_max_) | ~np.isfinite(y)
        return out.astype(np.int64)

    # ------------------------------------------------------------- persistence
    def _state(self) -> tuple[dict, dict]:
        """(json-able dict, dict of numpy arrays) describing the fitted model."""
        raise NotImplementedError

    def _set_state(self, meta: dict, arrays: dict) -> None:
        raise NotImplementedError

    def save(self, path) -> Path:
        """Save to a folder (atomically): params.json + arrays.npz, no pickle."""
        self._check_fitted()
        from labelcore.data.io import atomic_dir

        path = Path(path)
        with atomic_dir(path) as tmp:
            meta, arrays = self._state()
            doc = {"format": self._format, "class": type(self).__name__,
                   "labelcore_version": __version__, "params": self.get_params(),
                   "label_names": list(self.label_names_), "state": meta}
            (tmp / "params.json").write_text(json.dumps(doc, indent=2, default=_json_default))
            np.savez(tmp / "arrays.npz", label_min=self.label_min_, label_max=self.label_max_,
                     **arrays)
            self._save_extra(tmp)
        return path

    def _save_extra(self, folder: Path) -> None:
        pass

    def _load_extra(self, folder: Path) -> None:
        pass

    @classmethod
    def load(cls, path):
        path = Path(path)
        try:
            doc = json.loads((path / "params.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"{path}: not a saved labelcore model ({exc})") from exc
        if doc.get("format") != cls._format:
            raise ValidationError(f"{path}: holds a {doc.get('class')} model, not a {cls.__name__}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["params"].items()}
        obj = cls(**params)
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        obj.label_names_ = list(doc["label_names"])
        obj.label_min_ = arrays.pop("label_min")
        obj.label_max_ = arrays.pop("label_max")
        obj._set_state(doc["state"], arrays)
        obj._load_extra(path)
        return obj


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def report(progress, frac: float, msg: str) -> None:
    if progress is not None:
        progress(float(min(max(frac, 0.0), 1.0)), msg)
