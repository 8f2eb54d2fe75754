import numpy as np
import pandas as pd
import pytest

from labelcore.data import Catalogue, Spectra
from labelcore.data.io import (
    SpectraWriter,
    open_spectra_dask,
    read_fits_table,
    read_spectra,
    read_spectra_fits,
    read_spectra_meta,
    read_table,
    spectra_info,
    write_fits_table,
    write_spectra,
    write_spectra_fits,
    write_table,
)
from labelcore.errors import FormatError


def _spectra(rng, n=20, p=64):
    wave = np.linspace(4000, 5000, p)
    flux = 1 + 0.01 * rng.standard_normal((n, p))
    err = np.full((n, p), 0.01)
    mask = rng.random((n, p)) < 0.05
    meta = pd.DataFrame({"snr": rng.uniform(10, 100, n), "field": [f"F{i % 3}" for i in range(n)]})
    return Spectra(wave, flux, err, mask, np.array([f"s{i}" for i in range(n)]), meta, "test")


def test_parquet_round_trip(tmp_path):
    df = pd.DataFrame({"id": ["a", "b"], "teff": [5000.0, np.nan], "n": [1, 2]})
    write_table(Catalogue(df), tmp_path / "t.parquet")
    back = read_table(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(back, df)


def test_hdf5_spectra_round_trip_and_chunked_append(tmp_path, rng):
    s = _spectra(rng)
    write_spectra(s, tmp_path / "s.h5", chunk_rows=8)
    back = read_spectra(tmp_path / "s.h5")
    np.testing.assert_allclose(back.flux[~s.mask], s.flux[~s.mask], rtol=1e-6)
    np.testing.assert_array_equal(back.mask, s.mask)
    assert list(back.ids) == list(s.ids)
    assert list(back.meta["field"]) == list(s.meta["field"])
    # appending in chunks gives the same file content
    with SpectraWriter(tmp_path / "c.h5", s.wave, "test") as w:
        for a in range(0, 20, 7):
            w.append(s.flux[a:a + 7], s.flux_err[a:a + 7], s.mask[a:a + 7], s.ids[a:a + 7],
                     s.meta.iloc[a:a + 7])
    c = read_spectra(tmp_path / "c.h5")
    np.testing.assert_array_equal(c.flux, back.flux)
    info = spectra_info(tmp_path / "c.h5")
    assert info["n_spectra"] == 20 and info["n_pixels"] == 64
    meta = read_spectra_meta(tmp_path / "c.h5")
    assert list(meta["obs_id"]) == list(s.ids) and list(meta["row"]) == list(range(20))
    rows = read_spectra(tmp_path / "c.h5", rows=np.array([2, 5]))
    np.testing.assert_array_equal(rows.flux, back.flux[[2, 5]])


def test_dask_reads_lazily_the_same_values(tmp_path, rng):
    s = _spectra(rng, n=50)
    write_spectra(s, tmp_path / "s.h5", chunk_rows=16)
    wave, flux, err, mask = open_spectra_dask(tmp_path / "s.h5")
    assert flux.chunks[0][0] == 16
    np.testing.assert_allclose(flux[10:20].compute(), read_spectra(tmp_path / "s.h5").flux[10:20],
                               rtol=1e-7)


def test_failed_write_leaves_nothing(tmp_path, rng):
    s = _spectra(rng)
    target = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with SpectraWriter(target, s.wave) as w:
            w.append(s.flux, s.flux_err, s.mask, s.ids)
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_fits_table_and_spectra_round_trip(tmp_path, rng):
    df = pd.DataFrame({"id": ["a", "b", "c"], "teff": [5000.0, 4500.0, np.nan], "flag": [0, 1, 0]})
    write_fits_table(df, tmp_path / "t.fits", units={"teff": "K"})
    back = read_fits_table(tmp_path / "t.fits")
    assert list(back["id"]) == ["a", "b", "c"]
    np.testing.assert_array_equal(back["teff"].to_numpy(), df["teff"].to_numpy())
    from astropy.table import Table

    assert str(Table.read(tmp_path / "t.fits")["teff"].unit) == "K"
    s = _spectra(rng)
    write_spectra_fits(s, tmp_path / "s.fits")
    b = read_spectra_fits(tmp_path / "s.fits")
    np.testing.assert_allclose(b.flux, s.flux, rtol=1e-6)
    np.testing.assert_array_equal(b.mask, s.mask)
    assert list(b.ids) == list(s.ids)


def test_corrupt_files_raise_format_errors(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(FormatError, match="bad.h5"):
        read_spectra(bad)
    badp = tmp_path / "bad.parquet"
    badp.write_bytes(b"PAR1garbage")
    with pytest.raises(FormatError, match="bad.parquet"):
        read_table(badp)
    with pytest.raises(FileNotFoundError):
        read_spectra(tmp_path / "missing.h5")


def test_spectra_written_without_metadata_read_back(tmp_path, rng):
    """A file appended without per-spectrum metadata (what a user's own writer may do)
    reads as N spectra with an empty metadata table, whole or by rows."""
    s = _spectra(rng, n=12)
    with SpectraWriter(tmp_path / "nometa.h5", s.wave) as w:
        w.append(s.flux, s.flux_err, s.mask, s.ids)
    back = read_spectra(tmp_path / "nometa.h5")
    assert back.n_spectra == 12 and back.meta.shape == (12, 0)
    np.testing.assert_allclose(back.flux, s.flux.astype(np.float32))
    assert read_spectra(tmp_path / "nometa.h5", slice(3, 7)).n_spectra == 4
    m = read_spectra_meta(tmp_path / "nometa.h5")
    assert m["obs_id"].tolist() == list(s.ids) and m["row"].tolist() == list(range(12))
