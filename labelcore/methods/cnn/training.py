"""Training the batched ensemble: per-member mini-batches and the per-member early
stopping / freezing / learning-curve callback (see :mod:`labelcore.methods.cnn`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from labelcore.errors import ValidationError
from labelcore.methods.base import report
from labelcore.methods.checkpoints import read_state, write_state
from labelcore.methods.cnn.network import _keras, _member_slices


class _Batches:
    """Each member's own mini-batches from its own training rows, reshuffled per member
    every epoch from one seeded generator (its state is part of a checkpoint).

    Batch ``i`` is (spectra [B, P, E][, photometry [B, E, n_phot]]), targets [B, E, 2M]
    (values then masks). It is fed to ``train_on_batch`` by :func:`train_epochs`, not
    through a Keras ``PyDataset``: on the 2-core CPU ``fit`` on a ``PyDataset`` took
    ~10.8 s per epoch where the same batches through ``train_on_batch`` took ~4.3 s
    (5 members, 900 px, 45 steps, each feed in its own process), and a whole 8-epoch
    training 158 s against 65 s (docs/STATUS.md, session 16): the ``PyDataset`` runs
    through a ``tf.data`` generator pipeline whose threads contend with the kernels."""

    def __init__(self, X, P, Y, W, train_idx, batch_size, seed):
        self.X, self.P, self.Y, self.W = X, P, Y, W
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.train_idx = train_idx          # [E, n_train]
        self.perm = self._shuffle()

    def _shuffle(self):
        return np.stack([self.rng.permutation(t) for t in self.train_idx])

    def __len__(self):
        return math.ceil(self.train_idx.shape[1] / self.batch_size)

    def _rows(self, i):
        return self.perm[:, i * self.batch_size:(i + 1) * self.batch_size]   # [E, B]

    def __getitem__(self, i):
        idx = self._rows(i)
        x = np.transpose(self.X[idx], (1, 2, 0))                                  # [B, P, E]
        yt = np.concatenate([self.Y[idx], self.W[idx]], axis=-1).transpose(1, 0, 2)  # [B, E, 2M]
        if self.P is None:
            return x, yt
        return (x, np.transpose(self.P[idx], (1, 0, 2))), yt

    def label_counts(self, i):
        """Per member, the number of present labels in batch ``i`` (the denominator of
        its masked loss, :func:`~labelcore.methods.cnn.network._member_loss_metric`)."""
        return self.W[self._rows(i)].sum(axis=(1, 2))

    def on_epoch_end(self):
        self.perm = self._shuffle()


def train_epochs(model, data: _Batches, cb, start: int, epochs: int) -> None:
    """Train epochs ``start`` .. ``epochs - 1`` with one ``train_on_batch`` per mini-batch,
    calling ``cb.on_epoch_end`` (:class:`_EnsembleStopper`) with the epoch's per-member
    training loss until it sets ``model.stop_training``.

    The loss is what Keras' ``fit`` reports for the member-loss metric: the sum of squared
    errors over the epoch's batches divided by their number of present labels (each
    batch's metric value times its label count gives its sum). The batches are reshuffled
    after the callback, so a checkpoint written by it holds the generator state that
    gives the next epoch's batches: a resumed training sees the same batches."""
    cb.set_model(model)
    model.stop_training = False
    for epoch in range(int(start), int(epochs)):
        sse = np.zeros(data.train_idx.shape[0])
        cnt = np.zeros_like(sse)
        for i in range(len(data)):
            x, yt = data[i]
            logs = model.train_on_batch(x, yt, return_dict=True)
            c = data.label_counts(i)
            sse += np.asarray(logs["member_loss"], float) * np.maximum(c, 1)
            cnt += c
        cb.on_epoch_end(epoch, {"member_loss": sse / np.maximum(cnt, 1)})
        data.on_epoch_end()
        if model.stop_training:
            break


def _keras_callback_base():
    return _keras().callbacks.Callback


class _EnsembleStopper:
    """Per-member early stopping, freezing and learning curves (a Keras callback).

    Every epoch it records, per member, the training loss (the epoch mean of the training
    batches, from :func:`_member_loss_metric`) and the test loss and MAE on the member's
    own test rows (inference mode), and stops a member whose test loss has not improved
    for ``patience`` epochs."""

    def __new__(cls, *args, **kwargs):
        base = _keras_callback_base()
        klass = type("EnsembleStopper", (cls, base), {})
        obj = base.__new__(klass)
        return obj

    def __init__(self, owner, model, E, X, P, Y, W, train_idx, test_idx, progress, offset, total, saver=None):
        _keras_callback_base().__init__(self)
        self.saver = saver
        self.owner, self.net, self.E = owner, model, E
        self.X, self.P, self.Y, self.W = X, P, Y, W
        self.train_idx, self.test_idx = train_idx, test_idx
        self.progress, self.offset, self.total = progress, offset, total
        self.slices = _member_slices(model, E)
        self.best = np.full(E, np.inf)
        self.wait = np.zeros(E, int)
        self.active = np.ones(E, bool)
        self.stop_epoch = np.zeros(E, int)
        self.final_test = np.full(E, np.nan)
        self.frozen = {}
        self.best_w = {}
        self.curves = {"train_loss": [[] for _ in range(E)], "test_loss": [[] for _ in range(E)],
                       "test_mae": [[] for _ in range(E)]}

    def _member_get(self, e):
        out = []
        for v, axis, size in self.slices:
            a = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            out.append(np.take(a, range(e * size, (e + 1) * size), axis=axis).copy())
        return out

    def _members_set(self, weights_by_member):
        if not weights_by_member:
            return
        for i, (v, axis, size) in enumerate(self.slices):
            a = np.array(v.numpy())
            for e, ws in weights_by_member.items():
                idx = [slice(None)] * a.ndim
                idx[axis] = slice(e * size, (e + 1) * size)
                a[tuple(idx)] = ws[i]
            v.assign(a)

    def _predict(self, rows):
        """Predictions of member e on rows[e] (rows [E, R]) -> [E, R, M]."""
        x = np.transpose(self.X[rows], (1, 2, 0))
        inp = x if self.P is None else (x, np.transpose(self.P[rows], (1, 0, 2)))
        out = []
        for a in range(0, x.shape[0], 1024):
            sl = slice(a, a + 1024)
            ib = inp[sl] if self.P is None else (inp[0][sl], inp[1][sl])
            out.append(np.asarray(self.net.predict_on_batch(ib)))   # compiled, not eager
        return np.concatenate(out).transpose(1, 0, 2)  # [E, R, M]

    def _loss(self, rows):
        pred = self._predict(rows)
        y, w = self.Y[rows], self.W[rows]
        sw = np.maximum(w.sum(axis=(1, 2)), 1)
        mse = (w * (pred - y) ** 2).sum(axis=(1, 2)) / sw
        mae = (w * np.abs(pred - y)).sum(axis=(1, 2)) / sw
        return mse, mae

    def on_epoch_end(self, epoch, logs=None):
        test, mae = self._loss(self.test_idx)
        train = np.asarray(logs["member_loss"], float)   # epoch mean, from the training step
        for e in np.flatnonzero(self.active):
            self.curves["train_loss"][e].append(float(train[e]))
            self.curves["test_loss"][e].append(float(test[e]))
            self.curves["test_mae"][e].append(float(mae[e]))
            if test[e] < self.best[e]:
                self.best[e] = test[e]
                self.wait[e] = 0
                if self.owner.restore_best_weights:
                    self.best_w[e] = self._member_get(e)
            else:
                self.wait[e] += 1
            if self.wait[e] >= self.owner.patience:
                self.active[e] = False
                self.stop_epoch[e] = epoch + 1
                self.final_test[e] = test[e]
                self.frozen[e] = self.best_w.get(e) if self.owner.restore_best_weights else self._member_get(e)
                if self.owner.restore_best_weights:
                    self.final_test[e] = self.best[e]
        # frozen members are written back to their stop-time weights
        self._members_set(self.frozen)
        if self.saver is not None and (self.saver.due() or not self.active.any()):
            self.saver.save(self)
        done = (~self.active).sum() + self.active.sum() * (epoch + 1) / self.owner.max_epochs
        frac = (self.offset + done) / self.total
        report(self.progress, min(frac, 0.999),
               f"CNN epoch {epoch + 1}: {int(self.active.sum())}/{self.E} members training")
        if not self.active.any():
            self.model.stop_training = True

    def finish(self):
        ep = max(len(c) for c in self.curves["test_loss"])
        for e in np.flatnonzero(self.active):  # reached max_epochs
            self.stop_epoch[e] = ep
            self.final_test[e] = self.curves["test_loss"][e][-1]
            if self.owner.restore_best_weights and e in self.best_w:
                self.frozen[e] = self.best_w[e]
                self.final_test[e] = self.best[e]
        self._members_set(self.frozen)


#: a block in training writes its checkpoint when this many seconds have passed since the
#: last one (checked at the end of every epoch) and when it ends: a crash loses at most
#: about a minute and an epoch
CHECKPOINT_SECONDS = 60.0

_STOPPER_ARRAYS = ("best", "wait", "active", "stop_epoch", "final_test")


class BlockCheckpoint:
    """The training state of one ensemble block in one npz file
    (:mod:`labelcore.methods.checkpoints`): the model's variables (weights and the dropout
    layers' seed states), the optimizer's variables (Adam's step, moments), the
    early-stopping state (best losses, patience counters, active and frozen members and
    their weights), the learning curves, and the mini-batch generator's random state."""

    def __init__(self, path: Path, key: str, model, data):
        self.path, self.key, self.model, self.data = Path(path), key, model, data
        self.last = self.start = time.monotonic()
        self.before = 0.0       # seconds of training done before a resume (from the state)

    def due(self) -> bool:
        return time.monotonic() - self.last >= CHECKPOINT_SECONDS

    def save(self, cb, done: bool = False) -> None:
        epoch = max(len(c) for c in cb.curves["test_loss"])
        model_vars = self.model.variables      # the weights and the dropout layers' seed states
        arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(model_vars)}
        opt = self.model.optimizer.variables
        arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(opt)})
        arrays.update({f"cb_{k}": getattr(cb, k) for k in _STOPPER_ARRAYS})
        for kind in ("frozen", "best_w"):
            for e, ws in getattr(cb, kind).items():
                if ws is not None:
                    arrays.update({f"{kind}_{e}_{i}": w for i, w in enumerate(ws)})
        meta = {"epoch": epoch, "done": bool(done), "n_weights": len(model_vars), "n_opt": len(opt),
                "frozen": {str(e): None if ws is None else len(ws) for e, ws in cb.frozen.items()},
                "best_w": {str(e): len(ws) for e, ws in cb.best_w.items()},
                "curves": cb.curves, "rng": self.data.rng.bit_generator.state,
                "seconds": self.before + time.monotonic() - self.start}
        write_state(self.path, self.key, arrays, meta)
        self.last = time.monotonic()

    def resume(self, cb):
        """Restore a saved state into the model, optimizer, callback ``cb`` and batch
        generator: (epochs already trained, whether the block had finished); (0, False)
        when there is no state to resume."""
        got = read_state(self.path, self.key, "another CNN training (other stars, labels or parameters)")
        if got is None:
            return 0, False
        a, meta = got
        model_vars = self.model.variables
        if meta["n_weights"] != len(model_vars):
            raise ValidationError(f"the checkpoint {self.path} holds another network")
        for i, v in enumerate(model_vars):
            v.assign(a[f"w{i}"])
        opt = self.model.optimizer
        opt.build(self.model.trainable_variables)
        if meta["n_opt"] != len(opt.variables):
            raise ValidationError(f"the checkpoint {self.path} holds another optimizer state")
        for i, v in enumerate(opt.variables):
            v.assign(a[f"o{i}"])
        for k in _STOPPER_ARRAYS:
            setattr(cb, k, a[f"cb_{k}"].copy())
        cb.frozen = {int(e): None if n is None else [a[f"frozen_{e}_{i}"] for i in range(n)]
                     for e, n in meta["frozen"].items()}
        cb.best_w = {int(e): [a[f"best_w_{e}_{i}"] for i in range(n)] for e, n in meta["best_w"].items()}
        cb.curves = {k: [list(map(float, c)) for c in v] for k, v in meta["curves"].items()}
        self.data.rng.bit_generator.state = meta["rng"]   # saved before the epoch's reshuffle
        self.data.perm = self.data._shuffle()
        self.before, self.start = float(meta.get("seconds", 0.0)), time.monotonic()
        return int(meta["epoch"]), bool(meta["done"])
