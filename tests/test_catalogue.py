"""Chunked prediction of a whole spectra file into a label catalogue (labelcore.catalogue):
the rows equal one in-memory prediction, whatever the chunking; bad input stops early with
the reason and leaves no file."""

import numpy as np
import pandas as pd
import pytest

from labelcore.catalogue import predict_catalogue
from labelcore.data.containers import Spectra
from labelcore.data.io import read_spectra, read_table, write_spectra
from labelcore.errors import ValidationError
from labelcore.methods import load_model


@pytest.fixture(scope="module")
def spectra_file(tmp_path_factory, finished_runs):
    """700 RAVE-like spectra (the runs' set-up) with S/N and source_id metadata."""
    from labelcore.data.synth.datasets import labelled_set

    d = labelled_set("rave", 700, seed=21, label_names=["teff", "logg", "m_h"], snr=(20, 200))
    mask = ~np.isfinite(d.flux)
    meta = pd.DataFrame({"snr": d.snr, "source_id": np.arange(700) + 10_000})
    s = Spectra(d.wave, np.where(mask, 1.0, d.flux), d.flux_err, mask, [f"s{i}" for i in range(700)], meta)
    path = tmp_path_factory.mktemp("cat") / "spectra.h5"
    write_spectra(s, path)
    return path, d


@pytest.mark.parametrize("method", ["Lux", "SLAM"])
def test_catalogue_equals_in_memory_prediction(finished_runs, spectra_file, tmp_path, method):
    path, d = spectra_file
    run = finished_runs[method]
    model = run.model()
    s = read_spectra(path)
    y, e = model.predict(np.where(s.mask, np.nan, s.flux), flux_err=s.flux_err, return_std=True)
    seen = []
    out = predict_catalogue(run.path, path, tmp_path / "cat.parquet", chunk_rows=256,
                            progress=lambda f, m: seen.append(f))
    cat = read_table(out)
    assert len(cat) == 700 and cat["obs_id"].tolist() == [f"s{i}" for i in range(700)]
    assert seen[-1] == 1.0 and len(seen) == 3                     # 3 chunks of <= 256
    names = model.label_names_
    np.testing.assert_allclose(cat[names].to_numpy(), y, rtol=1e-5, atol=1e-6 * np.abs(y).max())
    np.testing.assert_allclose(cat[[f"{n}_err" for n in names]].to_numpy(), e, rtol=1e-4)
    np.testing.assert_array_equal(cat[[f"{n}_flag" for n in names]].to_numpy(), model.boundary_flags(y))
    np.testing.assert_allclose(cat["snr"], d.snr)
    assert (cat["source_id"] == np.arange(700) + 10_000).all()
    if method == "SLAM":
        assert cat["converged"].mean() > 0.9 and np.isfinite(cat["chi2_reduced"]).all()


def test_cnn_catalogue_with_photometry_table(finished_runs, spectra_file, tmp_path):
    from labelcore.data.synth.population import make_population

    path, d = spectra_file
    run = finished_runs["CNN"]      # trained without photometry: spectra only
    cat = read_table(predict_catalogue(run.path, path, tmp_path / "c.parquet", chunk_rows=300))
    y = run.model().predict(d.flux)
    np.testing.assert_allclose(cat[["teff", "logg", "m_h"]].to_numpy(), y, rtol=1e-4)
    assert "no_photometry" not in cat

    # a CNN with photometry: stars lacking it get NaN labels and a flag, the rest are predicted
    from labelcore.methods import CNN

    tr = __import__("labelcore.data.synth.datasets", fromlist=["x"]).labelled_set(
        "rave", 200, seed=4, label_names=["teff", "logg"], snr=(50, 200))
    cnn = CNN(n_members=2, max_epochs=2, batch_size=32).fit(tr.flux, tr.labels, photometry=tr.photometry,
                                                            label_names=["teff", "logg"], wave=tr.wave)
    pop = make_population(900, seed=21)
    phot = pop.iloc[:700][["g", "bp", "rp", "j", "h", "ks", "w1", "w2", "parallax", "a_v"]].copy()
    phot["parallax"] = np.abs(phot["parallax"]) + 0.1
    phot["source_id"] = np.arange(700) + 10_000
    phot.loc[phot.index[:5], "ks"] = np.nan
    cat = read_table(predict_catalogue(cnn, path, tmp_path / "p.parquet", chunk_rows=256, photometry=phot))
    assert cat["no_photometry"].sum() == 5 and cat.loc[:4, "teff"].isna().all()
    assert np.isfinite(cat.loc[5:, "teff"]).all() and (cat.loc[:4, "teff_flag"] == 1).all()
    with pytest.raises(ValidationError, match="trained with photometry"):
        predict_catalogue(cnn, path, tmp_path / "q.parquet")
    assert not (tmp_path / "q.parquet").exists()


def test_catalogue_refuses_another_grid_and_leaves_nothing(finished_runs, spectra_file, tmp_path):
    path, d = spectra_file
    s = read_spectra(path)
    shifted = Spectra(s.wave + 0.5, s.flux, s.flux_err, s.mask, s.ids, s.meta)
    p2 = tmp_path / "shifted.h5"
    write_spectra(shifted, p2)
    with pytest.raises(ValidationError, match="wavelength grid differs"):
        predict_catalogue(finished_runs["Lux"].path, p2, tmp_path / "x.parquet")
    short = Spectra(s.wave[:800], s.flux[:, :800], s.flux_err[:, :800], s.mask[:, :800], s.ids, s.meta)
    write_spectra(short, tmp_path / "short.h5")
    with pytest.raises(ValidationError, match="800 pixels"):
        predict_catalogue(finished_runs["Lux"].path, tmp_path / "short.h5", tmp_path / "x.parquet")
    with pytest.raises(ValidationError, match="not a saved labelcore model"):
        load_model(tmp_path)
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".x.parquet*"))


def test_catalogue_through_a_dask_client(finished_runs, spectra_file, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    path, _ = spectra_file
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        out = predict_catalogue(finished_runs["Lux"].path, path, tmp_path / "d.parquet", chunk_rows=200, client=c)
    local = predict_catalogue(finished_runs["Lux"].path, path, tmp_path / "l.parquet", chunk_rows=700)
    pd.testing.assert_frame_equal(read_table(out), read_table(local), rtol=1e-6)
