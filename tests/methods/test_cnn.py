"""CNN: the batched ensemble, early stopping and freezing, the 20 % cut, persistence and
a known-answer test (slow)."""

import json

import numpy as np
import pytest

from labelcore.errors import ValidationError

pytest.importorskip("keras")
from labelcore.methods import CNN  # noqa: E402
from labelcore.methods.cnn.network import _member_slices  # noqa: E402

NAMES = ("teff", "logg", "fe_h")


@pytest.fixture(scope="module")
def small():
    from labelcore.data.synth.datasets import labelled_set

    return labelled_set("rave", 400, seed=8, label_names=NAMES, snr=150)


@pytest.fixture(scope="module")
def fitted(small):
    return CNN(n_members=5, members_per_model=5, max_epochs=12, patience=3, batch_size=32,
               random_state=3).fit(small.flux[:300], small.labels[:300], photometry=small.photometry[:300],
                                   label_names=NAMES)


def test_members_stop_and_stay_frozen(small):
    # labels that the spectra cannot predict: test losses stop improving almost at once
    noise = np.random.default_rng(0).normal(size=(300, 3))
    m = CNN(n_members=4, members_per_model=4, max_epochs=25, patience=2, batch_size=32,
            random_state=1).fit(small.flux[:300], noise)
    cb = m._stoppers[0]
    stopped = np.flatnonzero(m.stop_epoch_ < 25)
    assert stopped.size >= 2, m.stop_epoch_
    assert len(set(m.stop_epoch_.tolist())) >= 1
    for e in stopped:
        now = [np.take(np.asarray(v.numpy()), range(e * s, (e + 1) * s), axis=ax)
               for v, ax, s in _member_slices(m.models_[0], 4)]
        for a, b in zip(now, cb.frozen[e], strict=True):
            np.testing.assert_array_equal(a, b)
        # its learning curve ends where it stopped
        assert np.isfinite(m.learning_curves_["test_loss"][e]).sum() == m.stop_epoch_[e]


def test_learning_curves_train_and_test_loss_are_each_members_own(small):
    """With no dropout and a zero learning rate the weights never move, so the epoch's
    train loss (accumulated inside the training step, per member) must equal each
    member's masked MSE over its own training rows, and the test loss over its own
    test rows: checks the per-member bookkeeping against a direct evaluation."""
    m = CNN(n_members=3, members_per_model=3, max_epochs=2, patience=10, batch_size=32, dropout=0.0,
            learning_rate=0.0, random_state=5).fit(small.flux[:300], small.labels[:300],
                                                   photometry=small.photometry[:300])
    cb = m._stoppers[0]
    for name, rows in (("train_loss", cb.train_idx), ("test_loss", cb.test_idx)):
        direct, _ = cb._loss(rows)
        for e in range(3):
            np.testing.assert_allclose(m.learning_curves_[name][e], direct[e], rtol=1e-4)
    # the members are different networks: their losses differ
    assert np.ptp(m.learning_curves_["train_loss"][:, 0]) > 0


def test_ensemble_cut_mean_and_spread(fitted, small):
    assert fitted.kept_members_.sum() == 4  # 20 % of 5 dropped
    worst = np.argmax(fitted.final_test_loss_)
    assert not fitted.kept_members_[worst]
    assert fitted.loss_cut_ == pytest.approx(np.percentile(fitted.final_test_loss_, 80))
    members = fitted.predict_members(small.flux[300:], photometry=small.photometry[300:])
    assert members.shape == (100, 5, 3)
    y, s = fitted.predict(small.flux[300:], photometry=small.photometry[300:], return_std=True)
    np.testing.assert_allclose(y, members[:, fitted.kept_members_].mean(1), rtol=1e-6)
    np.testing.assert_allclose(s, members[:, fitted.kept_members_].std(1, ddof=1), rtol=1e-5)
    # members differ (own initialisation, split and order) yet agree in scale
    assert np.all(s > 0)


def test_shared_input_prediction_graph_matches_training_graph(fitted, small):
    """Prediction feeds one spectrum to all members through a rewired first layer; it must
    give what the trained (per-member input) graph gives for the same spectrum."""
    f = small.flux[300:]
    X = np.where(np.isfinite(f), (1.0 - f) / fitted.flux_scale_, 0.0).astype(np.float32)   # the documented input
    P = ((small.photometry[300:] - fitted.phot_mean_) / fitted.phot_std_).astype(np.float32)
    net = fitted.models_[0]
    E = net.output.shape[1]
    ref = np.asarray(net((np.repeat(X[:, :, None], E, axis=2), np.repeat(P[:, None], E, axis=1)),
                         training=False))
    got = (fitted.predict_members(small.flux[300:], photometry=small.photometry[300:])
           - fitted.label_min_) / (fitted.label_max_ - fitted.label_min_)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert ref.std(axis=0).min() > 1e-3   # a network whose output depends on the input


def test_save_load_identical(fitted, small, tmp_path):
    fitted.save(tmp_path / "cnn")
    assert sorted(p.suffix for p in (tmp_path / "cnn").iterdir() if not p.name.startswith(".")) == \
        [".json", ".keras", ".npz"]
    back = CNN.load(tmp_path / "cnn")
    a = fitted.predict(small.flux[300:], photometry=small.photometry[300:])
    b = back.predict(small.flux[300:], photometry=small.photometry[300:])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(back.kept_members_, fitted.kept_members_)


def test_reproducible_with_a_seed(small):
    kw = dict(n_members=2, members_per_model=2, max_epochs=3, patience=5, batch_size=32, random_state=11)
    a = CNN(**kw).fit(small.flux[:200], small.labels[:200]).predict(small.flux[300:320])
    b = CNN(**kw).fit(small.flux[:200], small.labels[:200]).predict(small.flux[300:320])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(a).max())


def test_clear_errors(fitted, small):
    ph = small.photometry[:300].copy()
    ph[[4, 17], 2] = np.nan
    with pytest.raises(ValidationError, match=r"2 stars have missing photometry/parallax \(rows \[4, 17\]"):
        CNN(n_members=1, max_epochs=1).fit(small.flux[:300], small.labels[:300], photometry=ph)
    with pytest.raises(ValidationError, match="trained with photometry"):
        fitted.predict(small.flux[:3])
    with pytest.raises(ValidationError, match="too few"):
        CNN(n_members=1).fit(small.flux[:30], small.labels[:30])
    with pytest.raises(ValidationError, match="fitted on 900"):
        fitted.predict(small.flux[:3, :500], photometry=small.photometry[:3])
    bad = small.flux[:300].copy()
    bad[7] = np.nan
    with pytest.raises(ValidationError, match="row 7 has no usable pixel"):
        CNN(n_members=1).fit(bad, small.labels[:300])


@pytest.mark.slow
def test_known_answer_and_photometry_helps_logg():
    from labelcore.data.synth.datasets import labelled_set

    d = labelled_set("rave", 1600, seed=9, label_names=NAMES, snr=200)
    tr, te = d.split(1300)
    kw = dict(n_members=3, members_per_model=3, max_epochs=50, patience=10, random_state=0)
    with_p = CNN(**kw).fit(tr.flux, tr.labels, photometry=tr.photometry, label_names=NAMES)
    no_p = CNN(**kw).fit(tr.flux, tr.labels, label_names=NAMES)
    yp = with_p.predict(te.flux, photometry=te.photometry)
    yn = no_p.predict(te.flux)
    sp = np.std(yp - te.truth, 0)
    sn = np.std(yn - te.truth, 0)
    spread = np.std(te.truth, 0)
    print("scatter with / without photometry:", sp, sn, "label spread:", spread)
    # Teff and log g are learned well within this small budget; [Fe/H] converges slowest
    assert sp[0] < 0.3 * spread[0] and sp[1] < 0.3 * spread[1], (sp, spread)
    assert sp[2] < 0.8 * spread[2], (sp, spread)
    assert sp[1] < 0.85 * sn[1], f"photometry should sharpen log g: {sp[1]:.3f} vs {sn[1]:.3f}"


@pytest.mark.full
def test_jax_backend_trains_predicts_and_round_trips(tmp_path):
    """The same code under KERAS_BACKEND=jax (a fresh interpreter: the backend is fixed at
    import)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import numpy as np, keras\n"
        "assert keras.backend.backend() == 'jax'\n"
        "from labelcore.data.synth.datasets import labelled_set\n"
        "from labelcore.methods import CNN\n"
        "d = labelled_set('rave', 300, seed=8, label_names=('teff', 'logg'), snr=150)\n"
        "m = CNN(n_members=3, members_per_model=3, max_epochs=3, patience=1, batch_size=32)\n"
        "m.fit(d.flux[:250], d.labels[:250], photometry=d.photometry[:250])\n"
        "y = m.predict(d.flux[250:], photometry=d.photometry[250:])\n"
        "assert y.shape == (50, 2) and np.isfinite(y).all()\n"
        f"m.save(r'{tmp_path / 'm'}')\n"
        f"b = CNN.load(r'{tmp_path / 'm'}')\n"
        "assert np.allclose(b.predict(d.flux[250:], photometry=d.photometry[250:]), y, rtol=1e-5)\n"
        "print('ok')\n")
    env = dict(os.environ, KERAS_BACKEND="jax")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.full
def test_blocks_through_dask_give_the_same_members(small):
    """The dask code path (blocks as tasks, weights shipped back as arrays) trains the
    same members as the local loop."""
    import dask

    kw = dict(n_members=4, members_per_model=2, max_epochs=3, patience=5, batch_size=32, random_state=5)
    a = CNN(**kw).fit(small.flux[:200], small.labels[:200])
    with dask.config.set(scheduler="synchronous"):
        b = CNN(use_dask=True, **kw).fit(small.flux[:200], small.labels[:200])
    assert len(b.models_) == 2 and b.learning_curves_["test_loss"].shape == a.learning_curves_["test_loss"].shape
    np.testing.assert_allclose(b.final_test_loss_, a.final_test_loss_, rtol=1e-4)
    np.testing.assert_allclose(b.predict_members(small.flux[300:320]), a.predict_members(small.flux[300:320]),
                               rtol=1e-4, atol=1e-3)


class _Killed(RuntimeError):
    pass


def test_a_training_that_stops_resumes_from_its_checkpoint(small, tmp_path, monkeypatch):
    """A crash after epoch 3 of 6: the same fit with the same folder loads the saved
    epochs (its curves start with the crashed run's, bit for bit), runs only the
    remaining epochs with the optimizer's state carried on, and a finished training is
    loaded without training at all; another training's folder is refused."""
    import labelcore.methods.cnn.training as T

    monkeypatch.setattr(T, "CHECKPOINT_SECONDS", 0.0)          # a state after every epoch
    kw = dict(n_members=2, members_per_model=2, max_epochs=6, patience=10, batch_size=32, random_state=4)
    f, y = small.flux[:160], small.labels[:160]
    real = T._EnsembleStopper.on_epoch_end
    epochs = []

    def counting(self, epoch, logs=None):
        epochs.append(epoch)
        real(self, epoch, logs)
        if kill_after is not None and epoch + 1 == kill_after:
            raise _Killed

    monkeypatch.setattr(T._EnsembleStopper, "on_epoch_end", counting)
    kill_after = 3
    crashed = CNN(**kw)
    with pytest.raises(_Killed):
        crashed.fit(f, y, checkpoint=tmp_path / "ck")
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["block-0.npz"]
    with np.load(tmp_path / "ck" / "block-0.npz") as z:
        meta = json.loads(str(z["__meta__"]))
    assert meta["epoch"] == 3 and not meta["done"]
    saved = meta["curves"]["test_loss"]
    kill_after, epochs[:] = None, []
    m = CNN(**kw).fit(f, y, checkpoint=tmp_path / "ck")
    assert epochs == [3, 4, 5]                                  # only the remaining epochs ran
    assert m.resumed_seconds_ > 0                               # the saved part's training time
    for e in range(2):
        np.testing.assert_array_equal(m.learning_curves_["test_loss"][e, :3], saved[e])
        assert np.isfinite(m.learning_curves_["test_loss"][e]).sum() == 6
    steps = int(np.ceil((160 - round(0.06 * 160)) / 32))
    assert int(m.models_[0].optimizer.iterations.numpy()) == 6 * steps   # Adam's state went on
    # the resumed training learns as an uninterrupted one does
    plain = CNN(**kw).fit(f, y)
    assert plain.resumed_seconds_ == 0
    ratio = m.final_test_loss_ / plain.final_test_loss_
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    epochs[:] = []
    again = CNN(**kw).fit(f, y, checkpoint=tmp_path / "ck")
    assert epochs == []                                         # finished: loaded, not trained
    np.testing.assert_array_equal(again.predict(small.flux[300:310]), m.predict(small.flux[300:310]))
    with pytest.raises(ValidationError, match="another CNN training"):
        CNN(**kw).fit(f, y[::-1].copy(), checkpoint=tmp_path / "ck")
