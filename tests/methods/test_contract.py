"""The method contract of ARCHITECTURE.md section 3, checked on every registered method
(one parametrised test per method: adding a method to the registry adds it here)."""

import inspect

import numpy as np
import pytest
from sklearn.base import clone

from labelcore.data import Labels, Spectra
from labelcore.data.io import ARTIFACT_MARKER
from labelcore.errors import ValidationError
from labelcore.methods import (
    NotFittedError,
    NotSupportedError,
    capabilities,
    load_model,
    method_class,
    method_names,
)

#: small, fast settings per method (a new method adds its line)
FAST = {
    "Lux": {"n_latent": 5, "omega": 1.0},
    "SLAM": {"n_folds": 2, "C_grid": (10.0,), "gamma_grid": (0.1,)},
    "Cannon": {"max_iter": 50},
    "CNN": {"n_members": 3, "members_per_model": 3, "max_epochs": 3, "batch_size": 32, "patience": 2},
}
#: what each capability implements (see labelcore.methods.capabilities)
CAPABILITY_METHODS = {
    capabilities.MODEL_SPECTRA: "predict_spectra",
    capabilities.DERIVATIVE_SPECTRA: "derivative_spectra",
    capabilities.CODS: "cods",
    capabilities.LEARNING_CURVES: "learning_curves",
    capabilities.LIVE_CURVES: "curves_so_far",
}


def test_every_registered_method_has_fast_settings():
    assert set(method_names()) == set(FAST)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    n, p = 120, 40
    y = np.column_stack([rng.uniform(4000, 6000, n), rng.uniform(1, 5, n)])
    wave = np.linspace(8420, 8780, p)
    f = 1 - 0.3 * np.exp(-0.5 * ((wave - 8542) / 3) ** 2)[None] * (6000 - y[:, :1]) / 2000 \
        - 0.1 * np.exp(-0.5 * ((wave - 8662) / 3) ** 2)[None] * y[:, 1:] / 5
    f = f + rng.normal(0, 0.005, f.shape)
    return wave, f, np.full_like(f, 0.005), y


@pytest.fixture(scope="module")
def fitted(toy):
    """Each method fitted once on the toy set (with progress recorded)."""
    wave, f, e, y = toy
    out = {}
    for name in method_names():
        calls = []
        m = method_class(name)(**FAST[name])
        ret = m.fit(f, y, flux_err=e, label_names=["teff", "logg"], wave=wave,
                    progress=lambda frac, msg, calls=calls: calls.append((frac, msg)))
        assert ret is m
        out[name] = (m, calls)
    return out


@pytest.mark.parametrize("name", method_names())
def test_params_clone_and_spec(name):
    cls = method_class(name)
    assert cls.name == name
    sig = inspect.signature(cls.__init__)
    assert all(p.default is not inspect.Parameter.empty for k, p in sig.parameters.items() if k != "self")
    # every constructor argument has a spec, and the paper defaults pass it unchanged
    assert set(cls.param_spec) == set(cls._param_names())
    defaults = cls().get_params()
    assert cls.validate_params(defaults).keys() == defaults.keys()
    assert cls.validate_params(cls.quick_params) == cls.quick_params
    m = cls(**FAST[name])
    assert m.set_params(**m.get_params()) is m
    c = clone(m)
    assert c is not m and c.get_params() == m.get_params() and not hasattr(c, "label_names_")
    with pytest.raises(ValueError, match="no parameter"):
        m.set_params(nonsense=1)
    with pytest.raises(ValidationError, match="no hyper-parameter"):
        cls.validate_params({"nonsense": 1})
    assert cls.capabilities <= capabilities.ALL


@pytest.mark.parametrize("name", method_names())
def test_fit_predict_flags_and_round_trip(name, toy, fitted, tmp_path):
    wave, f, e, y = toy
    cls = method_class(name)
    with pytest.raises(NotFittedError):
        cls(**FAST[name]).predict(f)
    m, calls = fitted[name]
    assert calls and all(0.0 <= c[0] <= 1.0 for c in calls) and calls[-1][0] == 1.0
    assert m.label_names_ == ["teff", "logg"]
    pred = m.predict(f, flux_err=e)
    assert pred.shape == (120, 2) and np.isfinite(pred).all()
    p2, s2 = m.predict(f, flux_err=e, return_std=True)
    np.testing.assert_allclose(p2, pred, rtol=1e-6)
    assert s2.shape == (120, 2) and (s2 >= 0).all()
    flags = m.boundary_flags(np.array([[5000.0, 3.0], [9000.0, 3.0], [5000.0, -2.0], [np.nan, 3.0]]))
    assert flags.dtype.kind == "i" and flags.tolist() == [[0, 0], [1, 0], [0, 1], [1, 0]]
    d = m.predict_details(f, flux_err=e)
    np.testing.assert_allclose(d.labels, pred, rtol=1e-5, atol=1e-6 * np.abs(pred).max())
    assert d.errors.shape == pred.shape
    if m.supports(capabilities.FIT_QUALITY):
        q = d.quality["chi2_reduced"]
        assert q.shape == (120,) and np.isfinite(q).all()
        # the toy spectra are fitted to their noise: reduced chi^2 of order one at most
        assert np.median(q) < 5
    else:
        assert set(d.quality) == {"ood", "ood_score"}              # what every method gives
    assert d.quality["ood"].dtype == bool and d.quality["ood_score"].shape == (120,)
    # save/load: safe formats only, identical predictions, kind read from the folder
    m.save(tmp_path / "m")
    assert {q.suffix for q in (tmp_path / "m").iterdir() if q.name != ARTIFACT_MARKER} <= {".json", ".npz", ".keras"}
    again = load_model(tmp_path / "m")
    assert type(again) is cls
    np.testing.assert_allclose(again.predict(f, flux_err=e), pred, rtol=1e-6, atol=1e-9)
    other = method_class(next(n for n in method_names() if n != name))
    with pytest.raises(ValidationError, match="not a"):
        other.load(tmp_path / "m")


@pytest.mark.parametrize("name", method_names())
def test_capabilities_are_present_as_declared(name, toy, fitted):
    wave, f, e, y = toy
    m, _ = fitted[name]
    for cap, attr in CAPABILITY_METHODS.items():
        if m.supports(cap):
            if cap == capabilities.MODEL_SPECTRA:
                out = m.predict_spectra(y[:5])
                assert out.shape == (5, f.shape[1]) and np.isfinite(out).all()
                # the model spectrum at the true labels is close to the observed spectrum
                assert np.sqrt(np.mean((out - f[:5]) ** 2)) < 0.05
            elif cap == capabilities.DERIVATIVE_SPECTRA:
                assert m.derivative_spectra().shape == (2, f.shape[1])
            elif cap == capabilities.CODS:
                c = m.cods(f, y)
                assert set(c) == {"full", "teff", "logg"} and c["full"].shape == (f.shape[1],)
            elif cap == capabilities.LEARNING_CURVES:
                curves = m.learning_curves()
                assert set(curves) <= set(m.curve_tables) and set(curves)
                assert all(len(df) for df in curves.values())
            elif cap == capabilities.LIVE_CURVES:
                assert m.curves_so_far() is not None
        else:
            with pytest.raises(NotSupportedError):
                if cap == capabilities.MODEL_SPECTRA:
                    m.predict_spectra(y[:5])
                elif cap == capabilities.CODS:
                    m.cods(f, y)
                else:
                    getattr(m, attr)()
    assert m.uses_photometry is False            # fitted without photometry
    # resumable_fit: fit takes checkpoint= exactly when the method declares it
    assert ("checkpoint" in inspect.signature(m.fit).parameters) == m.supports(capabilities.RESUMABLE_FIT)


@pytest.mark.parametrize("name", method_names())
def test_containers_and_nan_labels(name, toy):
    wave, f, e, y = toy
    cls = method_class(name)
    sp = Spectra(wave, f, e)
    lab = Labels(y, ["teff", "logg"])
    m2 = cls(**FAST[name]).fit(sp, lab)
    assert m2.label_names_ == ["teff", "logg"] and m2.predict(sp).shape == (120, 2)
    # a missing label (NaN) is handled as each method documents: never an error, never NaN out
    y_miss = y.copy()
    y_miss[::10, 1] = np.nan
    m3 = cls(**FAST[name]).fit(f, y_miss, flux_err=e)
    assert np.isfinite(m3.predict(f, flux_err=e)).all()
    if hasattr(m3, "n_dropped_missing_"):
        assert m3.n_dropped_missing_ == 12          # SLAM, Cannon: stars with a missing label are dropped


def test_nan_flux_rows_are_rejected_clearly(toy):
    wave, f, e, y = toy
    bad = f.copy()
    bad[3] = np.nan
    for name in method_names():
        with pytest.raises(ValueError, match="row 3 has no usable pixel"):
            method_class(name)(**FAST[name]).fit(bad, y)


def test_unknown_methods_and_models_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="unknown method"):
        method_class("XGBoost")
    with pytest.raises(ValidationError, match="not a saved labelcore model"):
        load_model(tmp_path)
    (tmp_path / "params.json").write_text('{"class": "XGBoost"}')
    with pytest.raises(ValidationError, match="not one of"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", method_names())
def test_every_method_calibrates_its_errors(name, toy, fitted, tmp_path):
    """calibrate_errors works for every method (K-fold refits with the method's own
    _refit_params) and the total errors travel with the saved model."""
    wave, f, e, y = toy
    m, _ = fitted[name]
    # twice the toy stars (new noise), so that every method can train on half of them
    f2 = np.vstack([f, f + np.random.default_rng(5).normal(0, 0.005, f.shape)])
    y2, e2 = np.vstack([y, y]), np.vstack([e, e])
    m = clone(m).fit(f2, y2, flux_err=e2, label_names=["teff", "logg"], wave=wave)
    em = m.calibrate_errors(f2, y2, flux_err=e2, n_folds=2, checkpoint=tmp_path / "folds")
    assert em.alpha.shape == (2,) and np.all(np.isfinite(em.alpha))
    # called again with its checkpoint, no fold is refitted and the error model is the same
    again = m.calibrate_errors(f2, y2, flux_err=e2, n_folds=2, checkpoint=tmp_path / "folds")
    assert m.calibration_folds_loaded_.all()
    for k, v in em.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[k], v, err_msg=k)
    assert (tmp_path / "folds" / "fold-1-of-2-fit").is_dir() == m.supports(capabilities.RESUMABLE_FIT)
    d = m.predict_details(f[:30], flux_err=e[:30])
    assert d.total_errors.shape == (30, 2) and np.isfinite(d.total_errors).all() and (d.total_errors > 0).all()
    assert set(m._refit_params()) == set(m.get_params())
    m.save(tmp_path / "m")
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_details(f[:30], flux_err=e[:30]).total_errors,
                               d.total_errors, rtol=1e-5)
