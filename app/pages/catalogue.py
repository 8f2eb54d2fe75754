"""Catalogue page: Kiel diagram and [alpha/M] vs [M/H] of a whole catalogue, rendered
server-side with datashader (millions of stars), coloured by any column, filtered by
Galactic component / evolutionary phase, with linked box selection and exports."""

from __future__ import annotations

import io

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from holoviews.operation.datashader import dynspread, rasterize

from app.components import label_title, run_choices
from app.pages.runlist import SourceTab, as_state
from labelcore.data.io import write_fits_table

hv.extension("bokeh", logo=False)

CMAPS = ["viridis", "inferno", "fire", "coolwarm", "kbc", "Spectral_r"]
#: how the [alpha/M]-[M/H] plane is split into panels: (title, column, lo, hi) per panel
SPLITS = {
    "none": [],
    "giants / dwarfs": [("giants, log g < 3.5", "logg", -np.inf, 3.5), ("dwarfs, log g ≥ 3.5", "logg", 3.5, np.inf)],
    "Teff bins": [("Teff < 4500 K", "teff", -np.inf, 4500.0), ("4500 ≤ Teff < 5500 K", "teff", 4500.0, 5500.0),
                  ("5500 ≤ Teff < 6500 K", "teff", 5500.0, 6500.0), ("Teff ≥ 6500 K", "teff", 6500.0, np.inf)],
    "log g bins": [("log g < 1.5", "logg", -np.inf, 1.5), ("1.5 ≤ log g < 2.5", "logg", 1.5, 2.5),
                   ("2.5 ≤ log g < 3.5", "logg", 2.5, 3.5), ("log g ≥ 3.5", "logg", 3.5, np.inf)],
}


class CataloguePage(pn.viewable.Viewer):
    """Kiel and [alpha/M]-[M/H] planes of a catalogue.

    Parameters
    ----------
    table : DataFrame with at least ``teff, logg, m_h, alpha_m``.
    """

    color_by = param.Selector(default="density", objects=["density"], doc="Colour by column")
    cmap = param.Selector(default="viridis", objects=CMAPS)
    components = param.ListSelector(default=[], objects=[])
    phases = param.ListSelector(default=[], objects=[])
    min_snr = param.Number(default=0.0, bounds=(0, 500), doc="Minimum S/N (APOGEE-like)")
    split = param.Selector(default="none", objects=list(SPLITS), doc="[α/M]-[M/H] panels per Teff / log g bin")

    def __init__(self, table: pd.DataFrame, title: str = "Catalogue", **params):
        need = ["teff", "logg", "m_h", "alpha_m"]
        miss = [c for c in need if c not in table.columns]
        if miss:
            raise ValueError(f"catalogue table lacks columns {miss}")
        super().__init__(**params)
        self.title = title
        self.table = table
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])
                   and not c.endswith("_err") and c not in ("source_id",)]
        self.param.color_by.objects = ["density", *numeric]
        for name in ("components", "phases"):
            col = "component" if name == "components" else "phase"
            vals = list(table[col].cat.categories) if col in table and hasattr(
                table[col], "cat") else []
            self.param[name].objects = vals
            setattr(self, name, vals)
        self.selection = hv.link_selections.instance()
        self._download_fmt = pn.widgets.Select(label="Format", options=["parquet", "csv", "fits"],
                                               value="parquet", width=110)
        self._download = pn.widgets.FileDownload(callback=self._export, filename="catalogue.parquet",
                                                 label="Export selection", color="primary",
                                                 width=180)
        self._download_fmt.param.watch(
            lambda e: setattr(self._download, "filename", f"catalogue.{e.new}"), "value")

    # ------------------------------------------------------------------ data
    def filtered(self) -> pd.DataFrame:
        df = self.table
        m = np.ones(len(df), bool)
        if "component" in df and self.components is not None:
            m &= df["component"].isin(self.components).to_numpy()
        if "phase" in df and self.phases is not None:
            m &= df["phase"].isin(self.phases).to_numpy()
        if self.min_snr > 0 and "snr_apogee" in df:
            m &= (df["snr_apogee"].fillna(0) >= self.min_snr).to_numpy()
        return df[m]

    def counts_text(self) -> str:
        return f"**{len(self.filtered()):,}** of {len(self.table):,} stars shown"

    # ------------------------------------------------------------------ plots
    def _aggregator(self):
        return ds.count() if self.color_by == "density" else ds.mean(self.color_by)

    def _plane(self, df, x, y, xr, yr, invert):
        vdims = [] if self.color_by == "density" else [self.color_by]
        pts = hv.Points(df, kdims=[x, y], vdims=vdims)
        r = rasterize(pts, aggregator=self._aggregator(), x_range=xr, y_range=yr,
                      width=450, height=400)
        clabel = "stars per pixel" if self.color_by == "density" else self.color_by
        opts = dict(cmap=self.cmap, colorbar=True, clabel=clabel, tools=["hover", "box_select"],
                    xlabel=label_title(x), ylabel=label_title(y),
                    invert_xaxis=invert, invert_yaxis=invert, responsive=True, min_height=380,
                    cnorm="eq_hist" if self.color_by == "density" else "linear",
                    bgcolor="white", default_tools=["pan", "wheel_zoom", "reset", "save"])
        return dynspread(r, threshold=0.6, max_px=2).opts(**opts)

    def panels(self, df) -> list[tuple[str, pd.DataFrame]]:
        """The [alpha/M]-[M/H] panels of the current split: (title, stars) each."""
        if self.split == "none":
            return [("[α/M] vs [M/H]", df)]
        out = []
        for title, col, lo, hi in SPLITS[self.split]:
            x = df[col].to_numpy(float)
            out.append((f"[α/M] vs [M/H], {title}", df[(x >= lo) & (x < hi)]))
        return out

    @param.depends("color_by", "cmap", "components", "phases", "min_snr", "split")
    def plots(self):
        df = self.filtered()
        if df.empty:
            return pn.pane.Alert("No star passes the current filters.", alert_type="warning")
        kiel = self._plane(df, "teff", "logg", (3300, 7000), (-0.3, 5.3), True).opts(
            title="Kiel diagram")
        chem = [self._plane(sub, "m_h", "alpha_m", (-2.6, 0.8), (-0.2, 0.5), False).opts(
                    title=f"{title} ({len(sub):,})")
                for title, sub in self.panels(df) if len(sub)]
        return pn.pane.HoloViews(self.selection(hv.Layout([kiel, *chem])).cols(2), sizing_mode="stretch_width")

    @param.depends("components", "phases", "min_snr")
    def _counts(self):
        return pn.pane.Markdown(self.counts_text())

    # ------------------------------------------------------------------ export
    def selected(self) -> pd.DataFrame:
        df = self.filtered()
        expr = self.selection.selection_expr
        if expr is not None:
            try:
                mask = np.asarray(expr.apply(df), bool)
                df = df[mask]
            except Exception:  # a selection on dims the table lacks: export the filter
                pass
        return df

    def _export(self):
        df = self.selected()
        fmt = self._download_fmt.value
        buf = io.BytesIO()
        if fmt == "parquet":
            df.to_parquet(buf, index=False)
        elif fmt == "csv":
            buf.write(df.to_csv(index=False).encode())
        else:
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "catalogue.fits"
                write_fits_table(df, p)
                buf.write(p.read_bytes())
        buf.seek(0)
        return buf

    # ------------------------------------------------------------------ layout
    def controls(self):
        return pn.Column(
            pn.widgets.Select.from_param(self.param.color_by, name="Colour by"),
            pn.widgets.Select.from_param(self.param.cmap, name="Colour map"),
            pn.widgets.CheckButtonGroup.from_param(self.param.components, name="Component",
                                                   color="primary"),
            pn.widgets.MultiChoice.from_param(self.param.phases, name="Phase"),
            pn.widgets.FloatSlider.from_param(self.param.min_snr, name="Min S/N (APOGEE)"),
            pn.widgets.Select.from_param(self.param.split, label="[α/M]–[M/H] panels"),
            self._counts,
            pn.Row(self._download_fmt, self._download),
            width=300,
        )

    def __panel__(self):
        return pn.Row(self.controls(), pn.panel(self.plots, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")

    def template(self):
        tpl = pn.template.FastListTemplate(title=f"labelcore — {self.title}",
                                           sidebar=[self.controls()], main=[self.plots],
                                           accent="#2f5f8a")
        return tpl


class CatalogueTab(SourceTab):
    """The Catalogue tab: the survey's own catalogue, or the label catalogue of a finished
    prediction run (``labelcore.runs`` task "predict") in the same planes.

    Parameters
    ----------
    survey_table : the survey catalogue (shown by default).
    state : the app state (or a run store) whose prediction runs are offered.
    """

    source_label = "Catalogue"

    def __init__(self, survey_table: pd.DataFrame, state=None, title="Catalogue", **params):
        super().__init__(**params)
        self.state = as_state(state)
        self.survey_table, self.store, self.title = survey_table, self.state.store, title
        self.state.param.watch(lambda e: self.refresh(), "runs_version")
        self.refresh()
        self.source = "survey"
        self._show()

    def refresh(self):
        """List the finished prediction runs of the store."""
        opts = {f"{self.title}": "survey"}
        if self.store is not None:
            opts.update({f"Labels: {k}": v for k, v in run_choices(self.store, "predict").items()})
        self.param.source.objects = opts

    def make_page(self, source):
        """The :class:`CataloguePage` of ``source`` ("survey" or a prediction run id)."""
        if source == "survey":
            return CataloguePage(self.survey_table, title=self.title)
        table = self.store.get(source).catalogue()
        for c in ("phase", "component"):
            if c in table.columns:
                table[c] = table[c].astype("category")
        try:
            return CataloguePage(table, title=f"Labels of run {source}")
        except ValueError as exc:
            raise ValueError(f"This catalogue cannot be shown in these planes: {exc}") from exc
