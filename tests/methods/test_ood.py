"""Garbage is flagged, not labelled: the training-spectra envelope of every method flags
spectra unlike the training set, and leaves held-out spectra of the same kind alone."""

import numpy as np
import pandas as pd
import pytest

from labelcore.data.synth.datasets import labelled_set
from labelcore.methods import method_class, method_names
from labelcore.methods.base import LabelMethod
from labelcore.methods.ood import SpectrumEnvelope

NAMES = ("teff", "logg", "m_h")


def _garbage(d, te, rng):
    """Spectra no survey should label: (name, flux, flux_err)."""
    m, p, w = len(te.flux), te.flux.shape[1], d.wave
    sig = rng.uniform(0.02, 0.2, (m, 1)) * np.ones((1, p))
    return [
        ("noise without a continuum", rng.normal(0, 1, (m, p)), np.ones((m, p))),
        ("noise around a continuum (S/N 5-50)", 1 + rng.normal(0, 1, (m, p)) * sig, sig),
        ("noise around a continuum, no errors", 1 + rng.normal(0, 1, (m, p)) * sig, None),
        ("noise without a continuum, no errors", rng.normal(0, 1, (m, p)), None),
        ("uniform 0-2", rng.uniform(0, 2, (m, p)), np.full((m, p), 0.05)),
        ("1e300", te.flux * 1e300, te.flux_err * 1e300),
        ("negative", -te.flux, te.flux_err),
        ("broad emission line", 1 + 2 * np.exp(-0.5 * ((w[None] - rng.uniform(w[0], w[-1], (m, 1)))
                                                    / (0.02 * (w[-1] - w[0]))) ** 2) + rng.normal(0, 0.02, (m, p)),
         np.full((m, p), 0.02)),
        ("sloped featureless continuum", np.linspace(0.3, 1.7, p)[None] + rng.normal(0, 0.02, (m, p)),
         np.full((m, p), 0.02)),
    ]


@pytest.mark.parametrize("setup,n_train,n_test", [("rave", 1000, 600), ("lamost", 800, 400), ("apogee", 500, 600)])
def test_envelope_flags_garbage_and_spares_held_out_spectra(setup, n_train, n_test):
    d = labelled_set(setup, n_train + n_test, seed=3, label_names=NAMES)
    tr, te = d.split(n_train)
    env = SpectrumEnvelope().fit(*LabelMethod._flux_arrays(tr.flux, tr.flux_err))
    good = env.score(*LabelMethod._flux_arrays(te.flux, te.flux_err))
    assert (good > 1).mean() < 0.02, (good > 1).mean()
    for name, flux, err in _garbage(d, te, np.random.default_rng(1)):
        s = env.score(*LabelMethod._flux_arrays(flux, err, allow_empty=True))
        assert (s > 1).mean() > 0.95, (setup, name, (s > 1).mean())


FAST = {"Cannon": {},
        "Lux": {"n_latent": 8, "omega": 1.0}, "SLAM": {"n_folds": 2, "C_grid": (10.0,), "gamma_grid": (0.01,)},
        "CNN": {"n_members": 2, "members_per_model": 2, "max_epochs": 4, "batch_size": 32}}


@pytest.fixture(scope="module")
def rave():
    d = labelled_set("rave", 700, seed=4, label_names=NAMES, snr=(30, 200))
    return d, *d.split(500)


@pytest.mark.parametrize("name", method_names())
def test_every_method_flags_garbage_in_predict_details(name, rave, tmp_path):
    d, tr, te = rave
    model = method_class(name)(**FAST[name]).fit(tr.flux, tr.labels, flux_err=tr.flux_err, label_names=NAMES,
                                                 wave=d.wave)
    garbage = _garbage(d, te, np.random.default_rng(2))
    flux = np.vstack([te.flux] + [g[1] for g in garbage[4:7]] + [np.full((1, d.flux.shape[1]), np.nan)])
    err = np.vstack([te.flux_err] + [g[2] for g in garbage[4:7]] + [np.ones((1, d.flux.shape[1]))])
    det = model.predict_details(flux, flux_err=err, wave=d.wave)
    n = len(te.flux)
    q = det.quality
    assert q["ood"].dtype == bool and q["ood_score"].shape == (len(flux),)
    assert q["ood"][:n].mean() < 0.03                           # held-out spectra: labelled
    assert q["ood"][n:].mean() > 0.95                            # garbage: flagged
    # absurd and empty spectra are not passed to the method: NaN labels, never overflow
    absurd = np.r_[2 * n:3 * n, len(flux) - 1]                 # the 1e300 rows and the empty row
    assert np.isnan(det.labels[absurd]).all() and q["ood"][absurd].all()
    assert np.isfinite(det.labels[:n]).all()
    # the envelope is saved with the model and gives the same scores after loading
    model.save(tmp_path / "m")
    again = type(model).load(tmp_path / "m").predict_details(flux[:50], flux_err=err[:50])
    np.testing.assert_allclose(again.quality["ood_score"], q["ood_score"][:50], rtol=1e-6)


def test_catalogue_rows_carry_the_flag(finished_runs, tmp_path):
    from labelcore.catalogue import predict_catalogue
    from labelcore.data.containers import Spectra
    from labelcore.data.io import read_table, write_spectra
    from labelcore.runs import load_run_data

    run = finished_runs["Lux"]
    te = load_run_data(run.config["data"])["test"]
    wave = load_run_data(run.config["data"])["wave"]
    flux = np.vstack([te["flux"][:20], np.full((5, wave.size), 1e30)])   # (float32 files hold up to 3e38)
    err = np.vstack([te["flux_err"][:20], np.ones((5, wave.size))])
    write_spectra(Spectra(wave, flux, err), tmp_path / "s.h5")
    cat = read_table(predict_catalogue(run.path, tmp_path / "s.h5", tmp_path / "c.parquet"))
    assert isinstance(cat, pd.DataFrame) and "ood" in cat.columns and "ood_score" in cat.columns
    assert not cat["ood"][:20].any() and cat["ood"][20:].all()
    assert cat["teff"][20:].isna().all() and (cat["teff_flag"][20:] == 1).all()
