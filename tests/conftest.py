import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata():
    if not REALDATA.exists():
        pytest.skip("../shared/realdata is not present")
    return REALDATA


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory):
    """A small synthetic survey shared by the tests (about 2 s to make)."""
    from labelcore.data.synth.survey import make_survey

    path = tmp_path_factory.mktemp("survey") / "small"
    make_survey(path, n_catalogue=6000, n_spectra={"rave": 1500, "lamost": 400, "apogee": 300},
                seed=7)
    return path


@pytest.fixture()
def rng():
    return np.random.default_rng(12345)


RUN_LABELS = ["teff", "logg", "m_h"]
RUN_DATA = {"kind": "synthetic", "setup": "rave", "n_train": 240, "n_test": 60, "seed": 5, "labels": RUN_LABELS,
            "snr": [20, 300]}


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """A run store with one finished run of each method on the same synthetic data (small
    settings, about 30 s in all): {"store": RunStore, "CNN": Run, "SLAM": Run, "Lux": Run}."""
    from labelcore.runs import RunStore, execute

    store = RunStore(tmp_path_factory.mktemp("runs"))
    cfgs = {
        "SLAM": {"n_folds": 3, "C_grid": [1.0, 10.0], "gamma_grid": [0.01, 0.1]},
        "CNN": {"n_members": 5, "max_epochs": 3, "batch_size": 32},
        "Lux": {"latent_grid": [1, 2], "omega_grid": [1.0, 10.0], "n_folds": 3},
    }
    out = {"store": store}
    for method, params in cfgs.items():
        run = store.create({"method": method, "params": params, "data": dict(RUN_DATA), "name": f"{method} test"})
        execute(run)
        assert run.state == "done", run.status()
        out[method] = run
    return out


# ---------------------------------------------------------------- files in LAMOST's formats
C_KMS = 299_792.458
LAMOST_LINE = 6564.6   # rest wavelength of the injected absorption line (vacuum H-alpha)


def _write_lamost(path, rv, obsid, slope=1e-3):
    """A LAMOST DR8+ COADD file: sloped continuum with one Gaussian line at LAMOST_LINE, shifted by rv."""
    n = 3909
    wave = 10 ** (3.5682 + 1e-4 * np.arange(n))
    centre = LAMOST_LINE * (1 + rv / C_KMS)
    cont = 100 * (1 + slope * (wave - 6000) / 100)
    flux = cont * (1 - 0.6 * np.exp(-0.5 * ((wave - centre) / 2.0) ** 2))
    ivar = np.full(n, 1e4)
    from astropy.io import fits

    p = fits.PrimaryHDU()
    p.header.update(OBSID=obsid, SNRG=100.0, SNRR=120.0, HELIO_RV=rv, CLASS="STAR", SUBCLASS="G5",
                    VACUUM=True, RA=1.0, DEC=2.0)
    cols = [fits.Column(name=k, format=f"{n}E", array=v[None]) for k, v in
            (("FLUX", flux), ("IVAR", ivar), ("WAVELENGTH", wave), ("ANDMASK", 0 * wave),
             ("ORMASK", 0 * wave), ("NORMALIZATION", flux))]
    fits.HDUList([p, fits.BinTableHDU.from_columns(cols, name="COADD")]).writeto(path)
    return path


def _write_lamost_catalogue(path, obsids, rng):
    n = len(obsids)
    cols = {"obsid": np.asarray(obsids, np.int64), "gaia_source_id": np.arange(n, dtype=np.int64) + 5_000_000,
            "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-10, 60, n), "snrg": np.full(n, 80.0),
            "snrr": np.full(n, 90.0), "teff": rng.uniform(4500, 6500, n), "teff_err": np.full(n, 50.0),
            "logg": rng.uniform(1, 5, n), "logg_err": np.full(n, 0.05), "feh": rng.uniform(-1, 0.3, n),
            "feh_err": np.full(n, 0.05), "rv": np.zeros(n), "rv_err": np.ones(n),
            "class": np.array(["STAR"] * n), "subclass": np.array(["G5"] * n)}
    cols["snrg"][1] = 30.0                       # fails the paper's S/N > 40
    cols["teff"][2] = -9999.0                    # the survey's sentinel: a missing label
    from astropy.table import Table

    Table(cols).write(path, format="fits")
    return cols



@pytest.fixture()
def write_lamost():
    """``write_lamost(path, rv, obsid)``: a LAMOST DR8+ COADD spectrum file with one line at
    LAMOST_LINE shifted by ``rv``."""
    return _write_lamost


@pytest.fixture()
def write_lamost_catalogue():
    """``write_lamost_catalogue(path, obsids, rng)``: a LAMOST DR5-format stellar-parameter
    table (columns of the ``lamost_dr5`` manifest)."""
    return _write_lamost_catalogue


def pytest_collection_modifyitems(config, items):
    """Tests marked ``full`` (alternative execution paths: dask, the JAX Keras backend) run
    only with ``LABELCORE_FULL_TESTS=1``; the default run, and CI, stays within its budget."""
    if os.environ.get("LABELCORE_FULL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="alternative path; run with LABELCORE_FULL_TESTS=1")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)
