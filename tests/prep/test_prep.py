import numpy as np
import pandas as pd
import pytest

from labelcore.data import Spectra
from labelcore.data.synth.spectra import LineModel, observe
from labelcore.errors import EmptySelectionError, ValidationError
from labelcore.prep.continuum import normalise
from labelcore.prep.crossmatch import crossmatch, dedupe
from labelcore.prep.cuts import apply_cuts
from labelcore.prep.photometry import absolute_magnitude, absolute_magnitudes, photometry_matrix
from labelcore.prep.resample import linear_grid, log_grid, resample, to_rest_frame
from labelcore.prep.standardise import MinMaxScaler, Standardiser
from labelcore.prep.training import TrainingSet, build_training_set


def _labels(rng, n):
    return {"teff": rng.uniform(4200, 6200, n), "logg": rng.uniform(1.5, 4.6, n),
            "fe_h": rng.normal(-0.2, 0.3, n), "vmicro": np.full(n, 1.3)}


def test_grids():
    g = linear_grid(8420, 8780, 0.4)
    assert g.size == 900 and g[-1] == pytest.approx(8779.6)
    lg = log_grid(15100.8, 17000, 6e-6)
    assert np.allclose(np.diff(np.log10(lg)), 6e-6)


def test_resample_identity_linear_function_and_mask():
    wave = np.linspace(4000, 5000, 101)
    flux = np.vstack([1 + (wave - 4000) / 1000, np.ones(101)])
    mask = np.zeros((2, 101), bool)
    mask[1, 50] = True
    s = Spectra(wave, flux, np.full((2, 101), 0.01), mask)
    same = resample(s, wave)
    np.testing.assert_allclose(same.flux[0], flux[0])
    new = np.linspace(3990, 4995, 67)
    r = resample(s, new)
    inside = new >= 4000
    np.testing.assert_allclose(r.flux[0, inside], 1 + (new[inside] - 4000) / 1000, rtol=1e-12)
    assert r.mask[:, ~inside].all()  # outside the input grid -> bad
    near = np.abs(new - wave[50]) < 10
    assert r.mask[1, near].any() and not r.mask[0, inside].any()
    # variance of an interpolated point is smaller than the pixels' (averaging)
    assert (r.flux_err[0, inside] <= 0.01 + 1e-12).all()
    with pytest.raises(ValidationError, match="does not overlap"):
        resample(s, np.linspace(6000, 7000, 10))


def test_rest_frame_recovers_rest_spectra(rng):
    m = LineModel("rave")
    lab = _labels(rng, 200)
    rv = rng.normal(0, 80, 200)
    f, e, mask = observe("rave", lab, np.full(200, 1e4), rng, rv=rv, model=m, sky_fraction=0,
                         cosmic_rate=0)
    rest = to_rest_frame(Spectra(m.wave, f, e, mask), rv)
    truth = m.normalised_flux(lab)
    good = ~rest.mask
    err = np.abs(rest.flux - truth)[good]
    # linear interpolation of lines of ~1 pixel sigma, done twice (shift out and back)
    assert np.percentile(err, 99) < 0.03 and err.max() < 0.08
    # without the correction the residuals are large
    assert np.abs(f - truth).max() > 0.3
    with pytest.raises(ValidationError, match="not finite"):
        to_rest_frame(Spectra(m.wave, f, e, mask), np.r_[np.nan, rv[1:]])


def test_continuum_normalisation_recovers_the_normalised_spectrum(rng):
    m = LineModel("lamost")
    lab = _labels(rng, 300)
    raw, e, mask = observe("lamost", lab, np.full(300, 300.0), rng, model=m, normalised=False)
    norm = normalise(Spectra(m.wave, raw, e, mask), knot_spacing=100.0)
    truth = m.normalised_flux(lab)
    good = ~norm.mask
    ratio = norm.flux[good] / truth[good]
    # a pseudo-continuum: ~2 % low overall (lines blanket the spectrum), consistent to
    # 2 % redwards of 4500 A; in the line-blanketed blue (< 4100 A) no true continuum
    # point remains and the pseudo-continuum sits up to ~15 % low, as in real K stars
    med = np.median(ratio)
    assert abs(med - 1) < 0.03
    red = np.broadcast_to(m.wave > 4500, norm.flux.shape)[good]
    assert np.percentile(np.abs(ratio[red] - med), 90) < 0.025
    # the raw continuum varied by orders of magnitude; the normalised flux is ~1
    assert np.ptp(np.median(raw, 0)) > 100 and abs(np.median(norm.flux) - 1) < 0.03


def test_absolute_magnitudes_known_answers():
    # 10 mas -> 100 pc -> M = m - 5
    M, eM = absolute_magnitude(np.array([10.0, 10.0, 10.0]), np.array([10.0, 1.0, -1.0]),
                               np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.1, 0.1]))
    np.testing.assert_allclose(M[:2], [5.0, 0.0])
    assert np.isnan(M[2]) and np.isnan(eM[2])
    np.testing.assert_allclose(eM[0], 5 / np.log(10) * 0.1)
    t = pd.DataFrame({b: [12.0] for b in ("g", "bp", "rp", "j", "h", "ks", "w1", "w2")})
    t["parallax"] = [2.0]
    t["parallax_err"] = [0.1]
    t["a_v"] = [1.0]
    a = absolute_magnitudes(t, extinction_correct=True)
    assert a["abs_ks"].iloc[0] == pytest.approx(12 + 5 * np.log10(2) - 10 - 0.078)
    X = photometry_matrix(t)
    assert X.shape == (1, 9) and X[0, -1] == 1.0
    with pytest.raises(ValidationError, match="a_v"):
        photometry_matrix(t.drop(columns="a_v"))


def test_crossmatch_and_dedupe():
    left = pd.DataFrame({"obs": ["a", "b", "c", "d"], "source_id": [1, 2, 2, None],
                         "snr": [10, 20, 50, 30]})
    right = pd.DataFrame({"source_id": [2, 1, 3], "teff": [5000, 4000, 6000]})
    d = dedupe(left, "source_id", "best_snr")
    assert list(d["obs"]) == ["a", "c", "d"]
    with pytest.raises(ValidationError, match="duplicate source_id 2"):
        dedupe(left, policy="error")
    x = crossmatch(left, right)
    assert sorted(x["obs"]) == ["a", "b", "c"] and x.set_index("obs")["teff"]["b"] == 5000
    with pytest.raises(EmptySelectionError):
        crossmatch(left, pd.DataFrame({"source_id": [99], "teff": [1]}))


def test_cuts_count_and_fail_clearly():
    df = pd.DataFrame({"teff": [4000, 5000, 6000, np.nan], "snr": [10, 50, 100, 200],
                       "flag": ["n", "b", "n", "n"], "plx": [1.0, 2, 3, 4], "plx_err": [0.5, 0.1, 0.1, 0.1]})
    sel, counts = apply_cuts(df, [
        {"column": "teff", "op": "between", "value": [4500, 7000]},
        {"column": "flag", "op": "not_in", "value": ["b", "c"]},
        {"expr": "plx_err / plx < 0.15"},
        {"column": "missing_col", "op": ">", "value": 1, "optional": True},
    ])
    assert sel.tolist() == [False, False, True, False]
    assert counts["remaining"].tolist() == [4, 2, 1, 1, 1] and counts["skipped"].iloc[-1]
    with pytest.raises(ValidationError, match=r"needs columns \['nope'\]"):
        apply_cuts(df, [{"column": "nope", "op": ">", "value": 1}])
    with pytest.raises(EmptySelectionError, match="no star passes"):
        apply_cuts(df, [{"column": "snr", "op": ">", "value": 1000}])


def test_standardiser_masks_and_constant_columns():
    x = np.array([[1.0, 5.0], [3.0, np.nan], [5.0, 7.0]])
    s = Standardiser().fit(x, names=["a", "b"])
    np.testing.assert_allclose(s.mean_, [3.0, 6.0])
    np.testing.assert_allclose(s.std_, [2.0, np.sqrt(2)])
    np.testing.assert_allclose(s.inverse(s.transform(x)), x)
    with pytest.raises(ValidationError, match="column b is constant"):
        Standardiser().fit(np.array([[1.0, 2], [2, 2], [3, 2]]), names=["a", "b"])
    mm = MinMaxScaler().fit(x)
    np.testing.assert_allclose(mm.transform(x)[:, 0], [0, 0.5, 1])


def test_training_set_builder(small_survey, tmp_path):
    ts = build_training_set(small_survey, "rave", preset="guiglion2020", photometry=True)
    rem = ts.counts["remaining"].to_numpy()
    assert (np.diff(rem) <= 0).all() and rem[-1] == len(ts) > 20
    t = ts.table
    assert (t["snr_rave"] > 30).all() and (t["snr_apogee"] >= 60).all()
    assert (t["parallax_err"] / t["parallax"] < 0.15).all()
    assert ts.photometry.shape == (len(ts), 9) and np.isfinite(ts.photometry).all()
    assert ts.labels.names[:3] == ["teff", "logg", "m_h"]
    # one spectrum per star, and the spectrum matches its star's metadata
    assert t["source_id"].is_unique
    np.testing.assert_array_equal(ts.spectra.ids, t["obs_id"].to_numpy())
    ts.save(tmp_path / "ts")
    back = TrainingSet.load(tmp_path / "ts")
    np.testing.assert_allclose(back.spectra.flux, ts.spectra.flux, rtol=1e-6)
    np.testing.assert_allclose(back.labels.values, ts.labels.values)
    np.testing.assert_allclose(back.photometry, ts.photometry)
    gal = build_training_set(small_survey, "apogee", label_source="galah", max_stars=30)
    assert len(gal) == 30 and np.isnan(gal.labels.values).any()
    with pytest.raises(EmptySelectionError):
        build_training_set(small_survey, "rave", cuts=[{"column": "teff", "op": ">", "value": 1e5}])


def test_photometry_matrix_without_error_columns():
    """A table with magnitudes, parallax and A_V but no _err columns (e.g. a cross-match
    that kept values only) still gives the CNN input; errors are NaN, not zero."""
    import pandas as pd

    from labelcore.prep.photometry import absolute_magnitudes, photometry_matrix

    bands = ["g", "bp", "rp", "j", "h", "ks", "w1", "w2"]
    t = pd.DataFrame({**{b: [10.0, 12.0] for b in bands}, "parallax": [1.0, -0.5], "a_v": [0.1, 0.2]})
    p = photometry_matrix(t)
    assert p.shape == (2, 9)
    np.testing.assert_allclose(p[0, :8], 10.0 + 5 * np.log10(1.0) - 10.0)   # M = m + 5 log10(plx/mas) - 10
    assert np.isnan(p[1, :8]).all() and p[1, 8] == 0.2                      # negative parallax: no distance
    assert absolute_magnitudes(t)["abs_g_err"].isna().all()


def test_crossmatch_on_text_ids_and_ids_stored_differently():
    from labelcore.prep.crossmatch import crossmatch

    spec = pd.DataFrame({"apogee_id": ["2M001 ", "2M002", "2M003"], "snr": [50, 60, 70]})
    lab = pd.DataFrame({"apogee_id": ["2M002", "2M001", "2M009"], "teff": [5000.0, 4800.0, 4000.0]})
    x = crossmatch(spec, lab, on="apogee_id")
    assert x.set_index("apogee_id")["teff"].to_dict() == {"2M001": 4800.0, "2M002": 5000.0}
    # the same integer ids, once as float and once as text, still match
    a = pd.DataFrame({"obsid": [101.0, 102.0], "snr": [1, 2]})
    b = pd.DataFrame({"obsid": ["101", "103"], "teff": [5000.0, 1.0]})
    y = crossmatch(a, b, on="obsid")
    assert y["obsid"].tolist() == [101] and y["teff"].tolist() == [5000.0]
