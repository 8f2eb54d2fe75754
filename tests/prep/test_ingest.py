"""Ingesting survey files (labelcore.prep.ingest): files in a survey's format on to one grid,
in the rest frame and continuum-normalised if asked, written atomically; unreadable files
stop the ingest with their name or are skipped and reported."""

import numpy as np
import pytest
from conftest import C_KMS as C  # noqa: E402
from conftest import LAMOST_LINE as LINE  # noqa: E402

from labelcore.cli import main
from labelcore.data.io import read_spectra
from labelcore.errors import FormatError, ValidationError
from labelcore.prep.ingest import ingest, parse_grid


def test_grids():
    g = parse_grid("4000:4010:0.5")
    assert g[0] == 4000 and g[-1] == 4009.5 and g.size == 20      # STOP excluded
    lg = parse_grid("log:4000:5000:1e-4")
    np.testing.assert_allclose(np.diff(np.log10(lg)), 1e-4)
    with pytest.raises(ValidationError, match="START:STOP:STEP"):
        parse_grid("4000-5000")


def test_rest_frame_and_normalisation_put_lines_in_place(tmp_path, write_lamost):
    files = [write_lamost(tmp_path / f"{i}.fits", rv, 1000 + i) for i, rv in enumerate([-150.0, 0.0, 220.0])]
    wave = parse_grid("6400:6700:0.5")
    info = ingest(files, "lamost_lrs", tmp_path / "out.h5", wave=wave, rest_frame=True, normalise=True,
                  knot_spacing=60.0)
    assert info == {"n_spectra": 3, "n_files": 3, "skipped": {}}
    s = read_spectra(tmp_path / "out.h5")
    assert s.ids.tolist() == ["1000", "1001", "1002"] and s.meta["file"].tolist() == ["0.fits", "1.fits", "2.fits"]
    np.testing.assert_allclose(s.meta["rv"], [-150.0, 0.0, 220.0])
    # in the rest frame every line sits at LINE; the continuum is ~1 away from it
    centres = s.wave[np.argmin(s.flux, axis=1)]
    np.testing.assert_allclose(centres, LINE, atol=0.5)
    far = np.abs(s.wave - LINE) > 15
    np.testing.assert_allclose(np.median(s.flux[:, far], axis=1), 1.0, atol=0.01)
    # without the rest frame the lines stay where the star's motion put them
    ingest(files, "lamost_lrs", tmp_path / "obs.h5", wave=wave)
    o = read_spectra(tmp_path / "obs.h5")
    np.testing.assert_allclose(o.wave[np.argmin(o.flux, axis=1)], LINE * (1 + np.array([-150, 0, 220]) / C),
                               atol=0.5)


def test_bad_files_stop_or_are_skipped(tmp_path, write_lamost):
    good = [write_lamost(tmp_path / f"{i}.fits", 0.0, i) for i in range(2)]
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    wave = parse_grid("6400:6700:1")
    with pytest.raises(FormatError, match="bad.fits"):
        ingest([good[0], bad, good[1]], "lamost_lrs", tmp_path / "x.h5", wave=wave)
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.glob(".x.h5*"))
    info = ingest([good[0], bad, good[1]], "lamost_lrs", tmp_path / "x.h5", wave=wave, on_error="skip")
    assert info["n_spectra"] == 2 and list(info["skipped"]) == [str(bad)]
    with pytest.raises(ValidationError, match="none of the 1 files"):
        ingest([bad], "lamost_lrs", tmp_path / "y.h5", wave=wave, on_error="skip")
    assert not (tmp_path / "y.h5").exists()
    with pytest.raises(FormatError, match="0.fits: new grid .* does not overlap"):
        ingest(good, "lamost_lrs", tmp_path / "z.h5", wave=parse_grid("15000:16000:1"))


def test_ingest_command(tmp_path, capsys, write_lamost):
    files = [str(write_lamost(tmp_path / f"{i}.fits", 10.0 * i, i)) for i in range(3)]
    out = tmp_path / "s.h5"
    assert main(["ingest", "lamost_lrs", *files, "--out", str(out), "--grid", "6400:6700:0.5",
                 "--rest-frame", "--normalise"]) == 0
    assert "3 spectra from 3 files on 600 pixels" in capsys.readouterr().out
    assert main(["ingest", "lamost_lrs", *files, "--out", str(out), "--grid", "nonsense"]) == 2
    assert "is not START:STOP:STEP" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_lamost_files_ingest(realdata, tmp_path):
    files = sorted((realdata / "lamost_lrs").glob("*.fits"))
    wave = parse_grid("log:3900:8800:1e-4")
    info = ingest(files, "lamost_lrs", tmp_path / "lamost.h5", wave=wave, rest_frame=True, normalise=True)
    assert info["n_spectra"] == 3 and not info["skipped"]
    s = read_spectra(tmp_path / "lamost.h5")
    ok = ~s.mask
    assert ok.mean() > 0.9
    med = [np.median(s.flux[i][ok[i]]) for i in range(3)]
    np.testing.assert_allclose(med, 1.0, atol=0.05)       # normalised continuum
    # H-alpha absorption in the rest frame (vacuum 6564.6 A) in every star
    near = np.abs(s.wave - 6564.6) < 3
    assert all(np.min(s.flux[i][near & ok[i]]) < 0.9 for i in range(3))


def test_training_set_from_ingested_files_and_a_survey_table(tmp_path, write_lamost, write_lamost_catalogue):
    from labelcore.prep.training import TrainingSet, build_from_files

    rng = np.random.default_rng(3)
    files = [write_lamost(tmp_path / f"spec-{1000 + i}.fits", 0.0, 1000 + i) for i in range(12)]
    ingest(files, "lamost_lrs", tmp_path / "lamost.h5", wave=parse_grid("6400:6700:1"), normalise=True)
    cols = write_lamost_catalogue(tmp_path / "cat.fits", [1000 + i for i in range(10)] + [5000, 5001], rng)
    ts = build_from_files(tmp_path / "lamost.h5", tmp_path / "cat.fits", "lamost_dr5", label_names=["teff", "logg",
                          "fe_h"], preset="zhang2020_lamost_apogee", on="id", spectra_on="obs_id")
    # 12 spectra, 10 with catalogue rows, one fails S/N > 40; the sentinel Teff stays as a missing label
    assert ts.counts["remaining"].tolist() == [12, 12, 10, 9, 9]
    assert ts.counts["cut"].tolist()[2:4] == ["cross-match on id", "snr > 40"] and ts.counts["skipped"].iloc[-1]
    assert len(ts) == 9 and "1001" not in set(ts.labels.ids)
    by_id = dict(zip(ts.labels.ids, ts.labels.values[:, 0], strict=True))
    assert np.isnan(by_id["1002"])
    assert by_id["1003"] == pytest.approx(cols["teff"][3], rel=1e-6)
    ts.save(tmp_path / "ts")
    assert len(TrainingSet.load(tmp_path / "ts")) == 9
    with pytest.raises(ValidationError, match="no column 'gaia'"):
        build_from_files(tmp_path / "lamost.h5", tmp_path / "cat.fits", "lamost_dr5", on="id", spectra_on="gaia")
    # the command line
    assert main(["build-training-set", "--spectra", str(tmp_path / "lamost.h5"), "--label-table",
                 str(tmp_path / "cat.fits"), "--manifest", "lamost_dr5", "--on", "id", "--spectra-on", "obs_id",
                 "--labels", "teff,logg,fe_h", "--out", str(tmp_path / "ts2")]) == 0
    assert len(TrainingSet.load(tmp_path / "ts2")) == 10
