"""Spectra page: observed against model spectra with normalised residuals, and how each
label shapes the spectrum: SLAM's coefficients of dependence (COD, eqs. 12-13 of Zhang
et al. 2020) and Lux's derivative spectra (dl/df, eq. 13 of Horta et al. 2024) against
wavelength, over the full range or in line windows.

UI only: every number shown (labels, model spectra, CODs, derivative spectra) was computed
by the core when the run was trained (:func:`labelcore.evaluate.spectrum_fits`, stored in
the run's ``spectra.npz`` and ``cods.npz``); the page reads and plots them."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from app import figures
from app.components import TOOLS, escape, label_title, loading, plot_grid, run_choices
from app.pages.runlist import SourceTab, as_state
from labelcore.methods import capabilities as caps
from labelcore.methods import method_class
from labelcore.runs import ensure_demo_runs

figures.use_bokeh()

#: line windows [Angstrom] offered where the wavelength grid covers them
WINDOWS = {
    "Ca II 8498": (8480.0, 8516.0),
    "Ca II 8542": (8522.0, 8562.0),
    "Ca II 8662": (8642.0, 8682.0),
    "Fe I / Ti I 8675-8690": (8670.0, 8695.0),
    "Mg I 8807": (8795.0, 8820.0),
    "Fe I 15207 (H band)": (15190.0, 15225.0),
    "Mg I 15740-15770 (H band)": (15730.0, 15780.0),
    "Al I 16720-16770 (H band)": (16710.0, 16780.0),
}
FULL = "full range"


class SpectraPage(pn.viewable.Viewer):
    """Observed vs model spectra, residuals, COD spectra and derivative spectra.

    Parameters
    ----------
    wave : [P] wavelength grid (Angstrom).
    flux, flux_err : [N, P] observed spectra and 1-sigma errors (NaN = bad pixel).
    fits : {name: :func:`labelcore.evaluate.spectrum_fits` output}; those with model
        spectra (``model``) can be shown.
    label_names : the M label names.
    labels : optional [N, M] reference labels (e.g. the truth of a synthetic set), shown
        next to the predictions.
    cods : optional output of ``SLAM.cods`` ({"full": [P], label: [P], ...}).
    """

    star = param.Integer(default=0, bounds=(0, 0), doc="Spectrum shown")
    method = param.Selector(default=None, objects=[], doc="Method whose model is shown")
    window = param.Selector(default=FULL, objects=[FULL], doc="Wavelength window")
    label = param.Selector(default=None, objects=[], doc="Label for COD / derivative spectra")

    def __init__(self, wave, flux, flux_err, fits, label_names, *, labels=None, cods=None, title="Spectra",
                 **params):
        wave = np.asarray(wave, float)
        flux = np.asarray(flux, float)
        if flux.ndim != 2 or wave.ndim != 1 or flux.shape[1] != wave.size:
            raise ValueError(f"flux must be [N, P] with P = len(wave) = {wave.size}; got {flux.shape}")
        if flux.shape[0] == 0:
            raise ValueError("no spectra to show (flux has 0 rows)")
        err = None if flux_err is None else np.asarray(flux_err, float)
        if err is not None and err.shape != flux.shape:
            raise ValueError(f"flux_err shape {err.shape} differs from flux shape {flux.shape}")
        if not fits:
            raise ValueError("give the fits of at least one model")
        names = list(label_names)
        self.generative, self.predictions, self.derivatives = {}, {}, {}
        for name, fit in fits.items():
            y = np.asarray(fit["labels"], float)
            if y.shape != (flux.shape[0], len(names)):
                raise ValueError(f"{name}: labels must be [N, M] = {(flux.shape[0], len(names))}; got {y.shape}")
            self.predictions[name] = y
            if "model" in fit:
                self.generative[name] = np.asarray(fit["model"], float)
            if "derivative" in fit:
                self.derivatives[name] = np.asarray(fit["derivative"], float)
        if not self.generative:
            raise ValueError("none of the models is generative: no model spectra to show")
        if labels is not None and np.shape(labels) != (flux.shape[0], len(names)):
            raise ValueError(f"reference labels must be [N, M] = {(flux.shape[0], len(names))}; "
                             f"got {np.shape(labels)}")
        if cods is not None:
            bad = [k for k, v in cods.items() if np.shape(v) != wave.shape]
            if bad:
                raise ValueError(f"COD arrays {bad} are not [P] = [{wave.size}]")
        super().__init__(**params)
        self.title = title
        self.wave, self.flux, self.flux_err = wave, flux, err
        self._shared_x: dict = {}
        self.labels = None if labels is None else np.asarray(labels, float)
        self.label_names = names
        self.cods = cods
        self.param.star.bounds = (0, flux.shape[0] - 1)
        self.param.method.objects = list(self.generative)
        self.method = next(iter(self.generative))
        lo, hi = np.nanmin(wave), np.nanmax(wave)
        self.param.window.objects = [FULL, *[k for k, (a, b) in WINDOWS.items() if a >= lo and b <= hi]]
        self.param.label.objects = names
        self.label = names[0]

    @classmethod
    def from_runs(cls, runs, title="Spectra"):
        """The page of finished training runs on the same held-out spectra, from what each
        run stored (``spectra.npz``: spectra, labels, model spectra, derivative spectra;
        ``cods.npz``). Raises ValueError when a run has no model spectra."""
        fits, cods, first = {}, None, None
        for r in runs:
            p = r.path / "spectra.npz"
            if not p.exists():
                raise ValueError(f"run {r.id} ({r.config['method']}) stored no model spectra: its method "
                                 "has no generative model")
            with np.load(p, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
            if first is None:
                first = d
            elif d["flux"].shape != first["flux"].shape or not np.array_equal(d["flux"], first["flux"],
                                                                               equal_nan=True):
                raise ValueError(f"run {r.id} was tested on other spectra than run {runs[0].id}")
            fits[r.config["method"]] = d
            if (r.path / "cods.npz").exists():
                with np.load(r.path / "cods.npz", allow_pickle=False) as z:
                    cods = {k: z[k] for k in z.files}
        if first is None:
            raise ValueError("no runs given")
        return cls(first["wave"], first["flux"], first.get("flux_err"), fits, runs[0].metrics()["label_names"],
                   labels=first["truth"], cods=cods, title=title)

    # ------------------------------------------------------------------ data
    def _range(self):
        if self.window == FULL:
            return np.ones(self.wave.size, bool)
        a, b = WINDOWS[self.window]
        return (self.wave >= a) & (self.wave <= b)

    def x_range(self) -> tuple[float, float]:
        """The wavelength range shown: the window's, or the whole grid."""
        if self.window == FULL:
            return float(np.nanmin(self.wave)), float(np.nanmax(self.wave))
        return tuple(float(v) for v in WINDOWS[self.window])

    def _x_hook(self, group: str):
        """Plot hook: the figure shows the window's x-range (and Reset returns to it); the
        plots of one ``group`` (spectrum and residuals; the dependence spectra) share one
        x-range, so they pan and zoom together. (Panel's own axis linking is off: it tied
        new figures to the previous window's range.)"""
        def hook(plot, element):
            fig = plot.state
            shared = self._shared_x.get(group)
            if shared is None:
                a, b = self.x_range()
                fig.x_range.start, fig.x_range.end = a, b
                if hasattr(fig.x_range, "reset_start"):
                    fig.x_range.reset_start, fig.x_range.reset_end = a, b
                self._shared_x[group] = fig.x_range
            elif fig.x_range is not shared:
                fig.x_range = shared
        return hook

    def spectrum_data(self):
        """(wave, observed, error, model, normalised residual) of the current star in the
        current window (arrays; residual NaN on bad pixels)."""
        sel = self._range()
        i = self.star
        obs = self.flux[i, sel]
        mod = self.generative[self.method][i, sel]
        err = None if self.flux_err is None else self.flux_err[i, sel]
        with np.errstate(invalid="ignore", divide="ignore"):
            res = (obs - mod) / err if err is not None else obs - mod
        res = np.where(np.isfinite(res), res, np.nan)
        return self.wave[sel], obs, err, mod, res

    def label_text(self) -> str:
        i = self.star
        y = self.predictions[self.method][i]
        parts = []
        for j, n in enumerate(self.label_names):
            s = f"{n} = {y[j]:.0f}" if n == "teff" else f"{n} = {y[j]:.2f}"
            if self.labels is not None and np.isfinite(self.labels[i, j]):
                s += f" ({self.labels[i, j]:.0f})" if n == "teff" else f" ({self.labels[i, j]:.2f})"
            parts.append(s)
        ref = " (reference in brackets)" if self.labels is not None else ""
        return f"**Star {i}**, {self.method} labels{ref}: " + ", ".join(parts)

    # ------------------------------------------------------------------ plots
    @param.depends("star", "method", "window")
    def spectrum_plot(self):
        w, obs, err, mod, res = self.spectrum_data()
        opts = dict(responsive=True, height=300, xlabel="wavelength [Å]", show_grid=True,
                    default_tools=TOOLS, active_tools=["pan"], xlim=self.x_range(), framewise=True,
                    hooks=[figures.plot_hook, self._x_hook("spectrum")])
        self._shared_x["spectrum"] = None
        layers = []
        if err is not None:
            band = np.where(np.isfinite(err), err, 0.0)
            layers.append(hv.Spread((w, obs, band), "wavelength", ["flux", "err"], label="±1σ").opts(
                color="#9bbcd8", alpha=0.5, line_width=0))
        layers.append(hv.Curve((w, obs), "wavelength", "flux", label="observed").opts(color="#1f3f60", line_width=1))
        layers.append(hv.Curve((w, mod), "wavelength", "flux", label=f"{self.method} model").opts(
            color="#d1495b", line_width=1.5))
        top = hv.Overlay(layers).opts(legend_position="bottom_left", title="Observed and model spectrum",
                                      ylabel="normalised flux", **opts)
        ylab = "(observed − model) / σ" if err is not None else "observed − model"
        bottom = (hv.Curve((w, res), "wavelength", "residual").opts(color="#333333", line_width=1)
                  * hv.HLine(0).opts(color="grey", line_dash="dashed")).opts(
            title="Residuals", ylabel=ylab, **{**opts, "height": 200})
        return pn.Column(pn.pane.Markdown(self.label_text()),
                         plot_grid([top, bottom], linked_axes=False),
                         sizing_mode="stretch_width")

    @param.depends("label", "window")
    def dependence_plot(self):
        sel = self._range()
        w = self.wave[sel]
        j = self.label_names.index(self.label)
        opts = dict(responsive=True, height=240, xlabel="wavelength [Å]", show_grid=True,
                    default_tools=TOOLS, active_tools=["pan"], xlim=self.x_range(), framewise=True,
                    hooks=[figures.plot_hook, self._x_hook("dependence")])
        self._shared_x["dependence"] = None
        panels = []
        if self.cods is not None and self.label in self.cods:
            cod = (hv.Curve((w, np.asarray(self.cods["full"])[sel]), "wavelength", "COD", label="full").opts(
                       color="#bbbbbb")
                   * hv.Curve((w, np.asarray(self.cods[self.label])[sel]), "wavelength", "COD",
                              label=self.label).opts(color="#2f5f8a", line_width=1.5))
            panels.append(cod.opts(title=f"SLAM coefficient of dependence on {self.label}",
                                   legend_position="top_right", ylabel="COD", **opts))
        for name, D in self.derivatives.items():
            panels.append(hv.Curve((w, D[j, sel]), "wavelength", "dl/df").opts(
                color="#6a4c93", line_width=1.2, title=f"{name} derivative spectrum d{self.label}/dflux",
                ylabel=f"{label_title(self.label)} per unit flux", **opts))
        if not panels:
            return pn.pane.Alert("No COD (SLAM) or derivative spectra (Lux, The Cannon) for these models.",
                                 alert_type="info")
        return plot_grid(panels, linked_axes=False)

    # ------------------------------------------------------------------ layout
    def controls(self):
        return pn.Column(
            pn.widgets.IntSlider.from_param(self.param.star, name="Spectrum"),
            pn.widgets.Select.from_param(self.param.method, name="Model"),
            pn.widgets.Select.from_param(self.param.window, name="Window"),
            pn.widgets.Select.from_param(self.param.label, name="Label (COD / derivative)"),
            width=300,
        )

    @param.depends("star", "method", "window", watch=True)
    def _redraw_spectrum(self):
        if getattr(self, "_spec_holder", None) is not None:
            self._spec_holder[:] = [self.spectrum_plot()]

    @param.depends("label", "window", watch=True)
    def _redraw_dependence(self):
        if getattr(self, "_dep_holder", None) is not None:
            self._dep_holder[:] = [self.dependence_plot()]

    def __panel__(self):
        # holders whose content is replaced (new figures), not patched in place: a patched
        # figure kept the previous window's x-range
        self._spec_holder = pn.Column(self.spectrum_plot(), sizing_mode="stretch_width")
        self._dep_holder = pn.Column(self.dependence_plot(), sizing_mode="stretch_width")
        return pn.Row(self.controls(), pn.Column(self._spec_holder, self._dep_holder, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")


def run_spectra_page(run) -> SpectraPage:
    """A :class:`SpectraPage` of a finished training run: its held-out spectra (the first
    ones) against its model, with the held-out reference labels (the truth for synthetic
    data) and, when its method has them, derivative spectra and CODs."""
    return SpectraPage.from_runs([run], title=f"Spectra of run {run.id}")


DEMO = "demo"


class SpectraTab(SourceTab):
    """The Spectra tab: the demo runs (every method with model spectra on synthetic
    RAVE-like spectra, CODs included; built through the job queue on first use, with their
    progress shown, never in this process), or a finished training run with model spectra."""

    source_label = "Models"

    def __init__(self, state=None, **params):
        super().__init__(**params)
        self.state = as_state(state)
        self._demo_cb = None
        self.state.param.watch(lambda e: self.refresh(), "runs_version")
        self.refresh()
        self.start(DEMO)

    def demo_runs(self):
        """The demo runs (queued on the demo store's queue if missing)."""
        from app.state import shared_queue

        q = shared_queue(self.state.demo_store)
        return ensure_demo_runs(self.state.demo_store, submit=q.poll)

    def refresh(self):
        opts = {"Demo: model spectra on synthetic RAVE-like spectra (with CODs)": DEMO}
        opts.update(run_choices(self.state.store, where=lambda r: method_class(r.config["method"]).supports(
            caps.MODEL_SPECTRA)))
        self.param.source.objects = opts

    def demo_progress(self, runs) -> pn.viewable.Viewable:
        rows = [loading("Building the demo models in the background (first start on this machine, about a "
                        "minute and a half on 2 cores); other tabs work meanwhile.")]
        for r in runs:
            st = r.status()
            rows.append(pn.Row(pn.widgets.Progress(value=int(100 * float(st.get("fraction", 0.0))), max=100,
                                                   width=240, sizing_mode="fixed"),
                               pn.pane.Markdown(f"{escape(r.config.get('name'))}: {escape(st.get('state'))}, "
                                                f"{escape(st.get('error') or st.get('message', ''))}")))
        return pn.Column(*rows, sizing_mode="stretch_width")

    def _poll_demo(self):
        if self.source == DEMO and DEMO not in self._pages:
            self._show()
        elif self._demo_cb is not None:
            self._demo_cb.stop()
            self._demo_cb = None

    def page_for(self, source):
        if source == DEMO and DEMO not in self._pages:
            runs = self.demo_runs()
            if not all(r.state == "done" for r in runs):
                failed = [r for r in runs if r.state in ("failed", "cancelled")]
                if self._demo_cb is None and not failed:
                    self._demo_cb = pn.state.add_periodic_callback(self._poll_demo, period=1000)
                return self.demo_progress(runs)
            self._pages[DEMO] = SpectraPage.from_runs(runs, title="Spectra (synthetic RAVE-like)")
        return super().page_for(source)

    def make_page(self, source):
        return run_spectra_page(self.state.store.get(source))
