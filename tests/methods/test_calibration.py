"""Calibrated total errors on sets whose noise is known."""

import numpy as np
import pytest

from labelcore.errors import ValidationError
from labelcore.evaluate import bias_scatter
from labelcore.methods import Cannon, load_model
from labelcore.methods.calibration import ErrorModel, zscore_spread
from labelcore.methods.cannon import exponents, vectorise


def test_zscore_spread_is_one_for_unit_gaussians_and_ignores_a_few_outliers():
    z = np.random.default_rng(0).normal(size=20000)
    assert abs(zscore_spread(z) - 1) < 0.02
    assert abs(zscore_spread(2 * z) - 2) < 0.04
    z[:200] = 1e3                                        # 1 % catastrophic
    assert abs(zscore_spread(z) - 1) < 0.05
    assert np.isnan(zscore_spread([1.0, np.nan]))


def test_error_model_recovers_a_known_error_law_despite_label_noise():
    rng = np.random.default_rng(1)
    n = 6000
    snr = np.exp(rng.uniform(np.log(10), np.log(200), n))
    formal = 0.5 / snr[:, None] * np.array([[1.0, 3.0]])       # what a method claims
    true_sig = np.sqrt((2.0 * formal) ** 2 + np.array([0.02, 0.0]) ** 2 + (np.array([0.0, 1.0]) / snr[:, None]) ** 2)
    label_err = np.full((n, 2), 0.01)                           # the training labels' own noise
    resid = rng.normal(size=(n, 2)) * true_sig + rng.normal(size=(n, 2)) * label_err
    em = ErrorModel.fit(resid, formal, snr, label_err)
    tot = em.total(formal, snr)
    # the law itself, not the label noise, is recovered: within 5 % at every S/N
    np.testing.assert_allclose(tot, true_sig, rtol=0.08)
    again = ErrorModel.from_arrays(em.to_arrays())
    np.testing.assert_allclose(again.total(formal, snr), tot)
    with pytest.raises(ValidationError, match="too few"):
        ErrorModel.fit(resid[:5], formal[:5], snr[:5])


def _label_noise_dominated(n, rng):
    """Out-of-fold residuals as the CNN's Teff has them: the training labels' noise (60-80 K)
    is three times the method's error (20-28 K), whose ensemble spread is noisy and shrinks
    with S/N faster than the error does."""
    snr = np.exp(rng.uniform(np.log(30), np.log(150), n))
    formal = 400 / snr * rng.lognormal(0, 0.35, n)
    sig = np.sqrt(20.0**2 + (600 / snr) ** 2)
    e = 65 * rng.lognormal(0, 0.2, n)
    return snr, formal[:, None], sig, e[:, None]


def test_error_model_is_not_fooled_when_label_noise_dominates():
    rng = np.random.default_rng(5)
    snr, formal, sig, e = _label_noise_dominated(3000, rng)
    resid = rng.normal(size=3000) * sig + rng.normal(size=3000) * e[:, 0]
    em = ErrorModel.fit(resid[:, None], formal, snr, e)
    snr2, formal2, sig2, _ = _label_noise_dominated(4000, rng)
    tot = em.total(formal2, snr2)[:, 0]
    assert 0.75 < np.median(tot / sig2) < 1.3             # a Student-t fit collapsed to ~0.05
    z = rng.normal(size=4000) * sig2 / tot
    q = np.quantile(snr2, [0, 0.25, 0.5, 0.75, 1])
    spreads = [zscore_spread(z[(snr2 >= a) & (snr2 <= b)]) for a, b in zip(q[:-1], q[1:], strict=True)]
    assert all(0.8 <= s <= 1.25 for s in spreads), spreads


def test_error_model_ignores_catastrophic_fits():
    rng = np.random.default_rng(6)
    n = 3000
    snr = np.exp(rng.uniform(np.log(20), np.log(200), n))
    formal = (0.5 / snr)[:, None]
    sig = np.sqrt((2 * formal[:, 0]) ** 2 + 0.005**2)
    resid = rng.normal(size=n) * sig
    bad = rng.random(n) < 0.04                            # 4 % fits ten times worse
    resid[bad] *= 10
    em = ErrorModel.fit(resid[:, None], formal, snr)
    np.testing.assert_allclose(em.total(formal, snr)[:, 0], sig, rtol=0.12)


def _label_dependent(n, rng):
    """Out-of-fold results whose model error grows with label 0 (x3.6 from its lowest to its
    highest tercile) while the formal error knows only the S/N, as SLAM's Teff on hot and
    cool LAMOST-like stars: (truth, predicted labels, residuals, formal errors, S/N, the true
    error of each star)."""
    snr = np.exp(rng.uniform(np.log(30), np.log(150), n))
    truth = rng.uniform(-1.0, 1.0, (n, 2)) * np.array([1.0, 0.5]) + np.array([0.0, 3.0])
    formal = np.repeat((1.0 / snr)[:, None], 2, axis=1)
    sig = np.sqrt(formal**2 + (0.05 * np.exp(np.array([1.1, 0.0]) * truth[:, :1])) ** 2)
    pred = truth + rng.normal(size=(n, 2)) * sig
    return truth, pred, formal, snr, sig


def test_error_model_follows_the_labels_where_the_error_does():
    rng = np.random.default_rng(8)
    truth, pred, formal, snr, _ = _label_dependent(4000, rng)
    label_err = np.full_like(truth, 0.02)                 # the training labels are noisy
    labels = truth + rng.normal(size=truth.shape) * label_err
    t2, p2, f2, s2, sig2 = _label_dependent(4000, rng)    # held-out stars
    q = np.quantile(t2[:, 0], [0, 1 / 3, 2 / 3, 1])
    terciles = [(t2[:, 0] >= a) & (t2[:, 0] <= b) for a, b in zip(q[:-1], q[1:], strict=True)]

    def spreads(em):
        z = (p2 - t2) / em.total(f2, s2, labels=p2)
        return [zscore_spread(z[t, 0]) for t in terciles] + [zscore_spread(z[t, 1]) for t in terciles]

    flat = ErrorModel.fit(pred - labels, formal, snr, label_err)
    assert flat.label_slope is None
    low, mid, high = spreads(flat)[:3]
    assert low < 0.7 and high > 1.3                         # one floor for every star: wrong at both ends
    em = ErrorModel.fit(pred - labels, formal, snr, label_err, labels=pred)
    assert all(0.85 <= s <= 1.18 for s in spreads(em)), spreads(em)
    assert em.label_slope[0, 0] > 0.4 and abs(em.label_slope[1, 0]) < 0.2   # label 1's error does not depend on it
    np.testing.assert_allclose(np.median(em.total(f2, s2, labels=p2) / sig2, axis=0), 1.0, atol=0.1)
    again = ErrorModel.from_arrays(em.to_arrays())
    np.testing.assert_allclose(again.total(f2, s2, labels=p2), em.total(f2, s2, labels=p2))
    assert set(em.table(["a", "b"])[0]["label_slope"]) == {"a", "b"}
    with pytest.raises(ValidationError, match="labels="):
        em.total(f2, s2)
    with pytest.raises(ValidationError, match="do not match"):
        ErrorModel.fit(pred - labels, formal, snr, label_err, labels=pred[:, :1])
    # a star with a missing predicted label counts as the training mean, not as NaN
    p3 = p2[:3].copy()
    p3[0, 0] = np.nan
    assert np.isfinite(em.total(f2[:3], s2[:3], labels=p3)).all()


def _known_noise_set(n, seed, underestimate=2.0):
    """Spectra of a quadratic model whose reported flux errors are ``underestimate`` times
    too small, at S/N 20-200: formal errors are too small by about that factor."""
    rng = np.random.default_rng(seed)
    y = np.column_stack([rng.uniform(4000, 6000, n), rng.uniform(1, 5, n), rng.normal(-0.3, 0.3, n)])
    c, s = np.array([5000.0, 3.0, -0.3]), np.array([1900.0, 3.8, 1.2])
    th = np.random.default_rng(99).normal(0, 0.05, (250, 10))
    th[:, 0] = 1.0
    snr = np.exp(rng.uniform(np.log(20), np.log(200), n))
    sig_true = (1.0 / snr)[:, None] * np.ones((1, 250))
    f = vectorise((y - c) / s, exponents(3, 2)) @ th.T + rng.normal(size=(n, 250)) * sig_true
    return y, f, sig_true / underestimate, snr


def test_calibrated_errors_are_honest_per_label_and_snr_bin(tmp_path):
    y, f, e, snr = _known_noise_set(4000, 3)
    tr, te = slice(0, 2500), slice(2500, None)
    m = Cannon().fit(f[tr], y[tr], flux_err=e[tr], label_names=["teff", "logg", "m_h"])
    m.calibrate_errors(f[tr], y[tr], flux_err=e[tr])
    d = m.predict_details(f[te], flux_err=e[te])
    bs = bias_scatter(d.labels, y[te], ["teff", "logg", "m_h"], snr=snr[te], bins=(0, 40, 80, 1e9),
                      errors=d.errors, total_errors=d.total_errors)
    # the formal errors believe the wrong noise (and the intrinsic scatter absorbs part of it:
    # too small at low S/N, too large at high S/N)
    assert (bs.loc[bs.snr_lo == 0, "z_formal"] > 1.4).all() and (bs.loc[bs.snr_lo == 80, "z_formal"] < 0.7).all()
    assert bs["z_total"].between(0.85, 1.17).all(), bs[["label", "snr_lo", "z_total"]]
    # saved and loaded with the model; the catalogue columns follow from predict_details
    m.save(tmp_path / "m")
    again = load_model(tmp_path / "m").predict_details(f[te][:20], flux_err=e[te][:20])
    np.testing.assert_allclose(again.total_errors, d.total_errors[:20], rtol=1e-10)
    assert Cannon().fit(f[tr], y[tr], flux_err=e[tr]).predict_details(f[te][:3], flux_err=e[te][:3]).total_errors \
        is None                                             # not calibrated: formal errors only


def test_calibration_refuses_bad_requests():
    y, f, e, snr = _known_noise_set(60, 4)
    m = Cannon().fit(f, y, flux_err=e)
    with pytest.raises(ValidationError, match="n_folds"):
        m.calibrate_errors(f, y, flux_err=e, n_folds=1)
    with pytest.raises(ValidationError, match="too few"):
        m.calibrate_errors(f[:20], y[:20], flux_err=e[:20], n_folds=5)
    with pytest.raises(ValidationError, match="not fitted"):
        Cannon().calibrate_errors(f, y)


class _Crash(RuntimeError):
    pass


def test_a_calibration_that_stops_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Folds written before a crash are loaded, not refitted, and the error model is the
    one an uninterrupted calibration gives; another calibration's folds are refused."""
    y, f, e, snr = _known_noise_set(400, 6)
    m = Cannon().fit(f, y, flux_err=e)
    full = m.calibrate_errors(f, y, flux_err=e, n_folds=4).to_arrays()
    full_resid = m.calibration_inputs_["resid"].copy()
    ck = tmp_path / "folds"
    fits = []
    real_fit = Cannon.fit

    def counting_fit(self, *a, **kw):
        fits.append(1)
        if crash_at is not None and len(fits) == crash_at:
            raise _Crash("killed")
        return real_fit(self, *a, **kw)

    monkeypatch.setattr(Cannon, "fit", counting_fit)
    crash_at = 3                                   # folds 1 and 2 finish, fold 3 dies
    with pytest.raises(_Crash):
        m.calibrate_errors(f, y, flux_err=e, n_folds=4, checkpoint=ck)
    assert sorted(p.name for p in ck.iterdir()) == ["fold-1-of-4.npz", "fold-2-of-4.npz"]
    fits.clear()
    crash_at = None
    msgs = []
    resumed = m.calibrate_errors(f, y, flux_err=e, n_folds=4, checkpoint=ck,
                                 progress=lambda fr, msg: msgs.append(msg))
    assert len(fits) == 2                          # only folds 3 and 4 were refitted
    assert m.calibration_folds_loaded_.tolist() == [True, True, False, False]
    assert (m.calibration_fold_seconds_ > 0).all()  # a loaded fold keeps the time it took
    assert sum("loaded from" in s for s in msgs) == 2
    np.testing.assert_array_equal(m.calibration_inputs_["resid"], full_resid)   # The Cannon is deterministic
    again = resumed.to_arrays()
    assert again.keys() == full.keys()
    for k in full:
        np.testing.assert_allclose(again[k], full[k], rtol=1e-12, err_msg=k)
    fits.clear()
    m.calibrate_errors(f, y, flux_err=e, n_folds=4, checkpoint=ck)
    assert not fits                                # everything from the checkpoint
    # other labels (or stars, parameters, K) with the same folder: refused, nothing overwritten
    before = (ck / "fold-1-of-4.npz").read_bytes()
    with pytest.raises(ValidationError, match="another calibration"):
        m.calibrate_errors(f, y + 0.001, flux_err=e, n_folds=4, checkpoint=ck)
    assert (ck / "fold-1-of-4.npz").read_bytes() == before
    # a damaged fold file is reported and that fold refitted
    (ck / "fold-2-of-4.npz").write_bytes(b"not an npz")
    fits.clear()
    with pytest.warns(UserWarning, match="fold-2-of-4.npz is unreadable"):
        m.calibrate_errors(f, y, flux_err=e, n_folds=4, checkpoint=ck)
    assert len(fits) == 1
    with pytest.raises(ValidationError, match="not a folder"):
        m.calibrate_errors(f, y, flux_err=e, n_folds=4, checkpoint=ck / "fold-1-of-4.npz")



def test_fold_fingerprints_tell_calibrations_apart():
    from labelcore.methods.checkpoints import fingerprint
    a = np.arange(6.0).reshape(2, 3)
    base = fingerprint("SLAM", 5, {"C": a, "gammas": [0.1, 1.0]}, None)
    assert base == fingerprint("SLAM", 5, {"gammas": [0.1, 1.0], "C": a.copy()}, None)   # key order
    b = a.copy()
    b[1, 2] += 1e-12
    others = [fingerprint("SLAM", 5, {"C": b, "gammas": [0.1, 1.0]}, None),           # one value
              fingerprint("SLAM", 5, {"C": a.reshape(3, 2), "gammas": [0.1, 1.0]}, None),  # shape
              fingerprint("SLAM", 5, {"C": a.astype(np.float32), "gammas": [0.1, 1.0]}, None),
              fingerprint("SLAM", 4, {"C": a, "gammas": [0.1, 1.0]}, None),           # K
              fingerprint("SLAM", 5, {"C": a, "gammas": [0.1, 1.0]}, a),              # an extra input
              fingerprint("Lux", 5, {"C": a, "gammas": [0.1, 1.0]}, None)]
    assert len({base, *others}) == 7
