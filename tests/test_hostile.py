"""Hostile input, table-driven: every bad input gets a clear labelcore error (the CLI: exit
code 2 and one line naming the input) and nothing is half-written.

Each case builds its inputs in a fresh folder, calls the API or the CLI, and states what
must be said. A case is ``(id, action, what)``: ``action(tmp)`` must raise a
:class:`labelcore.errors.LabelcoreError` (API cases) whose message matches ``what``, or,
for CLI cases, return ``(exit code, stderr)`` with exit code 2 and ``what`` in stderr; no
traceback either way. After every case the folder holds no temporary file.
"""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from labelcore.cli import main
from labelcore.data import Labels, Spectra
from labelcore.data.containers import Catalogue
from labelcore.data.io import (
    atomic_dir,
    read_spectra,
    read_spectra_fits,
    read_table,
    spectra_info,
    write_spectra,
    write_table,
)
from labelcore.data.loaders import get_loader
from labelcore.errors import LabelcoreError
from labelcore.methods import load_model, method_class, method_names
from labelcore.prep.cuts import apply_cuts
from labelcore.prep.ingest import parse_grid
from labelcore.runs import RunStore, parse_config

FAST = {"Cannon": {"max_iter": 50},
        "Lux": {"n_latent": 4, "omega": 1.0}, "SLAM": {"n_folds": 2, "C_grid": (10.0,), "gamma_grid": (0.1,)},
        "CNN": {"n_members": 2, "members_per_model": 2, "max_epochs": 2, "batch_size": 8, "test_fraction": 0.25}}
WAVE = np.linspace(8420.0, 8780.0, 30)
RNG = np.random.default_rng(0)
FLUX = 1 - 0.2 * RNG.random((40, 30))
LABELS = np.column_stack([RNG.uniform(4000, 6000, 40), RNG.uniform(1, 5, 40)])


@pytest.fixture(scope="module")
def fitted():
    """One small fitted model per method."""
    return {n: method_class(n)(**FAST[n]).fit(FLUX, LABELS, flux_err=np.full_like(FLUX, 0.01), wave=WAVE)
            for n in method_names()}


def _cli(*args):
    """Run the CLI in-process: (exit code, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def _h5(tmp, name="s.h5", n=5, ids=None):
    p = tmp / name
    write_spectra(Spectra(WAVE, FLUX[:n], np.full((n, 30), 0.01), ids=ids), p)
    return p


def _bad_fits(tmp, name="bad.fits", data=b""):
    p = tmp / name
    p.write_bytes(data)
    return p


def _mid_header_corrupt(tmp):
    """A FITS file whose second header is garbage (a damaged download)."""
    p = tmp / "mid.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(10, np.float32))]).writeto(p)
    raw = bytearray(p.read_bytes())
    raw[2880:2880 + 80] = b"XTENSION= 'IMAGE   ' / garbage \x00\x01\x02" + b"\xff" * 44
    raw[2880 + 80: 2880 + 400] = b"\x00" * 320
    p.write_bytes(bytes(raw))
    return p


def _other_fits(tmp):
    p = tmp / "table.fits"
    fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))]).writeto(p)
    return p


def _flux1d_h5(tmp):
    p = tmp / "flux1d.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "labelcore-spectra"
        f.attrs["version"] = 1
        f["wave"] = WAVE
        for k in ("flux", "flux_err", "mask"):
            f[k] = np.ones(30, np.float32)
        f["ids"] = np.array([b"a"])
    return p


def _run_done(tmp):
    """A run folder marked done with a saved Lux model, and a spectra file on its grid."""
    store = RunStore(tmp / "runs")
    run = store.create({"method": "Lux", "params": {"n_latent": 4, "omega": 1.0},
                        "data": {"kind": "synthetic", "setup": "rave", "n_train": 30, "n_test": 5,
                                 "labels": ["teff", "logg"]}})
    method_class("Lux")(n_latent=4, omega=1.0).fit(FLUX, LABELS, wave=WAVE).save(run.path / "model")
    run._set_status(state="done")
    return run


def _spectra(**kw):
    base = {"wave": WAVE, "flux": FLUX[:3], "flux_err": np.full((3, 30), 0.01)}
    base.update(kw)
    return Spectra(**base)


# ----------------------------------------------------------------------------- API cases
API = [
    # containers
    ("spectra wave decreasing", lambda t: _spectra(wave=WAVE[::-1]), "increasing"),
    ("spectra wave 2-D", lambda t: _spectra(wave=np.tile(WAVE, (2, 1))), "wave"),
    ("spectra wave complex", lambda t: _spectra(wave=WAVE + 1j), "complex|real"),
    ("spectra wave NaN", lambda t: _spectra(wave=np.where(np.arange(30) == 3, np.nan, WAVE)), "finite|NaN"),
    ("spectra flux shape", lambda t: _spectra(flux=FLUX[:3, :20]), "flux"),
    ("spectra flux text", lambda t: _spectra(flux=np.full((3, 30), "a")), "numeric|number"),
    ("spectra flux complex", lambda t: _spectra(flux=FLUX[:3] + 1j), "complex|real"),
    ("spectra flux_err shape", lambda t: _spectra(flux_err=np.ones((3, 29))), "flux_err"),
    ("spectra mask shape", lambda t: _spectra(mask=np.zeros((2, 30), bool)), "mask"),
    ("spectra ids length", lambda t: _spectra(ids=np.array(["a", "b"])), "ids"),
    ("spectra duplicate ids", lambda t: _spectra(ids=np.array(["a", "b", "a"])), "duplicate.*'a'"),
    ("spectra 3-D flux", lambda t: _spectra(flux=np.ones((3, 30, 2))), "flux"),
    ("labels 3-D", lambda t: Labels(np.ones((3, 2, 2)), ["a", "b"]), "2-D|shape"),
    ("labels names count", lambda t: Labels(np.ones((3, 2)), ["teff"]), "name"),
    ("labels negative error", lambda t: Labels(np.ones((3, 1)), ["teff"], errors=-np.ones((3, 1))), "error|uncert"),
    ("labels infinite", lambda t: Labels(np.array([[1.0], [np.inf]]), ["teff"]), "inf"),
    ("labels duplicate names", lambda t: Labels(np.ones((3, 2)), ["teff", "teff"]), "duplicate"),
    ("labels text values", lambda t: Labels(np.full((3, 1), "x"), ["teff"]), "numeric|number"),
    ("catalogue duplicate ids", lambda t: Catalogue(pd.DataFrame({"id": [1, 1], "teff": [1.0, 2.0]})), "duplicate"),
    ("catalogue no id column", lambda t: Catalogue(pd.DataFrame({"teff": [1.0]})), "'id'"),
    # io
    ("read_table a folder", lambda t: read_table(t), "folder|directory"),
    ("read_table zero bytes", lambda t: read_table(_bad_fits(t, "z.parquet")), "not a readable Parquet"),
    ("read_table text file", lambda t: read_table(_bad_fits(t, "x.parquet", b"hello")), "not a readable Parquet"),
    ("read_table missing", lambda t: read_table(t / "nope.parquet"), "no table at"),
    ("read_spectra text file", lambda t: read_spectra(_bad_fits(t, "x.h5", b"hello")), "not a labelcore spectra"),
    ("read_spectra zero bytes", lambda t: read_spectra(_bad_fits(t, "z.h5")), "not a labelcore spectra"),
    ("read_spectra foreign hdf5", lambda t: (h5py.File(t / "f.h5", "w").close(), read_spectra(t / "f.h5")),
     "not a labelcore spectra"),
    ("read_spectra 1-D flux", lambda t: read_spectra(_flux1d_h5(t)), "flux.*2-D|\\[N, P\\]"),
    ("read_spectra missing", lambda t: read_spectra(t / "nope.h5"), "no spectra file at"),
    ("spectra_info corrupt", lambda t: spectra_info(_bad_fits(t, "x.h5", b"\x89HDF garbage")),
     "not a labelcore spectra"),
    ("read_spectra_fits another FITS", lambda t: read_spectra_fits(_other_fits(t)), "not a labelcore spectra"),
    ("read_spectra_fits zero bytes", lambda t: read_spectra_fits(_bad_fits(t)), "FITS"),
    ("write_table parent is a file", lambda t: write_table(pd.DataFrame({"a": [1]}),
                                                           _bad_fits(t, "f", b"x") / "o.parquet"), "not a folder"),
    ("write_table onto a folder", lambda t: write_table(pd.DataFrame({"a": [1]}), t), "is a folder"),
    ("atomic_dir onto a user folder", lambda t: ((t / "mine").mkdir(), (t / "mine" / "thesis.tex").write_text("x"),
                                                 atomic_dir(t / "mine", "survey").__enter__()), "refusing"),
    ("atomic_dir onto a file", lambda t: (_bad_fits(t, "f", b"x"), atomic_dir(t / "f", "model").__enter__()),
     "not a folder"),
    # loaders
    *[(f"{name} zero bytes", lambda t, name=name: get_loader(name)(_bad_fits(t)), "not a readable FITS")
      for name in ("apogee_apstar", "apogee_aspcapstar", "lamost_lrs", "rave_spectrum", "galah_spectrum")],
    *[(f"{name} header corrupt mid-file", lambda t, name=name: get_loader(name)(_mid_header_corrupt(t)),
       "FITS|HDU|missing")
      for name in ("apogee_apstar", "apogee_aspcapstar", "lamost_lrs", "rave_spectrum", "galah_spectrum")],
    ("apstar negative row", lambda t: get_loader("apogee_apstar")(_apstar(t), row=-3), "row -3"),
    ("apstar row too large", lambda t: get_loader("apogee_apstar")(_apstar(t), row=7), "row 7"),
    ("gaia rvs text garbage", lambda t: get_loader("gaia_rvs")(_bad_fits(t, "x.csv", b"no,columns\n1,2\n")),
     "flux|column"),
    ("unknown loader", lambda t: get_loader("sdss"), "no spectrum loader"),
    # grids and cuts
    ("grid step zero", lambda t: parse_grid("3900:8800:0"), "step must be positive"),
    ("grid 4.9e9 pixels", lambda t: parse_grid("3900:8800:1e-6"), "at most 200,000"),
    ("grid reversed", lambda t: parse_grid("8800:3900:1"), "larger than start"),
    ("grid words", lambda t: parse_grid("a:b:c"), "grid 'a:b:c'"),
    ("grid log zero start", lambda t: parse_grid("log:0:8800:1e-4"), "positive"),
    ("grid two parts", lambda t: parse_grid("3900:8800"), "START:STOP:STEP"),
    ("grid infinite", lambda t: parse_grid("3900:inf:1"), "finite"),
    ("cut value text", lambda t: apply_cuts(pd.DataFrame({"teff": [5000.0]}),
                                            [{"column": "teff", "op": "<", "value": "hot"}]), "'hot'.*number"),
    ("cut unknown op", lambda t: apply_cuts(pd.DataFrame({"teff": [5000.0]}),
                                            [{"column": "teff", "op": "<<", "value": 1}]), "op"),
    ("cut unknown column", lambda t: apply_cuts(pd.DataFrame({"teff": [5000.0]}),
                                                [{"column": "tef", "op": "<", "value": 1}]), "tef"),
    ("cut between three", lambda t: apply_cuts(pd.DataFrame({"teff": [5000.0]}),
                                               [{"column": "teff", "op": "between", "value": [1, 2, 3]}]),
     "between"),
    ("cut forbidden expr", lambda t: apply_cuts(pd.DataFrame({"teff": [5000.0]}),
                                                [{"expr": "__import__('os')"}]), "forbidden"),
    ("cut leaves nothing", lambda t: apply_cuts(pd.DataFrame({"teff": [5000.0]}),
                                                [{"column": "teff", "op": ">", "value": 1e5}]), "no star|no row|empty"),
    # run configs
    ("config not a mapping", lambda t: parse_config(["Lux"]), "mapping"),
    ("config unknown task", lambda t: parse_config({"task": "evaluate"}), "'task'"),
    ("config unknown method", lambda t: parse_config({"method": "Cannon2", "data": {}}), "'method'"),
    ("config unknown data kind", lambda t: parse_config({"method": "Lux", "data": {"kind": "sdss"}}), "'kind'"),
    ("config training set missing", lambda t: parse_config({"method": "Lux", "data": {"kind": "training_set",
                                                                                      "path": str(t)}}),
     "not a saved training set"),
    ("config snr reversed", lambda t: parse_config({"method": "Lux", "data": {"kind": "synthetic", "n_train": 9,
                                                                              "n_test": 2, "snr": [300, 20]}}),
     "'snr'"),
    ("config n_train huge", lambda t: parse_config({"method": "Lux", "data": {"kind": "synthetic",
                                                                              "n_train": 10**9, "n_test": 2}}),
     "n_train"),
    ("config seed negative", lambda t: parse_config({"method": "Lux", "data": {"kind": "synthetic", "n_train": 9,
                                                                               "n_test": 2, "seed": -1}}), "seed"),
    ("config name not text", lambda t: parse_config({"method": "Lux", "name": 5, "data": {
        "kind": "synthetic", "n_train": 9, "n_test": 2}}), "'name'"),
    ("predict config not a run", lambda t: parse_config({"task": "predict", "model_run": str(t), "spectra": "x"}),
     "not a run folder"),
    ("lux latent too large", lambda t: parse_config({"method": "Lux", "params": {"n_latent": 10**8}, "data": {
        "kind": "synthetic", "n_train": 9, "n_test": 2}}), "n_latent"),
    ("cnn members huge", lambda t: parse_config({"method": "CNN", "params": {"n_members": 10**6}, "data": {
        "kind": "synthetic", "n_train": 9, "n_test": 2}}), "n_members"),
    ("slam grid of text", lambda t: parse_config({"method": "SLAM", "params": {"gamma_grid": ["a"]}, "data": {
        "kind": "synthetic", "n_train": 9, "n_test": 2}}), "gamma_grid"),
    # models
    ("lux latents beyond memory", lambda t: method_class("Lux")(n_latent=4000, omega=1.0).fit(
        np.ones((40, 8000)) + RNG.normal(0, 0.01, (40, 8000)), LABELS), "GiB available"),
    ("load a folder without a model", lambda t: load_model(t), "not a saved labelcore model"),
    ("load corrupt params.json", lambda t: ((t / "params.json").write_text("{nope"), load_model(t)),
     "not a saved labelcore model"),
    ("load corrupt arrays", lambda t: _corrupt_arrays(t), "damaged or incomplete"),
]


def _apstar(tmp, nrow=3, npix=200):
    """A small file in apStar layout (3 rows: combined, combined, one visit)."""
    h = fits.Header()
    h.update(CRVAL1=4.179, CDELT1=6e-6, CRPIX1=1)
    p = fits.PrimaryHDU()
    p.header.update(OBJID="2M00000000+0000000", SNR=88.0, VHELIO=1.0, NVISITS=nrow - 2)
    path = tmp / "apStar.fits"
    fits.HDUList([p, fits.ImageHDU(np.ones((nrow, npix)), h), fits.ImageHDU(np.ones((nrow, npix)), h),
                  fits.ImageHDU(np.zeros((nrow, npix), np.int64), h)]).writeto(path)
    return path


def _corrupt_arrays(tmp):
    m = method_class("Lux")(n_latent=4, omega=1.0).fit(FLUX, LABELS)
    m.save(tmp / "m")
    (tmp / "m" / "arrays.npz").write_bytes(b"PK\x03\x04 garbage")
    return load_model(tmp / "m")


# methods: the same bad inputs for every registered method
for _name in method_names():
    API += [
        (f"{_name} fit 3-D flux", lambda t, n=_name: method_class(n)(**FAST[n]).fit(np.ones((4, 3, 2)), LABELS[:4]),
         "2-D"),
        (f"{_name} fit row mismatch", lambda t, n=_name: method_class(n)(**FAST[n]).fit(FLUX, LABELS[:5]), "rows"),
        (f"{_name} fit text flux", lambda t, n=_name: method_class(n)(**FAST[n]).fit(np.full((40, 30), "x"), LABELS),
         "numeric|number"),
        (f"{_name} fit complex flux", lambda t, n=_name: method_class(n)(**FAST[n]).fit(FLUX + 1j, LABELS),
         "complex|real"),
        (f"{_name} fit infinite label", lambda t, n=_name: method_class(n)(**FAST[n]).fit(
            FLUX, np.where(np.arange(80).reshape(40, 2) == 7, np.inf, LABELS)), "infinite"),
        (f"{_name} fit label all NaN", lambda t, n=_name: method_class(n)(**FAST[n]).fit(
            FLUX, np.column_stack([LABELS[:, 0], np.full(40, np.nan)])), "missing for every star"),
        (f"{_name} fit flux_err shape", lambda t, n=_name: method_class(n)(**FAST[n]).fit(
            FLUX, LABELS, flux_err=np.ones((40, 29))), "flux_err"),
        (f"{_name} fit no rows", lambda t, n=_name: method_class(n)(**FAST[n]).fit(FLUX[:0], LABELS[:0]),
         "no spectra"),
        (f"{_name} predict unfitted", lambda t, n=_name: method_class(n)(**FAST[n]).predict(FLUX), "not fitted"),
        (f"{_name} predict wrong pixels", lambda t, n=_name: _fitted(n).predict(FLUX[:, :20]), "20 pixels"),
        (f"{_name} predict other grid", lambda t, n=_name: _fitted(n).predict(FLUX, wave=WAVE + 3.0),
         "wavelength grid differs"),
        (f"{_name} predict empty row", lambda t, n=_name: _fitted(n).predict(
            np.where(np.arange(40)[:, None] == 2, np.nan, FLUX)), "row 2 has no usable pixel"),
        (f"{_name} boundary flags shape", lambda t, n=_name: _fitted(n).boundary_flags(np.ones((3, 5))), "expected"),
        (f"{_name} bad hyper-parameter", lambda t, n=_name: method_class(n).validate_params({"random_state": -1}),
         "random_state"),
    ]

_FITTED = {}


def _fitted(name):
    if name not in _FITTED:
        _FITTED[name] = method_class(name)(**FAST[name]).fit(FLUX, LABELS, wave=WAVE)
    return _FITTED[name]


def str_re(s):
    return re.escape(s)


# ----------------------------------------------------------------------------- CLI cases
def _ts_json_corrupt(t):
    (t / "ts").mkdir()
    (t / "ts" / "training_set.json").write_text("{not json")
    return t / "ts"


CLI = [
    ("info zero-byte FITS", lambda t: _cli("info", _bad_fits(t)), "not a readable FITS"),
    ("info corrupt FITS", lambda t: _cli("info", _bad_fits(t, "c.fits", b"SIMPLE  =  garbage" * 10)),
     "not a readable FITS"),
    ("info corrupt HDF5", lambda t: _cli("info", _bad_fits(t, "c.h5", b"nope")), "not a labelcore spectra"),
    ("info unknown suffix", lambda t: _cli("info", _bad_fits(t, "c.xyz", b"nope")), "don't know how"),
    ("info missing", lambda t: _cli("info", t / "nope.fits"), "nope.fits"),
    ("info corrupt parquet", lambda t: _cli("info", _bad_fits(t, "c.parquet", b"PAR1")), "not a readable Parquet"),
    ("ingest grid step zero", lambda t: _cli("ingest", "lamost_lrs", _bad_fits(t), "--out", t / "o.h5",
                                             "--grid", "3900:8800:0"), "step must be positive"),
    ("ingest huge grid", lambda t: _cli("ingest", "lamost_lrs", _bad_fits(t), "--out", t / "o.h5",
                                        "--grid", "3900:8800:1e-6"), "at most 200,000"),
    ("ingest missing file", lambda t: _cli("ingest", "lamost_lrs", t / "nope.fits", "--out", t / "o.h5",
                                           "--grid", "3900:8800:1"), "nope.fits"),
    ("ingest out is an input", lambda t: _cli("ingest", "lamost_lrs", _bad_fits(t), "--out", t / "bad.fits",
                                              "--grid", "3900:8800:1"), "also an input"),
    ("ingest out is a folder", lambda t: _cli("ingest", "lamost_lrs", _bad_fits(t), "--out", t,
                                              "--grid", "3900:8800:1"), "is a folder|also an input"),
    ("ingest unknown loader", lambda t: _cli("ingest", "sdss", _bad_fits(t), "--out", t / "o.h5",
                                             "--grid", "3900:8800:1"), "no spectrum loader"),
    ("train params not JSON", lambda t: _cli("train", "--method", "Lux", "--params", "{n_latent: 3}",
                                             "--store", t), "--params: not valid JSON"),
    ("train params wrong type", lambda t: _cli("train", "--method", "Lux", "--params", '{"n_latent": "many"}',
                                               "--store", t), "'n_latent' must be an integer"),
    ("train params negative", lambda t: _cli("train", "--method", "Lux", "--params", '{"n_latent": -7}',
                                             "--store", t), "'n_latent' must be >= 1"),
    ("train params huge", lambda t: _cli("train", "--method", "CNN", "--params", '{"max_epochs": 1e9}',
                                         "--store", t), "'max_epochs' must be <="),
    ("train batch size zero", lambda t: _cli("train", "--method", "CNN", "--params", '{"batch_size": 0}',
                                             "--store", t), "'batch_size' must be >= 1"),
    ("train n-train zero", lambda t: _cli("train", "--method", "Lux", "--n-train", "0", "--store", t), "n_train"),
    ("train config is a folder", lambda t: _cli("train", "--config", t, "--store", t / "s"), str_re("Is a directory")),
    ("train config not JSON", lambda t: _cli("train", "--config", _bad_fits(t, "c.json", b"{x"), "--store", t),
     "not valid JSON"),
    ("train config missing", lambda t: _cli("train", "--config", t / "none.json", "--store", t), "none.json"),
    ("train training set corrupt", lambda t: _cli("train", "--method", "Lux", "--training-set", _ts_json_corrupt(t),
                                                  "--store", t / "s"), "not a saved training set"),
    ("train store is a file", lambda t: _cli("train", "--method", "Lux", "--store", _bad_fits(t, "f", b"x")),
     "f"),
    ("runs cancel unknown", lambda t: _cli("runs", "--store", t, "--cancel", "nope"), "no run 'nope'"),
    ("predict unknown run", lambda t: _cli("predict", "nope", _h5(t), "--out", t / "o.parquet", "--store", t / "r"),
     "no run 'nope'"),
    ("predict out is the spectra", lambda t: _predict_onto_input(t), "also an input"),
    ("predict out is a folder", lambda t: _cli("predict", _run_done(t).path, _h5(t), "--out", t),
     "is a folder|also an input"),
    ("predict out is another folder", lambda t: ((t / "o").mkdir(), _cli("predict", _run_done(t).path, _h5(t),
                                                                         "--out", t / "o"))[1], "is a folder"),
    ("predict parent is a file", lambda t: _cli("predict", _run_done(t).path, _h5(t), "--out",
                                                _bad_fits(t, "f", b"x") / "o.parquet"), "not a folder"),
    ("predict spectra corrupt", lambda t: _cli("predict", _run_done(t).path, _bad_fits(t, "x.h5", b"x"),
                                               "--out", t / "o.parquet"), "not a labelcore spectra"),
    ("predict chunk rows zero", lambda t: _cli("predict", _run_done(t).path, _h5(t), "--out", t / "o.parquet",
                                               "--chunk-rows", "0"), "chunk_rows"),
    ("build cut not JSON", lambda t: _cli("build-training-set", t, "--out", t / "o", "--cut", "{teff < 5}"),
     "--cut number 1 is not valid JSON"),
    ("build out is an unrelated folder", lambda t: _build_onto_user_folder(t), "refusing to replace"),
    ("build out is the survey", lambda t: _cli("build-training-set", t, "--out", t), "also an input"),
    ("build spectra without table", lambda t: _cli("build-training-set", "--spectra", _h5(t), "--out", t / "o"),
     "--label-table"),
    ("build unknown manifest", lambda t: _cli("build-training-set", "--spectra", _h5(t), "--label-table",
                                              _bad_fits(t, "l.csv", b"a\n1\n"), "--manifest", "sdss_dr1",
                                              "--out", t / "o"), "sdss_dr1"),
    ("synth out is a user folder", lambda t: _synth_onto_user_folder(t), "refusing to replace"),
    ("synth too many spectra", lambda t: _cli("synth", "--out", t / "s", "--n-stars", "100", "--n-rave", "500"),
     r"asked for \d+ spectra from a catalogue of 100"),
]


def _predict_onto_input(t):
    run = _run_done(t)
    sp = _h5(t)
    code, err = _cli("predict", run.path, sp, "--out", sp)
    assert read_spectra(sp).n_spectra == 5          # the input is intact
    return code, err


def _build_onto_user_folder(t):
    mine = t / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (t / "survey").mkdir()
    code, err = _cli("build-training-set", t / "survey", "--out", mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
    return code, err


def _synth_onto_user_folder(t):
    mine = t / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, err = _cli("synth", "--out", mine, "--n-stars", "500", "--n-rave", "20", "--n-lamost", "5",
                     "--n-apogee", "5")
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    return code, err


def _no_temp_left(tmp):
    left = [p for p in tmp.rglob("*") if re.search(r"\.(tmp|partial|old)(\.|$)", p.name)]
    assert not left, left


@pytest.mark.parametrize("case", API, ids=[c[0] for c in API])
def test_api_refuses_bad_input(case, tmp_path):
    _id, action, what = case
    with pytest.raises(LabelcoreError) as info:
        action(tmp_path)
    assert re.search(what, str(info.value), re.IGNORECASE), f"{_id}: {info.value}"
    _no_temp_left(tmp_path)


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_refuses_bad_input(case, tmp_path):
    _id, action, what = case
    code, err = action(tmp_path)
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") <= 1 and err.startswith("labelcore ")
    assert re.search(what, err, re.IGNORECASE), f"{_id}: {err}"
    _no_temp_left(tmp_path)


def test_the_suite_is_large_enough():
    assert len(API) + len(CLI) >= 100


def test_valid_inputs_the_old_code_refused(tmp_path):
    """Inputs that are fine must pass: the cut grammar's numbers (1e5), a cut on a
    float column, an integer-valued float hyper-parameter."""
    df = pd.DataFrame({"teff": [5000.0, 2e5]})
    sel, counts = apply_cuts(df, [{"column": "teff", "op": "<", "value": 1e5}])
    assert sel.tolist() == [True, False]
    sel, _ = apply_cuts(df, [{"expr": "teff < 1e5"}])
    assert sel.tolist() == [True, False]
    assert parse_config({"method": "SLAM", "params": {"n_folds": 3.0}, "data": {
        "kind": "synthetic", "n_train": 9, "n_test": 2}}).params == {"n_folds": 3}
    assert json.loads(json.dumps(parse_config({"method": "Lux", "data": {"kind": "synthetic", "n_train": 9,
                                                                         "n_test": 2}}).to_dict()))
