"""Lux known-answer tests on data drawn from a true linear latent model, and on the
synthetic survey."""

import numpy as np
import pytest

from labelcore.errors import ValidationError
from labelcore.methods import Lux, NotFittedError


def linear_world(n=600, n_pix=80, m=3, p=6, seed=0, sig_l=0.05, sig_f=0.02):
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 1, (m, p))
    B = rng.normal(0, 0.3, (n_pix, p))
    z = rng.normal(0, 1, (n, p))
    z[:, 0] = 1.0
    s_true = np.zeros(n_pix)
    s_true[:10] = 0.1  # ten pixels with extra scatter
    y_true = z @ A.T
    f_true = z @ B.T
    y = y_true + rng.normal(0, sig_l, y_true.shape)
    f = f_true + rng.normal(0, 1, f_true.shape) * np.sqrt(sig_f**2 + s_true**2)
    return dict(A=A, B=B, z=z, s=s_true, y_true=y_true, f_true=f_true, y=y, f=f,
                ly=np.full(y.shape, sig_l), lf=np.full(f.shape, sig_f))


@pytest.fixture(scope="module")
def world():
    return linear_world()


@pytest.fixture(scope="module")
def fitted(world):
    w = world
    tr = slice(0, 400)
    return Lux(n_latent=6, omega=1.0).fit(w["f"][tr], w["y"][tr], flux_err=w["lf"][tr],
                                          label_err=w["ly"][tr], label_names=["a", "b", "c"])


def _subspace_residual(true, fit):
    """How much of span(true) lies outside span(fit) (0 = same column space)."""
    q, _ = np.linalg.qr(fit)
    return np.linalg.norm(true - q @ (q.T @ true)) / np.linalg.norm(true)


def test_recovers_model_up_to_symmetries(world, fitted):
    w = world
    assert _subspace_residual(w["B"], fitted.B_) < 0.02
    # A z reproduces the labels: A is recovered up to the same invertible transform
    assert fitted.A_.shape == (3, 6) and fitted.B_.shape == (80, 6)
    # the extra scatter is found where it was put, and not elsewhere
    assert np.all(np.abs(fitted.s_[:10] - 0.1) < 0.03)
    assert np.median(fitted.s_[10:]) < 0.01


def test_predicts_held_out_labels(world, fitted):
    w = world
    te = slice(400, None)
    y, ye = fitted.predict(w["f"][te], flux_err=w["lf"][te], return_std=True)
    resid = y - w["y_true"][te]
    # 80 pixels at S/N 50 pin the latents: label errors well below the label noise
    assert np.all(np.abs(resid.mean(0)) < 0.02)
    assert np.all(resid.std(0) < 0.05)
    # formal errors are the right size (within a factor 2 of the actual scatter)
    ratio = resid.std(0) / np.median(ye, axis=0)
    assert np.all((ratio > 0.5) & (ratio < 2.0))
    rc = fitted.reduced_chi2(w["f"][te], flux_err=w["lf"][te])
    assert 0.8 < np.median(rc) < 1.2


def test_training_chi2_decreases(fitted):
    h = [r for r in fitted.chi2_history_ if r["agenda"] == 1]
    tot = [r["chi2_label"] + r["chi2_flux"] for r in h]
    assert len(h) == 5 and all(b <= a * (1 + 1e-6) for a, b in zip(tot[:-1], tot[1:], strict=True))


def test_emulator_reproduces_spectra(world, fitted):
    w = world
    te = slice(400, 450)
    f = fitted.predict_spectra(w["y_true"][te], label_err=w["ly"][te])
    # 3 labels cannot pin 6 latents: the emulator is good on average, not exact
    assert np.sqrt(np.mean((f - w["f_true"][te]) ** 2)) < np.std(w["f_true"][te])


def test_missing_labels_do_not_bias_the_others(world):
    w = world
    tr = slice(0, 400)
    y = w["y"][tr].copy()
    rng = np.random.default_rng(5)
    y[rng.random(400) < 0.4, 0] = np.nan
    full = Lux(n_latent=6, omega=1.0).fit(w["f"][tr], w["y"][tr], flux_err=w["lf"][tr], label_err=w["ly"][tr])
    gap = Lux(n_latent=6, omega=1.0).fit(w["f"][tr], y, flux_err=w["lf"][tr], label_err=w["ly"][tr])
    te = slice(400, None)
    a = full.predict(w["f"][te], flux_err=w["lf"][te])
    b = gap.predict(w["f"][te], flux_err=w["lf"][te])
    for j in (1, 2):
        assert abs(np.mean(b[:, j] - w["y_true"][te][:, j])) < 0.02
        assert np.std(b[:, j] - w["y_true"][te][:, j]) < 1.2 * np.std(a[:, j] - w["y_true"][te][:, j]) + 0.005
    # the gappy label itself is still learned
    assert np.std(b[:, 0] - w["y_true"][te][:, 0]) < 0.06


def test_masked_pixels_have_no_influence(world):
    w = world
    tr = slice(0, 300)
    f = w["f"][tr].copy()
    err = w["lf"][tr].copy()
    rng = np.random.default_rng(1)
    bad = rng.random(f.shape) < 0.05
    clean = Lux(n_latent=6, omega=1.0).fit(np.where(bad, np.nan, f), w["y"][tr], flux_err=err, label_err=w["ly"][tr])
    junk = f.copy()
    junk[bad] = 1e6  # garbage values, flagged through infinite errors
    err2 = np.where(bad, np.inf, err)
    dirty = Lux(n_latent=6, omega=1.0).fit(junk, w["y"][tr], flux_err=err2, label_err=w["ly"][tr])
    te = w["f"][400:420]
    np.testing.assert_allclose(dirty.predict(te, flux_err=w["lf"][400:420]),
                               clean.predict(te, flux_err=w["lf"][400:420]), rtol=1e-6, atol=1e-8)


def test_save_load_round_trip(fitted, world, tmp_path):
    fitted.save(tmp_path / "lux")
    back = Lux.load(tmp_path / "lux")
    te = world["f"][400:450]
    np.testing.assert_array_equal(back.predict(te, flux_err=world["lf"][400:450]),
                                  fitted.predict(te, flux_err=world["lf"][400:450]))
    assert back.label_names_ == ["a", "b", "c"]
    assert back.get_params() == fitted.get_params()
    assert not list(tmp_path.glob("*.pkl"))


def test_cross_validation_grid():
    w = linear_world(n=300, n_pix=40, seed=3)
    m = Lux(latent_grid=(1, 2), omega_grid=(1.0, 1000.0), n_folds=3).fit(
        w["f"], w["y"], flux_err=w["lf"], label_err=w["ly"])
    grid = m.cv_results_["grid"]
    assert len(grid) == 4 and {g["n_latent"] for g in grid} == {4, 6}
    assert len(m.cv_results_["folds"]) == 12
    best = m.cv_results_["best"]
    assert (m.n_latent_, m.omega_) == (best["n_latent"], best["omega"])
    # a 6-dimensional truth is better described by P = 6 than by P = 4
    by_p = {g["n_latent"]: g["metric"] for g in grid if g["omega"] == 1.0}
    assert by_p[6] < by_p[4] and m.n_latent_ == 6


def test_boundary_flags(fitted):
    y = np.array([[0.0, 0.0, 0.0], [1e3, 0.0, 0.0]])
    assert fitted.boundary_flags(y).tolist() == [[0, 0, 0], [1, 0, 0]]


def test_clear_errors(world):
    w = world
    with pytest.raises(ValidationError, match="P >= M \\+ 1 = 4"):
        Lux(n_latent=3, omega=1.0).fit(w["f"][:50], w["y"][:50], flux_err=w["lf"][:50])
    y = w["y"][:50].copy()
    y[:, 1] = np.nan
    with pytest.raises(ValidationError, match="missing for every star"):
        Lux(n_latent=6, omega=1.0).fit(w["f"][:50], y, label_names=["a", "b", "c"])
    with pytest.raises(ValidationError, match="labels have 49 rows; flux has 50"):
        Lux(n_latent=6, omega=1.0).fit(w["f"][:50], w["y"][:49])
    with pytest.raises(NotFittedError):
        Lux().predict(w["f"][:5])
    m = Lux(n_latent=6, omega=1.0).fit(w["f"][:100], w["y"][:100], flux_err=w["lf"][:100])
    with pytest.raises(ValidationError, match="fitted on 80"):
        m.predict(w["f"][:5, :70])
    with pytest.raises(ValidationError, match="too few for 5-fold"):
        Lux().fit(w["f"][:8], w["y"][:8])
    with pytest.raises(ValueError, match="no parameter 'p'"):
        Lux().set_params(p=3)


def test_label_transfer_between_surveys():
    """Spectra of survey 1, labels of survey 2 (offset zero-points, 40 % missing): the
    model predicts survey-2 labels, on survey 2's scale, for stars that lack them."""
    from labelcore.data.synth.datasets import labelled_set

    d = labelled_set("apogee", 900, seed=4, label_names=("teff", "logg", "fe_h", "mg_fe"),
                     snr=150, giants_only=True)
    offsets = np.array([35.0, 0.06, -0.04, 0.03])
    rng = np.random.default_rng(0)
    survey2 = d.truth + offsets + rng.normal(0, 1, d.truth.shape) * d.label_err
    have = rng.random(900) > 0.4
    labels = np.where(have[:, None], survey2, np.nan)
    m = Lux(n_latent=8, omega=1.0).fit(d.flux[:600], labels[:600], flux_err=d.flux_err[:600],
                                        label_err=d.label_err[:600])
    lack = ~have[600:]
    pred = m.predict(d.flux[600:][lack], flux_err=d.flux_err[600:][lack])
    resid = pred - (d.truth[600:][lack] + offsets)
    med = np.median(resid, axis=0)
    mad = 1.4826 * np.median(np.abs(resid - med), axis=0)
    # 360 labelled stars: robust bias and scatter (a few extreme stars are poorly covered)
    assert abs(med[0]) < 20 and mad[0] < 100
    assert abs(med[2]) < 0.03 and mad[2] < 0.1
    # the predictions carry survey 2's zero-point, not the truth's
    assert abs(np.median(pred[:, 1] - d.truth[600:][lack][:, 1]) - 0.06) < 0.03


def test_derivative_spectra_peak_on_the_right_lines():
    from labelcore.data.synth.datasets import labelled_set
    from labelcore.data.synth.setups import SETUPS

    d = labelled_set("rave", 1500, seed=2, label_names=("teff", "logg", "fe_h", "mg_fe"), snr=300,
                     sky_fraction=0.0)
    m = Lux(n_latent=8, omega=1.0).fit(d.flux, d.labels, flux_err=d.flux_err, label_err=d.label_err,
                                        wave=d.wave)
    der = m.derivative_spectra()
    assert der.shape == (4, 900)
    mg_lines = [ln[0] for ln in SETUPS["rave"].lines if ln[1] == "Mg"]
    near_mg = np.zeros(900, bool)
    for lam in mg_lines:
        near_mg |= np.abs(d.wave - lam) < 0.8
    mg = np.abs(der[3])
    assert mg[near_mg].mean() > 3 * mg[~near_mg].mean()
    # the metallicity derivative is spread over many (Fe) lines, not concentrated on Mg
    fe = np.abs(der[2])
    assert fe[near_mg].mean() < mg[near_mg].mean() / np.median(mg) * np.median(fe)
