"""Spectrum loaders: small files written in each survey's format, corrupt files, and the
real samples in ../shared/realdata (skipped where absent)."""

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from labelcore.data.loaders import LOADERS, get_loader
from labelcore.errors import FormatError

NPIX = 8575
APOGEE_WAVE = 10 ** (4.179 + 6e-6 * np.arange(NPIX))


def _apstar(path, nrow=3, vhelio=12.5):
    rng = np.random.default_rng(0)
    flux = 100 + rng.standard_normal((nrow, NPIX))
    err = np.ones((nrow, NPIX))
    mask = np.zeros((nrow, NPIX), np.int64)
    mask[0, 100] = 1 << 1      # CRPIX -> bad
    mask[0, 200] = 1 << 12     # SIG_SKYLINE -> bad
    mask[0, 300] = 1 << 13     # SIG_TELLURIC -> kept (not a bad bit)
    flux[0, 5000:5100] = 0     # chip gap
    h = fits.Header()
    h.update(CRVAL1=4.179, CDELT1=6e-6, CRPIX1=1)
    p = fits.PrimaryHDU()
    p.header.update(OBJID="2M00000000+0000000", SNR=88.0, VHELIO=vhelio, NVISITS=nrow - 2)
    fits.HDUList([p, fits.ImageHDU(flux, h), fits.ImageHDU(err, h),
                  fits.ImageHDU(mask, h)]).writeto(path)
    return flux


def test_apstar(tmp_path):
    flux = _apstar(tmp_path / "apStar.fits")
    s = get_loader("apogee_apstar")(tmp_path / "apStar.fits")
    np.testing.assert_allclose(s.wave, APOGEE_WAVE, rtol=1e-12)
    assert s.mask[0, 100] and s.mask[0, 200] and not s.mask[0, 300]
    assert s.mask[0, 5000:5100].all()
    np.testing.assert_allclose(s.flux[0, :50], flux[0, :50])
    assert s.meta["snr"][0] == 88.0 and s.meta["rv"][0] == 12.5
    assert s.ids[0] == "2M00000000+0000000"
    s2 = get_loader("apogee_apstar")(tmp_path / "apStar.fits", row=2)
    np.testing.assert_allclose(s2.flux[0, :50], flux[2, :50])


def test_aspcapstar(tmp_path):
    h = fits.Header()
    h.update(CRVAL1=4.179, CDELT1=6e-6, CRPIX1=1)
    f = np.ones(NPIX)
    f[:246] = 0  # outside the chips
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(f, h), fits.ImageHDU(np.full(NPIX, 0.01), h),
                  fits.ImageHDU(f, h)]).writeto(tmp_path / "a.fits")
    s = get_loader("apogee_aspcapstar")(tmp_path / "a.fits")
    assert s.mask[0, :246].all() and not s.mask[0, 246:].any()


def _lamost_header(h):
    h.update(OBSID=123456, SNRG=55.5, SNRR=80.1, HELIO_RV=-12.0, CLASS="STAR", SUBCLASS="G5",
             VACUUM=True, RA=10.0, DEC=20.0)


@pytest.mark.parametrize("layout", ["coadd_table", "dr5_image"])
def test_lamost_both_layouts(tmp_path, layout):
    n = 3909
    wave = 10 ** (3.5682 + 1e-4 * np.arange(n))
    flux = np.linspace(100, 200, n)
    ivar = np.full(n, 4.0)
    ivar[10] = 0
    ormask = np.zeros(n, np.int32)
    ormask[20] = 4
    if layout == "coadd_table":
        p = fits.PrimaryHDU()
        _lamost_header(p.header)
        cols = [fits.Column(name=k, format=f"{n}E", array=v[None]) for k, v in
                (("FLUX", flux), ("IVAR", ivar), ("WAVELENGTH", wave), ("ANDMASK", ormask * 0),
                 ("ORMASK", ormask), ("NORMALIZATION", flux))]
        fits.HDUList([p, fits.BinTableHDU.from_columns(cols, name="COADD")]).writeto(tmp_path / "l.fits")
    else:
        p = fits.PrimaryHDU(np.vstack([flux, ivar, wave, ormask * 0, ormask]).astype(np.float32))
        _lamost_header(p.header)
        p.writeto(tmp_path / "l.fits")
    s = get_loader("lamost_lrs")(tmp_path / "l.fits")
    assert s.n_pixels == n
    np.testing.assert_allclose(s.wave, wave, rtol=1e-6)
    assert s.mask[0, 10] and s.mask[0, 20] and s.mask.sum() == 2
    np.testing.assert_allclose(s.flux_err[0, 0], 0.5)
    assert s.meta["snr"][0] == pytest.approx(55.5) and s.meta["rv"][0] == -12.0
    assert s.meta["subclass"][0] == "G5"


def test_gaia_rvs_long_format_many_sources(tmp_path):
    wl = np.round(846 + 0.01 * np.arange(2401), 2)
    rows = []
    for sid in (11, 22):
        rows.append(pd.DataFrame({"source_id": sid, "wavelength": wl, "flux": 1.0 - sid * 1e-3,
                                  "flux_error": 0.01}))
    pd.concat(rows).to_csv(tmp_path / "rvs.csv", index=False)
    s = get_loader("gaia_rvs")(tmp_path / "rvs.csv")
    assert s.n_spectra == 2 and s.n_pixels == 2401
    np.testing.assert_allclose(s.wave[[0, -1]], [8460.0, 8700.0])
    assert list(s.ids) == ["11", "22"]
    np.testing.assert_allclose(s.flux[1], 0.978)


def test_rave_table_and_image(tmp_path):
    wave = 8420 + 0.4 * np.arange(900)
    t = fits.BinTableHDU.from_columns([fits.Column("wavelength", "D", array=wave),
                                       fits.Column("flux", "D", array=np.ones(900)),
                                       fits.Column("flux_err", "D", array=np.full(900, 0.02))])
    fits.HDUList([fits.PrimaryHDU(), t]).writeto(tmp_path / "r.fits")
    s = get_loader("rave_spectrum")(tmp_path / "r.fits")
    np.testing.assert_allclose(s.wave, wave)
    p = fits.PrimaryHDU(np.ones(900))
    p.header.update(CRVAL1=8420.0, CDELT1=0.4, CRPIX1=1)
    fits.HDUList([p, fits.ImageHDU(np.full(900, 0.02))]).writeto(tmp_path / "r2.fits")
    s2 = get_loader("rave_spectrum")(tmp_path / "r2.fits")
    np.testing.assert_allclose(s2.wave, wave)
    np.testing.assert_allclose(s2.flux_err, 0.02)


def test_galah_ccd(tmp_path):
    n = 4096
    hdr = fits.Header()
    hdr.update(CRVAL1=4713.0, CDELT1=0.046, CRPIX1=1)
    hl = [fits.PrimaryHDU(np.full(n, 500.0), hdr), fits.ImageHDU(np.full(n, 0.01), hdr),
          fits.ImageHDU(np.ones(n), hdr), fits.ImageHDU(np.ones(n), hdr),
          fits.ImageHDU(np.full(n, 0.98), hdr)]
    fits.HDUList(hl).writeto(tmp_path / "g1.fits")
    s = get_loader("galah_spectrum")(tmp_path / "g1.fits")
    assert s.wave[0] == 4713.0 and s.wave[1] == pytest.approx(4713.046)
    np.testing.assert_allclose(s.flux, 0.98)
    np.testing.assert_allclose(s.flux_err, 0.0098)


@pytest.mark.parametrize("name", ["apogee_apstar", "apogee_aspcapstar", "lamost_lrs",
                                  "rave_spectrum", "galah_spectrum"])
def test_corrupt_fits_raise_format_error(tmp_path, name):
    p = tmp_path / "broken.fits"
    p.write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"garbage" * 10)
    with pytest.raises(FormatError, match="broken.fits"):
        LOADERS[name](p)


def test_truncated_apstar_raises(tmp_path):
    _apstar(tmp_path / "a.fits")
    data = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(data[: len(data) // 3])
    with pytest.raises(FormatError):
        LOADERS["apogee_apstar"](tmp_path / "t.fits")


def test_wrong_columns_named(tmp_path):
    pd.DataFrame({"source_id": [1], "wave": [846.0], "flux": [1.0]}).to_csv(tmp_path / "x.csv")
    with pytest.raises(FormatError, match=r"lacks columns \['wavelength', 'flux_error'\]"):
        LOADERS["gaia_rvs"](tmp_path / "x.csv")


# ---------------------------------------------------------------- real survey files
@pytest.mark.realdata
def test_real_lamost_files(realdata):
    files = sorted((realdata / "lamost_lrs").glob("*.fits"))
    assert len(files) == 3
    lasp = pd.read_csv(realdata / "lamost_lrs" / "LASP_CurveFit_inferred.csv")
    for f in files:
        s = LOADERS["lamost_lrs"](f)
        hdr = fits.getheader(f)
        assert s.n_pixels == 3909
        assert 3690 < s.wave[0] < 3710 and 9090 < s.wave[-1] < 9110   # vacuum, log-linear
        np.testing.assert_allclose(np.diff(np.log10(s.wave)), 1e-4, rtol=1e-3)
        assert s.meta["snr"][0] == pytest.approx(hdr["SNRG"])
        assert s.meta["rv"][0] == pytest.approx(hdr["HELIO_RV"])
        assert np.median(s.flux[0][~s.mask[0]]) > 0
        assert (s.flux_err[0][~s.mask[0]] > 0).all()
    assert {"3706009.fits", "3706011.fits"} <= set(lasp["ID"])


@pytest.mark.realdata
def test_real_apstar(realdata):
    f = next((realdata / "apogee_apstar").glob("apStar*.fits"))
    s = LOADERS["apogee_apstar"](f)
    assert s.n_pixels == 8575
    assert s.wave[0] == pytest.approx(15100.80, abs=0.01)
    assert s.wave[-1] == pytest.approx(16999.81, abs=0.01)
    assert s.ids[0] == "2M19485057+5005279"
    assert s.meta["snr"][0] == pytest.approx(137.49, abs=0.01)
    # the chip gaps (zero flux) are flagged; the bulk of the chips is good
    gap = (s.wave > 15810) & (s.wave < 15850)
    assert s.mask[0, gap].all()
    chips = (s.wave > 15200) & (s.wave < 15750)
    assert s.mask[0, chips].mean() < 0.1


@pytest.mark.realdata
def test_real_gaia_rvs(realdata):
    f = next((realdata / "gaia_rvs").glob("GaiaDR3-*.csv"))
    s = LOADERS["gaia_rvs"](f)
    assert s.ids[0] == "1535964555128078720"
    assert 8459.9 < s.wave[0] < 8470 and 8690 < s.wave[-1] <= 8700.01
    grid = fits.getdata(realdata / "gaia_rvs" / "gaia_rvs_wavelength.fits")
    assert grid.size == 2401 and np.isin(np.round(s.wave / 10, 2), np.round(grid, 2)).all()
    assert 0.9 < np.median(s.flux) < 1.1  # normalised
