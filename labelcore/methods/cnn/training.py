"""Training the batched ensemble: per-member mini-batches and the per-member early
stopping / freezing / learning-curve callback (see :mod:`labelcore.methods.cnn`)."""

from __future__ import annotations

import math

import numpy as np

from labelcore.methods.base import report
from labelcore.methods.cnn.network import _keras, _member_slices


def _make_dataset(X, P, Y, W, train_idx, batch_size, seed):
    keras = _keras()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.train_idx = train_idx          # [E, n_train]
            self.perm = self._shuffle()

        def _shuffle(self):
            return np.stack([self.rng.permutation(t) for t in self.train_idx])

        def __len__(self):
            return math.ceil(self.train_idx.shape[1] / batch_size)

        def __getitem__(self, i):
            idx = self.perm[:, i * batch_size:(i + 1) * batch_size]       # [E, B]
            x = np.transpose(X[idx], (1, 2, 0))                           # [B, P, E]
            yt = np.concatenate([Y[idx], W[idx]], axis=-1).transpose(1, 0, 2)  # [B, E, 2M]
            if P is None:
                return x, yt
            return (x, np.transpose(P[idx], (1, 0, 2))), yt

        def on_epoch_end(self):
            self.perm = self._shuffle()

    return Batches()


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

    def __init__(self, owner, model, E, X, P, Y, W, train_idx, test_idx, progress, offset, total):
        _keras_callback_base().__init__(self)
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
