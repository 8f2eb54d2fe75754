"""The Train, Learning-curves and Compare pages show what the run store holds and launch
what the user set: every plotted number is the core's, and bad settings are refused with
the reason, launching nothing."""

import time

import numpy as np
import pandas as pd
import pytest

pn = pytest.importorskip("panel")
hv = pytest.importorskip("holoviews")

from app.pages.compare import ComparePage  # noqa: E402
from app.pages.curves import LearningCurvesPage  # noqa: E402
from app.pages.train import TrainPage, parse_value  # noqa: E402
from app.state import AppState  # noqa: E402
from labelcore.evaluate import metrics_table  # noqa: E402
from labelcore.methods import Lux  # noqa: E402
from labelcore.runs import JobQueue, RunStore  # noqa: E402


def test_parse_value():
    assert parse_value("cv", "cv") == "cv"
    assert parse_value("8", "cv") == 8
    assert parse_value("[1, 10]", (1.0, 3.0)) == (1, 10)
    assert parse_value("null", None) is None
    assert parse_value("[1, 10^0.5, 10]", (1.0,)) == (1, 10 ** 0.5, 10)
    assert parse_value("", None, allow_none=True) is None
    with pytest.raises(ValueError, match="not a number"):
        parse_value("[1, 2", (1.0,))
    with pytest.raises(ValueError):
        parse_value("  ", 1)


def test_train_page_launches_watches_and_refuses_bad_settings(tmp_path):
    store = RunStore(tmp_path)
    q = JobQueue(store)
    page = TrainPage(AppState(store=store, queue=q, data_roots=[str(tmp_path)]))
    assert page._param_widgets["n_folds"].value == 5            # SLAM's paper default
    page.method = "Lux"
    assert set(page._param_widgets) == set(Lux().get_params())
    assert page._param_widgets["omega_grid"].value == "[0.01, 0.1, 1, 10, 100, 1000]"
    # a typo in a hyper-parameter: nothing is launched, the message names it
    page._param_widgets["n_latent"].value = ""
    assert page.launch() is None
    assert "n_latent" in page._message.text and page._message.kind == "danger"
    assert store.runs() == []
    page._param_widgets["n_latent"].value = "8"
    page._param_widgets["omega"].value = "1.0"
    page.labels, page.n_train, page.n_test, page.seed = ["teff", "logg"], 200, 40, 2
    cfg = page.config()
    assert cfg["params"] == {"n_latent": 8, "omega": 1.0}
    assert cfg["data"] == {"kind": "synthetic", "setup": "rave", "n_train": 200, "n_test": 40, "seed": 2,
                           "labels": ["teff", "logg"], "photometry": False, "snr": [20, 300]}
    run = page.launch()
    assert run is not None and q.active == [run.id]
    q.wait([run], timeout=300)
    page.refresh()
    row = page._table.value.iloc[0]
    assert row["state"] == "done" and row["progress"] == 1.0
    page._table.selection = [0]
    page._show_log()
    assert "done" in page._log.object
    # a training-set path that is not one
    page.data_kind = "training set"
    page.training_set = str(tmp_path / "nothing")
    assert page.launch() is None and "not a saved training set" in page._message.text
    # quick settings and photometry only for the CNN
    page.method = "CNN"
    assert page.photometry is True                 # the paper's CNN reads photometry + A_V
    page.quick_settings()
    assert page.hyperparameters() == {"n_members": 10, "max_epochs": 60, "patience": 10}
    page.method = "SLAM"
    assert page.photometry is False
    assert isinstance(page.__panel__(), pn.Row)


def test_learning_curves_page_plots_the_runs_tables(finished_runs):
    store = finished_runs["store"]
    page = LearningCurvesPage(store)
    assert set(page.param.run.names.values()) == {finished_runs[m].id for m in ("CNN", "SLAM", "Lux")}
    # CNN: one curve per member; the histogram holds every member; the line is the cut
    cnn = finished_runs["CNN"]
    loss, hist = page.plots_for(cnn.id)
    mem = cnn.curves()["members"]
    assert len(loss) == len(mem)
    h, vline = hist.values()
    assert h.dimension_values(1).sum() == len(mem)
    assert vline.data == pytest.approx(mem["loss_cut"].iloc[0])
    # SLAM: per-pixel CV MSE and choices; the heat map counts every pixel once
    slam = finished_runs["SLAM"]
    cv, cpts, gpts, hm = page.plots_for(slam.id)
    pix = slam.curves()["pixels"]
    np.testing.assert_allclose(cv.dimension_values(1), pix["cv_mse"])
    np.testing.assert_allclose(10 ** cpts.dimension_values(1), pix["C"], rtol=1e-9)
    assert hm.dimension_values(2).sum() == len(pix)
    # Lux: chi2 per step and the CV grid with the chosen point starred
    lux = finished_runs["Lux"]
    chi, grid = page.plots_for(lux.id)
    g = lux.curves()["cv_grid"]
    star = grid.values()[1]
    b = g[g.best].iloc[0]
    assert star.dimension_values(1)[0] == str(int(b["n_latent"]))
    assert star.dimension_values(0)[0] == pytest.approx(np.log10(b["omega"]), abs=0.01)
    page.run = lux.id
    assert isinstance(page.view(), pn.Column)
    t = metrics_table(lux.metrics())
    assert t[t["S/N"] == "all"]["label"].tolist() == ["teff", "logg", "m_h"]


def test_learning_curves_page_without_runs(tmp_path):
    page = LearningCurvesPage(RunStore(tmp_path))
    assert page.run is None and isinstance(page.view(), pn.pane.Alert)


def test_compare_page_statistics_and_warnings(finished_runs, tmp_path):
    store = finished_runs["store"]
    page = ComparePage(store)
    assert set(page.runs) == {finished_runs[m].id for m in ("CNN", "SLAM", "Lux")}   # same data: all
    assert page.problems() == []
    page.label = "teff"
    st = page.stats()
    for m in ("CNN", "SLAM", "Lux"):
        run = finished_runs[m]
        p = run.predictions()
        row = st[(st.method == m) & (st.label == "teff") & (st["S/N"] == "all")].iloc[0]
        r = p["teff_pred"] - p["teff"]
        assert row["bias"] == pytest.approx(r.mean()) and row["scatter"] == pytest.approx(r.std(ddof=1))
        assert row["n"] == len(p)
    binned = st[(st.method == "SLAM") & (st.label == "teff") & (st["S/N"] != "all")]
    assert binned["n"].sum() == 60
    assert isinstance(page.plots(), pn.Column) and isinstance(page.table(), pn.widgets.Tabulator)
    wide = page.wide_table()
    assert wide["S/N"].iloc[0] == "all" and wide["stars"].iloc[0] == 60
    slam_row = st[(st.method == "SLAM") & (st.label == "teff") & (st["S/N"] == "all")].iloc[0]
    assert wide[f"scatter · {slam_row['run']}"].iloc[0] == pytest.approx(slam_row["scatter"])
    # a run on other data is flagged, not silently mixed
    from labelcore.runs import execute

    other = store.create({"method": "Lux", "params": {"n_latent": 6, "omega": 1.0},
                          "data": {"kind": "synthetic", "setup": "rave", "n_train": 150, "n_test": 30,
                                   "seed": 9, "labels": ["teff", "logg"]}})
    execute(other)
    page.refresh()
    page.runs = [finished_runs["SLAM"].id, other.id]
    assert any("different data" in m for m in page.problems())
    page.label = "m_h"
    assert any("do not predict m_h" in m for m in page.problems())
    store.delete(other.id)
    empty = ComparePage(RunStore(tmp_path))
    assert isinstance(empty.plots(), pn.pane.Alert)
    assert isinstance(empty.stats(), pd.DataFrame) and empty.stats().empty


def test_training_set_page_builds_counts_plots_and_saves(small_survey, tmp_path):
    from app.pages.training_set import TrainingSetPage, parse_cuts
    from labelcore.prep.training import TrainingSet, build_training_set

    assert parse_cuts('{"column": "teff", "op": "<", "value": 5500}\n\n{"notnull": ["logg"]}') == [
        {"column": "teff", "op": "<", "value": 5500}, {"notnull": ["logg"]}]
    page = TrainingSetPage(small_survey, tmp_path / "sets")
    assert "guiglion2020" in page.param.preset.objects
    page.cuts_text = '{"column": "teff", "op": "<", "value": 5800}'
    ts = page.build()
    direct = build_training_set(small_survey, "rave", "catalogue", "guiglion2020",
                                [{"column": "teff", "op": "<", "value": 5800}],
                                page.labels, True)
    assert len(ts) == len(direct) > 0 and (ts.table["teff"] < 5800).all()
    assert ts.counts["remaining"].tolist() == direct.counts["remaining"].tolist()
    kiel = page.plots().values()[0]
    assert len(kiel) == len(ts)
    page.set_name = "bad name/.."
    assert page.save() is None and "plain folder name" in page._message.text
    page.set_name = "gg"
    path = page.save()
    assert path == tmp_path / "sets" / "gg" and len(TrainingSet.load(path)) == len(ts)
    assert page.save() is None and "exists" in page._message.text
    # the Train tab offers it
    store = RunStore(tmp_path / "runs")
    train = TrainPage(AppState(store=store, queue=JobQueue(store), training_sets_root=tmp_path / "sets"))
    train.data_kind = "training set"
    train._data_widgets()
    assert train._saved_sets.options == {"gg": str(path)}
    train._saved_sets.value = str(path)
    assert train.config()["data"]["path"] == str(path)
    # bad input: a cut that is not JSON, a cut that empties the set
    page.cuts_text = '{"column": "teff", "op": "<"'
    assert page.build() is None and "line 1 is not JSON" in page._message.text and page._save.disabled
    page.cuts_text = '{"column": "teff", "op": "<", "value": 100}'
    assert page.build() is None and "no star passes the cuts" in page._message.text


def test_label_the_survey_from_the_train_tab_and_show_it_on_the_catalogue_tab(finished_runs, small_survey,
                                                                              tmp_path):
    import shutil

    from app.pages.catalogue import CataloguePage, CatalogueTab
    from labelcore.data.io import read_table

    store = RunStore(tmp_path / "runs")
    src = finished_runs["SLAM"]
    shutil.copytree(src.path, store.root / src.id)
    q = JobQueue(store)
    page = TrainPage(AppState(store=store, queue=q, survey_dir=small_survey))
    page.refresh()
    assert page.predict_selected() is None and "Select one" in page._message.text
    page._table.selection = [0]
    cfg = page.prediction_config(store.get(src.id))
    assert cfg["spectra"] == str(small_survey / "spectra_rave.h5")
    run = page.predict_selected()
    assert run is not None and run.task == "predict"
    q.wait([run], timeout=300)
    assert run.state == "done", run.status()
    survey = read_table(small_survey / "catalogue.parquet")
    for c in ("phase", "component"):
        survey[c] = survey[c].astype("category")
    tab = CatalogueTab(survey, store)
    assert list(tab.param.source.objects.values()) == ["survey", run.id]
    shown = tab.page_for(run.id)
    # SLAM was trained on teff, logg, m_h: no alpha_m, so the planes cannot be drawn: said so
    assert isinstance(shown, pn.pane.Alert) and "alpha_m" in shown.object
    assert isinstance(tab.page_for("survey"), CataloguePage)
    tab.source = run.id
    assert isinstance(tab._holder[0], pn.pane.Alert) and tab._holder[0].object == shown.object


def test_catalogue_tab_shows_predicted_labels(small_survey, tmp_path):
    from app.pages.catalogue import CataloguePage, CatalogueTab
    from labelcore.data.io import read_table
    from labelcore.runs import execute

    store = RunStore(tmp_path)
    tr = execute(store.create({"method": "Lux", "params": {"n_latent": 10, "omega": 1.0},
                               "data": {"kind": "synthetic", "setup": "rave", "n_train": 300, "n_test": 50,
                                        "labels": ["teff", "logg", "m_h", "alpha_m"]}}))
    pr = execute(store.create({"task": "predict", "model_run": str(tr.path),
                               "spectra": str(small_survey / "spectra_rave.h5"),
                               "join": str(small_survey / "catalogue.parquet")}))
    assert pr.state == "done", pr.status()
    tab = CatalogueTab(read_table(small_survey / "catalogue.parquet").astype(
        {"phase": "category", "component": "category"}), store)
    page = tab.page_for(pr.id)
    assert isinstance(page, CataloguePage)
    cat = pr.catalogue()
    np.testing.assert_allclose(page.data.column("teff"), cat["teff"], rtol=1e-6)            # predictions, not the truth
    assert "alpha_m_ref" in page.param.color_by.objects                     # the reference, to colour by
    assert len(page.filtered()) == len(cat)


def test_app_queue_is_shared_and_runs_without_a_browser(tmp_path):
    from app.state import shared_queue
    from labelcore.runs import RunStore as _Store

    store = _Store(tmp_path)
    q = shared_queue(store)
    assert shared_queue(_Store(tmp_path)) is q            # one per store and process
    run = store.create({"method": "Lux", "params": {"n_latent": 6, "omega": 1.0},
                        "data": {"kind": "synthetic", "setup": "rave", "n_train": 150, "n_test": 30,
                                 "labels": ["teff", "logg"]}})
    t0 = time.monotonic()
    while run.state != "done" and time.monotonic() - t0 < 180:   # nobody polls: the thread does
        time.sleep(0.5)
    q.stop()
    assert run.state == "done", run.status()


def test_prediction_config_of_a_run_on_a_file_based_training_set(tmp_path):
    import json

    spectra = tmp_path / "lamost.h5"
    spectra.write_bytes(b"x")
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "training_set.json").write_text(json.dumps({"spectra": str(spectra), "n": 9,
                                                                   "label_names": ["teff"]}))
    store = RunStore(tmp_path / "runs")
    run = store.create({"method": "Lux", "data": {"kind": "training_set", "path": str(tmp_path / "ts")}})
    run._set_status(state="done")
    page = TrainPage(AppState(store=store, queue=JobQueue(store)))
    assert page.prediction_config(run) == {"task": "predict", "model_run": str(run.path), "spectra": str(spectra)}
    spectra.unlink()
    with pytest.raises(Exception, match="is gone"):
        page.prediction_config(run)


def test_training_set_page_from_a_spectra_file_and_a_label_table(tmp_path, write_lamost, write_lamost_catalogue):
    from app.pages.training_set import FILES, TrainingSetPage
    from labelcore.prep.ingest import ingest, parse_grid

    files = [write_lamost(tmp_path / f"spec-{1000 + i}.fits", 0.0, 1000 + i) for i in range(8)]
    ingest(files, "lamost_lrs", tmp_path / "lamost.h5", wave=parse_grid("6400:6700:1"))
    write_lamost_catalogue(tmp_path / "cat.fits", [1000 + i for i in range(6)], np.random.default_rng(1))
    page = TrainingSetPage(tmp_path, tmp_path / "sets", roots=[tmp_path])
    assert "guiglion2020" in page.param.preset.objects
    # a survey folder's presets are those of the chosen set-up: no LAMOST cuts on RAVE spectra
    assert "zhang2020_lamost_apogee" not in page.param.preset.objects
    page.setup = "lamost"
    assert "zhang2020_lamost_apogee" in page.param.preset.objects and "guiglion2020" not in page.param.preset.objects
    page.setup = "rave"
    page.source = FILES
    page.manifest = "lamost_dr5"
    assert "zhang2020_lamost_apogee" in page.param.preset.objects and page.preset == "(none)"
    assert page.product in page.param.product.objects and page.product is not None   # a table product
    assert page.build() is None and "give the spectra file" in page._message.text      # says what is missing
    page.spectra_file, page.label_table = str(tmp_path / "lamost.h5"), str(tmp_path / "cat.fits")
    page.match_on, page.spectra_on = "id", "obs_id"
    page.preset = "zhang2020_lamost_apogee"
    assert page.label_set == "zhang2020"                   # the paper's preset brings its label set
    page.label_set, page.labels, page.photometry = "custom", ["teff", "logg", "fe_h"], False
    ts = page.build()
    assert ts is not None, page._message.text
    assert len(ts) == 5                                   # 6 with labels, one fails S/N > 40
    assert isinstance(page.plots(), hv.Layout)
    path = page.save()
    assert path.name == "lamost_zhang2020_lamost_apogee"
    page.match_on = "source_id"              # LAMOST obsids are not Gaia ids: nothing matches, and it says so
    assert page.build() is None and "cross-match on 'source_id' found no common star" in page._message.text


def test_train_form_is_built_from_the_spec_with_readable_numbers():
    from app.components import duration, local_time, readable
    from app.pages.train import param_widget
    from labelcore.methods import SLAM, method_class

    assert readable(10 ** 0.5) == "10^0.5" and readable(0.001) == "0.001" and readable(1e-7) == "1e-07"
    assert readable((1.0, 10 ** 0.5, 10.0)) == "[1, 10^0.5, 10]" and readable(None) == "" and readable(True) == "true"
    assert duration(4.23) == "4.2 s" and duration(185) == "3 min 05 s" and duration(None) == ""
    assert local_time("2026-12-01T15:48:24+00:00", "Europe/Berlin") == "2026-12-01 16:48:24"
    assert local_time("2026-12-01T15:48:24+00:00", "No/Such_Zone") == "2026-12-01 15:48:24"    # unknown: UTC
    import datetime as _dt

    here = _dt.datetime(2026, 12, 1, 15, 48, 24, tzinfo=_dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert local_time("2026-12-01T15:48:24+00:00") == here                  # no browser zone: this machine's
    page = TrainPage(AppState(store=RunStore(__import__("tempfile").mkdtemp())))
    for name in ("SLAM", "Lux", "CNN", "Cannon"):
        page.method = name
        cls = method_class(name)
        for k, w in page._param_widgets.items():
            spec = cls.param_spec.get(k)
            assert spec is not None, f"{name}.{k} has no spec"
            if isinstance(w, pn.widgets.TextInput):
                assert "3.1622776601683795" not in w.value and w.description.startswith(spec.doc)
            if isinstance(w, pn.widgets.IntInput) and spec.high is not None:
                assert (w.start, w.end) == (spec.low, spec.high)
        assert page.hyperparameters() == {}                     # the defaults read back as the defaults
    w = param_widget("n_folds", 5, SLAM.param_spec["n_folds"])
    assert isinstance(w, pn.widgets.IntInput) and w.start == SLAM.param_spec["n_folds"].low


def test_runs_are_listed_newest_first_with_local_times_and_can_be_deleted(finished_runs, tmp_path):
    import shutil

    store = RunStore(tmp_path / "runs")
    for m in ("Lux", "SLAM"):
        shutil.copytree(finished_runs[m].path, store.root / finished_runs[m].id)
    page = TrainPage(AppState(store=store, queue=JobQueue(store)))
    df = page._table.value
    assert list(df["id"]) == sorted(df["id"], reverse=True)
    assert all(len(t) == 19 and "T" not in t for t in df["started (local)"])
    assert all(t.endswith(" s") for t in df["time"])
    page._table.selection = [0]
    gone = df["id"].iloc[0]
    assert page.delete_selected() == 0 and page._confirm_delete.visible     # asks first
    assert (store.root / gone).exists()
    assert page.delete_selected(confirmed=True) == 1
    assert not (store.root / gone).exists() and list(page._table.value["id"]) == [df["id"].iloc[1]]
    assert "Deleted 1 run" in page._message.text
