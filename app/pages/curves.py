"""Learning-curves page: what each finished run learned and how its hyper-parameters were
chosen, from the tables the core stores with the run (``model.learning_curves()``).

* CNN (Guiglion et al. 2020, Fig. 5): test loss per epoch of every ensemble member, kept and
  dropped members told apart, and the distribution of the final test loss with the cut.
* SLAM (Zhang et al. 2020, sections 2.2 and 3.3): CV MSE per pixel against wavelength, the
  (C, gamma) chosen per pixel, and how many pixels chose each grid point.
* Lux (Horta et al. 2024, section 4.2 and Appendix A): chi^2 of labels and flux after every
  training step, and the K-fold grid over (P, Omega) with the chosen point.
* The Cannon (Ness et al. 2015): the intrinsic scatter of every pixel against wavelength,
  and the reduced chi^2 after each training alternation.
Under the plots: bias and scatter per label on the run's held-out stars (overall and per S/N
bin). UI only: every number is read from the run folder. Which plots a run gets is decided
by the tables its method declares (``curve_tables``), never by the method's name."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from app import figures
from app.components import (
    DROPPED,
    KEPT,
    STOPPED,
    TOOLS,
    escape,
    format_metrics,
    plot_grid,
    run_choices,
    run_label,
    safe_table,
)
from app.figures import PublicationExport
from app.pages.runlist import RunListViewer
from labelcore.evaluate import metrics_table
from labelcore.methods import capabilities as caps
from labelcore.methods import method_class

figures.use_bokeh()


def ensemble_plots(c: dict) -> list:
    """Ensemble training (tables ``epochs`` and ``members``, e.g. the CNN, Guiglion 2020 Fig. 5)."""
    ep, mem = c["epochs"], c["members"]
    curves = []
    for _m, g in ep.groupby("member"):
        kept = bool(g["kept"].iloc[0])
        curves.append(hv.Curve((g["epoch"], g["test_loss"]), "epoch", "test loss").opts(
            color=KEPT if kept else DROPPED, alpha=0.7 if kept else 0.9, line_width=1))
    loss = hv.Overlay(curves).opts(title=f"Test loss per member ({int(mem.kept.sum())} kept blue, "
                                         f"{int((~mem.kept).sum())} dropped red)",
                                   logy=True, responsive=True, height=320, show_grid=True, default_tools=TOOLS)
    cut = float(mem["loss_cut"].iloc[0])
    lo, hi = mem["final_test_loss"].min(), mem["final_test_loss"].max()
    edges = np.linspace(lo - 1e-12, hi + 1e-12, max(5, min(30, len(mem) // 2)) + 1)
    counts, _ = np.histogram(mem["final_test_loss"], edges)
    hist = (hv.Histogram((edges, counts), kdims=["final test loss"], vdims=["members"]).opts(color="#9bbcd8")
            * hv.VLine(cut).opts(color="black", line_width=2)).opts(
        title=f"Final test loss; members right of the line ({cut:.3g}) are dropped",
        responsive=True, height=260, default_tools=TOOLS)
    return [loss, hist]


def per_pixel_plots(c: dict) -> list:
    """Per-pixel cross-validation (tables ``pixels`` and ``grid``, e.g. SLAM)."""
    pix, grid = c["pixels"], c["grid"]
    cv = hv.Curve((pix["wave"], pix["cv_mse"]), "wavelength", "CV MSE").opts(
        title="Cross-validated MSE per pixel (standardised flux)", logy=True, color="#1f3f60",
        responsive=True, height=260, show_grid=True, default_tools=TOOLS)
    cpts = hv.Scatter((pix["wave"], np.log10(pix["C"])), "wavelength", "log10 C").opts(
        color="#2f5f8a", size=3, title="Chosen log10 C per pixel", responsive=True, height=200,
        default_tools=TOOLS)
    gpts = hv.Scatter((pix["wave"], np.log10(pix["gamma"])), "wavelength", "log10 γ").opts(
        color="#6a4c93", size=3, title="Chosen log10 γ per pixel", responsive=True, height=200,
        default_tools=TOOLS)
    ch = grid[grid["chosen"]].groupby(["C", "gamma"]).size()
    full = grid[["C", "gamma"]].drop_duplicates().set_index(["C", "gamma"]).assign(n=0)["n"]
    full.loc[ch.index] = ch.to_numpy()
    hm_df = full.reset_index()
    hm_df["log10 C"] = np.round(np.log10(hm_df["C"]), 2)
    hm_df["log10 γ"] = np.round(np.log10(hm_df["gamma"]), 2)
    hm = hv.HeatMap(hm_df, ["log10 C", "log10 γ"], "n").opts(
        cmap="Blues", colorbar=True, tools=["hover"], title="Pixels choosing each (C, γ)",
        responsive=True, height=260, default_tools=TOOLS)
    return [cv, cpts, gpts, hm]


def latent_plots(c: dict) -> list:
    """Latent-model training (table ``chi2``, optionally ``cv_grid``, e.g. Lux)."""
    h = c["chi2"]
    chi = (hv.Curve((h["step"], h["chi2_label"]), "training step", "χ²", label="labels").opts(color="#2f5f8a")
           * hv.Curve((h["step"], h["chi2_flux"]), "training step", "χ²", label="flux").opts(color="#d1495b")
           ).opts(title="χ² after each step (agenda 1: steps 1–5; then agenda 2)", logy=True,
                  legend_position="top_right", responsive=True, height=280, show_grid=True, default_tools=TOOLS)
    out = [chi]
    if "cv_grid" in c:
        g = c["cv_grid"].copy()
        g["log10 Ω"] = np.round(np.log10(g["omega"]), 2)
        g["P"] = g["n_latent"].astype(int).astype(str)
        hm = hv.HeatMap(g, ["log10 Ω", "P"], "metric").opts(
            cmap="viridis_r", colorbar=True, tools=["hover"], responsive=True, height=260,
            title="K-fold CV metric over (P, Ω) (lower is better)", default_tools=TOOLS)
        b = g[g["best"]]
        star = hv.Points((b["log10 Ω"], b["P"]), ["log10 Ω", "P"]).opts(marker="star", size=18, color="red")
        out.append(hm * star)
    return out


def scatter_plots(c: dict) -> list:
    """Per-pixel polynomial model (tables ``iterations`` and ``pixel_scatter``, e.g. The
    Cannon, Ness et al. 2015 Fig. 3): the fitted intrinsic scatter s per pixel against
    wavelength, and the reduced chi^2 and median s after each training alternation."""
    pix = c["pixel_scatter"]
    used = pix[pix["used"].astype(bool)]
    sc = hv.Curve((used["wave"], used["scatter"]), "wavelength (Å)", "intrinsic scatter s").opts(
        color="#2f5f8a", line_width=1, title="Intrinsic scatter s of each pixel", responsive=True,
        height=260, show_grid=True, default_tools=TOOLS)
    it = c["iterations"]
    chi = hv.Curve((it["iteration"], it["chi2_reduced"]), "alternation", "reduced χ²").opts(
        color="#d1495b", title="Reduced χ² of the training spectra after each alternation",
        responsive=True, height=240, show_grid=True, default_tools=TOOLS, xticks=list(it["iteration"]))
    return [sc, chi]


#: (curve tables needed, plotter): the first whose tables a run has draws it
PLOTTERS = [(("epochs", "members"), ensemble_plots), (("pixels", "grid"), per_pixel_plots),
            (("chi2",), latent_plots), (("iterations", "pixel_scatter"), scatter_plots)]


def plots_for_curves(curves: dict) -> list:
    """The plots of a run's curve tables (empty if no plotter knows them)."""
    for need, plot in PLOTTERS:
        if all(k in curves for k in need):
            return plot(curves)
    return []


def live_plot(ep: pd.DataFrame):
    """Test loss per member so far of an ensemble in training (members still training blue,
    stopped grey)."""
    curves = []
    for _m, g in ep.groupby("member"):
        on = bool(g["training"].iloc[-1])
        curves.append(hv.Curve((g["epoch"], g["test_loss"]), "epoch", "test loss").opts(
            color=KEPT if on else STOPPED, alpha=0.8, line_width=1))
    last = ep.groupby("member").last()
    return hv.Overlay(curves).opts(
        title=f"Test loss per member so far: {int(last.training.sum())} training (blue), "
              f"{int((~last.training).sum())} stopped (grey); epoch {int(ep.epoch.max())}",
        logy=True, responsive=True, height=320, show_grid=True, default_tools=TOOLS)


class LearningCurvesPage(RunListViewer):
    """Learning curves and held-out metrics of the finished runs of a :class:`RunStore`,
    and the curves so far of a CNN still training (redrawn every few seconds)."""

    run = param.Selector(default=None, objects=[], doc="A finished run")
    _tick = param.Integer(default=0, precedence=-1)

    def __init__(self, state=None, **params):
        super().__init__(state, **params)
        self.state.param.watch(self._follow_current, "current_run")

    def refresh(self):
        opts = {f"(training) {run_label(r)}": r.id for r in reversed(self.store.runs())
                if r.task == "train" and r.state == "running"
                and method_class(r.config["method"]).supports(caps.LIVE_CURVES)}
        opts.update(run_choices(self.store))
        self.param.run.objects = opts
        if self.run not in opts.values():
            self.run = next(iter(opts.values()), None)

    def _follow_current(self, event):
        """A run was just launched: show it (once it is listed)."""
        self.refresh()
        if event.new in self.param.run.names.values():
            self.run = event.new

    def plots_for(self, run_id) -> list:
        """The holoviews objects shown for ``run_id``."""
        return plots_for_curves(self.store.get(run_id).curves())

    def _poll_live(self):
        """Periodic callback: redraw while the selected run trains; list it as finished when done."""
        if self.run is None:
            return
        state = self.store.get(self.run).state
        if state == "running":
            self._tick += 1
        elif any(k.startswith("(training)") and v == self.run for k, v in self.param.run.names.items()):
            self.refresh()
            self._tick += 1

    @param.depends("run", "_tick")
    def view(self):
        if self.run is None:
            return pn.pane.Alert("No finished run yet: launch one on the Train tab.", alert_type="info")
        r = self.store.get(self.run)
        if r.state != "done":
            ep = r.live_curves()
            st = r.status()
            if ep is None:
                return pn.pane.Alert(f"{escape(r.config.get('name'))}: {escape(st.get('state'))}, "
                                     f"{escape(st.get('message', ''))}. Curves appear after the first epochs.",
                                     alert_type="info")
            return pn.Column(pn.pane.Markdown(f"**{escape(r.config.get('name'))}** is training "
                                              f"({escape(st.get('message', ''))}); the plot follows it."),
                             pn.pane.HoloViews(live_plot(ep), sizing_mode="stretch_width"),
                             sizing_mode="stretch_width")
        m = r.metrics()
        head = pn.pane.Markdown(
            f"**{escape(r.config.get('name'))}** ({escape(r.config['method'])}), {m['n_train']} training and "
            f"{m['n_test']} held-out stars, trained in {m['fit_seconds']:.1f} s. Metrics against {m['truth']}.")
        self.current_elements = list(self.plots_for(self.run))
        plots = plot_grid(self.current_elements, linked_axes=False)
        table = safe_table(format_metrics(metrics_table(m)), show_index=False, height=300,
                           sizing_mode="stretch_width", groupby=["label"],
                           text_align={c: "right" for c in ("bias", "scatter", "z_formal", "z_total")})
        return pn.Column(head, plots, pn.pane.Markdown("**Held-out bias and scatter**"), table,
                         sizing_mode="stretch_width")

    def controls(self):
        if getattr(self, "figure_export", None) is None:
            self.figure_export = PublicationExport(lambda: getattr(self, "current_elements", []),
                                                   name="learning-curves")
        return pn.Column(pn.widgets.Select.from_param(self.param.run, label="Run"), self._refresh_btn,
                         pn.layout.Divider(), self.figure_export, width=340)

    def __panel__(self):
        if getattr(self, "_live_cb", None) is None:
            self._live_cb = pn.state.add_periodic_callback(self._poll_live, period=5000)
        return pn.Row(self.controls(), pn.Column(self.view, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
