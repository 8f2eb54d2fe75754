"""Figure export: every plot of the app saves itself from its toolbar's save tool, as PNG
by default or as SVG when SVG output is on.

Bokeh draws a figure on an HTML canvas (the save tool then writes PNG) or as SVG (the save
tool then writes SVG, vector lines and text for papers). The choice is per browser session
-- the ``?figures=svg`` URL argument, linked from the app's header -- or, in a notebook,
:func:`use_svg`. It is applied by a HoloViews plot hook installed for every element type the
pages draw (:func:`install`), so no page needs to know about it. Datashaded images stay
rasters inside the SVG."""

from __future__ import annotations

import holoviews as hv
import panel as pn

hv.extension("bokeh", logo=False)

#: element types the pages draw (datashader output included)
ELEMENTS = ("Curve", "Scatter", "Points", "Spread", "Histogram", "HeatMap", "HLine", "VLine", "Image", "RGB",
            "QuadMesh", "Area")

_NOTEBOOK = {"svg": False}


def use_svg(flag: bool = True) -> None:
    """Notebook switch: draw the following figures as SVG (their save tool then writes SVG)."""
    _NOTEBOOK["svg"] = bool(flag)


def svg_requested() -> bool:
    """True when the current session asked for SVG figures (``?figures=svg``), or in a
    notebook after :func:`use_svg`."""
    args = getattr(pn.state, "session_args", None) or {}
    value = args.get("figures")
    if value:
        v = value[0]
        return (v.decode() if isinstance(v, bytes) else str(v)).lower() == "svg"
    return _NOTEBOOK["svg"]


def _output_backend_hook(plot, element):
    if svg_requested():
        plot.state.output_backend = "svg"


def install() -> None:
    """Add the output-backend hook to the default options of every element type drawn."""
    hv.opts.defaults(*(getattr(hv.opts, name)(hooks=[_output_backend_hook]) for name in ELEMENTS),
                     backend="bokeh")


def header_links():
    """The header's PNG / SVG switch (reloads the page with the other choice)."""
    return pn.pane.HTML('<span style="color:white">Figures: <a style="color:white" href="?figures=png">PNG</a>'
                        ' · <a style="color:white" href="?figures=svg">SVG</a> (the save tool of each plot)</span>',
                        sizing_mode="fixed", width=380)
