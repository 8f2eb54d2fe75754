"""The run store and job queue (labelcore.runs): a run folder holds what the app and the
CLI need (status, model, curves, predictions, metrics), written atomically, for every
method and every way a run can end."""

import json
import os
import time

import numpy as np
import pytest

from labelcore.errors import ValidationError
from labelcore.evaluate import bias_scatter
from labelcore.runs import JobQueue, RunError, RunStore, execute, parse_config

LABELS = ["teff", "logg", "m_h"]


def synth(n_train=300, n_test=120, seed=3, **kw):
    return {"kind": "synthetic", "setup": "rave", "n_train": n_train, "n_test": n_test, "seed": seed,
            "labels": LABELS, **kw}


def test_lux_run_in_process_writes_model_predictions_metrics_and_curves(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"method": "Lux", "params": {"n_latent": 8, "omega": 1.0}, "data": synth()})
    assert run.state == "queued"
    execute(run)
    st = run.status()
    assert st["state"] == "done" and st["fraction"] == 1.0, st
    pred = run.predictions()
    assert len(pred) == 120
    # the stored predictions are the saved model's predictions of the held-out stars
    from labelcore.data.synth.datasets import labelled_set

    te = labelled_set("rave", 420, seed=3, label_names=LABELS, snr=(20, 300)).split(300)[1]
    y, e = run.model().predict(te.flux, flux_err=te.flux_err, return_std=True)
    np.testing.assert_allclose(pred[[f"{n}_pred" for n in LABELS]].to_numpy(), y, rtol=1e-6)
    np.testing.assert_allclose(pred[[f"{n}_pred_err" for n in LABELS]].to_numpy(), e, rtol=1e-6)
    np.testing.assert_allclose(pred[LABELS].to_numpy(), te.truth)
    # metrics equal a direct evaluation against the truth; Lux learns Teff on 300 stars
    m = run.metrics()
    direct = bias_scatter(y, te.truth, LABELS, snr=te.snr)
    overall = {r["label"]: r for r in m["bias_scatter"] if r["snr_lo"] is None}
    for n in LABELS:
        assert overall[n]["scatter"] == pytest.approx(direct[(direct.label == n) & direct.snr_lo.isna()]
                                                      .scatter.iloc[0], rel=1e-6)
    assert overall["teff"]["scatter"] < 300 and overall["m_h"]["scatter"] < 0.2
    curves = run.curves()
    assert list(curves["chi2"].columns[:3]) == ["step", "agenda", "iteration"]
    assert (curves["chi2"]["agenda"] == 1).sum() == 5
    assert "started" in run.log_text() and "done" in run.log_text()
    row = store.table().iloc[0]
    assert row["state"] == "done" and row["method"] == "Lux"


def test_slam_and_cnn_curves_tables(finished_runs):
    r = finished_runs["SLAM"]
    c = r.curves()
    pix, grid = c["pixels"], c["grid"]
    model = r.model()
    assert len(pix) == model.n_pixels_ and len(grid) == 4 * model.n_pixels_
    np.testing.assert_allclose(pix["cv_mse"], model.cv_mse_)
    # the grid row marked "chosen" is the pixel's minimum and has the chosen (C, gamma)
    ch = grid[grid.chosen].set_index("pixel")
    np.testing.assert_allclose(ch.loc[pix.pixel, "C"], pix["C"])
    np.testing.assert_allclose(ch.loc[pix.pixel, "gamma"], pix["gamma"])
    np.testing.assert_allclose(ch.loc[pix.pixel, "cv_mse"], grid.groupby("pixel").cv_mse.min())

    c2 = finished_runs["CNN"].curves()
    mem, ep = c2["members"], c2["epochs"]
    assert len(mem) == 5 and mem["kept"].sum() == 4          # worst 20 % dropped
    assert mem.loc[~mem.kept, "final_test_loss"].min() >= mem.loc[mem.kept, "final_test_loss"].max()
    assert (mem["final_test_loss"] <= mem["loss_cut"]).sum() == 4
    assert set(ep.columns) >= {"member", "epoch", "train_loss", "test_loss", "test_mae", "kept"}
    last = ep.sort_values("epoch").groupby("member").test_loss.last()
    np.testing.assert_allclose(last.to_numpy(), mem["final_test_loss"].to_numpy(), rtol=1e-6)

    c3 = finished_runs["Lux"].curves()
    g = c3["cv_grid"]
    assert len(g) == 4 and g["best"].sum() == 1 and len(c3["cv_folds"]) == 12
    best = g[g.best].iloc[0]
    model = finished_runs["Lux"].model()
    assert (model.n_latent_, model.omega_) == (best["n_latent"], best["omega"])


def test_cannon_run_calibrates_its_errors_and_reports_z_spreads(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"method": "Cannon", "data": synth(n_train=600, n_test=400)})
    execute(run)
    assert run.status()["state"] == "done", run.status()
    pred = run.predictions()
    model = run.model()
    assert model.error_model_ is not None                        # saved with the model
    tot = pred[[f"{n}_pred_err_total" for n in LABELS]].to_numpy()
    formal = pred[[f"{n}_pred_err" for n in LABELS]].to_numpy()
    em = model.error_model_                                      # the formal part is in the total
    assert np.isfinite(tot).all() and (tot >= formal * em.alpha * em.kappa.min(axis=1) * (1 - 1e-9)).all()
    m = run.metrics()
    overall = {r["label"]: r for r in m["bias_scatter"] if r["snr_lo"] is None}
    for n in LABELS:      # the calibrated errors fit the held-out stars' scatter
        assert 0.75 < overall[n]["z_total"] < 1.3, (n, overall[n])
    assert [r["label"] for r in m["error_model"]] == LABELS
    # calibration off: formal errors only
    run0 = store.create({"method": "Cannon", "data": synth(n_train=600, n_test=400), "calibration_folds": 0})
    execute(run0)
    assert "teff_pred_err_total" not in run0.predictions() and run0.metrics()["error_model"] is None
    with pytest.raises(ValidationError, match="calibration_folds"):
        parse_config({"method": "Cannon", "data": synth(), "calibration_folds": 1})


def test_bad_configs_are_refused_with_the_field_named(tmp_path):
    with pytest.raises(ValidationError, match="method"):
        parse_config({"method": "XGBoost", "data": synth()})
    with pytest.raises(ValidationError, match="no hyper-parameter"):
        parse_config({"method": "SLAM", "params": {"n_fold": 3}, "data": synth()})
    with pytest.raises(ValidationError, match=r"\['tef'\] are not labels"):
        parse_config({"method": "Lux", "data": synth(labels=["tef", "logg"])})
    with pytest.raises(ValidationError, match="n_train"):
        parse_config({"method": "Lux", "data": synth(n_train=0)})
    with pytest.raises(ValidationError, match="not a saved training set"):
        parse_config({"method": "Lux", "data": {"kind": "training_set", "path": str(tmp_path)}})
    with pytest.raises(ValidationError, match="photometry is not an input of Lux"):
        parse_config({"method": "Lux", "data": synth(photometry=True)})
    # every hyper-parameter is checked against the method's spec before anything is queued
    for method, params, what in [("Lux", {"n_latent": "many"}, "'n_latent' must be an integer or one of"),
                                 ("Lux", {"n_latent": -7}, "'n_latent' must be >= 1"),
                                 ("Lux", {"omega": float("nan")}, "'omega' must be finite"),
                                 ("CNN", {"batch_size": 0}, "'batch_size' must be >= 1"),
                                 ("CNN", {"max_epochs": 1e9}, "'max_epochs' must be <= 100000"),
                                 ("CNN", {"restore_best_weights": 1}, "must be true or false"),
                                 ("SLAM", {"C_grid": []}, "'C_grid' must not be empty"),
                                 ("SLAM", {"n_jobs": 2.5}, "'n_jobs' must be an integer"),
                                 ("Lux", {"test_prior": "flat"}, "one of \\['latent', 'l2'\\]")]:
        with pytest.raises(ValidationError, match=what):
            parse_config({"method": method, "params": params, "data": synth()})
    # accepted values come back typed as the spec says (JSON numbers, lists -> tuples)
    ok = parse_config({"method": "SLAM", "params": {"n_jobs": None, "C_grid": [1, 10], "n_folds": 3.0},
                       "data": synth()})
    assert ok.params == {"n_jobs": None, "C_grid": [1.0, 10.0], "n_folds": 3}
    with pytest.raises(ValidationError, match="no field"):
        parse_config({"method": "Lux", "data": synth(), "paramz": {}})
    store = RunStore(tmp_path)
    with pytest.raises(ValidationError):
        store.create({"method": "Lux", "data": {"kind": "nope"}})
    assert store.runs() == [] and not any(tmp_path.iterdir())   # nothing half-made


def test_failed_training_records_the_error_and_leaves_no_model(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"method": "CNN", "params": {"n_members": 2}, "data": synth(n_train=20, n_test=5)})
    execute(run)
    st = run.status()
    assert st["state"] == "failed" and "too few to train the CNN" in st["error"]
    assert not (run.path / "model").exists() and not (run.path / "predictions.parquet").exists()
    with pytest.raises(RunError, match="no saved model"):
        run.model()
    with pytest.raises(RunError, match="already failed"):
        execute(run)


def test_a_run_whose_process_died_reads_as_failed(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"method": "Lux", "data": synth()})
    st = json.loads((run.path / "status.json").read_text())
    dead = 2**22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
    st.update(state="running", pid=dead, host=os.uname().nodename)
    (run.path / "status.json").write_text(json.dumps(st))
    assert run.state == "failed" and "ended without a result" in run.status()["error"]


def test_queue_runs_subprocesses_in_order_and_cancels(tmp_path):
    store = RunStore(tmp_path)
    q = JobQueue(store, max_workers=1, grace=20)
    long = q.submit({"method": "SLAM", "params": {"n_folds": 5}, "data": synth(1500, 50)})
    quick = q.submit({"method": "Lux", "params": {"n_latent": 8, "omega": 1.0}, "data": synth()})
    never = q.submit({"method": "Lux", "data": synth()})
    assert q.active == [long.id]          # one at a time, oldest first
    never.cancel()
    assert never.state == "cancelled"
    t0 = time.monotonic()
    while long.status().get("fraction", 0) <= 0.05 and time.monotonic() - t0 < 120:
        q.poll()
        time.sleep(0.2)
    assert long.state == "running"
    long.cancel()
    q.wait([long], timeout=120)
    assert long.state == "cancelled"
    assert not (long.path / "model").exists()
    q.wait([quick], timeout=300)
    assert quick.state == "done", quick.status()
    assert quick.model().n_latent_ == 8
    assert never.state == "cancelled" and not (never.path / "model").exists()


def test_dask_client_runs_the_same_execute(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None) as client:
        store = RunStore(tmp_path)
        q = JobQueue(store, client=client)
        run = q.submit({"method": "Lux", "params": {"n_latent": 8, "omega": 1.0}, "data": synth()})
        q.wait([run], timeout=300)
    assert run.state == "done", run.status()
    assert len(run.predictions()) == 120


def test_training_set_runs(small_survey, tmp_path):
    from labelcore.prep.training import build_training_set

    ts = build_training_set(small_survey, "rave", label_names=LABELS, max_stars=400, seed=1)
    ts.save(tmp_path / "ts")
    store = RunStore(tmp_path / "runs")
    run = store.create({"method": "Lux", "params": {"n_latent": 8, "omega": 1.0},
                        "data": {"kind": "training_set", "path": str(tmp_path / "ts"), "test_fraction": 0.25}})
    execute(run)
    assert run.state == "done", run.status()
    pred = run.predictions()
    assert len(pred) == 100 and np.isfinite(pred["snr"]).all()
    assert run.metrics()["truth"] == "catalogue labels"


def test_prediction_run_labels_a_survey_file_and_joins_the_catalogue(finished_runs, small_survey, tmp_path):
    from labelcore.data.io import read_table, spectra_info

    store = RunStore(tmp_path)
    src = finished_runs["Lux"]
    spectra = small_survey / "spectra_rave.h5"
    run = store.create({"task": "predict", "model_run": str(src.path), "spectra": str(spectra),
                        "join": str(small_survey / "catalogue.parquet"), "chunk_rows": 700})
    assert run.config["method"] == "Lux" and run.task == "predict"
    execute(run)
    assert run.state == "done", run.status()
    cat = run.catalogue()
    assert len(cat) == spectra_info(spectra)["n_spectra"] == run.metrics()["n_spectra"]
    ref = read_table(small_survey / "catalogue.parquet").set_index("source_id")
    # predictions next to the survey's own values, matched by source_id
    np.testing.assert_allclose(cat["teff_ref"], ref.loc[cat["source_id"], "teff"].to_numpy())
    assert {"teff", "teff_err", "teff_flag", "component", "phase"} <= set(cat.columns)
    good = cat["snr"] > 50
    assert np.std(cat.loc[good, "teff"] - cat.loc[good, "teff_ref"]) < 400
    # refused: a model run that is not finished, a spectra file that does not exist
    pending = store.create({"method": "Lux", "data": synth()})
    with pytest.raises(ValidationError, match="has no trained model"):
        store.create({"task": "predict", "model_run": str(pending.path), "spectra": str(spectra)})
    with pytest.raises(ValidationError, match="is not a file"):
        store.create({"task": "predict", "model_run": str(src.path), "spectra": str(tmp_path / "x.h5")})
    with pytest.raises(ValidationError, match="'task'"):
        parse_config({"task": "evaluate", "method": "Lux", "data": synth()})


def test_cnn_curves_so_far_grow_during_fit():
    from labelcore.data.synth.datasets import labelled_set
    from labelcore.methods import CNN

    d = labelled_set("rave", 240, seed=8, label_names=LABELS, snr=(50, 200))
    cnn = CNN(n_members=4, members_per_model=2, max_epochs=4, batch_size=32)
    assert cnn.curves_so_far() is None
    seen = []

    def progress(frac, msg):
        df = cnn.curves_so_far()
        seen.append(0 if df is None else len(df))

    cnn.fit(d.flux, d.labels, label_names=LABELS, progress=progress)
    assert seen == sorted(seen) and seen[-1] > seen[0]            # epochs appear as they are trained
    final = cnn.curves_so_far()
    assert not final["training"].any() and sorted(final["member"].unique()) == [0, 1, 2, 3]
    for m, g in final.groupby("member"):
        np.testing.assert_allclose(g["test_loss"], cnn.learning_curves_["test_loss"][m][: len(g)])


def test_live_curves_of_a_training_cnn_run(tmp_path, monkeypatch):
    import labelcore.runs as runs

    store = RunStore(tmp_path)
    q = JobQueue(store, grace=20)
    run = q.submit({"method": "CNN", "params": {"n_members": 3, "max_epochs": 300, "patience": 300, "batch_size": 32},
                    "data": synth(400, 40)})
    t0 = time.monotonic()
    live = None
    while time.monotonic() - t0 < 180:
        q.poll()
        live = run.live_curves()
        if live is not None and live["epoch"].max() >= 2:
            break
        time.sleep(0.5)
    assert live is not None and set(live["member"]) == {0, 1, 2} and live["training"].all()
    assert run.state == "running"
    from app.pages.curves import LearningCurvesPage

    page = LearningCurvesPage(store)
    assert page.run == run.id and "(training)" in next(iter(page.param.run.names))
    view = page.view()
    assert "is training" in view[0].object
    run.cancel()
    q.wait([run], timeout=120)
    assert run.state == "cancelled" and not (run.path / "curves_live").exists()
    page._poll_live()                      # the page notices the end and lists finished runs only
    assert page.param.run.names == {} and page.run is None
    assert runs.LIVE_CURVES_INTERVAL <= 5
