"""What the three methods share: the contract of ARCHITECTURE.md section 3.

* hyper-parameters are constructor arguments (stored as given; no logic in ``__init__``),
  with ``get_params()`` / ``set_params()`` as in scikit-learn;
* ``fit`` returns self; fitted attributes end in ``_``;
* inputs are plain numpy arrays or the project's containers, checked with clear errors;
* ``boundary_flags`` marks predictions outside the training label range;
* ``save``/``load`` use safe formats only: a folder with ``params.json`` (hyper-parameters,
  names, version) and ``arrays.npz`` (``allow_pickle=False``); the CNN adds Keras files.

What a method offers beyond the contract it *declares* in :attr:`LabelMethod.capabilities`
(names in :mod:`labelcore.methods.capabilities`) and implements; code outside the method's
module asks ``model.supports(...)`` and never tests a class or its name. Its
hyper-parameters are declared in :attr:`LabelMethod.param_spec` (type, bounds, choices,
help), which run configurations and the app's Train form validate against.
"""

from __future__ import annotations

import inspect
import json
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from labelcore import __version__
from labelcore._numerics import as_real, median_snr
from labelcore.data.containers import Labels, Spectra, check_wavelength_grid
from labelcore.data.io import atomic_dir, recover_artifact
from labelcore.errors import FormatError, LabelcoreError, ValidationError
from labelcore.methods import capabilities as caps
from labelcore.methods.calibration import DEFAULT_CALIBRATION_FOLDS, ErrorModel
from labelcore.methods.calibration import PREFIX as ERR_PREFIX
from labelcore.methods.checkpoints import FoldCheckpoint, fingerprint
from labelcore.methods.ood import SpectrumEnvelope
from labelcore.methods.params import Param, validate_params
from labelcore.progress import report  # noqa: F401  (the methods' progress helper)


class NotFittedError(ValidationError):
    """A method used before ``fit``."""


class NotSupportedError(LabelcoreError, TypeError):
    """A capability asked of a method that does not declare it."""


@dataclass
class Prediction:
    """What :meth:`LabelMethod.predict_details` returns for N spectra.

    Attributes
    ----------
    labels, errors : ndarray [N, M]
        Labels and their formal 1-sigma errors (as ``predict(..., return_std=True)``).
    quality : dict of str to ndarray [N]
        Per-star fit quality the method offers (capability ``fit_quality``): e.g.
        ``chi2`` (reduced chi^2 of the spectrum against the model) and ``converged``;
        empty for a method without one.
    total_errors : ndarray [N, M] or None
        Calibrated total 1-sigma errors (:mod:`labelcore.methods.calibration`) when the
        model was calibrated (:meth:`LabelMethod.calibrate_errors`), else None.
    """

    labels: np.ndarray
    errors: np.ndarray
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    total_errors: np.ndarray | None = None


class LabelMethod:
    """Base class of every method (the contract, capabilities and parameter specs)."""

    #: the registry name (``labelcore.methods.method_class(name)``)
    name: ClassVar[str] = "method"
    #: saved-file format tag; subclasses override
    _format = "labelcore-method"
    #: what the method offers beyond the contract (names in :mod:`labelcore.methods.capabilities`)
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: one :class:`~labelcore.methods.params.Param` per constructor argument
    param_spec: ClassVar[dict[str, Param]] = {}
    #: "Quick settings": a first model in a minute or two on 2 cores (paper values otherwise)
    quick_params: ClassVar[dict] = {}
    #: the tables :meth:`learning_curves` returns (what the Learning-curves page plots)
    curve_tables: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------- capabilities
    @classmethod
    def supports(cls, capability: str) -> bool:
        """True when the method declares ``capability`` (see :mod:`labelcore.methods.capabilities`)."""
        if capability not in caps.ALL:
            raise ValueError(f"unknown capability {capability!r}; known: {sorted(caps.ALL)}")
        return capability in cls.capabilities

    def _require(self, capability: str):
        if not self.supports(capability):
            raise NotSupportedError(f"{self.name} does not offer {capability!r} "
                                    f"(it offers {sorted(self.capabilities)})")

    @classmethod
    def validate_params(cls, params: dict) -> dict:
        """``params`` checked against :attr:`param_spec` and converted (raises
        :class:`~labelcore.errors.ValidationError` naming the parameter)."""
        return validate_params(cls, params)

    @property
    def uses_photometry(self) -> bool:
        """True when this fitted model needs ``photometry=`` at prediction time."""
        return False

    def predict_details(self, flux, *, flux_err=None, photometry=None, wave=None) -> Prediction:
        """Labels, errors and per-star quality of each spectrum (:class:`Prediction`), for
        whole surveys: garbage is flagged, not labelled.

        ``quality`` always holds ``ood_score`` and ``ood`` (the spectrum is unlike the
        training spectra, :mod:`labelcore.methods.ood`; or its labels are not finite),
        plus what the method offers (capability ``fit_quality``: ``chi2_reduced``, ...).
        Spectra with no usable pixel or absurd values (|flux| > 1e6, overflow) are not
        passed to the method: their labels are NaN and ``ood`` is True, so one bad
        spectrum never stops a catalogue."""
        self._check_grid(flux, wave)
        f, e, bad = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_, allow_empty=True)
        n, m = f.shape[0], len(self.label_names_)
        absurd = bad.all(axis=1) | (np.abs(np.where(bad, 0.0, f)) > 1e6).any(axis=1)
        ok = ~absurd
        y, err = np.full((n, m), np.nan), np.full((n, m), np.nan)
        quality: dict[str, np.ndarray] = {}
        if ok.any():
            phot = None if photometry is None else np.asarray(photometry, float)[ok]
            d = self._predict_details(np.where(bad[ok], np.nan, f[ok]),
                                      flux_err=None if e is None else e[ok], photometry=phot)
            y[ok], err[ok] = d.labels, d.errors
            for k, v in d.quality.items():
                v = np.asarray(v)
                full = np.zeros(n, bool) if v.dtype == bool else np.full(n, np.nan)
                full[ok] = v
                quality[k] = full
        env = getattr(self, "envelope_", None)
        score = env.score(f, e, bad) if env is not None else np.where(absurd, np.inf, np.nan)
        quality["ood_score"] = score
        quality["ood"] = (score > 1.0) | absurd | ~np.isfinite(y).all(axis=1) | ~np.isfinite(err).all(axis=1)
        total = None
        em = getattr(self, "error_model_", None)
        if em is not None:
            total = em.total(err, median_snr(f, e, bad), labels=y)
        return Prediction(y, err, quality, total)

    # ------------------------------------------------------------- calibrated errors
    def _refit_params(self) -> dict:
        """Hyper-parameters of the K-fold refits of :meth:`calibrate_errors`: the fitted
        model's own choices fixed where the method chose them by cross-validation
        (override), so each refit costs one training, not another search."""
        return self.get_params()

    def _refit_model(self):
        """An unfitted model for one K-fold refit of :meth:`calibrate_errors`: by default a
        new instance with :meth:`_refit_params`; override to carry fitted choices that are
        not parameters (SLAM's per-pixel hyper-parameters)."""
        return type(self)(**self._refit_params())

    def calibrate_errors(self, flux, labels, *, flux_err=None, label_err=None, photometry=None,
                         n_folds: int = DEFAULT_CALIBRATION_FOLDS, progress=None, checkpoint=None):
        """Fit the calibrated total-error model (:mod:`labelcore.methods.calibration`) from
        ``n_folds``-fold out-of-fold predictions of these stars (normally the training
        set): a copy of the model (:meth:`_refit_model`) is trained on K-1 folds and
        predicts the K-th. Stars with missing labels count for the labels they have.
        Sets ``error_model_`` (saved with the model) and returns it; from then on
        :meth:`predict_details` also returns ``total_errors``.

        Parameters
        ----------
        flux, labels, flux_err, label_err, photometry
            As in ``fit`` (photometry when the model uses it).
        n_folds : int
            K of the K-fold (>= 2; default :data:`~labelcore.methods.calibration.DEFAULT_CALIBRATION_FOLDS`).
        progress : callable, optional
            ``progress(fraction, message)``.
        checkpoint : path, optional
            A folder for each fold's out-of-fold predictions, written as soon as the fold
            is done; called again with the same folder (after a crash, say), the folds
            already there are loaded instead of refitted. Only folds of the same
            calibration (method, parameters, K and input arrays, by fingerprint) are
            reused; a folder holding another calibration's folds is refused. Refits of a
            method with capability ``resumable_fit`` keep their own training state there
            too, so a fold in progress resumes as well (:mod:`labelcore.methods.checkpoints`).

        Returns
        -------
        ErrorModel
        """
        self._check_fitted()
        if int(n_folds) < 2:
            raise ValidationError(f"n_folds must be >= 2; got {n_folds!r}")
        k = int(n_folds)
        f, e, bad = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_)
        y, ye, _ = self._label_arrays(labels, label_err, self.label_names_, n=f.shape[0])
        n = f.shape[0]
        if n < 5 * k:
            raise ValidationError(f"{n} stars are too few to calibrate errors by {k}-fold refits (need {5 * k})")
        phot = None if photometry is None or not self.uses_photometry else np.asarray(photometry, float)
        seed = int(getattr(self, "random_state", 0) or 0) + 7
        fold = np.random.default_rng(seed).permutation(np.arange(n) % k)
        pred, formal = np.full(y.shape, np.nan), np.full(y.shape, np.nan)
        fnan = np.where(bad, np.nan, f)
        ckpt = None
        if checkpoint is not None:
            key = fingerprint(type(self).__name__, k, seed, vars(self._refit_model()), fnan, e, y, ye, phot)
            ckpt = FoldCheckpoint(checkpoint, k, key)
        seconds, loaded = np.zeros(k), np.zeros(k, bool)
        for i in range(k):
            tr, te = fold != i, fold == i
            done = None if ckpt is None else ckpt.load(i, np.flatnonzero(te))
            if done is not None:
                pred[te], formal[te], seconds[i] = done
                loaded[i] = True
                report(progress, (i + 1) / k, f"error calibration, fold {i + 1}/{k}: loaded from {ckpt.folder}")
                continue
            t0 = time.perf_counter()
            sub = self._refit_model()
            step = None if progress is None else \
                (lambda fr, msg, i=i: progress((i + fr) / k, f"error calibration, fold {i + 1}/{k}: {msg}"))
            resume = {} if ckpt is None or not sub.supports(caps.RESUMABLE_FIT) else {"checkpoint": ckpt.fit_folder(i)}
            sub._fit_quietly(fnan[tr], y[tr], flux_err=None if e is None else e[tr],
                             label_err=None if ye is None else ye[tr],
                             photometry=None if phot is None else phot[tr], progress=step, **resume)
            pred[te], formal[te] = sub.predict(fnan[te], flux_err=None if e is None else e[te],
                                               photometry=None if phot is None else phot[te], return_std=True)
            seconds[i] = time.perf_counter() - t0
            if ckpt is not None:
                ckpt.save(i, np.flatnonzero(te), pred[te], formal[te], seconds[i])
        #: seconds each fold's refit and prediction took (for a fold loaded from a checkpoint,
        #: when it was computed), and which folds were loaded
        self.calibration_fold_seconds_, self.calibration_folds_loaded_ = seconds, loaded
        snr = median_snr(f, e, bad)
        #: the error model's inputs (not saved with the model): refit the model from them
        #: with ``ErrorModel.fit(**model.calibration_inputs_)`` without repeating the refits
        self.calibration_inputs_ = {"resid": pred - y, "formal": formal, "snr": snr, "label_err": ye,
                                    "labels": pred}
        self.error_model_ = ErrorModel.fit(**self.calibration_inputs_)
        report(progress, 1.0, "errors calibrated")
        return self.error_model_

    def _fit_quietly(self, flux, labels, **kw):
        """``fit`` without the warnings a user already saw for the full training set."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.fit(flux, labels, **kw)

    def _predict_details(self, flux, *, flux_err=None, photometry=None) -> Prediction:
        """What :meth:`predict_details` asks of the method for sane spectra: labels, errors
        and the method's own quality numbers (override to add them)."""
        y, e = self.predict(flux, flux_err=flux_err, photometry=photometry, return_std=True)
        return Prediction(y, e, {})

    def _fit_envelope(self, flux, flux_err=None) -> None:
        """Keep the training spectra's envelope (:mod:`labelcore.methods.ood`); every
        method's ``fit`` calls this."""
        f, e, bad = self._flux_arrays(flux, flux_err)
        self.envelope_ = SpectrumEnvelope().fit(f, e, bad, seed=int(getattr(self, "random_state", 0) or 0))

    def predict_spectra(self, labels, *, label_err=None) -> np.ndarray:
        """Model flux [N, P] at ``labels`` [N, M] (capability ``model_spectra``)."""
        self._require(caps.MODEL_SPECTRA)
        raise NotSupportedError(f"{self.name} declares model_spectra but does not implement it")

    def derivative_spectra(self) -> np.ndarray:
        """d label / d flux [M, P] (capability ``derivative_spectra``)."""
        self._require(caps.DERIVATIVE_SPECTRA)
        raise NotSupportedError(f"{self.name} declares derivative_spectra but does not implement it")

    def cods(self, flux, labels, *, progress=None) -> dict[str, np.ndarray]:
        """Coefficients of dependence per label on a training set (capability ``cods``)."""
        self._require(caps.CODS)
        raise NotSupportedError(f"{self.name} declares cods but does not implement it")

    def learning_curves(self) -> dict:
        """Training diagnostics as tidy tables {name: DataFrame} (capability
        ``learning_curves``; the names are :attr:`curve_tables`)."""
        self._require(caps.LEARNING_CURVES)
        raise NotSupportedError(f"{self.name} declares learning_curves but does not implement it")

    def curves_so_far(self):
        """While ``fit`` runs (from its progress callback): the curves so far as a table,
        or None (capability ``live_curves``)."""
        self._require(caps.LIVE_CURVES)
        raise NotSupportedError(f"{self.name} declares live_curves but does not implement it")

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

    def check_grid(self, wave, where: str = "the spectra") -> None:
        """Refuse spectra on another grid than the model's: a different number of pixels,
        or (when the model kept its grid) wavelengths that differ by more than 1e-6
        relative. Resampling is an explicit step (:mod:`labelcore.prep.resample`)."""
        self._check_fitted()
        w = check_wavelength_grid(wave)
        if w.size != self.n_pixels_:
            raise ValidationError(f"{where} have {w.size} pixels per spectrum; the model was trained on "
                                  f"{self.n_pixels_}. Resample first (labelcore.prep.resample).")
        mw = getattr(self, "wave_", None)
        if mw is not None and not np.allclose(w, mw, rtol=1e-6, atol=0):
            raise ValidationError(f"{where}: the wavelength grid differs from the model's "
                                  f"({w[0]:.3f}-{w[-1]:.3f} vs {mw[0]:.3f}-{mw[-1]:.3f} Å). "
                                  "Resample first (labelcore.prep.resample).")

    def _check_grid(self, flux, wave) -> None:
        self._check_fitted()
        if wave is None and isinstance(flux, Spectra):
            wave = flux.wave
        if wave is not None:
            self.check_grid(wave)

    def _check_fitted(self):
        if not hasattr(self, "label_names_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    # ------------------------------------------------------------- inputs
    @staticmethod
    def _flux_arrays(flux, flux_err=None, n_pixels=None, name="flux", allow_empty=False):
        """(flux, flux_err or None, bad mask) as float arrays; containers accepted.

        Non-finite flux, and non-finite or non-positive uncertainties, are bad pixels
        (zero weight), never an error -- unless a whole spectrum is bad."""
        mask = None
        if isinstance(flux, Spectra):
            s = flux
            flux = s.flux
            flux_err = s.flux_err if s.has_errors else flux_err
            mask = s.mask
        f = np.array(as_real(name, flux), dtype=np.float64, copy=True)
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
            e = np.array(as_real("flux_err", flux_err), dtype=np.float64, copy=True)
            if e.ndim == 1:
                e = e[None, :]
            if e.shape != f.shape:
                raise ValidationError(f"flux_err has shape {e.shape}; flux has {f.shape}")
            bad |= ~np.isfinite(e) | (e <= 0)
            e[bad] = np.inf
        if bad.all(axis=1).any() and not allow_empty:
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
        y = np.array(as_real("labels", labels), dtype=np.float64, copy=True)
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
            e = np.array(as_real("label_err", label_err), dtype=np.float64, copy=True)
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
        path = Path(path)
        with atomic_dir(path, "model") as tmp:
            meta, arrays = self._state()
            doc = {"format": self._format, "class": self.name,
                   "labelcore_version": __version__, "params": self.get_params(),
                   "label_names": list(self.label_names_), "state": meta}
            (tmp / "params.json").write_text(json.dumps(doc, indent=2, default=_json_default))
            env = getattr(self, "envelope_", None)
            em = getattr(self, "error_model_", None)
            np.savez(tmp / "arrays.npz", label_min=self.label_min_, label_max=self.label_max_,
                     **arrays, **(env.to_arrays() if env is not None else {}),
                     **(em.to_arrays() if em is not None else {}))
            self._save_extra(tmp)
        return path

    def _save_extra(self, folder: Path) -> None:
        pass

    def _load_extra(self, folder: Path) -> None:
        pass

    @classmethod
    def load(cls, path):
        path = Path(path)
        recover_artifact(path)
        try:
            doc = json.loads((path / "params.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"{path}: not a saved labelcore model ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != cls._format:
            what = doc.get("class") if isinstance(doc, dict) else None
            raise ValidationError(f"{path}: holds a {what} model, not a {cls.__name__}")
        try:
            params = cls.validate_params({k: tuple(v) if isinstance(v, list) else v
                                          for k, v in doc["params"].items()})
            obj = cls(**params)
            with open(path / "arrays.npz", "rb") as fh, np.load(fh, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            obj.label_names_ = list(doc["label_names"])
            obj.label_min_ = arrays.pop("label_min")
            obj.label_max_ = arrays.pop("label_max")
            obj.envelope_ = SpectrumEnvelope.from_arrays(arrays)
            em = ErrorModel.from_arrays(arrays)
            if em is not None:
                obj.error_model_ = em
            arrays = {k: v for k, v in arrays.items() if not k.startswith(("ood_", ERR_PREFIX))}
            obj._set_state(doc["state"], arrays)
            obj._load_extra(path)
        except ValidationError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:   # npz, JSON, Keras
            raise FormatError(f"{path}: the saved {cls.__name__} model is damaged or incomplete "
                              f"({type(exc).__name__}: {exc}); retrain it") from exc
        return obj


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


