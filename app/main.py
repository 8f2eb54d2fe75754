"""``panel serve app/main.py``: the labelcore dashboard on the embedded default survey
(or ``LABELCORE_SURVEY=/path/to/survey``).

Tabs: Catalogue (the survey's catalogue, datashader) and Spectra (observed vs SLAM/Lux
model spectra, COD and derivative spectra). The Spectra tab is built when first opened:
the first time on a machine it trains its demo models (about a minute and a half on 2
cores) and caches them; later starts load them in a fraction of a second."""

import os

import panel as pn

from app.pages.catalogue import CataloguePage
from app.store import load_catalogue

pn.extension(sizing_mode="stretch_width", notifications=True)

catalogue = CataloguePage(load_catalogue(os.environ.get("LABELCORE_SURVEY")),
                          title="Catalogue (synthetic default survey)")


def spectra_tab():
    from app.pages.spectra import SpectraPage
    from app.store import load_spectra_demo

    show, models, cods = load_spectra_demo()
    return SpectraPage(show.wave, show.flux, show.flux_err, models, labels=show.truth, cods=cods,
                       title="Spectra (synthetic RAVE-like)")


tabs = pn.Tabs(("Catalogue", catalogue),
               ("Spectra", pn.param.ParamFunction(spectra_tab, lazy=True)),
               dynamic=True)
pn.template.FastListTemplate(title="labelcore", main=[tabs], accent="#2f5f8a").servable(title="labelcore")
