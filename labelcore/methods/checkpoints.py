"""Checkpoints of long computations, so that one that stops (a crash, a killed job, a closed
notebook) resumes where it stopped instead of starting over.

Two users:

* :meth:`LabelMethod.calibrate_errors(..., checkpoint=folder)
  <labelcore.methods.base.LabelMethod.calibrate_errors>` writes each fold's out-of-fold
  predictions, as soon as the fold is done, to ``folder/fold-<i>-of-<K>.npz`` and, called
  again with the same folder, loads the folds that are there instead of refitting them
  (:class:`FoldCheckpoint`). The CNN's 5-fold calibration on 3000 LAMOST-like stars is
  five trainings of ~22 minutes on two cores; a crash in the fifth no longer loses four.
  Refits of a method with the capability ``resumable_fit`` also checkpoint their own
  training in ``folder/fold-<i>-of-<K>-fit/``.
* a method with the capability ``resumable_fit`` (the CNN) takes ``fit(...,
  checkpoint=folder)`` and keeps its training state there (the CNN: weights, optimizer
  moments, early-stopping state and learning curves of every ensemble block, at most a
  minute old), resuming from it when called again.

Every file holds a fingerprint (SHA-256, :func:`fingerprint`) of what it belongs to: for
the folds the method, K, the fold assignment's seed, the refit model's hyper-parameters
and given state (SLAM's per-pixel choice, for instance) and every input array (flux with
its bad pixels, flux errors, labels, label errors, photometry). A file of another
computation is refused with a clear error rather than mixed in; an unreadable file (e.g.
written by hand, or by a disk that filled up) is reported and recomputed. Files are
written atomically, so a file there is always complete. A computation whose steps are not
deterministic (the CNN's TensorFlow kernels use threads) resumes to a result that differs
from an uninterrupted one as much as two uninterrupted ones do.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from labelcore.data.io import atomic_path
from labelcore.errors import ValidationError

#: changes when the fingerprint or a file layout does (older files are then refused)
VERSION = "labelcore-checkpoint-1"


def _feed(h, obj) -> None:
    """Feed a canonical form of ``obj`` (arrays, numbers, strings, None and nested dicts,
    lists and tuples of them) to the hash ``h``; other objects by their type's name."""
    if isinstance(obj, (np.ndarray, np.generic)):
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


def checkpoint_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path; :class:`ValidationError` if it exists and is not a folder."""
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ValidationError(f"the checkpoint {path} exists and is not a folder")
    return path


def write_state(path: Path, key: str, arrays: dict, meta: dict | None = None) -> None:
    """Write ``arrays`` (name -> array) and JSON-able ``meta`` to the npz file ``path``
    (atomically), stamped with the fingerprint ``key``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ValidationError(f"cannot write the checkpoint {path.parent}: not a folder") from exc
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, __key__=np.str_(key), __meta__=np.str_(json.dumps(meta or {})),
                 **{k: np.asarray(v) for k, v in arrays.items()})


def read_state(path: Path, key: str, what: str):
    """(arrays, meta) of the state file ``path`` if it is there and stamped ``key``; None
    if there is none or it cannot be read (reported). Raises :class:`ValidationError` for
    a file of another computation (``what`` says which, in the message)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        have, meta = str(arrays.pop("__key__")), json.loads(str(arrays.pop("__meta__")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"checkpoint {path} is unreadable ({exc}); computing it again", UserWarning, stacklevel=3)
        return None
    if have != key:
        raise ValidationError(f"the checkpoint {path} belongs to {what}: give an empty folder, "
                              "or remove its files to start over")
    return arrays, meta


class FoldCheckpoint:
    """The fold files of one calibration in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, n_folds: int, key: str):
        self.folder = checkpoint_folder(folder)
        self.n_folds = int(n_folds)
        self.key = key

    def path(self, i: int) -> Path:
        return self.folder / f"fold-{i + 1}-of-{self.n_folds}.npz"

    def fit_folder(self, i: int) -> Path:
        """Where fold ``i``'s refit keeps its own training state (``resumable_fit``)."""
        return self.folder / f"fold-{i + 1}-of-{self.n_folds}-fit"

    def load(self, i: int, index: np.ndarray):
        """(pred, formal, seconds the fold took) of fold ``i`` if its file is there and
        belongs to this calibration; None if there is none or it cannot be read."""
        got = read_state(self.path(i), self.key, "another calibration (other stars, labels, parameters or K)")
        if got is None:
            return None
        a, meta = got
        if not np.array_equal(a["index"], index) or a["pred"].shape[0] != len(index) \
                or a["formal"].shape != a["pred"].shape:
            raise ValidationError(f"checkpoint {self.path(i)} does not match this calibration's fold {i + 1}")
        return a["pred"], a["formal"], float(meta.get("seconds", np.nan))

    def save(self, i: int, index: np.ndarray, pred: np.ndarray, formal: np.ndarray, seconds: float) -> None:
        """Write fold ``i``'s out-of-fold predictions (atomically)."""
        write_state(self.path(i), self.key, {"index": index, "pred": np.asarray(pred, float),
                                             "formal": np.asarray(formal, float)}, {"seconds": float(seconds)})
