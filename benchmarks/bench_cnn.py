"""CNN ensemble cost and accuracy, measured in one run.

    python benchmarks/bench_cnn.py [--epochs 10] [--accuracy]

1. Training cost on 3000 RAVE-like spectra (+ photometry), a fixed number of epochs so
   that the comparison is like for like: 1 member alone, then a 20-member batched
   ensemble; ratio to 20 x one member (target: the 20-member ensemble <= 4 x one member).
2. Prediction throughput on 100,000 RAVE-like spectra, in spectra per second per member
   (target >= 20,000).
3. With --accuracy: early-stopped ensembles (5 members; the paper's patience 40, at most
   --acc-epochs 300) with and without photometry, bias/scatter per label in S/N bins on
   held-out stars. --skip-speed runs only this part.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import label_table  # noqa: E402

from labelcore.data.synth.datasets import RAVE_LABELS, labelled_set  # noqa: E402
from labelcore.methods import CNN  # noqa: E402


def plain_keras_member(d, epochs):
    """One Guiglion et al. network as a user would write it in plain Keras, for scale."""
    import keras
    from keras import layers

    P, M = d.flux.shape[1], d.labels.shape[1]
    x_in = keras.Input((P, 1))
    h = layers.Conv1D(8, 10, activation="relu")(x_in)
    h = layers.Conv1D(4, 10, activation="relu")(h)
    h = layers.Conv1D(2, 10, activation="relu")(h)
    h = layers.Flatten()(layers.Dropout(0.2)(h))
    p_in = keras.Input((d.photometry.shape[1],))
    h = layers.Concatenate()([h, layers.Dense(27, activation="relu")(p_in)])
    h = layers.Dense(32, activation="relu")(layers.Dense(64, activation="relu")(h))
    net = keras.Model([x_in, p_in], layers.Dense(M)(h))
    net.compile(optimizer="adam", loss="mse")
    x = np.where(np.isfinite(d.flux), d.flux, 1.0).astype(np.float32)[:, :, None]
    ph = ((d.photometry - d.photometry.mean(0)) / d.photometry.std(0)).astype(np.float32)
    y = ((d.labels - np.nanmin(d.labels, 0)) / np.ptp(np.nan_to_num(d.labels), 0)).astype(np.float32)
    n = int(0.94 * len(x))
    t = time.perf_counter()
    net.fit((x[:n], ph[:n]), np.nan_to_num(y[:n]), validation_data=((x[n:], ph[n:]), np.nan_to_num(y[n:])),
            batch_size=64, epochs=epochs, verbose=0)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--n-predict", type=int, default=100_000)
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--acc-epochs", type=int, default=300, help="epoch cap of the accuracy runs")
    ap.add_argument("--acc-patience", type=int, default=40, help="patience of the accuracy runs (paper: 40)")
    ap.add_argument("--skip-speed", action="store_true", help="only the accuracy runs")
    a = ap.parse_args()
    if not a.skip_speed:
        d = labelled_set("rave", 3000, seed=31, snr=(30, 300))
        kw = dict(max_epochs=a.epochs, patience=10**6, random_state=0)
        t = time.perf_counter()
        one = CNN(n_members=1, members_per_model=1, **kw).fit(d.flux, d.labels, photometry=d.photometry,
                                                              label_names=d.label_names)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        ens = CNN(n_members=a.members, members_per_model=a.members, **kw).fit(
            d.flux, d.labels, photometry=d.photometry, label_names=d.label_names)
        tE = time.perf_counter() - t
        print(f"training, {a.epochs} epochs on 3000 spectra: 1 member {t1:.1f} s; {a.members}-member "
              f"batched ensemble {tE:.1f} s = {tE / t1:.1f} x one member "
              f"(sequential would be {a.members} x; target <= 4 x); "
              f"{a.members * t1 / tE:.1f} x faster than one after another")
        tp = plain_keras_member(d, a.epochs)
        print(f"          for scale: one plain Keras network (Sequential-style, model.fit on arrays, no "
              f"per-member bookkeeping) takes {tp:.1f} s for the same epochs; the ensemble = {tE / tp:.1f} x that")
        big = labelled_set("rave", 5000, seed=32)
        reps = int(np.ceil(a.n_predict / 5000))
        flux = np.tile(big.flux, (reps, 1))[: a.n_predict]
        phot = np.tile(big.photometry, (reps, 1))[: a.n_predict]
        ens.predict_members(flux[:4096], photometry=phot[:4096])
        t = time.perf_counter()
        ens.predict_members(flux, photometry=phot)
        tp = time.perf_counter() - t
        print(f"prediction: {a.n_predict:,} spectra x {a.members} members in {tp:.1f} s = "
              f"{a.n_predict * a.members / tp:,.0f} spectra/s per member (target >= 20,000)")
        t = time.perf_counter()
        one.predict_members(flux, photometry=phot)
        tp1 = time.perf_counter() - t
        print(f"           one member alone: {a.n_predict / tp1:,.0f} spectra/s")
    if a.accuracy:
        data = labelled_set("rave", 4000, seed=33, snr=(20, 300))
        tr, te = data.split(3000)
        for label, ph_tr, ph_te in (("with photometry", tr.photometry, te.photometry),
                                    ("spectra only", None, None)):
            t = time.perf_counter()
            m = CNN(n_members=5, members_per_model=5, max_epochs=a.acc_epochs, patience=a.acc_patience).fit(
                tr.flux, tr.labels, photometry=ph_tr, label_names=RAVE_LABELS)
            y, s = m.predict(te.flux, photometry=ph_te, return_std=True)
            print(f"\n== {label}: 5 members, early stopping (patience {a.acc_patience}, <= {a.acc_epochs} epochs), "
                  f"fit {time.perf_counter() - t:.0f} s, "
                  f"stop epochs {m.stop_epoch_.tolist()}")
            print(label_table(RAVE_LABELS, y, te.truth, te.snr, bins=(20, 40, 60, 100, 150, 300)))


if __name__ == "__main__":
    main()
