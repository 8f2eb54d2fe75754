"""``panel serve app/main.py``: the labelcore dashboard on the embedded default survey
(or ``LABELCORE_SURVEY=/path/to/survey``; settings in :mod:`labelcore.settings`).

Tabs: Catalogue (the survey's catalogue, datashader), Spectra (observed vs model spectra,
COD and derivative spectra, for the demo runs or a finished run), Training set
(cross-match, paper cuts with counts, Kiel diagram, save), Train (launch, watch and cancel
trainings), Learning curves (per run) and Compare (runs on the same held-out stars); the
Catalogue tab also shows the label catalogues of prediction runs. Runs live in
:func:`labelcore.settings.runs_dir`. Every page watches one :class:`~app.state.AppState`;
nothing is fitted in this process: the demo models of the Spectra tab are ordinary runs of
the job queue (``./dev app`` builds them before serving; otherwise the tab shows their
progress while they build in a subprocess)."""

import panel as pn

from app import figures
from app.components import template
from app.pages.catalogue import CatalogueTab, warm_up
from app.pages.compare import ComparePage
from app.pages.curves import LearningCurvesPage
from app.pages.spectra import SpectraTab
from app.pages.train import TrainPage
from app.pages.training_set import TrainingSetPage
from app.state import AppState, catalogue_path, survey_path
from labelcore import settings

pn.extension("tabulator", sizing_mode="stretch_width", notifications=True)
figures.install()

warm_up()        # once per process (``--setup app/warm.py`` does it before the first visitor)
state = AppState(survey_dir=str(survey_path()))
_own = settings.catalogue_path()
catalogue = CatalogueTab(catalogue_path(), state,
                         title=f"Catalogue {_own.name}" if _own else "Survey catalogue (synthetic default survey)")
_spectra = {}   # this session's Spectra tab, once opened


def spectra_tab():
    if "tab" not in _spectra:
        _spectra["tab"] = SpectraTab(state)
    return _spectra["tab"]


training_set = TrainingSetPage(state.survey_dir, settings.training_sets_dir(), roots=state.data_roots)
train = TrainPage(state)
curves = LearningCurvesPage(state)
compare = ComparePage(state)

tabs = pn.Tabs(("Catalogue", catalogue),
               ("Spectra", pn.param.ParamFunction(spectra_tab, lazy=True)),
               ("Training set", training_set), ("Train", train), ("Learning curves", curves),
               ("Compare", compare),
               dynamic=True)
state.start()


def keep_view_in_url():
    """The view in the page's URL, so that it can be bookmarked and shared: the tab, the
    catalogue shown with its colouring, filters and inspected star, and the runs chosen on
    Learning curves and Compare (``?tab=4&run=...``)."""
    loc = pn.state.location
    if loc is None:
        return
    loc.sync(tabs, {"active": "tab"})
    loc.sync(catalogue, {"source": "catalogue"})
    survey_page = catalogue.page_for("survey")
    if hasattr(survey_page, "star_ref"):
        loc.sync(survey_page, {"color_by": "colour", "cmap": "cmap", "components": "components",
                               "phases": "phases", "min_snr": "min_snr", "split": "split", "star_ref": "star"})
    loc.sync(curves, {"run": "run"})
    loc.sync(compare, {"runs": "compare", "label": "label"})


keep_view_in_url()
page = template("labelcore", main=[tabs], header=[figures.header_links()])
page.servable(title="labelcore")
