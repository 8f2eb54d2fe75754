"""The method contract of ARCHITECTURE.md section 3, checked on every method."""

import inspect

import numpy as np
import pytest

from labelcore.data import Labels, Spectra
from labelcore.methods import SLAM, Lux, NotFittedError

FAST = {
    "Lux": lambda: Lux(n_latent=5, omega=1.0),
    "SLAM": lambda: SLAM(n_folds=2, C_grid=(10.0,), gamma_grid=(0.1,)),
}


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


@pytest.mark.parametrize("name", sorted(FAST))
def test_contract(name, toy, tmp_path):
    wave, f, e, y = toy
    cls = {"Lux": Lux, "SLAM": SLAM}[name]
    # hyper-parameters are constructor arguments with defaults; get/set_params
    sig = inspect.signature(cls.__init__)
    assert all(p.default is not inspect.Parameter.empty for k, p in sig.parameters.items() if k != "self")
    m = FAST[name]()
    params = m.get_params()
    assert m.set_params(**params) is m
    with pytest.raises(NotFittedError):
        m.predict(f)
    calls = []
    out = m.fit(f, y, flux_err=e, label_names=["teff", "logg"], wave=wave,
                progress=lambda frac, msg: calls.append((frac, msg)))
    assert out is m
    assert calls and all(0.0 <= c[0] <= 1.0 for c in calls) and calls[-1][0] == 1.0
    assert m.label_names_ == ["teff", "logg"]
    pred = m.predict(f, flux_err=e)
    assert pred.shape == (120, 2) and np.isfinite(pred).all()
    p2, s2 = m.predict(f, flux_err=e, return_std=True)
    np.testing.assert_allclose(p2, pred)
    assert s2.shape == (120, 2) and (s2 > 0).all()
    flags = m.boundary_flags(np.array([[5000.0, 3.0], [9000.0, 3.0], [5000.0, -2.0]]))
    assert flags.dtype.kind == "i" and flags.tolist() == [[0, 0], [1, 0], [0, 1]]
    # containers work as well as arrays
    sp = Spectra(wave, f, e)
    lab = Labels(y, ["teff", "logg"])
    m2 = FAST[name]().fit(sp, lab)
    assert m2.label_names_ == ["teff", "logg"]
    np.testing.assert_allclose(m2.predict(sp), pred, rtol=1e-4, atol=1e-3 * np.abs(pred).max())
    m.save(tmp_path / "m")
    assert {q.suffix for q in (tmp_path / "m").iterdir()} <= {".json", ".npz", ".keras"}
    np.testing.assert_array_equal(cls.load(tmp_path / "m").predict(f, flux_err=e), pred)
    other = Lux if cls is SLAM else SLAM
    with pytest.raises(Exception, match="not a"):
        other.load(tmp_path / "m")


def test_nan_flux_rows_are_rejected_clearly(toy):
    wave, f, e, y = toy
    bad = f.copy()
    bad[3] = np.nan
    for make in FAST.values():
        with pytest.raises(ValueError, match="row 3 has no usable pixel"):
            make().fit(bad, y)
