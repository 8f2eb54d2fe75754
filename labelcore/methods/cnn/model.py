"""CNN: the Guiglion et al. (2020) network, trained as one batched ensemble (Keras 3).

Architecture (paper section 3.1, Fig. 3), per member:

    spectrum [P] -> Conv1D(8, 10, relu) -> Conv1D(4, 10, relu) -> Conv1D(2, 10, relu)
      -> Dropout(0.2) -> Flatten ---------------------------------+
    photometry [8 absolute magnitudes + A_V] -> Dense(27, relu) --+-> concat
      -> Dense(dense_units[0], relu) -> Dense(dense_units[1], relu) -> Dense(M, linear)

Labels min-max normalised to [0, 1]; MSE loss; uniform weight initialisation
(U(-0.05, 0.05), Keras' historical "uniform"); Adam. Each member holds out its own random
6 % test set for early stopping with patience 40 (the paper's plain early stopping: a
member keeps the weights it has when it stops; ``restore_best_weights=True`` keeps those
of its best epoch). The worst 20 % of members by final test loss are dropped; prediction =
mean of the kept members, error = their standard deviation.

Where the paper is silent (documented choices): the two dense layers have
``dense_units = (64, 32)`` neurons (sizes not given in the paper); ReLU in the dense and
photometry layers; batch size 64; Adam learning rate 1e-3; at most ``max_epochs = 300``
(the paper's runs stop before 120); photometry inputs are standardised (z-scores over the
training set) before the network; the spectrum enters as its depth below the continuum
in units of the training flux spread, (1 - f) / std(f_train) -- the paper says only that
the spectra are normalised; fed as f itself (values near 1, lines a small dip) the
small-initialised ReLU network learns the continuum offset first and the lines slowly: on
the synthetic RAVE-like set (1500 train / 1000 test, 4 members, no photometry) the scaled
input lowers the held-out scatter from 452 K / 0.88 / 0.214 / 0.078 to
106 K / 0.36 / 0.080 / 0.047 in Teff / log g / [M/H] / [alpha/M] (per-pixel z-scores:
116 K / 0.37 / 0.108 / 0.054); bad or non-finite pixels enter as 0 (the continuum)
because a CNN cannot take masks; flux uncertainties are not used (nor are they in the
paper); missing labels (NaN) contribute nothing to the loss of that label.

**Missing photometry policy**: a model fitted with photometry needs all 9 photometric
inputs of every star, in ``fit`` and ``predict``; stars with a missing value raise a
:class:`ValidationError` naming them. Train a spectra-only model (``photometry=None``,
the paper's section 7 ablation) for stars without parallax or photometry.

**Batched ensemble**: ``members_per_model`` members live in one Keras model. The spectra
enter as ``members_per_model`` channels (each member sees its *own* mini-batch order
drawn from its *own* training set), the convolutions are grouped so that member m's
filters only see member m's channels (dense convolutions with block-diagonal kernels
over 2-4 members each, see :class:`GroupConv1D`), and the dense layers are batched
(``EinsumDense`` with a member axis). One optimizer step updates every
member; members never share a weight. A member that has early-stopped is frozen: its
weights are written back to their stop-time values after every epoch, so the rest go on
while it no longer changes. Larger ensembles are trained as several such models.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import dask
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from labelcore.data.containers import Labels, Spectra
from labelcore.errors import ValidationError
from labelcore.methods import capabilities as caps
from labelcore.methods.base import LabelMethod, report
from labelcore.methods.checkpoints import checkpoint_folder, fingerprint
from labelcore.methods.cnn.network import (
    _group_conv_layer,
    _keras,
    _member_loss_metric,
    build_ensemble_model,
    masked_mse,
)
from labelcore.methods.cnn.training import BlockCheckpoint, _Batches, _EnsembleStopper, train_epochs
from labelcore.methods.params import Param
from labelcore.progress import ProgressCallback


class CNN(LabelMethod):
    """Guiglion et al. (2020) CNN ensemble. See the module docstring.

    Parameters
    ----------
    n_members : int
        Ensemble size (paper: 100).
    drop_fraction : float
        Fraction of members with the largest final test loss dropped (paper: 0.2).
    test_fraction : float
        Each member's held-out early-stopping set (paper: 0.06).
    patience : int
        Early-stopping patience in epochs (paper: 40).
    restore_best_weights : bool
        Keep each member's best-epoch weights instead of its stop-time weights (the paper
        keeps the stop-time weights).
    max_epochs, batch_size, learning_rate, dense_units, dropout : training choices.
    members_per_model : int
        Members trained together in one batched Keras model (a *block*).
    use_dask : bool
        Train the blocks as ``dask.delayed`` tasks through ``dask.compute``: on the workers
        of an active ``dask.distributed.Client`` (a cluster), else dask's local
        scheduler. One machine's cores are already used by one block, so this pays off
        with several machines. Same seeds, same members as the local loop.
    random_state : int
        Seed of initialisations, test splits and data order.
    """

    name = "CNN"
    _format = "labelcore-cnn"
    capabilities = frozenset({caps.PHOTOMETRY, caps.LEARNING_CURVES, caps.LIVE_CURVES, caps.RESUMABLE_FIT})
    curve_tables = ("epochs", "members")
    quick_params = {"n_members": 10, "max_epochs": 60, "patience": 10}
    param_spec = {
        "n_members": Param("int", "ensemble size (paper: 100)", low=1, high=2000),
        "drop_fraction": Param("float", "fraction of members with the worst final test loss dropped (paper: 0.2)",
                               low=0.0, high=0.9),
        "test_fraction": Param("float", "each member's early-stopping test set (paper: 0.06)", low=0.01, high=0.5),
        "patience": Param("int", "early-stopping patience in epochs (paper: 40)", low=1, high=10000),
        "restore_best_weights": Param("bool", "keep each member's best-epoch weights (paper: stop-time weights)"),
        "max_epochs": Param("int", "epoch limit (the paper's runs stop before 120)", low=1, high=100000),
        "batch_size": Param("int", "mini-batch size", low=1, high=65536),
        "learning_rate": Param("float", "Adam learning rate", low=1e-7, high=1.0),
        "dense_units": Param("grid", "neurons of the two dense layers (not given in the paper)", low=1,
                             high=8192, integer_items=True, max_items=8),
        "dropout": Param("float", "dropout after the convolutions (paper: 0.2)", low=0.0, high=0.95),
        "members_per_model": Param("int", "members trained together in one batched Keras model", low=1,
                                   high=200),
        "use_dask": Param("bool", "train blocks of members as dask tasks (a cluster pays off)"),
        "random_state": Param("int", "seed of initialisations, splits and data order", low=0, high=2**32 - 1),
    }

    @property
    def uses_photometry(self) -> bool:
        """True when the model was fitted with photometry (it then needs it to predict)."""
        return bool(getattr(self, "n_phot_", 0))

    def _refit_params(self) -> dict:
        """The error calibration's refits train at most 5 members each (the scatter of a
        smaller ensemble's mean is larger: the calibrated errors err on the large side)."""
        k = min(int(self.n_members), 5)
        return {**self.get_params(), "n_members": k, "members_per_model": min(int(self.members_per_model), k)}

    def learning_curves(self) -> dict:
        """Guiglion 2020 Fig. 5 as tables: ``epochs`` (member, epoch, train_loss,
        test_loss, test_mae, kept) and ``members`` (member, stop_epoch, final_test_loss,
        kept, loss_cut: the percentile cut of the final test loss above which members are
        dropped)."""
        self._check_fitted()
        lc = self.learning_curves_
        n_mem, n_ep = lc["test_loss"].shape
        kept = np.asarray(self.kept_members_, bool)
        ep = pd.DataFrame({"member": np.repeat(np.arange(n_mem), n_ep),
                           "epoch": np.tile(np.arange(1, n_ep + 1), n_mem),
                           **{k: np.asarray(v, float).ravel() for k, v in lc.items()},
                           "kept": np.repeat(kept, n_ep)})
        ep = ep[np.isfinite(ep["test_loss"])].reset_index(drop=True)
        mem = pd.DataFrame({"member": np.arange(n_mem), "stop_epoch": np.asarray(self.stop_epoch_),
                            "final_test_loss": np.asarray(self.final_test_loss_, float), "kept": kept,
                            "loss_cut": float(self.loss_cut_)})
        return {"epochs": ep, "members": mem}

    def __init__(self, n_members=100, drop_fraction=0.2, test_fraction=0.06, patience=40,
                 restore_best_weights=False, max_epochs=300, batch_size=64, learning_rate=1e-3,
                 dense_units=(64, 32), dropout=0.2, members_per_model=20, use_dask=False,
                 random_state=0):
        self.n_members = n_members
        self.drop_fraction = drop_fraction
        self.test_fraction = test_fraction
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.dense_units = dense_units
        self.dropout = dropout
        self.members_per_model = members_per_model
        self.use_dask = use_dask
        self.random_state = random_state

    # ------------------------------------------------------------------ inputs
    def _phot(self, photometry, n, fitting):
        if photometry is None:
            if not fitting and self.n_phot_:
                raise ValidationError("this CNN was trained with photometry: pass photometry= "
                                      "(8 absolute magnitudes + A_V) or use a spectra-only model")
            return None
        p = np.asarray(photometry, float)
        if p.ndim != 2 or p.shape[0] != n:
            raise ValidationError(f"photometry must be [N={n}, n_inputs]; got {p.shape}")
        if not fitting:
            if not self.n_phot_:
                raise ValidationError("this CNN was trained without photometry (spectra only)")
            if p.shape[1] != self.n_phot_:
                raise ValidationError(f"photometry has {p.shape[1]} columns; trained with {self.n_phot_}")
        bad = ~np.isfinite(p).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValidationError(
                f"{rows.size} stars have missing photometry/parallax (rows {rows[:10].tolist()}"
                f"{' ...' if rows.size > 10 else ''}); drop them or use a spectra-only CNN")
        return p

    def _clean_flux(self, f, bad):
        """The network's spectrum input: line depth below the continuum in units of the
        training set's flux spread, (1 - f) / flux_scale_, bad pixels 0 (the continuum).
        Models saved before this input scaling (no ``flux_scale_``) take f as it is."""
        scale = getattr(self, "flux_scale_", None)
        if scale is None:
            return np.where(bad, 1.0, f).astype(np.float32)
        return np.where(bad, 0.0, (1.0 - f) / scale).astype(np.float32)

    # ------------------------------------------------------------------ training
    def fit(self, flux: ArrayLike | Spectra, labels: ArrayLike | Labels, *, flux_err: ArrayLike | None = None,
            label_err: ArrayLike | None = None, photometry: ArrayLike | None = None,
            label_names: Sequence[str] | None = None, wave: ArrayLike | None = None,
            progress: ProgressCallback | None = None, checkpoint: str | Path | None = None) -> Self:
        """Train the ensemble (see the class docstring); members stop early on their own
        test sets, the worst ``drop_fraction`` are dropped.

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Training spectra on one grid; NaN/inf flux and non-positive errors are bad
            pixels.
        labels : array [N, M] or Labels
            Training labels, NaN = missing.
        flux_err, label_err : array, optional
            1-sigma uncertainties of the flux [N, P] and of the labels [N, M].
        photometry : array [N, K], optional
            Absolute magnitudes + A_V (methods with capability ``photometry``).
        label_names : sequence of str, optional
            Canonical names of the M labels (default ``label_0``, ...).
        wave : array [P], optional
            The wavelength grid, kept with the model (catalogue prediction checks it).
        progress : callable, optional
            ``progress(fraction, message)``.
        checkpoint : path, optional
            A folder for the training state of every ensemble block (weights, Adam's
            moments, the early-stopping state and learning curves; written atomically
            at the end of the first epoch that ends
            :data:`~labelcore.methods.cnn.training.CHECKPOINT_SECONDS` after the last
            write, and when a block ends). Called again with the same folder, the same training
            resumes from there: finished blocks are loaded, a block in progress goes on
            from its last saved epoch (statistically the same training, not bit for bit:
            the mini-batch order after the resume differs). A folder holding another
            training (other stars, labels or parameters) is refused.

        Returns
        -------
        self
        """
        _keras()  # sets the backend up before any array work
        t0 = time.perf_counter()
        # the network does not use the uncertainties (nor does the paper), but they are checked
        f, _, bad = self._flux_arrays(flux, flux_err)
        y, _, names = self._label_arrays(labels, label_err, label_names, n=f.shape[0])
        n = f.shape[0]
        n_test = max(int(round(self.test_fraction * n)), 1)
        if n - n_test < max(int(self.batch_size), 10) or n_test < 5:
            raise ValidationError(f"{n} stars are too few to train the CNN with a "
                                  f"{self.test_fraction:.0%} test split and batches of {self.batch_size}")
        self.label_names_ = names
        self.n_pixels_ = f.shape[1]
        self.wave_ = None if wave is None else np.asarray(wave, float)
        self._set_label_range(y)
        span = self.label_max_ - self.label_min_
        if np.any(span == 0):
            j = int(np.flatnonzero(span == 0)[0])
            raise ValidationError(f"label {names[j]!r} is constant in the training set")
        self.n_phot_ = 0
        p = self._phot(photometry, n, True)
        if p is not None:
            self.n_phot_ = p.shape[1]
            self.phot_mean_ = p.mean(0)
            self.phot_std_ = np.where(p.std(0) > 0, p.std(0), 1.0)
            p = ((p - self.phot_mean_) / self.phot_std_).astype(np.float32)
        good = f[~bad]
        self.flux_scale_ = float(np.std(good)) if good.size and np.std(good) > 0 else 1.0
        X = self._clean_flux(f, bad)
        Yn = ((y - self.label_min_) / span)
        W = np.isfinite(Yn).astype(np.float32)
        Yn = np.nan_to_num(Yn).astype(np.float32)
        E_total = int(self.n_members)
        per = max(1, min(int(self.members_per_model), E_total))
        rng = np.random.default_rng(self.random_state)
        self.models_ = []
        self._stoppers = []  # the callbacks (not saved): tests check the freezing with them
        blocks = []
        done = 0
        while done < E_total:    # each block: its members' own test splits, drawn up front
            E = min(per, E_total - done)
            split = [rng.permutation(n) for _ in range(E)]
            blocks.append((np.stack([s[n_test:] for s in split]), np.stack([s[:n_test] for s in split]), done))
            done += E
        dims = (f.shape[1], y.shape[1])
        ck = None       # (folder, fingerprint of this training)
        if checkpoint is not None:
            params = {k: v for k, v in self.get_params().items() if k not in ("use_dask", "drop_fraction")}
            ck = (checkpoint_folder(checkpoint), fingerprint("CNN", params, X, p, Yn, W))
        if self.use_dask and len(blocks) > 1:

            report(progress, 0.0, f"CNN: {len(blocks)} ensemble blocks as dask tasks")
            tasks = [dask.delayed(self._fit_block_portable)(X, p, Yn, W, tr, te, off, E_total, dims, ck)
                     for tr, te, off in blocks]
            results = []
            for (tr, _te, off), (weights, cbstate) in zip(blocks, dask.compute(*tasks), strict=True):
                model = self._build(dims, tr.shape[0], off)
                model.set_weights(weights)
                results.append((model, cbstate))
        else:
            results = []
            for tr, te, off in blocks:
                model, cb = self._fit_block(X, p, Yn, W, tr, te, off, E_total, dims, progress, ck)
                self._stoppers.append(cb)
                results.append((model, (cb.curves, cb.stop_epoch, cb.final_test)))
        curves = {"train_loss": [], "test_loss": [], "test_mae": []}
        stop_epoch, final_test = [], []
        for model, (c, st, ft) in results:
            self.models_.append(model)
            for k in curves:
                curves[k].extend(c[k])
            stop_epoch.extend(np.asarray(st).tolist())
            final_test.extend(np.asarray(ft).tolist())
        ep = max(len(c) for c in curves["train_loss"])
        self.learning_curves_ = {k: np.array([np.pad(np.asarray(c, float), (0, ep - len(c)),
                                                     constant_values=np.nan) for c in v])
                                 for k, v in curves.items()}
        self.stop_epoch_ = np.asarray(stop_epoch)
        self.final_test_loss_ = np.asarray(final_test)
        self.loss_cut_ = float(np.percentile(self.final_test_loss_, 100 * (1 - self.drop_fraction)))
        keep = self.final_test_loss_ <= self.loss_cut_
        if not keep.any():
            keep[np.argmin(self.final_test_loss_)] = True
        self.kept_members_ = keep
        #: seconds of training loaded from a checkpoint (``fit(checkpoint=)``), not in fit_seconds_
        self.resumed_seconds_ = float(sum(cb.saver.before for cb in self._stoppers if cb.saver is not None))
        self.fit_seconds_ = time.perf_counter() - t0
        self._fit_envelope(flux, flux_err)
        report(progress, 1.0, f"CNN: kept {int(keep.sum())} of {E_total} members")
        return self

    def _build(self, dims, E, offset):
        return build_ensemble_model(dims[0], dims[1], E, self.n_phot_, tuple(self.dense_units),
                                    self.dropout, seed=int(self.random_state) + offset)

    def _fit_block(self, X, p, Yn, W, train_idx, test_idx, offset, E_total, dims, progress=None, ck=None):
        """Train one batched block of members (seeded by its offset in the ensemble). With
        ``ck`` = (folder, fingerprint of the training) its state is kept in
        ``folder/block-<offset>.npz`` and training resumes from a state found there."""
        keras = _keras()
        keras.utils.set_random_seed(int(self.random_state) * 7919 + offset)
        model = self._build(dims, train_idx.shape[0], offset)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss=masked_mse,
                      metrics=[_member_loss_metric(train_idx.shape[0])])
        data = _Batches(X, p, Yn, W, train_idx, int(self.batch_size), int(self.random_state) + offset)
        saver = None
        if ck is not None:
            saver = BlockCheckpoint(Path(ck[0]) / f"block-{offset}.npz",
                                    fingerprint(ck[1], offset, train_idx, test_idx), model, data)
        cb = _EnsembleStopper(self, model, train_idx.shape[0], X, p, Yn, W, train_idx, test_idx, progress,
                              offset, E_total, saver)
        start, done = (0, False) if saver is None else saver.resume(cb)
        if start:
            report(progress, offset / E_total, f"CNN: block at member {offset} resumed after epoch {start}"
                   + (" (finished)" if done else ""))
        self._training_block = cb       # read by curves_so_far() while it trains
        try:
            if not done and start < int(self.max_epochs):
                train_epochs(model, data, cb, start, int(self.max_epochs))
        finally:
            self._training_block = None
        cb.finish()
        if saver is not None:
            saver.save(cb, done=True)
        return model, cb

    def curves_so_far(self):
        """Per member and epoch, the learning curves of the members trained so far -- during
        ``fit`` too (blocks already trained and the block in training; a progress callback
        may call it): a DataFrame member, epoch, train_loss, test_loss, test_mae, training
        (False once the member has stopped). None before any epoch. Blocks trained on dask
        workers appear only when ``fit`` ends."""
        cbs = [*getattr(self, "_stoppers", [])]
        live = getattr(self, "_training_block", None)
        if live is not None:
            cbs.append(live)
        rows = []
        for cb in cbs:
            for e in range(cb.E):
                n = len(cb.curves["test_loss"][e])
                if n == 0:
                    continue
                rows.append(pd.DataFrame({"member": cb.offset + e, "epoch": np.arange(1, n + 1),
                                          **{k: cb.curves[k][e] for k in ("train_loss", "test_loss", "test_mae")},
                                          "training": bool(cb.active[e]) and cb is live}))
        return pd.concat(rows, ignore_index=True) if rows else None

    def _fit_block_portable(self, X, p, Yn, W, train_idx, test_idx, offset, E_total, dims, ck=None):
        """:meth:`_fit_block` for a dask worker: returns plain arrays (the weights and the
        learning-curve state), which travel between processes and machines."""
        model, cb = self._fit_block(X, p, Yn, W, train_idx, test_idx, offset, E_total, dims, None, ck)
        return [np.asarray(w) for w in model.get_weights()], (cb.curves, cb.stop_epoch, cb.final_test)

    # ------------------------------------------------------------------ prediction
    def predict_members(self, flux, *, photometry=None, batch_size=1024):
        """Predictions of every member [N, n_members, M] (physical units)."""
        self._check_fitted()
        f, _, bad = self._flux_arrays(flux, None, n_pixels=self.n_pixels_)
        p = self._phot(photometry, f.shape[0], False)
        if p is not None:
            p = ((p - self.phot_mean_) / self.phot_std_).astype(np.float32)
        X = self._clean_flux(f, bad)[:, :, None]
        outs = []
        for k in range(len(self.models_)):
            net = self._inference_model(k)
            inp = X if p is None else (X, p)
            outs.append(np.asarray(net.predict(inp, batch_size=batch_size, verbose=0)))
        yn = np.concatenate(outs, axis=1)
        return yn * (self.label_max_ - self.label_min_) + self.label_min_

    def _inference_model(self, k):
        """The trained ensemble model ``k`` rewired for prediction, where every member sees
        the *same* spectrum: the first layer becomes one ``Conv1D`` with members x 8
        filters on a single input channel (the member kernels side by side; identical
        arithmetic) and the photometry layer reads one shared row, so the input is not
        copied once per member. All other layers are the trained ones (weights shared)."""
        cache = self.__dict__.setdefault("_inference_cache", {})
        net = self.models_[k]
        if cache.get(k, (None,))[0] is net:
            return cache[k][1]
        keras = _keras()
        layers = _keras().layers

        E = net.output.shape[1]
        kern, bias = (np.asarray(w) for w in net.get_layer("conv1").get_weights())  # [10, E, 8], [E*8]
        xin = keras.Input((self.n_pixels_, 1), name="spectrum")
        conv1 = layers.Conv1D(kern.shape[1] * kern.shape[2], kern.shape[0], activation="relu", name="conv1_shared")
        h = conv1(xin)
        conv1.set_weights([kern.reshape(kern.shape[0], 1, -1), bias])
        after = False
        pin = None
        for layer in net.layers:
            if layer.name == "conv1":
                after = True
                continue
            if not after or isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
                continue
            if layer.name == "phot27":
                kp, bp = (np.asarray(w) for w in layer.get_weights())          # [E, 9, 27], [E, 27]
                pin = keras.Input((kp.shape[1],), name="photometry_shared")
                dense = layers.EinsumDense("nf,efh->neh", output_shape=(E, kp.shape[2]), bias_axes="eh",
                                           activation="relu", name="phot27_shared")
                pe = dense(pin)
                dense.set_weights([kp, bp])
                continue
            if isinstance(layer, keras.layers.Concatenate):
                h = layer([h, pe])
                continue
            h = layer(h)
        model = keras.Model(xin if pin is None else [xin, pin], h)
        cache[k] = (net, model)
        return model

    def predict(self, flux: ArrayLike | Spectra, *, flux_err: ArrayLike | None = None,
                photometry: ArrayLike | None = None, return_std: bool = False, wave: ArrayLike | None = None
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Mean of the kept members (and their standard deviation with ``return_std``).

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Spectra on the training grid (bad pixels NaN).
        flux_err : array [N, P], optional
            1-sigma flux uncertainties.
        photometry : array [N, K], optional
            Needed when the model was fitted with photometry (``uses_photometry``).
        return_std : bool
            Also return the 1-sigma errors.
        wave : array [P], optional
            The spectra's wavelength grid: refused unless it is the model's (a
            :class:`Spectra` input is checked the same way).

        Returns
        -------
        labels : ndarray [N, M]
        errors : ndarray [N, M]
            Only with ``return_std``.
        """
        self._check_grid(flux, wave)
        ym = self.predict_members(flux, photometry=photometry)[:, self.kept_members_]
        mean = ym.mean(axis=1)
        if not return_std:
            return mean
        return mean, ym.std(axis=1, ddof=1) if ym.shape[1] > 1 else np.zeros_like(mean)

    # ------------------------------------------------------------------ persistence
    def _state(self):
        meta = {"n_pixels": self.n_pixels_, "n_phot": self.n_phot_, "loss_cut": self.loss_cut_,
                "n_models": len(self.models_), "fit_seconds": self.fit_seconds_,
                "flux_scale": getattr(self, "flux_scale_", None)}
        arrays = {"kept": self.kept_members_, "final_test_loss": self.final_test_loss_,
                  "stop_epoch": self.stop_epoch_,
                  **{f"curve_{k}": v for k, v in self.learning_curves_.items()}}
        if self.n_phot_:
            arrays["phot_mean"], arrays["phot_std"] = self.phot_mean_, self.phot_std_
        if self.wave_ is not None:
            arrays["wave"] = self.wave_
        return meta, arrays

    def _save_extra(self, folder: Path):
        for k, m in enumerate(self.models_):
            m.save(folder / f"ensemble_{k}.keras")

    def _set_state(self, meta, a):
        self.n_pixels_, self.n_phot_ = meta["n_pixels"], meta["n_phot"]
        self.loss_cut_ = meta["loss_cut"]
        self.fit_seconds_ = meta.get("fit_seconds")
        self.flux_scale_ = meta.get("flux_scale")
        self._n_models = meta["n_models"]
        self.kept_members_ = a["kept"].astype(bool)
        self.final_test_loss_, self.stop_epoch_ = a["final_test_loss"], a["stop_epoch"]
        self.learning_curves_ = {k[6:]: v for k, v in a.items() if k.startswith("curve_")}
        if self.n_phot_:
            self.phot_mean_, self.phot_std_ = a["phot_mean"], a["phot_std"]
        self.wave_ = a.get("wave")

    def _load_extra(self, folder: Path):
        keras = _keras()
        self.models_ = [keras.saving.load_model(folder / f"ensemble_{k}.keras",
                                                custom_objects={"masked_mse": masked_mse,
                                                                "GroupConv1D": _group_conv_layer()},
                                                safe_mode=True, compile=False)
                        for k in range(self._n_models)]


