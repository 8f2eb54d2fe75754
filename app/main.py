"""``panel serve app/main.py``: the labelcore dashboard on the embedded default survey
(or ``LABELCORE_SURVEY=/path/to/survey``)."""

import os

import panel as pn

from app.pages.catalogue import CataloguePage
from app.store import load_catalogue

pn.extension(sizing_mode="stretch_width", notifications=True)

page = CataloguePage(load_catalogue(os.environ.get("LABELCORE_SURVEY")),
                     title="Catalogue (synthetic default survey)")
page.template().servable(title="labelcore")
