"""The Cannon on data whose truth is known: spectra drawn from a quadratic model with a
per-pixel intrinsic scatter (Ness et al. 2015 eq. 1), and the L1 variant (Casey 2016)."""

import numpy as np
import pytest

from labelcore.errors import ValidationError
from labelcore.methods import Cannon, load_model
from labelcore.methods.cannon import exponents, vectorise, vectorise_jacobian


def _quadratic_set(n=1800, p=300, seed=1, zero_terms=False):
    rng = np.random.default_rng(seed)
    y = np.column_stack([rng.uniform(4000, 6000, n), rng.uniform(1, 5, n), rng.normal(-0.3, 0.3, n)])
    c = np.median(y, 0)
    s = np.percentile(y, 97.5, 0) - np.percentile(y, 2.5, 0)
    E = exponents(3, 2)
    theta = rng.normal(0, 0.05, (p, len(E)))
    theta[:, 0] = 1.0
    if zero_terms:
        theta[:, 4:] = 0.0                       # a linear truth: every quadratic term is zero
    scat = np.abs(rng.normal(0, 0.006, p))
    sigma = 0.01
    X = vectorise((y - c) / s, E)
    f = X @ theta.T + rng.normal(0, 1, (n, p)) * np.sqrt(sigma**2 + scat**2)
    return y, f, np.full_like(f, sigma), theta, scat


@pytest.fixture(scope="module")
def quad():
    y, f, e, theta, scat = _quadratic_set()
    m = Cannon().fit(f[:1300], y[:1300], flux_err=e[:1300], label_names=["teff", "logg", "m_h"])
    return m, y, f, e, theta, scat


def test_vectoriser_terms_and_jacobian():
    assert [len(exponents(3, o)) for o in (1, 2, 3)] == [4, 10, 20]
    E = exponents(3, 3)
    x = np.random.default_rng(0).normal(size=(5, 3))
    J = vectorise_jacobian(x, E)
    h = 1e-6
    for k in range(3):
        dx = np.zeros(3)
        dx[k] = h
        fd = (vectorise(x + dx, E) - vectorise(x - dx, E)) / (2 * h)
        np.testing.assert_allclose(J[:, :, k], fd, atol=1e-6)


def test_recovers_the_quadratic_truth(quad):
    m, y, f, e, theta, scat = quad
    # coefficients and the intrinsic scatter of every pixel
    assert np.abs(m.theta_ - theta).max() < 0.02
    assert np.corrcoef(np.sqrt(m.s2_), scat)[0, 1] > 0.95
    # labels of held-out stars: unbiased, with formal errors that match the scatter
    yp, ye = m.predict(f[1300:], flux_err=e[1300:], return_std=True)
    r = yp - y[1300:]
    assert np.all(np.abs(r.mean(0)) < 3 * r.std(0) / np.sqrt(len(r)) + 1e-3 * r.std(0))
    z = (r / ye).std(0)
    assert np.all((z > 0.85) & (z < 1.15)), z
    assert r[:, 0].std() < 25 and r[:, 1].std() < 0.05 and r[:, 2].std() < 0.015
    d = m.predict_details(f[1300:], flux_err=e[1300:])
    assert 0.9 < np.median(d.quality["chi2_reduced"]) < 1.1
    assert d.quality["ood"].mean() < 0.02


def test_model_spectra_derivatives_and_round_trip(quad, tmp_path):
    m, y, f, e, theta, scat = quad
    mod = m.predict_spectra(y[:10])
    c, s = np.median(y[:1300], 0), np.percentile(y[:1300], 97.5, 0) - np.percentile(y[:1300], 2.5, 0)
    truth = vectorise((y[:10] - c) / s, exponents(3, 2)) @ theta.T
    assert np.sqrt(np.mean((mod - truth) ** 2)) < 0.003
    # df/dl against finite differences of the model spectra
    dfdl = m.flux_derivatives(y[:2])
    for k, h in enumerate((1.0, 1e-3, 1e-4)):
        dy = np.zeros(3)
        dy[k] = h
        fd = (m.predict_spectra(y[:2] + dy) - m.predict_spectra(y[:2] - dy)) / (2 * h)
        np.testing.assert_allclose(dfdl[:, k], fd, rtol=1e-4, atol=1e-9)
    # dl/df is a left inverse of df/dl at the median star
    D = m.flux_derivatives()[0].T
    np.testing.assert_allclose(m.derivative_spectra() @ D, np.eye(3), atol=1e-8)
    m.save(tmp_path / "c")
    again = load_model(tmp_path / "c")
    np.testing.assert_allclose(again.predict(f[1300:1400], flux_err=e[1300:1400]),
                               m.predict(f[1300:1400], flux_err=e[1300:1400]), rtol=1e-10)
    assert set(again.learning_curves()) == {"iterations", "pixel_scatter"}


def test_l1_regularisation_zeroes_terms_without_signal():
    y, f, e, theta, scat = _quadratic_set(n=900, p=120, seed=4, zero_terms=True)
    plain = Cannon().fit(f, y, flux_err=e)
    sparse = Cannon(regularization=2e3).fit(f, y, flux_err=e)
    quad_plain = np.abs(plain.theta_[:, 4:])
    quad_sparse = np.abs(sparse.theta_[:, 4:])
    assert (quad_plain == 0).mean() == 0
    assert (quad_sparse == 0).mean() > 0.8              # most of the absent terms exactly zero
    # the real (linear) terms survive, shrunk by little
    np.testing.assert_allclose(sparse.theta_[:, 1:4], theta[:, 1:4], atol=0.01)


def test_linear_and_cubic_models_and_missing_labels():
    y, f, e, theta, scat = _quadratic_set(n=700, p=80, seed=2)
    lin = Cannon(order=1).fit(f, y, flux_err=e)
    cub = Cannon(order=3).fit(f, y, flux_err=e)
    assert lin.theta_.shape == (80, 4) and cub.theta_.shape == (80, 20)
    # a linear model cannot follow a quadratic truth: more intrinsic scatter
    assert np.median(lin.s2_) > 2 * np.median(cub.s2_)
    y_miss = y.copy()
    y_miss[::7, 2] = np.nan
    m = Cannon().fit(f, y_miss, flux_err=e)
    assert m.n_dropped_missing_ == 100
    with pytest.raises(ValidationError, match="needs more than 10 complete training stars"):
        Cannon().fit(f[:10], y[:10], flux_err=e[:10])


def test_test_step_escapes_a_bad_start():
    """Stars far from the training median are found (the linear-algebra start), and the
    batched solve gives the same labels as solving each star alone."""
    fa, ya, ea = _fit_args()
    m = Cannon().fit(fa, ya, flux_err=ea)
    y, f, e = _fit_args(test=True)
    together = m.predict(f, flux_err=e)
    alone = np.vstack([m.predict(f[i:i + 1], flux_err=e[i:i + 1]) for i in range(len(f))])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-6)
    far = np.abs(y[:, 0] - np.median(y[:, 0])) > 800
    assert far.sum() > 5 and np.abs(together[far, 0] - y[far, 0]).max() < 150


def _fit_args(test=False):
    y, f, e, theta, scat = _quadratic_set(n=1500, p=200, seed=7)
    if test:
        return y[1200:], f[1200:], e[1200:]
    return f[:1200], y[:1200], e[:1200]
