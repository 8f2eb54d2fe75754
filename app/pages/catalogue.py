"""Catalogue page: the Kiel diagram and [alpha/M]-[M/H] plane(s) of a whole catalogue,
rendered server-side with datashader (tens of millions of stars), coloured by any column,
filtered by Galactic component / evolutionary phase / S/N, with linked box and lasso
selection, a selection table, streamed export of exactly the selection, and a star
inspector (tap a star, or pick a row of the selection table).

How it stays fast with ten million stars: the table is a
:class:`~labelcore.data.columnar.ColumnTable` (a Parquet file is read a column at a time,
only the columns drawn or filtered on); each plane is a pair of datashader layers (the
stars outside the selection in grey, the selected ones in colour) fed by DynamicMaps, so a
filter or a selection updates the images in place and a zoom re-aggregates only; the
selection itself is a boolean mask computed with numpy (:mod:`app.selection`), no
dataframe query and no geometry library. The images are aggregated at a fixed
``RASTER_PX`` and sent as float32 (:meth:`CataloguePage._raster`), so the browser's first
image is the final one; ``panel serve --setup app/warm.py`` reads the columns and builds a
throwaway session before the first visitor.
"""

from __future__ import annotations

import time
from pathlib import Path

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import NumberFormatter, PrintfTickFormatter
from holoviews.operation.datashader import rasterize

from app import figures
from app import selection as geom
from app.components import MessageArea, escape, label_title, plot_grid, run_choices, safe_table, template
from app.figures import PublicationExport
from app.pages.runlist import SourceTab, as_state
from labelcore import settings
from labelcore.data.columnar import ColumnTable, shared_table

figures.use_bokeh()

CMAPS = ["viridis", "inferno", "fire", "coolwarm", "kbc", "Spectral_r"]
#: grey ramp of the stars outside the selection
GREYS = ["#e4e4e4", "#9a9a9a"]
#: how the [alpha/M]-[M/H] plane is split into panels: (title, column, lo, hi) per panel
SPLITS = {
    "none": [],
    "giants / dwarfs": [("giants, log g < 3.5", "logg", -np.inf, 3.5), ("dwarfs, log g ≥ 3.5", "logg", 3.5, np.inf)],
    "Teff bins": [("Teff < 4500 K", "teff", -np.inf, 4500.0), ("4500 ≤ Teff < 5500 K", "teff", 4500.0, 5500.0),
                  ("5500 ≤ Teff < 6500 K", "teff", 5500.0, 6500.0), ("Teff ≥ 6500 K", "teff", 6500.0, np.inf)],
    "log g bins": [("log g < 1.5", "logg", -np.inf, 1.5), ("1.5 ≤ log g < 2.5", "logg", 1.5, 2.5),
                   ("2.5 ≤ log g < 3.5", "logg", 2.5, 3.5), ("log g ≥ 3.5", "logg", 3.5, np.inf)],
}
#: the planes: (x, y, x range, y range, inverted axes)
KIEL = ("teff", "logg", (3300.0, 7000.0), (-0.3, 5.3), True)
CHEM = ("m_h", "alpha_m", (-2.6, 0.8), (-0.2, 0.5), False)
NEED = ["teff", "logg", "m_h", "alpha_m"]
#: the tools active on a plane (every layer says so: the app's defaults make pan active)
ACTIVE = ["box_select", "tap"]
#: an export larger than this asks first
CONFIRM_ROWS = 1_000_000
#: rows of the selection table
TABLE_ROWS = 200
#: pixels (width, height) a plane is aggregated at (the browser scales it to the plot's frame)
RASTER_PX = (480, 400)
#: pixels (width, height) of the planes in a publication export
PUBLICATION_PX = (800, 640)


_WARM = {"done": False}


def warm_up(catalogue=None) -> None:
    """Compile datashader's aggregations once per process (count, and the mean-and-count
    summary of colouring by a column) by drawing a page of a few hundred stars in both
    modes, so that no user's first view or first colour change pays the compilation
    (~2-4 s). With ``catalogue`` (a Parquet path), also open and draw that catalogue once,
    which reads the columns its first view needs into the process's shared table (a
    10-million-star catalogue: ~4 s that its first visitor would otherwise wait).
    ``panel serve --setup app/warm.py`` runs it at server start."""
    if catalogue is not None and not _WARM.get(str(catalogue)):
        _WARM[str(catalogue)] = True
        warm_up()
        page = CataloguePage(Path(catalogue))
        for pane in page.plots():
            hv.renderer("bokeh").get_plot(pane.object)
        return
    if _WARM["done"]:
        return
    _WARM["done"] = True
    rng = np.random.default_rng(0)
    n = 500
    tiny = pd.DataFrame({"teff": rng.uniform(3500, 7000, n), "logg": rng.uniform(0, 5, n),
                         "m_h": rng.uniform(-2, 0.5, n), "alpha_m": rng.uniform(-0.1, 0.4, n)}).astype(np.float32)
    page = CataloguePage(tiny)
    for colour in ("density", "m_h"):          # the same code path as a user's view
        page.color_by = colour
        for pane in page.plots():
            hv.render(pane.object, backend="bokeh")
    page.select_box("teff", "logg", (4000, 1, 5000, 3))
    for plane in page.planes:
        plane[()]


def compact_image(img: hv.Image) -> hv.Image:
    """A rasterised layer in float32, NaN where no star falls: what Bokeh draws transparent.
    HoloViews sends counts (uint32 with no-data 0) and means (float64) as float64; float32
    keeps a count exact up to 2^24 per pixel and a mean to 7 digits, in half the bytes."""
    first = img.data[img.vdims[0].name].values
    if not (first != 0 if first.dtype.kind in "ui" else np.isfinite(first)).any():
        # no star in the layer (nothing selected, or none in view): one transparent pixel
        # over the same bounds, not a full image of NaN for the browser to decode and draw
        return img.clone((np.asarray(img.bounds.lbrt()[0::2]).mean(keepdims=True),
                          np.asarray(img.bounds.lbrt()[1::2]).mean(keepdims=True),
                          *[np.full((1, 1), np.nan, np.float32) for _ in img.vdims]),
                         bounds=img.bounds, vdims=[v.clone(nodata=None) for v in img.vdims])
    data = img.data.copy()
    vdims = []
    for v in img.vdims:
        arr = data[v.name].values
        if arr.dtype.kind in "ui":
            out = arr.astype(np.float32)
            out[arr == 0] = np.nan
        else:
            out = arr.astype(np.float32, copy=False)
        data[v.name] = (data[v.name].dims, out)
        vdims.append(v.clone(nodata=None))
    return img.clone(data, vdims=vdims)


def column_unit(name: str) -> str:
    """The unit of a catalogue column, for colour-bar titles and hover ("K", "dex", "")."""
    title = label_title(name)
    if title.endswith("]") and "[" in title:
        return title[title.rindex("[") + 1:-1]
    if name.startswith(("snr", "ood_score", "chi2")) or name in ("phase", "component"):
        return ""
    if name.endswith(("_pmra", "_pmdec")) or name in ("pmra", "pmdec"):
        return "mas/yr"
    if name in ("parallax",):
        return "mas"
    if name in ("ebv", "a_v", "av"):
        return "mag"
    if len(name) <= 4 and name[:1] in "gjhkw" and name.rstrip("0123456789bprs_").isalpha():
        return "mag"
    return ""


def tick_format(name: str) -> str:
    """A printf format for colour-bar ticks of a column: Teff in whole K, dex to 2."""
    if name in ("density", "teff") or name.startswith(("snr", "teff")):
        return "%d"
    if label_title(name).endswith("[dex]"):
        return "%.2f"
    return "%.3g"


def hover_format(name: str) -> str:
    """A Bokeh number format for hover values of a column: Teff in whole K, dex to 3."""
    if name == "teff" or name.startswith("snr"):
        return "{0}"
    if label_title(name).endswith("[dex]"):
        return "{0.000}"
    return "{0.[000]}"


class CataloguePage(pn.viewable.Viewer):
    """Kiel and [alpha/M]-[M/H] planes of a catalogue.

    Parameters
    ----------
    table : DataFrame, :class:`~labelcore.data.columnar.ColumnTable`, or path of a Parquet
        file, with at least ``teff, logg, m_h, alpha_m``.
    title : str
    inspector : callable(page, row) -> viewable, optional
        What the star inspector shows for the star at table position ``row``.
    """

    color_by = param.Selector(default="density", objects=["density"], doc="Colour by column")
    cmap = param.Selector(default="viridis", objects=CMAPS)
    components = param.ListSelector(default=[], objects=[])
    phases = param.ListSelector(default=[], objects=[])
    snr_column = param.Selector(default=None, objects=[None], allow_None=True, doc="S/N column of the cut")
    min_snr = param.Number(default=0.0, bounds=(0, 500), doc="Minimum S/N")
    split = param.Selector(default="none", objects=list(SPLITS), doc="[α/M]-[M/H] panels per Teff / log g bin")
    view_version = param.Integer(default=0, doc="goes up when the filters or the selection change")
    star = param.Integer(default=None, allow_None=True, doc="table row of the inspected star")
    n_selected = param.Integer(default=0)
    star_ref = param.String(default="", doc="id of the inspected star (kept in the page's URL)")

    def __init__(self, table, title: str = "Catalogue", inspector=None, **params):
        if isinstance(table, ColumnTable):
            self.data = table
        elif isinstance(table, pd.DataFrame):
            self.data = ColumnTable(table)
        else:                            # a Parquet file: shared by every session of the process
            self.data = shared_table(table)
        miss = [c for c in NEED if c not in self.data.numeric]
        if miss:
            raise ValueError(f"catalogue table lacks columns {miss}")
        super().__init__(**params)
        self.title, self.inspector = title, inspector
        self._sel = None                      # boolean mask over the table, None = nothing selected
        self._filter_cache = None
        self._frames: dict = {}
        self._frames_static: dict = {}
        self._version_stream = self._star_stream = None
        self._streams = []
        self.messages = MessageArea()
        self._fmt = pn.widgets.Select(label="Format", options=["parquet", "csv", "fits"], value="parquet", width=100)
        self._export_btn = pn.widgets.Button(label="Export selection", color="primary", width=150)
        self._export_btn.on_click(lambda e: self.export(confirmed=False))
        self._confirm_btn = pn.widgets.Button(label="Write them", color="warning", width=150, visible=False)
        self._confirm_btn.on_click(lambda e: self.export(confirmed=True))
        self._download = pn.widgets.FileDownload(label="Download", color="success", visible=False,
                                                 width=250, auto=True)
        self._clear_btn = pn.widgets.Button(label="Clear selection", color="light", width=130)
        self._clear_btn.on_click(lambda e: self.clear_selection())
        self._table_holder = pn.Column(sizing_mode="stretch_width")
        self._inspect_holder = pn.Column(sizing_mode="stretch_width")
        self.last_export = None
        self.figure_export = PublicationExport(self.publication_elements, name="catalogue")
        d = self.data
        numeric = [c for c in d.numeric if not c.endswith(("_err", "_err_total")) and c not in ("source_id",)]
        self.param.color_by.objects = ["density", *numeric]
        for name, col in (("components", "component"), ("phases", "phase")):
            self.param[name].objects = d.categories(col)[1] if d.has(col) else []
        snr_cols = [c for c in d.numeric if c == "snr" or c.startswith("snr_")]
        self.param.snr_column.objects = snr_cols or [None]
        with param.parameterized.discard_events(self):   # one table, not one per filter set
            self.param.update(components=self.param.components.objects, phases=self.param.phases.objects,
                              snr_column=snr_cols[0] if snr_cols else None)
        self._table_soon()

    # ------------------------------------------------------------------ data
    @param.depends("components", "phases", "min_snr", "snr_column", watch=True)
    def _filters_changed(self):
        self._filter_cache = None
        self._frames.clear()
        self._selection_changed()

    def filter_mask(self) -> np.ndarray:
        """Stars passing the component / phase / S/N filters."""
        if self._filter_cache is None:
            d = self.data
            m = np.ones(d.n, bool)
            for name, col in (("components", "component"), ("phases", "phase")):
                if d.has(col):
                    codes, cats = d.categories(col)
                    chosen = set(getattr(self, name) or [])
                    if chosen >= set(cats):
                        continue
                    keep = np.zeros(len(cats) + 1, bool)       # the last entry: missing (code -1)
                    keep[[i for i, c in enumerate(cats) if c in chosen]] = True
                    m &= keep[codes]
            if self.min_snr > 0 and self.snr_column:
                s = d.column(self.snr_column)
                with np.errstate(invalid="ignore"):
                    m &= np.nan_to_num(s, nan=0.0) >= self.min_snr
            self._filter_cache = m
        return self._filter_cache

    def selection_mask(self) -> np.ndarray:
        """Stars shown and selected (all shown stars when nothing is selected)."""
        m = self.filter_mask()
        return m & self._sel if self._sel is not None else m

    @property
    def has_selection(self) -> bool:
        return self._sel is not None

    def filtered(self) -> pd.DataFrame:
        """The shown stars as a DataFrame (all columns; for small catalogues and tests)."""
        return self.data.rows(np.flatnonzero(self.filter_mask()))

    def selected(self) -> pd.DataFrame:
        """The selected stars as a DataFrame (all columns; for small catalogues and tests)."""
        return self.data.rows(np.flatnonzero(self.selection_mask()))

    def _on_plane(self, spec) -> np.ndarray:
        """Stars with both coordinates of a plane (the others cannot be drawn on it)."""
        key = f"plane:{spec[0]}:{spec[1]}"
        if key not in self._frames_static:
            self._frames_static[key] = np.isfinite(self.data.column(spec[0])) & np.isfinite(self.data.column(spec[1]))
        return self._frames_static[key]

    def plane_counts(self) -> dict[str, int]:
        """Selected (or, with nothing selected, shown) stars on each plane."""
        m = self.selection_mask()
        return {"Kiel diagram": int((m & self._on_plane(KIEL)).sum()),
                "[α/M]–[M/H]": int((m & self._on_plane(CHEM)).sum())}

    def counts_text(self) -> str:
        n_shown = int(self.filter_mask().sum())
        text = f"**{n_shown:,}** of {self.data.n:,} stars shown"
        if self.has_selection:
            per = self.plane_counts()
            text += (f" · **{self.n_selected:,} selected**: "
                     + ", ".join(f"{v:,} on the {k}" for k, v in per.items()))
        return text

    def panels(self, df) -> list[tuple[str, pd.DataFrame]]:
        """The [alpha/M]-[M/H] panels of the current split: (title, stars) each."""
        if self.split == "none":
            return [("[α/M] vs [M/H]", df)]
        out = []
        for title, col, lo, hi in SPLITS[self.split]:
            x = df[col].to_numpy(float)
            out.append((f"[α/M] vs [M/H], {title}", df[(x >= lo) & (x < hi)]))
        return out

    def _panel_mask(self, sub) -> np.ndarray | None:
        if sub is None:
            return None
        col, lo, hi = sub
        v = self.data.column(col)
        with np.errstate(invalid="ignore"):
            return (v >= lo) & (v < hi)

    # ------------------------------------------------------------------ selection
    def _selection_changed(self):
        self.n_selected = int(self.selection_mask().sum()) if self.has_selection else 0
        self._frames.clear()
        self.view_version += 1
        self._table_soon()
        self._download.visible = False
        self._confirm_btn.visible = False

    def select(self, mask) -> None:
        """Make ``mask`` (over the table) the selection."""
        self._sel = np.asarray(mask, bool)
        self._selection_changed()

    def clear_selection(self) -> None:
        self._sel = None
        self._selection_changed()

    def select_box(self, x, y, bounds, sub=None) -> None:
        """Select the stars of plane (x, y) inside ``bounds`` (and of panel ``sub``)."""
        m = geom.in_box(self.data.column(x), self.data.column(y), bounds)
        pm = self._panel_mask(sub)
        self.select(m if pm is None else m & pm)

    def select_lasso(self, x, y, vertices, sub=None) -> None:
        """Select the stars of plane (x, y) inside the lasso polygon ``vertices``."""
        m = geom.in_polygon(self.data.column(x), self.data.column(y), vertices)
        pm = self._panel_mask(sub)
        self.select(m if pm is None else m & pm)

    def pick(self, x, y, x0, y0, spans, sub=None):
        """Inspect the shown star nearest (x0, y0) on plane (x, y); returns its row or None."""
        cand = self.filter_mask()
        pm = self._panel_mask(sub)
        if pm is not None:
            cand = cand & pm
        row = geom.nearest(self.data.column(x), self.data.column(y), x0, y0, spans, cand)
        if row is not None:
            self.inspect(row)
        return row

    @param.depends("star_ref", watch=True)
    def _star_ref_changed(self):
        """A star named in the URL (or typed): inspect it if it is another one."""
        ref = (self.star_ref or "").strip()
        if not ref or ref == self.star_id():
            return
        for c in ("id", "star_id", "obs_id", "source_id"):
            row = self.data.find(c, ref)
            if row is not None:
                self.inspect(row)
                return
        self.messages.say("No star {ref} in this catalogue.", "warning", ref=ref)

    def inspect(self, row: int) -> None:
        """Show the star at table row ``row`` in the inspector and mark it on the planes."""
        self.star = int(row)
        self.star_ref = self.star_id(int(row)) or ""
        if self.inspector is None:
            info = self.data.rows([row], [c for c in ("id", *NEED) if self.data.has(c)]).iloc[0]
            body = pn.pane.Markdown("  \n".join(f"**{escape(k)}**: {escape(v)}" for k, v in info.items()))
        else:
            self._inspect_holder[:] = [pn.indicators.LoadingSpinner(value=True, size=30, label="Loading the star…")]
            try:
                body = self.inspector(self, int(row))
            except Exception as exc:  # noqa: BLE001 - shown to the user, the page goes on
                body = pn.pane.Alert(f"This star cannot be inspected: {escape(exc)}", alert_type="warning")
        self._inspect_holder[:] = [body]

    def star_id(self, row: int | None = None) -> str | None:
        row = self.star if row is None else row
        if row is None:
            return None
        for c in ("id", "star_id", "obs_id", "source_id"):
            if self.data.has(c):
                return str(self.data.values(c)[row])
        return str(row)

    # ------------------------------------------------------------------ table
    def table_columns(self) -> list[str]:
        cols = [c for c in ("id", "source_id") if self.data.has(c)] + NEED
        for c in ("component", "phase", self.snr_column, None if self.color_by == "density" else self.color_by):
            if c and self.data.has(c) and c not in cols:
                cols.append(c)
        return cols

    def _table_soon(self):
        """Update the table after the planes: in a served session on the next tick, so that
        the new images leave first (the first view's table comes once the page is shown);
        at once elsewhere (notebooks, scripts, tests)."""
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            self._update_table()
        elif not self._table_holder.objects:
            pn.state.onload(self._update_table)
        else:
            doc.add_next_tick_callback(self._update_table)

    def _update_table(self):
        """The first ``TABLE_ROWS`` rows of the selection (or of the shown stars) in the table
        under the planes; the table widget is kept and given the new rows when its columns
        stay the same (a new Tabulator per selection cost ~0.2 s)."""
        mask = self.selection_mask()
        rows = np.flatnonzero(mask[: max(TABLE_ROWS, 1) * 64])[:TABLE_ROWS]
        if len(rows) < TABLE_ROWS:             # the selection is sparse near the top: look further
            rows = np.flatnonzero(mask)[:TABLE_ROWS]
        df = self.data.rows(rows, self.table_columns())
        df.insert(0, "row", rows)
        self._table_df = df
        title = "Selection" if self.has_selection else "Shown stars"
        n = int(mask.sum())
        text = f"#### {title}: first {min(n, TABLE_ROWS):,} of {n:,} stars (click a row to inspect the star)"
        table = self._table_holder[1] if len(self._table_holder) == 2 else None
        if table is not None and list(table.value.columns) == list(df.columns):
            self._table_holder[0].object = text
            table.value = df
            return
        fmt = {c: NumberFormatter(format="0" if c == "teff" else "0.000" if c in NEED else "0.[00]")
               for c in df.columns if c not in ("id", "source_id") and pd.api.types.is_float_dtype(df[c])}
        table = safe_table(df, formatters=fmt, pagination="local", page_size=10, height=330,
                           sizing_mode="stretch_width", hidden_columns=["row"], selectable=1, show_index=False)
        table.on_click(lambda e: self.inspect(int(self._table_df["row"].iloc[e.row])))
        self._table_holder[:] = [pn.pane.Markdown(text), table]

    # ------------------------------------------------------------------ plots
    def _index(self, sub, selected: bool):
        """Rows of a layer (selected or unselected stars, of panel ``sub``), shared by the
        planes; None for every star."""
        key = ("rows", sub, selected, self.view_version)
        if key not in self._frames:
            m = self.filter_mask()
            if self.has_selection:
                m = m & (self._sel if selected else ~self._sel)
            elif not selected:
                m = np.zeros_like(m)
            pm = self._panel_mask(sub)
            if pm is not None:
                m = m & pm
            self._frames[key] = None if m.all() else np.flatnonzero(m)
        return self._frames[key]

    def _frame(self, x, y, sub, selected: bool) -> pd.DataFrame:
        key = (x, y, sub, selected, self.color_by, self.view_version)
        if key not in self._frames:
            idx = self._index(sub, selected)
            names = [x, y] + ([self.color_by] if selected and self.color_by != "density" else [])
            if idx is None:               # every star: the cached columns themselves, no copy
                arrays = [self.data.column(c) for c in names]
            else:
                arrays = [self.data.column(c)[idx] for c in names]
            cols = dict(zip([x, y, self._cname()][:len(names)], arrays, strict=True))
            # copy=False: the frame wraps the arrays (pandas would otherwise stack them)
            self._frames[key] = pd.DataFrame(cols, copy=False)
        return self._frames[key]

    def _cname(self) -> str:
        """The colour column's name inside a plane's points (it may also be an axis)."""
        return f"colour_{self.color_by}"

    def _points(self, x, y, sub, selected):
        vdims = []
        if selected and self.color_by != "density":
            vdims = [hv.Dimension(self._cname(), label=label_title(self.color_by),
                                  unit=column_unit(self.color_by) or None)]

        def cb(view_version):
            return hv.Points(self._frame(x, y, sub, selected), kdims=[hv.Dimension(x, label=label_title(x)),
                                                                      hv.Dimension(y, label=label_title(y))],
                             vdims=vdims)
        return hv.DynamicMap(cb, streams=[self._version_stream])

    def _pixel_ratio(self) -> float:
        """Aggregate pixels per ``RASTER_PX`` pixel: coarser for small catalogues so that a few
        thousand stars are seen, not single faint pixels (one star = one bin, so the
        hover's count and mean stay what they say)."""
        n = int(self.filter_mask().sum())
        return 0.25 if n < 20_000 else 0.5 if n < 300_000 else 1.0

    def _star_marker(self, x, y):
        def cb(star):
            if star is None:
                return hv.Points([], kdims=[x, y])
            return hv.Points([(float(self.data.column(x)[star]), float(self.data.column(y)[star]))], kdims=[x, y])
        return hv.DynamicMap(cb, streams=[self._star_stream]).opts(
            marker="star", size=18, color="#d1495b", line_color="black", tools=[], active_tools=ACTIVE)

    def _raster(self, points, agg, rng, pixel_ratio):
        """One datashader layer of a plane, as the browser gets it.

        - It is aggregated at ``RASTER_PX`` pixels (times ``pixel_ratio``) whatever the plot's
          size in the browser, which draws it to the plot's frame. With HoloViews' PlotSize
          stream the first image was thrown away as soon as the browser reported its size,
          and the sharp one came a server round trip later (at 10M stars, 0.7-1 s of the
          first paint); a zoom re-aggregates at the same resolution over the new range.
        - ``rng`` is the plane's range stream, one for all its layers, so that a zoom updates
          them in one refresh and one message (with a stream per layer they came one after
          the other, 0.3 s apart at 10M stars). It starts at the plane's range: HoloViews
          sets a new plot's range streams to the plot's range and re-renders it (its default
          xlim counts as set); from an unset stream that re-aggregated every layer, from the
          same values the result is memoised.
        - The images are float32 with NaN where no star falls (:func:`compact_image`),
          half the bytes of HoloViews' float64.
        """
        w, h = RASTER_PX
        last = {}

        def compact(img):             # once per new aggregate (a plot refresh re-applies it)
            if last.get("in") is not img:
                last["in"], last["out"] = img, compact_image(img)
            return last["out"]
        return rasterize(points, aggregator=agg, x_range=rng.x_range, y_range=rng.y_range,
                         width=int(w * pixel_ratio), height=int(h * pixel_ratio), streams=[rng]).apply(compact)

    def plane(self, spec, sub=None, title=""):
        """One plane (overlay of the unselected, selected and inspected-star layers) with its
        box, lasso and tap streams wired to the page."""
        x, y, xr, yr, invert = spec
        pr = self._pixel_ratio()
        # no xlim/ylim: the images span x_range/y_range already, and a plot with limits
        # re-aggregates every layer once more right after its first render
        common = dict(invert_xaxis=invert, invert_yaxis=invert, responsive=True,
                      min_height=380, bgcolor="white", xlabel=label_title(x), ylabel=label_title(y))
        rng = hv.streams.RangeXY(x_range=tuple(xr), y_range=tuple(yr))
        grey = self._raster(self._points(x, y, sub, False), ds.count(), rng, pr).opts(
            cmap=GREYS, cnorm="eq_hist", alpha=0.9, tools=[], active_tools=ACTIVE, **common)
        cname = self._cname()
        if self.color_by == "density":
            agg, clabel, fmt = ds.count(), "stars per pixel", "%d"
        else:
            agg = ds.summary(**{self._cname(): ds.mean(self._cname()), "count": ds.count()})
            unit = column_unit(self.color_by)
            clabel = f"mean {label_title(self.color_by)}" + ("" if "[" in label_title(self.color_by) or not unit
                                                             else f" [{unit}]")
            fmt = tick_format(self.color_by)
        cname = self._cname()
        top = self._raster(self._points(x, y, sub, True), agg, rng, pr)
        if self.color_by != "density":   # hover: "mean Teff [K]" and "stars" of the bin
            top = top.redim.label(**{cname: clabel, "count": "stars"})
        tips = [(label_title(x), f"$x{hover_format(x)}"), (label_title(y), f"$y{hover_format(y)}")]
        tips += ([("stars", "@image")] if self.color_by == "density"
                 else [(clabel, f"@image{hover_format(self.color_by)}"), ("stars", "@{count}")])
        top = top.opts(
            hover_tooltips=tips, cmap=self.cmap, colorbar=True, clabel=clabel,
            cnorm="eq_hist" if self.color_by == "density" else "linear",
            colorbar_opts={"formatter": PrintfTickFormatter(format=fmt)},
            tools=["hover", "box_select", "lasso_select", "tap"], active_tools=ACTIVE,
            default_tools=["pan", "box_zoom", "wheel_zoom", "reset", "save"], title=title, **common)
        box = hv.streams.BoundsXY(source=top)
        lasso = hv.streams.Lasso(source=top)
        tap = hv.streams.Tap(source=top)
        spans = (xr[1] - xr[0], yr[1] - yr[0])
        box.add_subscriber(lambda bounds: bounds is not None and self.select_box(x, y, bounds, sub))
        lasso.add_subscriber(lambda geometry: geometry is not None and self.select_lasso(x, y, geometry, sub))
        tap.add_subscriber(lambda **kw: kw.get("x") is not None and self.pick(x, y, kw["x"], kw["y"], spans, sub))
        self._streams += [box, lasso, tap]
        self._plane_info.append((spec, title, clabel, sub, agg, rng))
        return grey * top * self._star_marker(x, y)

    def publication_elements(self) -> list:
        """The planes as they are now (zoom, selection, colouring, star) as static elements
        styled for the matplotlib backend: what the publication export writes. They are
        aggregated afresh at ``PUBLICATION_PX`` pixels over each plane's current range, so
        the figure does not depend on the browser window's size."""
        import holoviews.plotting.mpl  # noqa: F401  (the matplotlib backend's options)

        out = []
        w, h = PUBLICATION_PX
        for (x, y, xr, yr, invert), title, clabel, sub, agg, rng in self._plane_info:
            xr, yr = rng.x_range or xr, rng.y_range or yr
            grey, top = (compact_image(rasterize(self._points(x, y, sub, sel)[()], aggregator=a, x_range=xr,
                                                 y_range=yr, width=w, height=h, dynamic=False))
                         for sel, a in ((False, ds.count()), (True, agg)))
            grey = grey.opts(cmap=GREYS, cnorm="eq_hist", colorbar=False, backend="matplotlib")
            top = top.opts(cmap=self.cmap, colorbar=True, clabel=clabel,
                           cnorm="log" if self.color_by == "density" else "linear", backend="matplotlib")
            parts = [grey, top]
            if self.star is not None:
                parts.append(self._star_marker(x, y)[()].opts(marker="*", s=250, color="#d1495b",
                                                               edgecolors="black", backend="matplotlib"))
            out.append(hv.Overlay(parts).opts(title=title, invert_xaxis=invert, invert_yaxis=invert,
                                              xlabel=label_title(x), ylabel=label_title(y), fig_inches=(5, 4),
                                              backend="matplotlib"))
        return out

    def _reset_streams(self):
        """Fresh streams for a new set of plots; the previous plots' streams stop watching
        the page (else every replaced plot would still be re-rendered on each change)."""
        for s in self._streams:
            if hasattr(s, "unwatch"):
                s.unwatch()
            s.clear()
        self._version_stream = hv.streams.Params(self, ["view_version"])
        self._star_stream = hv.streams.Params(self, ["star"])
        self._streams = [self._version_stream, self._star_stream]
        self._plane_info = []

    @param.depends("color_by", "cmap", "split")
    def plots(self):
        if not self.filter_mask().any():
            return pn.pane.Alert("No star passes the current filters.", alert_type="warning")
        self._reset_streams()
        kiel = self.plane(KIEL, title="Kiel diagram")
        if self.split == "none":
            chem = [self.plane(CHEM, title="[α/M] vs [M/H]")]
        else:
            chem = [self.plane(CHEM, sub=(col, lo, hi), title=f"[α/M] vs [M/H], {t}")
                    for t, col, lo, hi in SPLITS[self.split]]
        self.planes = [kiel, *chem]
        # one pane per plane (not a Bokeh grid): each keeps its own toolbar and save tool
        return plot_grid(self.planes, ncols=2, linked_axes=False)

    @param.depends("view_version")
    def _counts(self):
        return pn.pane.Markdown(self.counts_text())

    # ------------------------------------------------------------------ export
    def export(self, confirmed: bool = False, folder=None):
        """Write the selection (or, with nothing selected, the shown stars) to a file under
        ``folder`` (default ``<data dir>/exports``), streamed; offer it for download.
        More than :data:`CONFIRM_ROWS` rows ask first. Returns the path written, or None."""
        mask = self.selection_mask()
        n = int(mask.sum())
        fmt = self._fmt.value
        if n == 0:
            self.messages.say("Nothing to export: no star is selected.", "warning")
            return None
        if n > CONFIRM_ROWS and not confirmed:
            self._confirm_btn.label = f"Write {n:,} rows"
            self._confirm_btn.visible = True
            self.messages.say("The selection has **{n}** rows × {c} columns; writing it takes a while and the "
                              "file is large. Select fewer stars, or confirm.", "warning",
                              n=f"{n:,}", c=len(self.data.columns))
            return None
        self._confirm_btn.visible = False
        folder = Path(folder) if folder else settings.data_dir() / "exports"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        what = "selection" if self.has_selection else "shown"
        path = folder / f"catalogue-{what}-{stamp}-{n}.{fmt}"
        t0 = time.perf_counter()
        rows = self.data.write_rows(mask, path, fmt)
        dt = time.perf_counter() - t0
        self.last_export = path
        self._download.file = str(path)
        self._download.filename = path.name
        self._download.label = f"Download ({fmt}, {rows:,} rows)"
        self._download.visible = True
        size = path.stat().st_size / 1e6
        self.messages.say("Wrote **{rows}** rows ({size} MB, {dt} s) to {path}.", "success",
                          rows=f"{rows:,}", size=f"{size:.1f}", dt=f"{dt:.1f}", path=str(path))
        return path

    # ------------------------------------------------------------------ layout
    def controls(self):
        comp = []
        if self.param.components.objects:
            comp = [pn.pane.Markdown("**Galactic component**", margin=(5, 10, 0, 10)),
                    pn.widgets.CheckBoxGroup.from_param(self.param.components, label="Galactic component",
                                                        inline=True)]
        phase = [pn.widgets.MultiChoice.from_param(self.param.phases, label="Evolutionary phase")] \
            if self.param.phases.objects else []
        snr = []
        if self.snr_column:
            snr = [pn.widgets.Select.from_param(self.param.snr_column, label="S/N column"),
                   pn.widgets.FloatSlider.from_param(self.param.min_snr, label="Minimum S/N", step=5)]
        return pn.Column(
            pn.widgets.Select.from_param(self.param.color_by, label="Colour by"),
            pn.widgets.Select.from_param(self.param.cmap, label="Colour map"),
            *comp, *phase, *snr,
            pn.widgets.Select.from_param(self.param.split, label="[α/M]–[M/H] panels"),
            self._counts,
            pn.pane.Markdown("Box or lasso on any plane selects its stars in all of them; tap a star to "
                             "inspect it.", styles={"color": "#555"}),
            self._clear_btn,
            pn.Row(self._fmt, self._export_btn), self._confirm_btn, self._download, self.messages,
            pn.layout.Divider(), self.figure_export,
            width=320,
        )

    def __panel__(self):
        return pn.Row(self.controls(),
                      pn.Column(pn.panel(self.plots, sizing_mode="stretch_width", loading_indicator=True),
                                self._inspect_holder, self._table_holder, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")

    def template(self):
        return template(f"labelcore — {self.title}", sidebar=[self.controls()],
                        main=[self.plots, self._inspect_holder, self._table_holder])


class CatalogueTab(SourceTab):
    """The Catalogue tab: the survey's own catalogue (or ``$LABELCORE_CATALOGUE``), or the
    label catalogue of a finished prediction run (``labelcore.runs`` task "predict") in
    the same planes, each with the star inspector.

    Parameters
    ----------
    survey_table : DataFrame or Parquet path of the catalogue shown by default.
    state : the app state (or a run store) whose prediction runs are offered.
    """

    source_label = "Catalogue"

    def __init__(self, survey_table, state=None, title="Catalogue", **params):
        super().__init__(**params)
        self.state = as_state(state)
        self.survey_table, self.store, self.title = survey_table, self.state.store, title
        self.state.param.watch(lambda e: self.refresh(), "runs_version")
        self.refresh()
        self.start("survey")

    def refresh(self):
        """List the finished prediction runs of the store."""
        opts = {f"{self.title}": "survey"}
        if self.store is not None:
            opts.update({f"Labels: {k}": v for k, v in run_choices(self.store, "predict").items()})
        self.param.source.objects = opts

    def _inspector(self):
        from app.pages.inspector import StarInspector

        return StarInspector(self.state)

    def make_page(self, source):
        """The :class:`CataloguePage` of ``source`` ("survey" or a prediction run id)."""
        insp = self._inspector()
        if source == "survey":
            return CataloguePage(self.survey_table, title=self.title, inspector=insp.view_survey_star)
        run = self.store.get(source)
        path = run.path / "catalogue.parquet"
        table = path if path.exists() else run.catalogue()
        try:
            return CataloguePage(table, title=f"Labels of run {source}",
                                 inspector=lambda page, row: insp.view_run_star(run, page, row))
        except ValueError as exc:
            raise ValueError(f"This catalogue cannot be shown in these planes: {exc}") from exc
