import holoviews as hv
import numpy as np
import pandas as pd
import pytest

pn = pytest.importorskip("panel")

from app import selection as geom  # noqa: E402
from app.pages import catalogue as catmod  # noqa: E402
from app.pages.catalogue import SPLITS, CataloguePage, column_unit, tick_format  # noqa: E402
from app.state import load_catalogue  # noqa: E402
from labelcore.data.columnar import ColumnTable  # noqa: E402
from labelcore.errors import FormatError, ValidationError  # noqa: E402


@pytest.fixture()
def page(small_survey):
    return CataloguePage(small_survey / "catalogue.parquet")


def _planes(page):
    """The HoloViews planes of the page's current plots."""
    grid = page.plots()
    return [p.object for p in grid]


def _layers(plot):
    """(grey, selected, star) elements of a plane after rendering."""
    hv.render(plot, backend="bokeh")
    return list(plot.last)


def test_page_builds_and_offers_columns(page, small_survey):
    assert "teff" in page.param.color_by.objects and "density" in page.param.color_by.objects
    assert not any(c.endswith("_err") for c in page.param.color_by.objects)
    assert set(page.components) == {"thin", "thick", "halo"}
    assert page.snr_column and page.snr_column.startswith("snr")
    assert isinstance(page.__panel__(), pn.Row)
    assert isinstance(page.plots(), pn.GridBox)
    # an in-memory table gives the same page
    mem = CataloguePage(load_catalogue(str(small_survey)))
    assert mem.data.n == page.data.n and mem.components == page.components


def test_box_select_and_tap_are_active_and_the_wheel_scrolls(page):
    from app import figures

    figures.install()                                 # the app's defaults (pan active elsewhere)
    for plane in _planes(page):
        fig = hv.render(plane, backend="bokeh")
        assert type(fig.toolbar.active_drag).__name__ == "BoxSelectTool"
        assert type(fig.toolbar.active_tap).__name__ == "TapTool" and fig.toolbar.active_scroll is None


def test_colour_bar_titles_units_and_hover(page):
    page.color_by = "teff"
    kiel = _planes(page)[0]
    fig = hv.render(kiel, backend="bokeh")
    bars = [r for r in fig.right if type(r).__name__ == "ColorBar"]
    assert bars and bars[0].title == "mean Teff [K]" and bars[0].formatter.format == "%d"
    hover = [t for t in fig.tools if type(t).__name__ == "HoverTool"]
    text = str(hover[0].tooltips)
    assert "mean Teff [K]" in text and "stars" in text                  # the bin's mean and count
    assert column_unit("teff") == "K" and column_unit("m_h") == "dex" and tick_format("m_h") == "%.2f"
    page.color_by = "density"


def test_filters_and_counts(page):
    n = page.data.n
    page.components = ["halo"]
    halo = int(page.filter_mask().sum())
    assert 0 < halo < 0.2 * n and (page.filtered()["component"] == "halo").all()
    assert f"**{halo:,}** of {n:,}" in page.counts_text()
    page.components = []
    assert isinstance(page.plots(), pn.pane.Alert)
    page.components = ["thin", "thick", "halo"]
    page.min_snr = 100
    assert (page.filtered()[page.snr_column] >= 100).all()


def test_a_box_on_the_kiel_diagram_selects_in_every_plane(page):
    kiel, chem = _planes(page)
    page.select_box("teff", "logg", (4000, 1.0, 5000, 3.0))
    df = page.filtered()
    truth = df["teff"].between(4000, 5000) & df["logg"].between(1.0, 3.0)
    assert page.n_selected == int(truth.sum()) > 50
    assert f"{page.n_selected:,} selected" in page.counts_text()
    # the [alpha/M]-[M/H] plane draws exactly the selected stars in colour, the rest in grey
    grey, top, _ = _layers(chem)
    in_view = df["m_h"].between(-2.6, 0.8) & df["alpha_m"].between(-0.2, 0.5)
    assert int(np.nansum(top.data[top.vdims[0].name])) == int((truth & in_view).sum())
    assert int(np.nansum(grey.data[grey.vdims[0].name])) == int((~truth & in_view).sum())
    sel = page.selected()
    assert sel["teff"].between(4000, 5000).all() and len(sel) == page.n_selected
    page.clear_selection()
    assert page.n_selected == 0 and not page.has_selection


def test_a_lasso_selects_the_stars_inside_the_polygon(page):
    poly = np.array([(-1.0, 0.0), (0.2, 0.0), (0.2, 0.35), (-0.4, 0.35), (-1.0, 0.2)])
    page.select_lasso("m_h", "alpha_m", poly)
    df = page.filtered()
    # brute force: a point is inside when the winding of the polygon around it is non-zero
    x, y = df["m_h"].to_numpy(), df["alpha_m"].to_numpy()
    ang = np.zeros(len(x))
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        a1, a2 = np.arctan2(y1 - y, x1 - x), np.arctan2(y2 - y, x2 - x)
        ang += (a2 - a1 + np.pi) % (2 * np.pi) - np.pi
    inside = np.abs(ang) > np.pi
    assert page.n_selected == int(inside.sum()) > 100
    np.testing.assert_array_equal(np.sort(page.selected()["id"].to_numpy()), np.sort(df["id"][inside].to_numpy()))


def test_selection_geometry_edge_cases():
    x = np.array([0.5, 2.0, np.nan, 0.1])
    y = np.array([0.5, 0.5, 0.5, 0.9])
    assert geom.in_box(x, y, (1, 1, 0, 0)).tolist() == [True, False, False, True]
    tri = [(0, 0), (1, 0), (0, 1)]
    assert geom.in_polygon(np.array([0.2]), np.array([0.2]), tri).tolist() == [True]
    assert not geom.in_polygon(x, y, [(0, 0), (1, 1)]).any()             # not a polygon: nothing
    assert geom.nearest(x, y, 0.52, 0.5, (1, 1)) == 0
    assert geom.nearest(x, y, 5, 5, (1, 1)) is None                      # empty sky
    assert geom.nearest(x, y, 0.5, 0.5, (1, 1), candidates=np.zeros(4, bool)) is None


def test_split_panels_select_within_their_bin(page):
    page.split = "giants / dwarfs"
    layout = _planes(page)
    assert len(layout) == 3                       # Kiel diagram + two [alpha/M]-[M/H] panels
    page.select_box("m_h", "alpha_m", (-1, 0, 0.5, 0.4), sub=("logg", -np.inf, 3.5))
    assert (page.selected()["logg"] < 3.5).all()
    df = page.filtered()
    box = df["m_h"].between(-1, 0.5) & df["alpha_m"].between(0, 0.4)
    assert page.n_selected == int((box & (df["logg"] < 3.5)).sum()) > 100
    (t1, giants), (t2, dwarfs) = page.panels(df)
    assert len(giants) + len(dwarfs) == len(df) and "giants" in t1
    page.split = "Teff bins"
    parts = page.panels(df)
    assert all(p["teff"].between(lo, hi, inclusive="left").all()
               for (_, p), (_, _, lo, hi) in zip(parts, SPLITS["Teff bins"], strict=True))
    page.split = "none"
    assert len(_planes(page)) == 2


@pytest.mark.parametrize("fmt", ["parquet", "csv", "fits"])
def test_export_writes_exactly_the_selection(page, fmt, tmp_path):
    page.phases = ["rc"]
    page.select_box("teff", "logg", (4000, 1.5, 5200, 3.2))
    page._fmt.value = fmt
    path = page.export(folder=tmp_path)
    if fmt == "parquet":
        df = pd.read_parquet(path)
    elif fmt == "csv":
        df = pd.read_csv(path)
    else:
        from labelcore.data.io import read_fits_table

        df = read_fits_table(path)
    want = page.selected()
    assert len(df) == page.n_selected == len(want) > 0 and (df["phase"] == "rc").all()
    assert sorted(df["id"]) == sorted(want["id"]) and list(df.columns) == page.data.columns
    assert page._download.visible and page._download.filename == path.name
    assert [p.name for p in tmp_path.iterdir()] == [path.name]             # no temporary file left


def test_large_exports_ask_first_and_empty_ones_are_refused(page, tmp_path, monkeypatch):
    monkeypatch.setattr(catmod, "CONFIRM_ROWS", 100)
    page.select_box("teff", "logg", (3000, -1, 8000, 6))
    assert page.export(folder=tmp_path) is None and page._confirm_btn.visible
    assert "Select fewer stars, or confirm" in page.messages.text and not list(tmp_path.iterdir())
    path = page.export(confirmed=True, folder=tmp_path)
    assert len(pd.read_parquet(path)) == page.n_selected > 100
    page.select_box("teff", "logg", (100, 100, 101, 101))
    assert page.n_selected == 0 and page.export(folder=tmp_path) is None
    assert "no star is selected" in page.messages.text


def test_tap_picks_the_nearest_star_and_marks_it(page):
    df = page.filtered()
    r = df.iloc[123]
    row = page.pick("teff", "logg", float(r["teff"]) + 1.0, float(r["logg"]), (3700.0, 5.6))
    assert row is not None and page.star_id(row) == r["id"]
    kiel = _planes(page)[0]
    *_, star = _layers(kiel)
    assert star.array().tolist() == [[pytest.approx(r["teff"], rel=1e-6), pytest.approx(r["logg"], rel=1e-6)]]
    assert page.pick("teff", "logg", 20000.0, 20.0, (3700.0, 5.6)) is None


def test_missing_columns_named():
    with pytest.raises(ValueError, match=r"lacks columns \['alpha_m'\]"):
        CataloguePage(pd.DataFrame({"teff": [1.0], "logg": [1.0], "m_h": [0.0]}))


def test_template_is_servable(page):
    assert isinstance(page.template(), pn.template.BootstrapTemplate)


# ---------------------------------------------------------------- ColumnTable
def test_column_table_reads_row_groups_and_streams_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    n = 2500
    df = pd.DataFrame({"id": [f"S{i:05d}" for i in range(n)], "teff": rng.uniform(4000, 6000, n),
                       "k": rng.integers(0, 9, n), "phase": pd.Categorical(rng.choice(["ms", "rgb"], n))})
    p = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), p, row_group_size=300)
    t = ColumnTable(p)
    assert t.n == n and t.numeric == ["teff", "k"] and t.is_categorical("phase")
    np.testing.assert_allclose(t.column("teff"), df["teff"].to_numpy(np.float32))
    idx = np.array([2499, 5, 301, 299, 1200])
    got = t.rows(idx, ["id", "teff"])
    assert got["id"].tolist() == df["id"].iloc[idx].tolist()
    mask = rng.random(n) < 0.3
    out = tmp_path / "o.csv"
    assert t.write_rows(mask, out, "csv") == mask.sum()
    back = pd.read_csv(out)
    assert back["id"].tolist() == df["id"][mask].tolist()
    assert ColumnTable(df).write_rows(mask, tmp_path / "m.parquet") == mask.sum()
    assert pd.read_parquet(tmp_path / "m.parquet")["id"].tolist() == df["id"][mask].tolist()
    with pytest.raises(ValidationError, match="shape"):
        t.write_rows(mask[:-1], tmp_path / "x.parquet")
    with pytest.raises(ValidationError, match="format"):
        t.write_rows(mask, tmp_path / "x.xls", "xls")
    with pytest.raises(ValidationError, match="not numeric"):
        t.column("id")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(FormatError, match="not a readable Parquet"):
        ColumnTable(bad)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["bad.parquet", "c.parquet", "m.parquet", "o.csv"]


def test_layers_reach_the_browser_as_float32_with_empty_bins_transparent(page):
    """What a plane sends: float32 images whose empty bins are NaN (drawn transparent), with
    exact counts; a layer without stars (nothing selected) is a single transparent pixel
    over the plane's bounds, not a full image of NaN."""
    import datashader as ds
    from holoviews.operation.datashader import rasterize

    pts = hv.Points(pd.DataFrame({"x": [0.1, 0.1, 0.6], "y": [0.1, 0.1, 0.9], "c": [1.0, 3.0, 5.0]}),
                    vdims=["c"])
    kw = dict(x_range=(0, 1), y_range=(0, 1), width=4, height=4, dynamic=False)
    img = catmod.compact_image(rasterize(pts, aggregator=ds.count(), **kw))
    arr = img.data[img.vdims[0].name].values
    assert arr.dtype == np.float32 and np.nansum(arr) == 3 and np.isnan(arr).sum() == 14
    both = catmod.compact_image(rasterize(pts, aggregator=ds.summary(c=ds.mean("c"), count=ds.count()), **kw))
    mean, count = (both.data[v.name].values for v in both.vdims)
    assert mean.dtype == count.dtype == np.float32
    assert sorted(mean[np.isfinite(mean)]) == [2.0, 5.0] and sorted(count[np.isfinite(count)]) == [1, 2]
    empty = catmod.compact_image(rasterize(pts.iloc[:0], aggregator=ds.count(), **kw))
    assert empty.data[empty.vdims[0].name].shape == (1, 1) and empty.bounds.lbrt() == (0, 0, 1, 1)
    # in a page: with nothing selected the grey layer is that one pixel; the coloured
    # layer is aggregated at RASTER_PX whatever the browser's plot size
    grey, top, _star = _layers(_planes(page)[0])
    assert grey.data[grey.vdims[0].name].shape == (1, 1)
    w, h = catmod.RASTER_PX
    assert top.data[top.vdims[0].name].shape == (int(h * page._pixel_ratio()), int(w * page._pixel_ratio()))


def test_a_new_plot_aggregates_each_layer_once(page, monkeypatch):
    """HoloViews re-renders a new plot once with its range streams set to the plot's range;
    that refresh must reuse the aggregate, not compute it again (at 10M stars a layer is
    ~0.1 s, and the first view waits for it)."""
    import datashader as ds

    page.select_box("teff", "logg", (4000, 1, 6000, 4))
    calls = []
    orig = ds.Canvas.points
    monkeypatch.setattr(ds.Canvas, "points", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    for plane in _planes(page):
        hv.render(plane, backend="bokeh")
    assert len(calls) == 4                       # 2 planes x (unselected + selected)


def test_one_table_is_built_when_a_page_opens(small_survey, monkeypatch):
    """Opening a page sets its filters once: the selection table (a Parquet read) is built
    once, not once per filter."""
    calls = []
    orig = CataloguePage._update_table
    monkeypatch.setattr(CataloguePage, "_update_table", lambda self: calls.append(1) or orig(self))
    page = CataloguePage(small_survey / "catalogue.parquet")
    assert len(calls) == 1 and set(page.components) == {"thin", "thick", "halo"}


def test_warm_up_reads_the_catalogue_columns_once_per_process(small_survey, monkeypatch):
    from labelcore.data import columnar

    path = small_survey / "catalogue.parquet"
    monkeypatch.setattr(columnar, "_SHARED", {})
    monkeypatch.setattr(catmod, "_WARM", {"done": True})
    catmod.warm_up(path)
    assert {"f:teff", "f:logg", "f:m_h", "f:alpha_m"} <= set(columnar.shared_table(path)._cache)
