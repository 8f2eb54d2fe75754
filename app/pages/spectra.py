"""Spectra page: observed against model spectra with normalised residuals, and how each
label shapes the spectrum: SLAM's coefficients of dependence (COD, eqs. 12-13 of Zhang
et al. 2020) and Lux's derivative spectra (dl/df, eq. 13 of Horta et al. 2024) against
wavelength, over the full range or in line windows.

UI only: every number shown (labels, model spectra, CODs, derivative spectra) comes from
the core's methods (``predict``, ``model_spectra``/``predict_spectra``, ``cods``,
``derivative_spectra``); the page plots them."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from app.pages.runlist import SourceTab

hv.extension("bokeh", logo=False)

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
LABEL_TITLES = {"teff": "Teff [K]", "logg": "log g", "m_h": "[M/H]", "fe_h": "[Fe/H]", "alpha_m": "[α/M]"}


def model_spectra(model, labels):
    """Model flux [N, P] of a generative method at ``labels`` (SLAM: ``model_spectra``,
    Lux: ``predict_spectra``); None for a method without a generative model (CNN)."""
    for name in ("model_spectra", "predict_spectra"):
        if hasattr(model, name):
            return np.asarray(getattr(model, name)(labels), float)
    return None


class SpectraPage(pn.viewable.Viewer):
    """Observed vs model spectra, residuals, COD spectra and derivative spectra.

    Parameters
    ----------
    wave : [P] wavelength grid (Angstrom).
    flux, flux_err : [N, P] observed spectra and 1-sigma errors (NaN = bad pixel).
    models : {name: fitted method}; methods with a generative model (SLAM, Lux) get a
        model spectrum at their predicted labels.
    labels : optional [N, M] reference labels (e.g. the truth of a synthetic set), shown
        next to the predictions.
    cods : optional output of ``SLAM.cods`` ({"full": [P], label: [P], ...}).
    """

    star = param.Integer(default=0, bounds=(0, 0), doc="Spectrum shown")
    method = param.Selector(default=None, objects=[], doc="Method whose model is shown")
    window = param.Selector(default=FULL, objects=[FULL], doc="Wavelength window")
    label = param.Selector(default=None, objects=[], doc="Label for COD / derivative spectra")

    def __init__(self, wave, flux, flux_err, models, *, labels=None, cods=None, title="Spectra", **params):
        wave = np.asarray(wave, float)
        flux = np.asarray(flux, float)
        if flux.ndim != 2 or wave.ndim != 1 or flux.shape[1] != wave.size:
            raise ValueError(f"flux must be [N, P] with P = len(wave) = {wave.size}; got {flux.shape}")
        if flux.shape[0] == 0:
            raise ValueError("no spectra to show (flux has 0 rows)")
        err = None if flux_err is None else np.asarray(flux_err, float)
        if err is not None and err.shape != flux.shape:
            raise ValueError(f"flux_err shape {err.shape} differs from flux shape {flux.shape}")
        if not models:
            raise ValueError("give at least one fitted model")
        self.generative = {}
        self.predictions = {}
        for name, m in models.items():
            y = np.asarray(m.predict(flux, flux_err=err), float)
            self.predictions[name] = y
            mf = model_spectra(m, y)
            if mf is not None:
                self.generative[name] = mf
        if not self.generative:
            raise ValueError("none of the models is generative (SLAM or Lux): no model spectra to show")
        first = next(iter(models.values()))
        names = list(first.label_names_)
        if labels is not None and np.shape(labels) != (flux.shape[0], len(names)):
            raise ValueError(f"reference labels must be [N, M] = {(flux.shape[0], len(names))}; "
                             f"got {np.shape(labels)}")
        self.derivatives = {n: np.asarray(m.derivative_spectra(), float) for n, m in models.items()
                            if hasattr(m, "derivative_spectra")}
        if cods is not None:
            bad = [k for k, v in cods.items() if np.shape(v) != wave.shape]
            if bad:
                raise ValueError(f"COD arrays {bad} are not [P] = [{wave.size}]")
        super().__init__(**params)
        self.title = title
        self.wave, self.flux, self.flux_err = wave, flux, err
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

    # ------------------------------------------------------------------ data
    def _range(self):
        if self.window == FULL:
            return np.ones(self.wave.size, bool)
        a, b = WINDOWS[self.window]
        return (self.wave >= a) & (self.wave <= b)

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
                    default_tools=["pan", "wheel_zoom", "box_zoom", "reset", "save"])
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
                         pn.pane.HoloViews((top + bottom).cols(1).opts(shared_axes=True)),
                         sizing_mode="stretch_width")

    @param.depends("label", "window")
    def dependence_plot(self):
        sel = self._range()
        w = self.wave[sel]
        j = self.label_names.index(self.label)
        opts = dict(responsive=True, height=240, xlabel="wavelength [Å]", show_grid=True,
                    default_tools=["pan", "wheel_zoom", "box_zoom", "reset", "save"])
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
                ylabel=f"{LABEL_TITLES.get(self.label, self.label)} per unit flux", **opts))
        if not panels:
            return pn.pane.Alert("No COD (SLAM) or derivative spectra (Lux) for these models.",
                                 alert_type="info")
        return pn.pane.HoloViews(hv.Layout(panels).cols(1), sizing_mode="stretch_width")

    # ------------------------------------------------------------------ layout
    def controls(self):
        return pn.Column(
            pn.widgets.IntSlider.from_param(self.param.star, name="Spectrum"),
            pn.widgets.Select.from_param(self.param.method, name="Model"),
            pn.widgets.Select.from_param(self.param.window, name="Window"),
            pn.widgets.Select.from_param(self.param.label, name="Label (COD / derivative)"),
            width=300,
        )

    def __panel__(self):
        return pn.Row(self.controls(),
                      pn.Column(self.spectrum_plot, self.dependence_plot, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")


#: held-out spectra shown for a run (the first ones of its held-out set)
RUN_SPECTRA = 300


def run_spectra_page(run, n_show: int = RUN_SPECTRA) -> SpectraPage:
    """A :class:`SpectraPage` of a finished SLAM or Lux training run: its held-out spectra
    (at most ``n_show``) against its model, with the held-out reference labels (the truth for
    synthetic data). Lux runs bring their derivative spectra; SLAM runs have no CODs here
    (they need one retraining per label, :meth:`SLAM.cods`)."""
    from labelcore.runs import load_run_data

    if run.config["method"] not in ("SLAM", "Lux"):
        raise ValueError(f"run {run.id} is a {run.config['method']} run: only SLAM and Lux have model spectra")
    data = load_run_data(run.config["data"])
    te = data["test"]
    k = slice(0, min(n_show, len(te["flux"])))
    return SpectraPage(data["wave"], te["flux"][k], te["flux_err"][k], {run.config["method"]: run.model()},
                       labels=te["truth"][k], title=f"Spectra of run {run.id}")


class SpectraTab(SourceTab):
    """The Spectra tab: the demo models (built on first use by ``demo``, a callable returning
    a :class:`SpectraPage`), or a finished SLAM/Lux run of ``store`` on its held-out spectra."""

    source_label = "Models"

    def __init__(self, demo, store=None, **params):
        super().__init__(**params)
        self.demo, self.store = demo, store
        self.refresh()
        self.source = "demo"
        self._show()

    def refresh(self):
        from app.store import run_choices

        opts = {"Demo: SLAM and Lux on synthetic RAVE-like spectra (with CODs)": "demo"}
        if self.store is not None:
            opts.update({k: v for k, v in run_choices(self.store).items()
                         if self.store.get(v).config["method"] in ("SLAM", "Lux")})
        self.param.source.objects = opts

    def make_page(self, source):
        return self.demo() if source == "demo" else run_spectra_page(self.store.get(source))
