"""The star inspector of the Catalogue tab: one star's spectrum with the model fit and
residuals of every finished training run (the user's runs and the demo runs) whose grid
matches, its labels from each run with errors, total errors and flags, and its place on
the Kiel and [alpha/M]-[M/H] planes (the page marks it with a star).

Nothing is fitted here: each run's saved model predicts the one spectrum
(:func:`labelcore.catalogue.star_fit`, the same code that writes catalogues)."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from app.components import COLORS, TOOLS, escape, label_title, plot_grid, run_label, safe_table
from app.state import survey_path
from labelcore.catalogue import find_observations, star_fit
from labelcore.errors import LabelcoreError
from labelcore.methods import load_model

_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _model(path: str, mtime_ns: int):
    return load_model(path)


def cached_model(run):
    """The saved model of a finished run (kept for the next star; reloaded if it changed)."""
    p = run.path / "model"
    with _LOCK:
        return _model(str(p), (p / "params.json").stat().st_mtime_ns)


def _fmt(name, v):
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.0f}" if name == "teff" else f"{v:.3f}"


class StarInspector:
    """Builds the inspector view of a star for a :class:`~app.pages.catalogue.CataloguePage`.

    Parameters
    ----------
    state : the app state (its store and demo store give the runs, its survey folder the
        spectra).
    """

    def __init__(self, state):
        self.state = state

    def runs(self):
        """Finished training runs whose models may fit the star: the user's, then the demos."""
        out = list(reversed(self.state.store.finished("train")))
        if self.state.demo_store is not None:
            out += list(reversed(self.state.demo_store.finished("train")))
        return out

    # ------------------------------------------------------------------ views
    def view_survey_star(self, page, row: int):
        """The inspector of survey catalogue row ``row``."""
        star_id = page.star_id(row)
        cat = page.data.rows([row])
        obs = find_observations(survey_path(self.state.survey_dir), star_id)
        return self._view(page, star_id, cat, obs, own=None)

    def view_run_star(self, run, page, row: int):
        """The inspector of row ``row`` of prediction run ``run``'s catalogue."""
        cat = page.data.rows([row])
        r = cat.iloc[0]
        path = run.config.get("spectra")
        obs = []
        if path and "obs_id" in cat.columns:
            obs = [o for o in find_observations(Path(path).parent, r["obs_id"],
                                                id_column="obs_id") if str(o["path"]) == str(path)]
        star_id = str(r.get("star_id", r.get("obs_id", row)))
        return self._view(page, star_id, cat, obs, own=(run_label(run), r))

    def _view(self, page, star_id, cat, obs, own):
        r = cat.iloc[0]
        names = [c for c in ("teff", "logg", "m_h", "alpha_m") if c in cat.columns]
        head = [f"#### Star {escape(star_id)}"]
        if "source_id" in cat.columns:
            head.append(f"source_id {escape(r['source_id'])} · ")
        head.append("marked ★ on the planes above")
        lab = " · ".join(f"{label_title(n)} {_fmt(n, r[n])}" + (f" ± {_fmt(n, r[n + '_err'])}"
                                                                 if n + "_err" in cat.columns else "")
                         for n in names)
        parts = [pn.pane.Markdown("\n\n".join([" ".join(head), f"Catalogue: {escape(lab)}"]))]
        if not obs:
            parts.append(pn.pane.Alert("No spectrum of this star is in the survey's spectra files, so no run "
                                       "can fit it; only its catalogue labels are shown.", alert_type="info"))
            return pn.Column(*parts, sizing_mode="stretch_width")
        o = obs[0]
        rows, fits, notes = [], [], []
        if own is not None:
            rows.append(self._label_row(own[0], "catalogue", own[1], names))
        for run in self.runs():
            try:
                model = cached_model(run)
                fit = star_fit(model, o["path"], o["row"], photometry=cat)
            except LabelcoreError as exc:
                notes.append(f"{run_label(run)}: {exc}")
                continue
            except OSError as exc:
                notes.append(f"{run_label(run)}: cannot be read ({exc})")
                continue
            fits.append((run, fit))
            rows.append(self._label_row(run_label(run), run.config.get("method", ""), fit["row"],
                                        list(model.label_names_)))
        parts.append(pn.pane.Markdown(
            f"Spectrum **{escape(o['obs_id'])}** ({escape(o['setup'])}, S/N {o['snr']:.0f})"
            + (f"; {len(obs) - 1} more observation(s)" if len(obs) > 1 else "")))
        parts.append(self._plots(o, fits))
        if rows:
            df = pd.DataFrame(rows)
            parts.append(safe_table(df, sizing_mode="stretch_width", height=min(60 + 35 * len(df), 320)))
        else:
            parts.append(pn.pane.Alert("No finished training run has this spectrum's wavelength grid.",
                                       alert_type="info"))
        if notes:
            parts.append(pn.pane.Markdown("Runs not shown: " + "; ".join(escape(n) for n in notes[:6]),
                                          styles={"color": "#666"}))
        return pn.Column(*parts, sizing_mode="stretch_width")

    @staticmethod
    def _label_row(run_name, method, r, names) -> dict:
        out = {"run": str(run_name), "method": str(method)}
        for n in names:
            if n not in r:
                continue
            err = r.get(f"{n}_err_total", r.get(f"{n}_err", np.nan))
            out[n] = f"{_fmt(n, r[n])} ± {_fmt(n, err)}" + (" ⚑" if int(r.get(f"{n}_flag", 0) or 0) else "")
        for q in ("ood", "chi2_reduced"):
            if q in r:
                out[q] = (bool(r[q]) if q == "ood" else round(float(r[q]), 2)) if pd.notna(r[q]) else "–"
        return out

    @staticmethod
    def _plots(o, fits):
        if not fits:
            return pn.pane.Markdown("")
        w, f, e = fits[0][1]["wave"], fits[0][1]["flux"], fits[0][1]["flux_err"]
        opts = dict(responsive=True, height=280, xlabel="wavelength [Å]", show_grid=True, tools=["hover"],
                    default_tools=TOOLS, active_tools=["pan"])
        layers = []
        if e is not None:
            layers.append(hv.Spread((w, f, np.nan_to_num(e, nan=0.0, posinf=0.0)), "wavelength", ["flux", "err"],
                                    label="±1σ").opts(color="#bbbbbb", alpha=0.6))
        layers.append(hv.Curve((w, f), "wavelength", "flux", label="observed").opts(color="#1f1f1f", line_width=1))
        res = []
        for i, (run, fit) in enumerate(fits):
            if "model" not in fit:
                continue
            c = COLORS[(i + 1) % len(COLORS)]
            name = f"{run.config.get('method')} {run.id[-6:]}"
            layers.append(hv.Curve((w, fit["model"]), "wavelength", "flux", label=name).opts(color=c, line_width=1))
            res.append(hv.Curve((w, fit["residual"]), "wavelength", "residual", label=name).opts(color=c,
                                                                                              line_width=1))
        top = hv.Overlay(layers).opts(**opts, ylabel="normalised flux", legend_position="bottom_right",
                                      title="Observed spectrum and model fits")
        items = [top]
        if res:
            items.append(hv.Overlay(res).opts(**dict(opts, height=200), ylabel="(obs − model)/σ",
                                              title="Residuals", show_legend=False))
        return plot_grid(items)
