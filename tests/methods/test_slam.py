"""SLAM known-answer tests."""

import numpy as np
import pytest

from labelcore.errors import ValidationError
from labelcore.evaluate import bias_scatter, error_from_snr, fit_error_model
from labelcore.methods import SLAM

NAMES = ("teff", "logg", "fe_h")


@pytest.fixture(scope="module")
def data():
    from labelcore.data.synth.datasets import labelled_set

    return labelled_set("rave", 900, seed=5, label_names=NAMES, snr=200, sky_fraction=0.05)


@pytest.fixture(scope="module")
def model(data):
    return SLAM(n_folds=3).fit(data.flux[:700], data.labels[:700], flux_err=data.flux_err[:700],
                               label_names=NAMES, wave=data.wave)


def test_recovers_labels_at_high_snr(model, data):
    d = model.likelihood_fit(data.flux[700:], flux_err=data.flux_err[700:])
    r = d["labels"] - data.truth[700:]
    assert np.std(r[:, 0]) < 110 and abs(np.mean(r[:, 0])) < 25
    assert np.std(r[:, 1]) < 0.3 and abs(np.mean(r[:, 1])) < 0.06
    assert np.std(r[:, 2]) < 0.08 and abs(np.mean(r[:, 2])) < 0.02
    assert d["converged"].mean() > 0.95
    assert np.all(d["errors"] > 0) and np.all(np.isfinite(d["rmse"]))
    # the maximum-likelihood fit improves on the best-matching training spectrum
    r0 = d["initial"] - data.truth[700:]
    assert np.std(r[:, 0]) < np.std(r0[:, 0])


def test_batched_prediction_matches_exact_references(model, data):
    """The fast paths of prediction agree with their exact counterparts: the two-stage
    initial guess with the exhaustive best-matching search, the low-rank compressed
    model with the full coefficients, and continuous batching with one big batch."""
    f, e = data.flux[700:], data.flux_err[700:]
    fs = model.flux_scaler_.transform(f)
    w = 1.0 / ((e / model.flux_scaler_.std_) ** 2 + model.cv_mse_)
    tf = model.train_flux_std_
    exhaustive = model.x_train_[np.argmin(w @ (tf**2).T - 2 * (w * fs) @ tf.T, axis=1)]
    fast = model._initial_guess(fs, w)
    assert np.all(fast == exhaustive, axis=1).mean() > 0.95
    a = model.likelihood_fit(f, flux_err=e)
    old = (model.compress_tol, model.batch_size)
    try:
        model.compress_tol, model.batch_size = 0.0, 1000
        b = model.likelihood_fit(f, flux_err=e)
    finally:
        model.compress_tol, model.batch_size = old
    assert b["converged"].mean() > 0.95
    # both stop within lm_tol of the same likelihood maximum: far below the formal errors
    diff = np.abs(a["labels"] - b["labels"]) / b["errors"]
    assert np.median(diff) < 0.05 and np.percentile(diff, 95) < 0.5
    # the compressed float32 model used by LM is the fitted model to a small fraction of
    # each pixel's model scatter
    x = model.label_scaler_.transform(a["labels"][:50])
    fast_flux, _, _ = model._evaluate_at(x, fs[:50], w[:50])
    exact = model._flux_std(x)
    assert np.max(np.abs(fast_flux - exact) / np.sqrt(model.cv_mse_)) < 0.02
    # what the solver reports at its solution (model flux and chi2 carried along the
    # iterations as exact updates, the Hessian of the last Jacobian) is the model there
    fs32, w32, _ = model._likelihood_inputs(f, e)
    theta, _, _, mod, H, c2 = model._solve_batched(model.label_scaler_.transform(a["initial"]), fs32, w32)
    mod2, H2, c22 = model._evaluate_at(theta, fs32, w32)
    assert np.max(np.abs(mod - mod2) / np.sqrt(model.cv_mse_)) < 1e-2   # float32 noise: ~3e-3
    np.testing.assert_allclose(c2, c22, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(H, H2, rtol=1e-3, atol=1e-3 * np.abs(H2).max())


def test_per_pixel_hyperparameters_and_diagnostics(model):
    P = model.n_pixels_
    assert model.C_.shape == (P,) and model.gamma_.shape == (P,)
    assert set(np.unique(model.C_)) <= set(model.C_grid)
    assert model.cv_mse_grid_.shape == (P, 5, 5)
    # the chosen point is the grid minimum of CV MSE at every pixel
    np.testing.assert_allclose(model.cv_mse_, model.cv_mse_grid_.reshape(P, -1).min(1))
    # pixels inside strong lines are modelled far better than pure-noise continuum
    line = np.argmin(np.abs(model.wave_ - 8542.09))
    assert model.cv_mse_[line] < 0.2 < np.median(model.cv_mse_[model.mse_ > np.percentile(model.mse_, 90)])
    assert np.all(np.abs(model.cv_md_) < 0.1)


def test_calibration_refits_keep_the_per_pixel_choice(model, data):
    """The error calibration's refits keep the fitted per-pixel (C, gamma) and model
    variances and skip the CV grid: refitted on the same stars, a refit is the final model
    (same coefficients, same labels), and on a subset it keeps every pixel's choice."""
    f, e, y = data.flux[:700], data.flux_err[:700], data.labels[:700]
    sub = model._refit_model()
    assert sub.get_params() == model.get_params()
    sub.fit(f, y, flux_err=e, label_names=NAMES)
    assert np.isnan(sub.cv_mse_grid_).all() and not sub.cv_refined_grid_.any()
    np.testing.assert_array_equal(sub.C_, model.C_)
    np.testing.assert_array_equal(sub.gamma_index_, model.gamma_index_)
    np.testing.assert_array_equal(sub.cv_mse_, model.cv_mse_)
    np.testing.assert_allclose(sub.bias_, model.bias_, atol=1e-9)
    np.testing.assert_allclose(sub._flux_std(model.x_train_[:50]), model._flux_std(model.x_train_[:50]),
                               atol=1e-8)
    np.testing.assert_allclose(sub.predict(data.flux[700:760], flux_err=data.flux_err[700:760]),
                               model.predict(data.flux[700:760], flux_err=data.flux_err[700:760]),
                               rtol=1e-6, atol=1e-6)
    part = model._refit_model().fit(f[:400], y[:400], flux_err=e[:400], label_names=NAMES)
    np.testing.assert_array_equal(part.gamma_, model.gamma_)
    assert not np.allclose(part.bias_, model.bias_)
    with pytest.raises(ValidationError, match="per-pixel"):
        model._refit_model().fit(f[:, :500], y, flux_err=e[:, :500], label_names=NAMES)


def test_close_calls_are_decided_by_exact_svrs(model, data):
    """Grid points within ``refine_tol`` of a pixel's minimum get exact CV MSEs: those of
    scikit-learn's SVR (libsvm) on the same folds, to libsvm's own tolerance."""
    from sklearn.svm import SVR

    ref = model.cv_refined_grid_
    assert ref.shape == model.cv_mse_grid_.shape and ref.any()
    # no close call is left to the approximate values: wherever two grid points are within
    # refine_tol of a pixel's minimum, both hold exact values
    grid = model.cv_mse_grid_.reshape(ref.shape[0], -1)
    near = grid <= (1 + model.refine_tol) * grid.min(1, keepdims=True)
    contested = near.sum(1) >= 2
    assert np.all(ref.reshape(ref.shape[0], -1)[near & contested[:, None]])
    x = model.label_scaler_.transform(data.labels[:700])
    f = data.flux[:700]
    ok = np.isfinite(f)
    ys = model.flux_scaler_.transform(np.where(ok, f, 0.0))
    k = model.n_folds
    fold = np.random.default_rng(model.random_state).permutation(np.arange(700) % k)
    for j, ci, gi in np.argwhere(ref)[:: max(1, int(ref.sum()) // 6)][:6]:
        per_fold = []
        for i in range(k):
            tr, te = (fold != i) & ok[:, j], (fold == i) & ok[:, j]
            svr = SVR(kernel="rbf", C=model.C_grid[ci], gamma=model.gamma_grid[gi], epsilon=model.epsilon)
            per_fold.append(np.mean((svr.fit(x[tr], ys[tr, j]).predict(x[te]) - ys[te, j]) ** 2))
        assert abs(model.cv_mse_grid_[j, ci, gi] / np.mean(per_fold) - 1) < 1e-3


def test_bad_pixels_are_ignored(data):
    f = data.flux[:300].copy()
    e = data.flux_err[:300].copy()
    rng = np.random.default_rng(0)
    bad = rng.random(f.shape) < 0.03
    a = SLAM(n_folds=3, C_grid=(10.0,), gamma_grid=(0.01,)).fit(np.where(bad, np.nan, f), data.labels[:300],
                                                                flux_err=e)
    b = SLAM(n_folds=3, C_grid=(10.0,), gamma_grid=(0.01,)).fit(np.where(bad, 1e5, f), data.labels[:300],
                                                                flux_err=np.where(bad, np.inf, e))
    t = data.flux[800:820].copy()
    tb = rng.random(t.shape) < 0.05
    pa = a.predict(np.where(tb, np.nan, t), flux_err=data.flux_err[800:820])
    pb = b.predict(np.where(tb, -7.0, t), flux_err=np.where(tb, 0.0, data.flux_err[800:820]))
    np.testing.assert_allclose(pa, pb, rtol=1e-5)
    assert np.isfinite(pa).all()


def test_save_load_identical(model, data, tmp_path):
    model.save(tmp_path / "slam")
    back = SLAM.load(tmp_path / "slam")
    np.testing.assert_array_equal(back.predict(data.flux[700:720], flux_err=data.flux_err[700:720]),
                                  model.predict(data.flux[700:720], flux_err=data.flux_err[700:720]))
    np.testing.assert_array_equal(back.C_, model.C_)


def test_cods_find_the_pixels_of_each_label():
    """Toy spectra: pixels 0-9 depend on label a only, 10-19 on b only, 20-29 on nothing."""
    rng = np.random.default_rng(3)
    n = 240
    y = rng.uniform(-1, 1, (n, 2))
    f = np.empty((n, 30))
    f[:, :10] = np.sin(2 * y[:, :1]) + 0.05 * rng.standard_normal((n, 10))
    f[:, 10:20] = y[:, 1:] ** 2 + 0.3 * y[:, 1:] + 0.05 * rng.standard_normal((n, 10))
    f[:, 20:] = 0.05 * rng.standard_normal((n, 10))
    m = SLAM(n_folds=3).fit(f, y, label_names=["a", "b"])
    c = m.cods(f, y)
    assert c["full"][:20].min() > 0.8 and c["full"][20:].max() < 0.2
    assert c["a"][:10].min() > 0.8 and c["a"][10:20].max() < 0.1
    assert c["b"][10:20].min() > 0.8 and c["b"][:10].max() < 0.1
    np.testing.assert_allclose(c["a"] + c["b"], c["full"], atol=1e-9)


def test_error_model_and_bias_scatter():
    rng = np.random.default_rng(1)
    snr = rng.uniform(5, 150, 20000)
    sig = 80 * np.exp(-0.04 * snr) + 30
    resid = rng.normal(0, sig)
    fit = fit_error_model(snr, resid, bins=np.arange(5, 160, 10))
    assert fit["a"] == pytest.approx(80, rel=0.15) and fit["b"] == pytest.approx(0.04, rel=0.2)
    assert fit["c"] == pytest.approx(30, rel=0.1)
    assert error_from_snr(100, fit) == pytest.approx(80 * np.exp(-4) + 30, rel=0.05)
    t = bias_scatter(resid[:, None] + 5000, np.full((20000, 1), 5000.0), ["teff"], snr)
    overall = t[t["snr_lo"].isna()].iloc[0]
    assert abs(overall["bias"]) < 2 and overall["n"] == 20000
    assert t[t["snr_lo"] == 0]["scatter"].iloc[0] > t[t["snr_lo"] == 100]["scatter"].iloc[0]


def test_training_set_cleaning_drops_outliers(data):
    y = data.truth[:400].copy()
    y[:8, 0] += 2500  # eight stars with wrong Teff
    m = SLAM(n_folds=3, C_grid=(10.0,), gamma_grid=(0.01,), clean=True).fit(
        data.flux[:400], y, flux_err=data.flux_err[:400], label_names=NAMES)
    assert 8 <= m.n_cleaned_ <= 20
    assert np.abs(m.clean_residuals_[:8, 0]).min() > 4 * np.std(m.clean_residuals_[8:, 0])


def test_clear_errors(data):
    with pytest.raises(ValidationError, match="at least 10 complete training stars"):
        SLAM().fit(data.flux[:9], data.labels[:9])
    y = data.labels[:50].copy()
    y[:, 1] = 2.5
    with pytest.raises(ValidationError, match="constant"):
        SLAM(n_folds=3).fit(data.flux[:50], y, label_names=NAMES)
    with pytest.raises(ValidationError, match="labels have 40 rows; flux has 50"):
        SLAM().fit(data.flux[:50], data.labels[:40])
    y = data.labels[:60].copy()
    y[:5, 0] = np.nan
    m = SLAM(n_folds=3, C_grid=(10.0,), gamma_grid=(0.01,)).fit(data.flux[:60], y)
    assert m.n_dropped_missing_ == 5
    with pytest.raises(ValidationError, match="fitted on 900"):
        m.predict(data.flux[:3, :800])


@pytest.mark.full
def test_pixel_chunks_through_dask_give_the_same_model(data):
    """Training the pixels as independent dask tasks (the cluster code path) gives the
    model that one block gives."""
    import dask

    kw = dict(n_folds=3, C_grid=(1.0, 10.0), gamma_grid=(0.01, 0.1))
    f, y, e = data.flux[:300], data.labels[:300], data.flux_err[:300]
    one = SLAM(**kw).fit(f, y, flux_err=e, label_names=NAMES)
    with dask.config.set(scheduler="threads"):
        three = SLAM(pixel_chunks=3, **kw).fit(f, y, flux_err=e, label_names=NAMES)
    assert np.mean(one.C_ == three.C_) > 0.97 and np.mean(one.gamma_index_ == three.gamma_index_) > 0.97
    # the batched float32 solver is not bit-identical across column blocks: with ~200
    # stars per fold its CV MSE at large C and gamma is good to a few per cent
    rel = np.abs(three.cv_mse_ / one.cv_mse_ - 1)
    assert np.median(rel) < 5e-3 and np.percentile(rel, 95) < 6e-2
    for a, b in zip(one.landmarks_, three.landmarks_, strict=True):
        np.testing.assert_array_equal(a, b)
    pa = one.predict(data.flux[800:830], flux_err=data.flux_err[800:830])
    pb = three.predict(data.flux[800:830], flux_err=data.flux_err[800:830])
    assert np.all(np.abs(pa - pb) < np.array([20.0, 0.05, 0.01]))
