"""Command line: ``labelcore synth | ingest | build-training-set | info | manifests | train | runs | predict``.

Every command prints what it did and exits non-zero with a one-line message on bad
input (no traceback for user errors)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from labelcore import settings
from labelcore._lazy import load
from labelcore.catalogue import predict_catalogue
from labelcore.data.io import check_not_input, check_replaceable, read_table, spectra_info
from labelcore.data.loaders import open_fits
from labelcore.data.manifests import list_manifests, load_manifest
from labelcore.errors import LabelcoreError
from labelcore.methods import method_names
from labelcore.prep.ingest import ingest, parse_grid
from labelcore.prep.training import PAPER_LABELS, build_from_files, build_training_set
from labelcore.runs import DEFAULT_CALIBRATION_FOLDS, JobQueue, RunStore, build_config, ensure_demo_runs, execute


def _progress(frac, msg):
    print(f"  [{frac * 100:5.1f}%] {msg}", flush=True)


def cmd_ingest(a) -> int:

    wave = parse_grid(a.grid)
    t = time.perf_counter()
    info = ingest(a.files, a.loader, a.out, wave=wave, rest_frame=a.rest_frame, normalise=a.normalise,
                  knot_spacing=a.knot_spacing, on_error="skip" if a.skip_bad else "raise",
                  progress=_progress if a.verbose else None)
    print(f"wrote {a.out}: {info['n_spectra']} spectra from {info['n_files']} files on {wave.size} pixels "
          f"({wave[0]:.1f}-{wave[-1]:.1f} Å) in {time.perf_counter() - t:.1f} s")
    for f, why in info["skipped"].items():
        print(f"  skipped {f}: {why}")
    return 0


def cmd_build(a) -> int:

    names = a.labels.split(",") if a.labels else None
    if names and len(names) == 1 and names[0] in PAPER_LABELS:
        names = PAPER_LABELS[names[0]]
    cuts = []
    for i, c in enumerate(a.cut or [], 1):
        try:
            cuts.append(json.loads(c))
        except json.JSONDecodeError as exc:
            raise LabelcoreError(f"--cut number {i} is not valid JSON ({exc.msg} at character {exc.pos}): "
                                 f"{c!r}") from exc
    check_not_input(a.out, a.survey, a.spectra, a.label_table, what="--out folder")
    check_replaceable(a.out, "training_set", force=a.force)      # before the work, not after
    if a.spectra:
        if not (a.label_table and a.manifest):
            raise LabelcoreError("--spectra needs --label-table and --manifest")
        ts = build_from_files(a.spectra, a.label_table, a.manifest, a.product, names, a.preset, cuts,
                              a.on, a.spectra_on, a.photometry, a.max_stars, a.seed)
    elif a.survey:
        ts = build_training_set(a.survey, a.setup, a.label_source, a.preset, cuts, names,
                                a.photometry, a.max_stars, a.seed)
    else:
        raise LabelcoreError("give a survey folder, or --spectra with --label-table and --manifest")
    print(ts.counts.to_string(index=False))
    ts.save(a.out, force=a.force)
    print(f"saved training set of {len(ts)} spectra x {len(ts.labels.names)} labels to {a.out}")
    return 0


def cmd_info(a) -> int:
    p = Path(a.path)
    if p.is_dir() and (p / "survey.json").exists():
        print((p / "survey.json").read_text())
    elif p.is_dir() and (p / "training_set.json").exists():
        info = json.loads((p / "training_set.json").read_text())
        print(json.dumps({k: v for k, v in info.items() if k != "counts"}, indent=2))
    elif p.suffix in (".h5", ".hdf5"):

        print(json.dumps(spectra_info(p), indent=2, default=str))
    elif p.suffix == ".parquet":

        df = read_table(p)
        print(f"{len(df)} rows x {len(df.columns)} columns")
        print(df.describe().T.to_string())
    elif p.suffix in (".fits", ".fit"):

        with open_fits(p) as hl:
            hl.info()
    else:
        raise LabelcoreError(f"don't know how to describe {p}")
    return 0


def cmd_manifests(a) -> int:

    for name in list_manifests():
        m = load_manifest(name)
        print(f"{name:14s} {m.survey} {m.release}: products {sorted(m.products)}; "
              f"presets {sorted(m.presets)}")
    return 0


def _store(a):

    return RunStore(a.store)


def cmd_train(a) -> int:

    if a.config:
        try:
            cfg = json.loads(Path(a.config).read_text())
        except json.JSONDecodeError as exc:
            raise LabelcoreError(f"{a.config}: not valid JSON ({exc})") from exc
    else:
        if not a.method:
            raise LabelcoreError("give --config FILE or --method with the data options")
        try:
            params = json.loads(a.params) if a.params else {}
        except json.JSONDecodeError as exc:
            raise LabelcoreError(f"--params: not valid JSON ({exc})") from exc
        cfg = build_config(a.method, params, setup=a.setup, n_train=a.n_train, n_test=a.n_test,
                           labels=a.labels.split(",") if a.labels else None, training_set=a.training_set,
                           test_fraction=a.test_fraction, seed=a.seed, photometry=a.photometry, name=a.name,
                           cods=a.cods, calibration_folds=a.calibration_folds)
    store = _store(a)
    if a.background:
        run = JobQueue(store).submit_now(cfg)
        print(f"run {run.id} in {store.root}")
        print("started in the background; follow it with `labelcore runs`")
        return 0
    run = store.create(cfg, claim=f"labelcore train pid {os.getpid()}")   # born claimed: runs here only
    print(f"run {run.id} in {store.root}")
    execute(run, token=run.claim_token, min_interval=0.0 if a.verbose else 2.0)
    st = run.status()
    if st["state"] != "done":
        print(f"run {run.id} {st['state']}: {st.get('error', st.get('message'))}", file=sys.stderr)
        return 1
    m = run.metrics()
    print(f"done in {m['seconds']:.1f} s; held-out scatter (bias) against {m['truth']}:")
    for r in m["bias_scatter"]:
        if r["snr_lo"] is None:
            print(f"  {r['label']:8s} {r['scatter']:.4g} ({r['bias']:+.3g})")
    return 0


def cmd_runs(a) -> int:
    store = _store(a)
    if a.cancel:
        store.get(a.cancel).cancel()
        print(f"cancel requested for {a.cancel}")
        return 0
    tab = store.table()
    if tab.empty:
        print(f"no runs in {store.root}")
    else:
        print(tab.drop(columns=["created"]).to_string(index=False))
    return 0


def cmd_predict(a) -> int:

    model = Path(a.model)
    if not model.exists():
        store = _store(a)
        model = store.get(a.model).path            # a run id
    phot = None
    if a.photometry:

        phot = read_table(a.photometry)
    t = time.perf_counter()
    out = predict_catalogue(model, a.spectra, a.out, chunk_rows=a.chunk_rows, photometry=phot,
                            progress=_progress if a.verbose else None)

    n = len(read_table(out, columns=["obs_id"]))
    dt = time.perf_counter() - t
    print(f"wrote {out}: {n} spectra in {dt:.1f} s ({n / dt:.0f} spectra/s)")
    return 0


def cmd_demo(a) -> int:

    store = RunStore(a.store or settings.demo_models_dir())
    t = time.perf_counter()
    for run in ensure_demo_runs(store):
        token = run.claim(f"labelcore demo pid {os.getpid()}") if run.state == "queued" else None
        if token is not None:
            print(f"training {run.config['name']} ({run.id})", flush=True)
            execute(run, token=token, min_interval=2.0)
        while run.state in ("queued", "running"):     # another process (a served app) is building it
            time.sleep(2.0)
        st = run.status()
        print(f"  {run.config['name']}: {st['state']} {st.get('error') or st.get('message', '')}")
        if st["state"] != "done":
            return 1
    print(f"demo runs ready in {store.root} ({time.perf_counter() - t:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labelcore", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="generate a synthetic survey")
    s.add_argument("--out", help="output folder")
    s.add_argument("--default", action="store_true",
                   help="make (or reuse the cached) embedded default survey")
    s.add_argument("--n-stars", type=int, default=200_000)
    s.add_argument("--n-rave", type=int)
    s.add_argument("--n-lamost", type=int)
    s.add_argument("--n-apogee", type=int)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--force", action="store_true", help="replace --out even if it is not a survey folder")
    s.add_argument("--raw", action="store_true",
                   help="un-normalised, observed-frame spectra (exercise continuum and RV steps)")
    s.set_defaults(fn=lambda a: load("labelcore.data.synth.cli:cmd_synth")(a))
    g = sub.add_parser("ingest", help="survey spectrum files -> one labelcore spectra file on one grid")
    g.add_argument("loader", help="apogee_apstar, apogee_aspcapstar, lamost_lrs, gaia_rvs, rave_spectrum, "
                                  "galah_spectrum")
    g.add_argument("files", nargs="+")
    g.add_argument("--out", required=True, help="output HDF5 spectra file")
    g.add_argument("--grid", required=True, help="START:STOP:STEP (Angstrom) or log:START:STOP:DLOG10")
    g.add_argument("--rest-frame", action="store_true", help="shift by each file's radial velocity")
    g.add_argument("--normalise", action="store_true", help="continuum-normalise (SLAM's P-splines)")
    g.add_argument("--knot-spacing", type=float, default=50.0)
    g.add_argument("--skip-bad", action="store_true", help="skip unreadable files (listed) instead of stopping")
    g.add_argument("--verbose", action="store_true")
    g.set_defaults(fn=cmd_ingest)
    b = sub.add_parser("build-training-set", help="cross-match, cut and save a training set")
    b.add_argument("survey", nargs="?", help="survey folder made by `labelcore synth`")
    b.add_argument("--spectra", help="instead of a survey folder: a spectra file (e.g. from `labelcore ingest`)")
    b.add_argument("--label-table", help="with --spectra: the survey's label table (FITS/CSV/Parquet)")
    b.add_argument("--manifest", help="with --spectra: the label table's manifest, e.g. apogee_dr17")
    b.add_argument("--product", default="catalogue", help="the manifest's table product (default catalogue)")
    b.add_argument("--on", default="source_id", help="canonical id column to match on (source_id, id, ...)")
    b.add_argument("--spectra-on", help="spectra metadata column holding that id (default: same name; "
                                        "obs_id = the file's ids)")
    b.add_argument("--out", required=True)
    b.add_argument("--setup", default="rave", choices=["rave", "lamost", "apogee"])
    b.add_argument("--label-source", default="catalogue", choices=["catalogue", "galah"])
    b.add_argument("--preset", help="preset of the manifest (synthetic for a survey folder), e.g. guiglion2020")
    b.add_argument("--cut", action="append",
                   help='extra cut as JSON, e.g. \'{"column": "teff", "op": "<", "value": 5500}\'')
    b.add_argument("--labels", help="comma-separated names or a paper key (guiglion2020, zhang2020, horta2024)")
    b.add_argument("--photometry", action="store_true")
    b.add_argument("--max-stars", type=int)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true", help="replace --out even if it is not a training set")
    b.set_defaults(fn=cmd_build)
    i = sub.add_parser("info", help="describe a survey, training set, spectra or table file")
    i.add_argument("path")
    i.set_defaults(fn=cmd_info)
    m = sub.add_parser("manifests", help="list survey manifests and their presets")
    m.set_defaults(fn=cmd_manifests)
    t = sub.add_parser("train", help="train a method (a run in the run store)")
    t.add_argument("--config", help="run config as JSON (see labelcore.runs)")
    t.add_argument("--method", choices=method_names())
    t.add_argument("--params", help='hyper-parameters as JSON, e.g. \'{"n_folds": 3}\'')
    t.add_argument("--training-set", help="folder saved by build-training-set (else synthetic data)")
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--setup", default="rave", choices=["rave", "lamost", "apogee"])
    t.add_argument("--n-train", type=int, default=1000)
    t.add_argument("--n-test", type=int, default=500)
    t.add_argument("--labels", help="comma-separated label names (synthetic data)")
    t.add_argument("--photometry", action=argparse.BooleanOptionalAction, default=None,
                   help="absolute magnitudes + A_V as inputs (default: the method's paper; on for the CNN)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", default="")
    t.add_argument("--cods", action="store_true", help="also compute coefficients of dependence (SLAM)")
    t.add_argument("--calibration-folds", type=int, default=DEFAULT_CALIBRATION_FOLDS, metavar="K",
                   help=f"K-fold refits that calibrate the total errors (default {DEFAULT_CALIBRATION_FOLDS}; "
                        "0 = formal errors only)")
    t.add_argument("--store", help="run store folder (default: <data dir>/runs)")
    t.add_argument("--background", action="store_true", help="start as a subprocess and return")
    t.add_argument("--verbose", action="store_true", help="log every progress message")
    t.set_defaults(fn=cmd_train)
    r = sub.add_parser("runs", help="list runs (or cancel one)")
    r.add_argument("--store", help="run store folder (default: <data dir>/runs)")
    r.add_argument("--cancel", metavar="RUN_ID")
    r.set_defaults(fn=cmd_runs)
    pr = sub.add_parser("predict", help="label every spectrum of a spectra file (a catalogue, Parquet)")
    pr.add_argument("model", help="run id, run folder or saved model folder")
    pr.add_argument("spectra", help="labelcore HDF5 spectra file (e.g. survey/spectra_rave.h5)")
    pr.add_argument("--out", required=True, help="output Parquet catalogue")
    pr.add_argument("--chunk-rows", type=int, default=4096)
    pr.add_argument("--photometry", help="CNN with photometry: Parquet table keyed by obs_id or source_id")
    pr.add_argument("--store", help="run store folder (default: <data dir>/runs)")
    pr.add_argument("--verbose", action="store_true")
    pr.set_defaults(fn=cmd_predict)
    d = sub.add_parser("demo", help="build (or reuse) the Spectra tab's demo runs")
    d.add_argument("--store", help="demo run store (default: <data dir>/demo_runs)")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (LabelcoreError, OSError, ValueError) as exc:
        # user errors and what the operating system refuses (no such file, permission,
        # a folder where a file was expected, disk full): one line, exit code 2
        print(f"labelcore {args.cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"labelcore {args.cmd}: error: out of memory (try fewer spectra at a time)", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        why = exc.strerror or type(exc).__name__
        return f"{exc.filename}: {why}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
