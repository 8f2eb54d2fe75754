"""The pages as Jupyter widgets, offline: ``from app.notebook import setup; setup()`` at the
top of a notebook instead of ``pn.extension()``.

Panel's notebook extension loads Bokeh, Panel and Tabulator from CDNs unless told
otherwise; with no internet the widgets then never render. :func:`setup` inlines every
resource into the notebook (a larger notebook file, nothing fetched), loads Tabulator (the
run and selection tables; without it Panel warns), and installs the app's figure defaults
(save without prompts, wheel zoom off, ``figures.use_svg()`` for SVG output)."""

from __future__ import annotations

import panel as pn

from app import figures


def setup(**kw) -> None:
    """Load Panel/HoloViews/Bokeh into the notebook with every resource inline."""
    kw.setdefault("sizing_mode", "stretch_width")
    pn.extension("tabulator", inline=True, **kw)
    figures.use_bokeh()
    figures.install()
