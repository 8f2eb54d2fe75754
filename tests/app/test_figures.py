"""Figure export: SVG output when asked for (the save tool then writes SVG), canvas (PNG)
otherwise, for every kind of plot the pages draw."""

import numpy as np
import pytest

hv = pytest.importorskip("holoviews")

from app import figures  # noqa: E402


@pytest.fixture()
def svg_switch():
    figures.install()
    yield figures.use_svg
    figures.use_svg(False)


def test_svg_output_backend_follows_the_switch(svg_switch, finished_runs):
    from app.pages.curves import latent_plots, per_pixel_plots

    x = np.linspace(0, 1, 50)
    plots = [hv.Curve((x, x**2)), hv.Scatter((x, x)) * hv.HLine(0.5),
             *per_pixel_plots(finished_runs["SLAM"].curves()), *latent_plots(finished_runs["Lux"].curves())]
    for p in plots:
        assert hv.render(p, backend="bokeh").output_backend in ("canvas", "webgl")   # PNG from the save tool
    svg_switch(True)
    assert figures.svg_requested()
    for p in plots:
        assert hv.render(p, backend="bokeh").output_backend == "svg"
    svg_switch(False)
    assert hv.render(plots[0], backend="bokeh").output_backend != "svg"


def test_datashaded_catalogue_plots_export_too(svg_switch, small_survey):
    from app.pages.catalogue import CataloguePage
    from labelcore.data.io import read_table

    t = read_table(small_survey / "catalogue.parquet").astype({"phase": "category", "component": "category"})
    page = CataloguePage(t)
    svg_switch(True)
    figs = [hv.render(p.object, backend="bokeh") for p in page.plots()]
    assert {f.output_backend for f in figs} == {"svg"}
    # the save tool saves under the plot's title, without asking
    names = {t.filename for f in figs for t in f.tools if type(t).__name__ == "SaveTool"}
    assert names == {"labelcore-kiel-diagram", "labelcore-alpha-m-vs-m-h"}


def test_publication_export_of_the_current_view(small_survey, tmp_path):
    """The server-side figure of the Catalogue's view, through the matplotlib backend:
    a real PDF/SVG/PNG, a PNG's pixel size following the DPI, bad settings refused."""
    from PIL import Image

    from app.figures import PublicationExport, publication_export
    from app.pages.catalogue import CataloguePage
    from labelcore.errors import ValidationError

    page = CataloguePage(small_survey / "catalogue.parquet")
    page.plots()
    page.select_box("teff", "logg", (4000, 1, 5000, 3))
    ctl = PublicationExport(page.publication_elements, name="catalogue", folder=tmp_path / "out")
    for fmt, magic in (("pdf", b"%PDF"), ("svg", b"<?xml"), ("png", b"\x89PNG")):
        ctl.fmt.value, ctl.dpi.value = fmt, 100
        path = ctl.export()
        assert path is not None and path.read_bytes()[:len(magic)] == magic and ctl.download.visible
    assert len(list((tmp_path / "out").iterdir())) == 3                       # nothing else left
    with Image.open(path) as im:
        w100 = im.size[0]
    with Image.open(publication_export(page.publication_elements(), tmp_path / "b.png", "png", 200)) as im:
        w200 = im.size[0]
    assert 1.8 < w200 / w100 < 2.2
    with pytest.raises(ValidationError, match="DPI"):
        publication_export(page.publication_elements(), tmp_path / "c.png", "png", 5)
    with pytest.raises(ValidationError, match="format"):
        publication_export(page.publication_elements(), tmp_path / "c.eps", "eps", 100)


def test_plots_report_a_zoom_soon_after_the_wheel_stops():
    """Every plot, overlays included, reports its new range LOD_TIMEOUT_MS after the last
    wheel or drag event (the server re-aggregates then), not after Bokeh's 500 ms; it is in
    the figure the browser first receives, so a session's first zoom has it too."""
    import holoviews as hv

    figures.install()
    overlay = hv.Image(np.ones((3, 3))) * hv.Points([(0, 0)])
    for obj in (hv.Image(np.ones((3, 3))), hv.Curve([1, 2, 3]), overlay):
        fig = hv.renderer("bokeh").get_plot(obj).state
        assert fig.lod_timeout == fig.lod_interval == figures.LOD_TIMEOUT_MS < 500
