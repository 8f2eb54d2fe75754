"""The synthetic survey: deterministic, Milky-Way-like, and close to the real APOGEE
giants where we can compare; spectra respond to labels as real spectra do."""

import json

import numpy as np
import pandas as pd
import pytest

from labelcore.data.io import read_spectra, read_spectra_meta, read_table
from labelcore.data.synth import make_population, observe_labels
from labelcore.data.synth.spectra import LineModel, observe
from labelcore.data.synth.survey import GALAH_OFFSETS, ensure_survey, make_catalogue, make_survey


@pytest.fixture(scope="module")
def pop():
    return make_population(100_000, seed=1)


def test_deterministic_by_seed():
    a = make_population(2000, seed=3)
    b = make_population(2000, seed=3)
    c = make_population(2000, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["teff"], c["teff"])


def test_kiel_diagram_has_the_main_features(pop):
    teff, logg = pop["teff"], pop["logg"]
    ms = (logg > 4.0) & teff.between(3800, 6600)
    assert ms.mean() > 0.3, "a main sequence"
    assert ((logg < 4.1) & (logg > 3.6) & teff.between(5000, 6200)).sum() > 2000, "sub-giants"
    rgb = (logg < 3.3) & (logg > 1.0)
    assert rgb.mean() > 0.3, "a red giant branch"
    # the red clump: an over-density near logg 2.5 among 4500-5200 K giants
    g = pop[teff.between(4500, 5200) & logg.between(1.5, 3.5)]
    h, e = np.histogram(g["logg"], bins=np.arange(1.5, 3.5, 0.05))
    peak = e[np.argmax(h)] + 0.025
    assert 2.35 < peak < 2.65
    assert h.max() > 3 * np.median(h), "clump stands out of the RGB"
    # RGB gets cooler up the branch
    med = [pop.loc[(logg > lo) & (logg < lo + 0.5) & pop["m_h"].between(-0.4, 0.2), "teff"].median()
           for lo in (1.0, 2.0, 3.0)]
    assert med[0] < med[1] < med[2]


def test_alpha_bimodality_and_components(pop):
    mh, am = pop["m_h"], pop["alpha_m"]
    sl = mh.between(-0.8, -0.4)
    h, e = np.histogram(am[sl], bins=np.arange(-0.1, 0.45, 0.025))
    centers = e[:-1] + 0.0125
    lo_peak = centers[np.argmax(np.where(centers < 0.12, h, 0))]
    hi_peak = centers[np.argmax(np.where(centers > 0.15, h, 0))]
    valley = h[(centers > lo_peak) & (centers < hi_peak)].min()
    assert hi_peak - lo_peak > 0.12 and valley < 0.5 * min(h.max(), h[centers == hi_peak][0])
    thick = pop["component"] == "thick"
    assert pop.loc[thick, "alpha_m"].median() > pop.loc[pop["component"] == "thin", "alpha_m"].median() + 0.1
    far = pop["dist_kpc"] > 2.0  # where the survey volume does not cap |Z|
    assert (pop.loc[thick & far, "z_gc"].abs().median()
            > 2 * pop.loc[(pop["component"] == "thin") & far, "z_gc"].abs().median())
    halo = pop["component"] == "halo"
    assert pop.loc[halo, "v_phi"].median() < 100 < pop.loc[pop["component"] == "thin", "v_phi"].median()
    # [C/N] of giants traces mass (first dredge-up)
    gi = pop[(pop["phase"] == "rgb")]
    cn = gi["c_fe"] - gi["n_fe"]
    assert np.corrcoef(cn, gi["mass"])[0, 1] < -0.3


@pytest.mark.realdata
def test_giants_look_like_real_apogee(realdata, pop):
    real = pd.read_csv(realdata / "apogee_dr12_labels" / "apogee_dr12_labels.csv")
    real = pd.DataFrame({"teff": real.TEFF, "logg": real.LOGG, "m_h": real.PARAM_M_H,
                         "alpha_m": real.PARAM_ALPHA_M})
    real = real[(real.teff > 3000) & (real.logg > -1) & (real.m_h > -5)]
    obs = observe_labels(pop, names=["teff", "logg", "m_h", "alpha_m"])
    for lo in (1.0, 1.5, 2.5, 3.0):  # RGB ridge per logg bin, solar-ish metallicity
        def ridge(d, lo=lo):
            b = d[(d.logg > lo) & (d.logg < lo + 0.5) & d.m_h.between(-0.4, 0.2)]
            return b.teff.median()
        assert abs(ridge(obs) - ridge(real)) < 120, lo
    # high-alpha sequence level at [M/H] ~ -0.7 and the low-alpha level at solar
    for d in (obs, real):
        d["hi"] = d[d.m_h.between(-0.9, -0.5) & (d.alpha_m > 0.15)].alpha_m.median()
    assert abs(obs["hi"].iloc[0] - real["hi"].iloc[0]) < 0.05
    assert 0.1 < (obs.alpha_m > 0.15).mean() < 0.4 and 0.1 < (real.alpha_m > 0.15).mean() < 0.4


def test_photometry_and_parallax_are_consistent(pop):
    d = pop["dist_kpc"].to_numpy()
    plx = pop["parallax"].to_numpy()
    good = (plx > 0) & (pop["parallax_err"] / plx < 0.05)
    np.testing.assert_allclose(1 / plx[good], d[good], rtol=0.2)
    # giants are more luminous: at the same H magnitude they are further away
    assert pop.loc[pop["phase"] == "rgb", "dist_kpc"].median() > 3 * pop.loc[pop["phase"] == "ms", "dist_kpc"].median()
    # colours redden with extinction and cooler Teff
    color = pop["bp"] - pop["rp"]
    assert np.corrcoef(color, pop["a_v"])[0, 1] > 0.2
    assert np.corrcoef(color[pop["a_v"] < 0.1], 1 / pop["teff"][pop["a_v"] < 0.1])[0, 1] > 0.8


def test_spectra_respond_to_labels_like_real_lines():
    m = LineModel("rave")
    base = {"teff": np.full(3, 4800.0), "logg": np.full(3, 2.5), "vmicro": np.full(3, 1.3),
            "fe_h": np.array([-1.0, -0.5, 0.0])}
    f = m.normalised_flux(base)
    fe = np.argmin(np.abs(m.wave - 8688.62))  # strong Fe I line
    depth = 1 - f[:, fe]
    assert depth[0] < depth[1] < depth[2]
    # curve of growth: the depth grows less than linearly with abundance
    assert depth[2] / depth[1] < depth[1] / depth[0] < 10**0.5
    # Ca II triplet is the strongest feature
    cat = [np.argmin(np.abs(m.wave - w)) for w in (8498.02, 8542.09, 8662.14)]
    assert (f[2, cat] < 0.6).all()
    # Paschen lines appear in hot stars
    hot = m.normalised_flux({"teff": np.array([5000.0, 7000.0]), "logg": np.full(2, 4.0)})
    p14 = np.argmin(np.abs(m.wave - 8598.39))
    assert hot[1, p14] < hot[0, p14] - 0.05


def test_noise_mask_and_continuum():
    rng = np.random.default_rng(0)
    lab = {"teff": np.full(400, 5000.0), "logg": np.full(400, 3.0), "fe_h": np.zeros(400)}
    m = LineModel("rave")
    f, e, mask = observe("rave", lab, np.full(400, 50.0), rng, model=m, sky_fraction=0.0)
    clean = m.normalised_flux(lab)
    resid = (f - clean)[~mask]
    sig = e[~mask]
    assert np.std(resid / sig) == pytest.approx(1.0, abs=0.05)
    assert np.median(sig[clean[~mask] > 0.99]) == pytest.approx(1 / 50, rel=0.05)
    assert mask.any() and (f[mask] > clean[mask]).mean() > 0.95  # cosmic rays are spikes
    raw, _, _ = observe("rave", lab, np.full(400, 50.0), rng, model=m, normalised=False)
    assert np.median(raw) > 100  # un-normalised counts with a sloped continuum


def test_survey_folder(small_survey):
    info = json.loads((small_survey / "survey.json").read_text())
    assert info["n_catalogue"] == 6000
    cat = read_table(small_survey / "catalogue.parquet")
    assert {"teff", "teff_err", "true_teff", "parallax", "a_v", "snr_rave", "r_gc", "v_phi"} <= set(cat.columns)
    # observed labels scatter around the truth by their errors
    z = (cat["teff"] - cat["true_teff"]) / cat["teff_err"]
    assert z.std() == pytest.approx(1.0, abs=0.1)
    assert cat["c_fe"].isna().any() and cat["teff"].notna().all()
    meta = read_spectra_meta(small_survey / "spectra_rave.h5")
    assert len(meta) == 1500 + 75 and meta["visit"].sum() == 75
    repeats = meta[meta["visit"] == 1]["star_id"]
    assert repeats.isin(meta[meta["visit"] == 0]["star_id"]).all()
    s = read_spectra(small_survey / "spectra_apogee.h5", rows=np.arange(5))
    assert s.n_pixels > 7000 and 15100 < s.wave[0] < 15200
    # set-ups overlap on the sky
    both = cat["snr_rave"].notna() & cat["snr_apogee"].notna()
    assert both.sum() > 50
    gal = read_table(small_survey / "labels_galah.parquet")
    m = gal.merge(cat[["source_id", "true_teff", "true_logg"]], on="source_id")
    assert (m["teff"] - m["true_teff"]).median() == pytest.approx(GALAH_OFFSETS["teff"], abs=15)
    assert (m["logg"] - m["true_logg"]).median() == pytest.approx(GALAH_OFFSETS["logg"], abs=0.03)
    assert gal["mg_fe"].isna().mean() > 0.05


def test_raw_survey_and_cache(tmp_path):
    p = tmp_path / "raw"
    make_survey(p, n_catalogue=500, n_spectra={"rave": 50}, normalised=False, rest_frame=False)
    s = read_spectra(p / "spectra_rave.h5")
    assert np.median(s.flux) > 50 and s.meta["rv"].std() > 10
    # ensure_survey reuses a folder made with the same parameters and rebuilds otherwise
    q = tmp_path / "cached"
    ensure_survey(q, n_catalogue=300, n_spectra={"rave": 20})
    stamp = (q / "survey.json").stat().st_mtime_ns
    ensure_survey(q, n_catalogue=300, n_spectra={"rave": 20})
    assert (q / "survey.json").stat().st_mtime_ns == stamp
    ensure_survey(q, n_catalogue=400, n_spectra={"rave": 20})
    assert json.loads((q / "survey.json").read_text())["n_catalogue"] == 400


def test_bad_survey_requests(tmp_path):
    with pytest.raises(ValueError, match="unknown set-ups"):
        make_survey(tmp_path / "x", n_catalogue=100, n_spectra={"sdss": 10})
    with pytest.raises(ValueError, match="spectra from a catalogue of 100"):
        make_survey(tmp_path / "x", n_catalogue=100, n_spectra={"rave": 1000})
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError):
        make_population(0)


def test_catalogue_has_truth_and_observed():
    c = make_catalogue(1000, seed=2)
    assert (c["true_teff"] != c["teff"]).all()
