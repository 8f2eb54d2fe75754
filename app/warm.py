"""``panel serve app/main.py --setup app/warm.py``: run once when the server starts, before
any visitor, so that no user's first view pays for what a process needs only once:

- datashader's aggregations are compiled, and the columns of the catalogue the Catalogue tab
  opens on are read into the process's shared table (:func:`app.pages.catalogue.warm_up`);
- one throwaway session of ``app/main.py`` is built and rendered to Bokeh models, which
  imports what the pages import on first use (the methods' modules for the Train tab's
  parameter specs -- scikit-learn and JAX, ~2 s --, matplotlib for the publication export,
  the star inspector) and fills HoloViews' and Bokeh's caches;
- what exists then is frozen out of the garbage collector's scans (it stays for the
  process's life), so that they do not grow with it; each session's objects are still
  collected."""

import gc
import runpy
from pathlib import Path

from bokeh.document import Document
from panel.io.state import set_curdoc

from app.pages.catalogue import warm_up
from app.state import catalogue_path

warm_up(catalogue_path() if catalogue_path().exists() else None)

_doc = Document()
with set_curdoc(_doc):
    _session = runpy.run_path(str(Path(__file__).with_name("main.py")), run_name="labelcore_warm_up")
    _session["page"].server_doc(_doc)
    _session["state"].stop()
del _doc, _session
gc.collect()
gc.freeze()
