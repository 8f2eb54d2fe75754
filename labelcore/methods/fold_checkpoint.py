"""Checkpoints of the error calibration's K-fold refits, so that a calibration that stops
(a crash, a killed job, a closed notebook) resumes where it stopped instead of starting over.

The CNN's 5-fold calibration on 3000 LAMOST-like stars is five trainings of ~22 minutes
each on two cores; losing four of them to a crash in the fifth is what this prevents.
:meth:`LabelMethod.calibrate_errors(..., checkpoint=folder)
<labelcore.methods.base.LabelMethod.calibrate_errors>` writes each fold's out-of-fold
predictions, as soon as the fold is done, to ``folder/fold-<i>-of-<K>.npz`` (atomically:
a file there is always complete) and, when called again with the same folder, loads the
folds that are there instead of refitting them.

A fold is reused only if it belongs to *the same calibration*: every fold file holds a
fingerprint (SHA-256) of the method, K, the fold assignment's seed, the refit model's
hyper-parameters and given state (SLAM's per-pixel choice, for instance) and every input
array (flux with its bad pixels, flux errors, labels, label errors, photometry). A folder
holding folds of another calibration is refused with a clear error rather than mixed in;
an unreadable fold file (e.g. written by hand) is reported and refitted. Refits that are
not deterministic (the CNN's, whose TensorFlow kernels use threads) give a resumed
calibration that differs from an uninterrupted one as much as two uninterrupted ones do.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from labelcore.data.io import atomic_path
from labelcore.errors import ValidationError

#: changes when the fingerprint or the file layout does (old folds are then refused)
VERSION = "labelcore-calibration-folds-1"


def _feed(h, obj) -> None:
    """Feed a canonical form of ``obj`` (arrays, numbers, strings, None and nested dicts,
    lists and tuples of them) to the hash ``h``; other objects by their type's name."""
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        a = np.ascontiguousarray(obj)
        h.update(f"nd{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, dict):
        h.update(b"dict{")
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq{len(obj)}[".encode())
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        h.update(f"obj:{type(obj).__module__}.{type(obj).__qualname__};".encode())


def fingerprint(*parts) -> str:
    """SHA-256 (hex) of the canonical form of ``parts``."""
    h = hashlib.sha256(VERSION.encode())
    for p in parts:
        _feed(h, p)
    return h.hexdigest()


class FoldCheckpoint:
    """The fold files of one calibration in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, n_folds: int, key: str):
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise ValidationError(f"the calibration checkpoint {self.folder} exists and is not a folder")
        self.n_folds = int(n_folds)
        self.key = key

    def path(self, i: int) -> Path:
        return self.folder / f"fold-{i + 1}-of-{self.n_folds}.npz"

    def load(self, i: int, index: np.ndarray):
        """(pred, formal, seconds the fold took) of fold ``i`` if its file is there and belongs to this
        calibration; None if there is no file or it cannot be read (reported). Raises
        :class:`ValidationError` for a fold of another calibration."""
        p = self.path(i)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                key, idx, pred, formal = str(z["fingerprint"]), z["index"], z["pred"], z["formal"]
                seconds = float(z["seconds"]) if "seconds" in z else float("nan")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"calibration checkpoint {p} is unreadable ({exc}); refitting that fold",
                          UserWarning, stacklevel=3)
            return None
        if key != self.key:
            raise ValidationError(f"the calibration checkpoint folder {self.folder} holds folds of another "
                                  "calibration (other stars, labels, parameters or K): give an empty folder, "
                                  "or remove its fold files to start over")
        if not np.array_equal(idx, index) or pred.shape != (len(index),) + pred.shape[1:] \
                or formal.shape != pred.shape:
            raise ValidationError(f"calibration checkpoint {p} does not match this calibration's fold {i + 1}")
        return pred, formal, seconds

    def save(self, i: int, index: np.ndarray, pred: np.ndarray, formal: np.ndarray, seconds: float) -> None:
        """Write fold ``i``'s out-of-fold predictions (atomically)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ValidationError(f"cannot write the calibration checkpoint {self.folder}: not a folder") from exc
        with atomic_path(self.path(i), ".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, fingerprint=np.str_(self.key), index=np.asarray(index), pred=np.asarray(pred, float),
                     formal=np.asarray(formal, float), seconds=float(seconds))
