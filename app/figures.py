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


#: ms after the last interactive event (wheel, drag) at which a plot reports its new range
LOD_TIMEOUT_MS = 80


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
    # a zoom or pan reports its new range LOD_TIMEOUT_MS after the last wheel/drag event
    # (Bokeh's and HoloViews' default: 500 ms), so server-side re-aggregations start sooner
    lod = {"interval": LOD_TIMEOUT_MS, "timeout": LOD_TIMEOUT_MS}
    hv.opts.defaults(*(getattr(hv.opts, name)(hooks=[_output_backend_hook], active_tools=["pan"], toolbar="above",
                                              lod=lod)
                       for name in ELEMENTS), backend="bokeh")


def header_links():
    """The header's PNG / SVG switch (reloads the page with the other choice)."""
    return pn.pane.HTML('<span style="color:white">Figures: <a style="color:white" href="?figures=png">PNG</a>'
                        ' · <a style="color:white" href="?figures=svg">SVG</a> (the save tool of each plot)</span>',
                        sizing_mode="fixed", width=380, height=24)


def use_bokeh() -> None:
    """Make Bokeh HoloViews' plotting backend without ``hv.extension``'s notebook output
    (which would load Bokeh from a CDN in a notebook; :func:`app.notebook.setup` loads
    every resource inline instead)."""
    import holoviews.plotting.bokeh  # noqa: F401  (registers the backend)

    if not _NOTEBOOK.get("backend"):
        hv.Store.set_current_backend("bokeh")       # also builds hv.opts.<Element> for bokeh
        _NOTEBOOK["backend"] = True


use_bokeh()


#: formats of the publication export
PUBLICATION_FORMATS = ("pdf", "svg", "png")


def publication_export(elements, path, fmt: str = "pdf", dpi: int = 300, ncols: int = 2):
    """Write ``elements`` (the HoloViews objects of the current view) as one publication
    figure through HoloViews' matplotlib backend: vector PDF/SVG (datashaded images stay
    rasters inside) or PNG at ``dpi``. The file is written to a temporary name and renamed
    (no partial file). Returns the path."""
    from labelcore.data.io import atomic_path
    from labelcore.errors import ValidationError

    if fmt not in PUBLICATION_FORMATS:
        raise ValidationError(f"figure format {fmt!r} is not one of {', '.join(PUBLICATION_FORMATS)}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 50 <= dpi <= 1200:
        raise ValidationError(f"figure DPI must be a whole number in [50, 1200]; got {dpi!r}")
    elements = list(elements)
    if not elements:
        raise ValidationError("nothing to export: the view has no plot")
    import matplotlib

    matplotlib.use("Agg")
    import os
    from pathlib import Path

    import holoviews.plotting.mpl  # noqa: F401  (registers the matplotlib backend)

    # the current state of each dynamic plot (its last zoom and selection), as static elements
    static = [e[()] if isinstance(e, hv.DynamicMap) else e for e in elements]
    obj = static[0] if len(static) == 1 else hv.Layout(static).cols(ncols)
    path = Path(path)
    with atomic_path(path) as tmp:
        base = f"{tmp}-render"
        try:
            hv.renderer("matplotlib").instance(dpi=dpi).save(obj, base, fmt=fmt)
            os.replace(f"{base}.{fmt}", tmp)
        finally:
            import glob

            for left in glob.glob(f"{glob.escape(base)}*"):
                os.unlink(left)
    return path


class PublicationExport(pn.viewable.Viewer):
    """"Publication figure" controls of a page: format, DPI, a button writing the current
    view (``elements()``) with :func:`publication_export` under ``<data dir>/exports``,
    and a download of the file."""

    def __init__(self, elements, name: str = "figure", folder=None, **params):
        super().__init__(**params)
        self._elements, self._name, self._folder = elements, name, folder
        self.fmt = pn.widgets.Select(label="Figure format", options=list(PUBLICATION_FORMATS), value="pdf",
                                     width=110)
        self.dpi = pn.widgets.IntInput(label="DPI", value=300, start=50, end=1200, step=50, width=90)
        self.button = pn.widgets.Button(label="Publication figure", color="light", width=170)
        self.button.on_click(lambda e: self.export())
        self.download = pn.widgets.FileDownload(label="Download figure", visible=False, width=170, auto=True)
        self.message = pn.pane.Markdown("", visible=False)
        self.last = None

    def export(self):
        """Write the figure; returns its path (None with the reason shown when it fails)."""
        import time
        from pathlib import Path

        from labelcore import settings
        from labelcore.errors import LabelcoreError

        folder = Path(self._folder) if self._folder else settings.data_dir() / "exports"
        path = folder / f"{figure_name(self._name)}-{time.strftime('%Y%m%d-%H%M%S')}.{self.fmt.value}"
        try:
            publication_export(self._elements(), path, self.fmt.value, int(self.dpi.value))
        except (LabelcoreError, ValueError, OSError) as exc:
            self.message.object = f"Figure not written: {html_escape(exc)}"
            self.message.visible = True
            return None
        self.last = path
        self.download.file, self.download.filename = str(path), path.name
        self.download.visible = True
        self.message.object = f"Wrote {html_escape(path.name)} ({path.stat().st_size / 1e3:.0f} kB)"
        self.message.visible = True
        return path

    def __panel__(self):
        return pn.Column(pn.Row(self.fmt, self.dpi), self.button, self.download, self.message)


def html_escape(text) -> str:
    from app.components import escape

    return escape(text)


#: the hook every plot gets from :func:`install`; a page that sets its own ``hooks`` lists it too
plot_hook = _output_backend_hook
