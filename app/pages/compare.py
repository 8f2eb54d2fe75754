"""Compare page: several finished runs on the same held-out stars -- one-to-one plots of
predicted against reference labels, residuals against S/N, and bias/scatter per label and
per S/N bin for each run side by side.

Runs are comparable when their data configs are identical (same survey set-up, stars,
split and seed): only then are their held-out stars the same. The page says so when they
are not. UI only: predictions are read from each run; the statistics are
:func:`labelcore.evaluate.bias_scatter`."""

from __future__ import annotations

import json

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from app import figures
from app.components import COLORS, TOOLS, plot_grid, run_choices, safe_table
from app.figures import PublicationExport
from app.pages.runlist import RunListViewer
from labelcore.constants import SNR_BINS
from labelcore.evaluate import bias_scatter, snr_bin_labels

figures.use_bokeh()


def _data_key(run) -> str:
    """What decides a run's held-out stars (photometry as an extra CNN input does not)."""
    data = {k: v for k, v in run.config["data"].items() if k != "photometry"}
    return json.dumps(data, sort_keys=True)


class ComparePage(RunListViewer):
    """One-to-one plots and bias/scatter tables of finished runs of a :class:`RunStore`."""

    runs = param.ListSelector(default=[], objects=[], doc="Finished runs to compare")
    label = param.Selector(default=None, objects=[])

    def refresh(self):
        done = self.store.finished()
        names = run_choices(self.store)
        self.param.runs.objects = names
        keep = [r for r in self.runs if r in names.values()]
        if not keep and done:
            # default: the newest run and the others on the same data
            key = _data_key(done[-1])
            keep = [r.id for r in reversed(done) if _data_key(r) == key][:len(COLORS)]
        self.runs = keep

    @param.depends("runs", watch=True, on_init=True)
    def _labels(self):
        names = []
        for rid in self.runs:
            for n in self.store.get(rid).metrics()["label_names"]:
                if n not in names:
                    names.append(n)
        self.param.label.objects = names
        if self.label not in names:
            self.label = names[0] if names else None

    # ------------------------------------------------------------------ data
    def problems(self) -> list[str]:
        """Why the selected runs cannot be compared one to one (empty if they can)."""
        if not self.runs:
            return ["Choose finished runs to compare."]
        keys = {_data_key(self.store.get(r)) for r in self.runs}
        out = []
        if len(keys) > 1:
            out.append("The selected runs were trained and tested on different data (set-up, stars, split or "
                       "seed): their held-out stars differ, so each is shown against its own reference.")
        if self.label is not None:
            lacking = [r for r in self.runs if self.label not in self.store.get(r).metrics()["label_names"]]
            if lacking:
                out.append(f"Runs {lacking} do not predict {self.label}.")
        return out

    def stats(self) -> pd.DataFrame:
        """Bias and scatter per run, label and S/N bin (``snr`` = "all" for overall)."""
        rows = []
        for rid in self.runs:
            r = self.store.get(rid)
            p = r.predictions()
            names = r.metrics()["label_names"]
            snr = p["snr"].to_numpy(float)
            errs = {k: p[[f"{n}{suffix}" for n in names]].to_numpy()
                    for k, suffix in (("errors", "_pred_err"), ("total_errors", "_pred_err_total"))
                    if all(f"{n}{suffix}" in p for n in names)}
            bs = bias_scatter(p[[f"{n}_pred" for n in names]].to_numpy(), p[names].to_numpy(), names,
                              snr=snr if np.isfinite(snr).any() else None, bins=SNR_BINS, **errs)
            bs.insert(0, "run", r.config.get("name"))
            bs.insert(1, "method", r.config["method"])
            rows.append(bs)
        cols = ["run", "method", "label", "S/N", "n", "bias", "scatter"]
        if not rows:
            return pd.DataFrame(columns=cols)
        df = pd.concat(rows, ignore_index=True)
        df["S/N"] = snr_bin_labels(df.snr_lo, df.snr_hi)
        df = df[df["n"] > 0]
        return df[cols + [c for c in ("z_formal", "z_total") if c in df]].reset_index(drop=True)

    # ------------------------------------------------------------------ plots
    @param.depends("runs", "label")
    def plots(self):
        msgs = self.problems()
        if not self.runs or self.label is None:
            return pn.pane.Alert(msgs[0] if msgs else "Nothing to compare.", alert_type="info")
        one, res = [], []
        lo, hi = np.inf, -np.inf
        for k, rid in enumerate(self.runs):
            r = self.store.get(rid)
            if self.label not in r.metrics()["label_names"]:
                continue
            p = r.predictions()
            t, y = p[self.label].to_numpy(float), p[f"{self.label}_pred"].to_numpy(float)
            ok = np.isfinite(t) & np.isfinite(y)
            lo, hi = min(lo, np.nanmin(t[ok]), np.nanmin(y[ok])), max(hi, np.nanmax(t[ok]), np.nanmax(y[ok]))
            c = COLORS[k % len(COLORS)]
            lab = f"{r.config.get('name')}"
            one.append(hv.Scatter((t[ok], y[ok]), "reference", "predicted", label=lab).opts(
                color=c, size=3, alpha=0.6))
            res.append(hv.Scatter((p["snr"].to_numpy(float)[ok], (y - t)[ok]), "S/N", "predicted − reference",
                                  label=lab).opts(color=c, size=3, alpha=0.6))
        if not one:
            return pn.pane.Alert(" ".join(msgs), alert_type="warning")
        line = hv.Curve(([lo, hi], [lo, hi]), "reference", "predicted").opts(color="black", line_dash="dashed")
        left = (hv.Overlay(one) * line).opts(title=f"{self.label}: one-to-one", legend_position="top_left",
                                              responsive=True, height=420, show_grid=True, default_tools=TOOLS)
        right = (hv.Overlay(res) * hv.HLine(0).opts(color="black", line_dash="dashed")).opts(
            title=f"{self.label}: residual against S/N", logx=True, legend_position="top_right",
            responsive=True, height=420, show_grid=True, default_tools=TOOLS)
        parts = [pn.pane.Alert(m, alert_type="warning") for m in msgs]
        self.current_elements = [left, right]
        return pn.Column(*parts, plot_grid([left, right], ncols=2, linked_axes=False),
                         sizing_mode="stretch_width")

    def wide_table(self) -> pd.DataFrame:
        """The current label's statistics with one row per S/N bin and a scatter, a bias and
        (for runs that have them) z-spread columns per run -- ``z_formal`` of the method's
        formal errors, ``z_total`` of the calibrated total errors; 1 = errors that match the
        scatter (what the page shows)."""
        df = self.stats()
        if self.label is None or df.empty:
            return pd.DataFrame()
        df = df[df["label"] == self.label]
        order = list(dict.fromkeys(df["S/N"]))
        values = ["scatter", "bias"] + [c for c in ("z_formal", "z_total") if c in df and df[c].notna().any()]
        w = df.pivot_table(index="S/N", columns="run", values=values, aggfunc="first", dropna=False)
        w.columns = [f"{stat} · {run}" for stat, run in w.columns]
        w = w[sorted(w.columns, key=lambda c: (values.index(c.split(" · ")[0]), c))]
        n = df.groupby("S/N")["n"].max().rename("stars")
        return pd.concat([n, w], axis=1).loc[order].reset_index()

    @param.depends("runs", "label")
    def table(self):
        df = self.wide_table()
        digits = 0 if self.label == "teff" else 3          # whole K, dex to 3 decimals
        fmt = {c: {"type": "money", "precision": 2 if c.startswith("z_") else digits}
               for c in df.columns if "·" in c}
        return safe_table(df, show_index=False, height=260, sizing_mode="stretch_width", formatters=fmt)

    def controls(self):
        return pn.Column(pn.widgets.MultiSelect.from_param(self.param.runs, label="Runs", size=8),
                         pn.widgets.Select.from_param(self.param.label, label="Label"),
                         self._refresh_btn, pn.layout.Divider(),
                         PublicationExport(lambda: getattr(self, "current_elements", []), name="compare"),
                         width=340)

    def __panel__(self):
        return pn.Row(self.controls(),
                      pn.Column(self.plots,
                                pn.pane.Markdown("**Scatter and bias** of the chosen label, overall and per S/N bin; "
                                                 "**z** = spread of (predicted − reference) / error "
                                                 "(1 = honest error bars; *formal*: the method's own, "
                                                 "*total*: calibrated)"),
                                self.table,
                                sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
