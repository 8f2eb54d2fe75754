"""``panel serve app/main.py``: the labelcore dashboard on the embedded default survey
(or ``LABELCORE_SURVEY=/path/to/survey``).

Tabs: Catalogue (the survey's catalogue, datashader), Spectra (observed vs SLAM/Lux
model spectra, COD and derivative spectra, for the demo models or a finished run),
Training set (cross-match, paper cuts with counts, Kiel diagram, save), Train (launch, watch and cancel trainings),
Learning curves (per run) and Compare (runs on the same held-out stars); the Catalogue tab
also shows the label catalogues of prediction runs ("Label the survey" on the Train tab). Runs live in
``<data dir>/runs`` (``LABELCORE_RUNS`` to change). The Spectra tab is built when first opened:
the first time on a machine it trains its demo models (about a minute and a half on 2
cores) and caches them; later starts load them in a fraction of a second."""

import os

import panel as pn

from app import figures
from app.pages.catalogue import CatalogueTab
from app.pages.compare import ComparePage
from app.pages.curves import LearningCurvesPage
from app.pages.train import TrainPage
from app.pages.training_set import TrainingSetPage
from app.store import job_queue, load_catalogue, run_store, survey_path, training_sets_root

pn.extension("tabulator", sizing_mode="stretch_width", notifications=True)
figures.install()

store = run_store(os.environ.get("LABELCORE_RUNS"))
catalogue = CatalogueTab(load_catalogue(os.environ.get("LABELCORE_SURVEY")), store,
                         title="Survey catalogue (synthetic default survey)")


def demo_spectra():
    from app.pages.spectra import SpectraPage
    from app.store import load_spectra_demo

    show, models, cods = load_spectra_demo()
    return SpectraPage(show.wave, show.flux, show.flux_err, models, labels=show.truth, cods=cods,
                       title="Spectra (synthetic RAVE-like)")


_spectra = {}   # this session's Spectra tab, once opened


def spectra_tab():
    from app.pages.spectra import SpectraTab

    if "tab" not in _spectra:
        _spectra["tab"] = SpectraTab(demo_spectra, store)
    return _spectra["tab"]


training_set = TrainingSetPage(survey_path(os.environ.get("LABELCORE_SURVEY")), training_sets_root())
train = TrainPage(store, job_queue(store), training_sets_root=training_sets_root(),
                  survey_dir=survey_path(os.environ.get("LABELCORE_SURVEY")))
curves = LearningCurvesPage(store)
compare = ComparePage(store)

tabs = pn.Tabs(("Catalogue", catalogue),
               ("Spectra", pn.param.ParamFunction(spectra_tab, lazy=True)),
               ("Training set", training_set), ("Train", train), ("Learning curves", curves),
               ("Compare", compare),
               dynamic=True)


def _on_tab(event):
    # runs finish while other tabs are shown: list them again when a results tab opens
    page = {0: catalogue, 3: train, 4: curves, 5: compare}.get(event.new)
    if event.new == 1 and "tab" in _spectra:
        _spectra["tab"].refresh()
    if page is not None:
        page.refresh()


tabs.param.watch(_on_tab, "active")
pn.template.FastListTemplate(title="labelcore", main=[tabs], header=[figures.header_links()],
                             accent="#2f5f8a").servable(title="labelcore")
