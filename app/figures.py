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


def figure_name(title) -> str:
    """The file name a plot saves under: its title as a slug ("kiel-diagram"), "figure"
    when it has none."""
    import re

    text = str(title or "").replace("α", "alpha").replace("σ", "sigma").replace("χ", "chi")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return f"labelcore-{slug[:60] or 'figure'}"


def _output_backend_hook(plot, element):
    fig = plot.state
    if svg_requested():
        fig.output_backend = "svg"
    # the mouse wheel scrolls the page; wheel zoom is one click away in the toolbar
    if getattr(fig, "toolbar", None) is not None:
        fig.toolbar.active_scroll = None
    # the save tool writes <title>.png/.svg at once, without asking for a file name
    title = getattr(getattr(fig, "title", None), "text", None) or element.label or element.group
    for tool in getattr(fig, "tools", []):
        if type(tool).__name__ == "SaveTool" and not tool.filename:
            tool.filename = figure_name(title)


def install() -> None:
    """Add the output-backend / file-name hook to the default options of every element
    type drawn, and make pan (not wheel zoom) the active drag so that the mouse wheel
    scrolls the page; wheel zoom stays one click away in each toolbar. Toolbars sit above
    the plots, where every tool (the save tool too) fits without an overflow menu."""
    hv.opts.defaults(*(getattr(hv.opts, name)(hooks=[_output_backend_hook], active_tools=["pan"], toolbar="above")
                       for name in ELEMENTS), backend="bokeh")


def header_links():
    """The header's PNG / SVG switch (reloads the page with the other choice)."""
    return pn.pane.HTML('<span style="color:white">Figures: <a style="color:white" href="?figures=png">PNG</a>'
                        ' · <a style="color:white" href="?figures=svg">SVG</a> (the save tool of each plot)</span>',
                        sizing_mode="fixed", width=380)


def use_bokeh() -> None:
    """Make Bokeh HoloViews' plotting backend without ``hv.extension``'s notebook output
    (which would load Bokeh from a CDN in a notebook; :func:`app.notebook.setup` loads
    every resource inline instead)."""
    import holoviews.plotting.bokeh  # noqa: F401  (registers the backend)

    if hv.Store.current_backend != "bokeh":
        hv.Store.set_current_backend("bokeh")


use_bokeh()
