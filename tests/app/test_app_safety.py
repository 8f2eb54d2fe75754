"""The served app is safe to share: user text is escaped wherever it is rendered, typed
paths resolve only inside the data roots (and errors say nothing about what lies outside),
hyper-parameters are refused at submit, and one session cannot flood the queue."""

import shutil

import pytest

pn = pytest.importorskip("panel")

from app.components import escape  # noqa: E402
from app.pages.curves import LearningCurvesPage  # noqa: E402
from app.pages.train import TrainPage  # noqa: E402
from app.pages.training_set import FILES, TrainingSetPage  # noqa: E402
from app.state import AppState  # noqa: E402
from labelcore.runs import JobQueue, RunStore  # noqa: E402

XSS = '<img src=x onerror="window.__xss=1"> **bold** [link](javascript:alert(1))'


def _copy_run(src, store, name):
    """A finished run of ``store`` with the files of ``src`` and a hostile name."""
    import json

    dst = store.root / (src.id + "-x")
    shutil.copytree(src.path, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["name"] = name
    (dst / "config.json").write_text(json.dumps(cfg))
    return store.get(dst.name)


def _markup(obj) -> list[str]:
    """The HTML/Markdown text of every pane under ``obj``."""
    out = []
    for pane in obj.select(lambda x: isinstance(getattr(x, "object", None), str)):
        out.append(pane.object)
    return out


def test_escape_neutralises_markup():
    s = escape(XSS)
    assert "<" not in s and ">" not in s and "[" not in s and "*" not in s
    assert "&#60;img" in s and "onerror" in s        # shown, as text


def test_run_names_are_escaped_on_the_learning_curves_page(finished_runs, tmp_path):
    store = RunStore(tmp_path / "runs")
    run = _copy_run(finished_runs["Lux"], store, XSS)
    page = LearningCurvesPage(AppState(store=store, queue=JobQueue(store)))
    assert page.run == run.id
    texts = _markup(page.view())
    head = next(t for t in texts if "onerror" in t)
    assert "<img" not in head and "&#60;img" in head
    assert not any("<img" in t for t in texts)


def test_train_page_messages_escape_names_and_errors(tmp_path):
    store = RunStore(tmp_path / "runs")
    page = TrainPage(AppState(store=store, queue=JobQueue(store), data_roots=[str(tmp_path)]))
    page.method = "Lux"
    page.run_name = XSS
    page._param_widgets["n_latent"].value = "4"
    page._param_widgets["omega"].value = "1.0"
    page.labels, page.n_train, page.n_test = ["teff", "logg"], 40, 10
    run = page.launch()
    assert run is not None and run.config["name"] == XSS.strip()
    assert "<img" not in page._message.markup and "&#60;img" in page._message.markup
    assert "<img src=x" in page._message.text                      # shown as text
    assert page.run_name == ""                                     # reset after a launch
    page._param_widgets["n_latent"].value = '"<script>alert(1)</script>"'
    assert page.launch() is None
    assert "<script>" not in page._message.markup and "n_latent" in page._message.text


def test_hyper_parameters_are_refused_before_queueing(tmp_path):
    store = RunStore(tmp_path / "runs")
    page = TrainPage(AppState(store=store, queue=JobQueue(store)))
    page.method = "CNN"
    for k, v, why in [("batch_size", 0, "'batch_size' must be >= 1"), ("max_epochs", 10**9, "must be <="),
                      ("n_members", -3, ">= 1")]:
        page.quick_settings()
        page._param_widgets[k].value = v
        assert page.launch() is None and why in page._message.text
    assert store.runs() == []


def test_one_session_cannot_flood_the_queue(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELCORE_MAX_QUEUED", "2")
    store = RunStore(tmp_path / "runs")

    class NoStart(JobQueue):
        def poll(self):          # nothing starts: every run stays queued
            pass

    page = TrainPage(AppState(store=store, queue=NoStart(store)))
    page.method = "Lux"
    page._param_widgets["n_latent"].value = "4"
    page._param_widgets["omega"].value = "1.0"
    assert page.launch() is not None and page.launch() is not None
    assert page.launch() is None and "2 runs waiting" in page._message.text
    assert len(store.runs()) == 2


@pytest.mark.parametrize("typed", ["/etc/passwd", "/etc/no-such-file", "../../../../etc/passwd",
                                   "~/.ssh/id_rsa", "/proc/self/environ"])
def test_typed_paths_stay_inside_the_data_roots(typed, tmp_path):
    (tmp_path / "link").symlink_to("/etc")
    page = TrainingSetPage(tmp_path, tmp_path / "sets", roots=[tmp_path])
    page.source = FILES
    page.spectra_file = typed
    page.label_table = "table.fits"
    assert page.build() is None
    msg = page._message.text
    assert "outside the folders this app may read" in msg
    # the message says nothing about whether the file exists, nor what it holds
    assert "exist" not in msg and "No such" not in msg and "root:" not in msg
    page.spectra_file = "link/passwd"                          # a symlink out of the root
    assert page.build() is None and "outside the folders" in page._message.text


def test_train_tab_training_set_path_stays_inside_the_roots(tmp_path):
    store = RunStore(tmp_path / "runs")
    page = TrainPage(AppState(store=store, queue=JobQueue(store), data_roots=[str(tmp_path)]))
    page.method = "Lux"
    page.data_kind = "training set"
    page.training_set = "/etc"
    assert page.launch() is None and "outside the folders" in page._message.text
    page.training_set = str(tmp_path / "nope")
    assert page.launch() is None and "not a saved training set" in page._message.text
