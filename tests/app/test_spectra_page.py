"""The Spectra page shows what the core computes: model spectra at each method's labels,
normalised residuals, SLAM CODs and Lux derivative spectra, in line windows."""

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from app.pages.spectra import FULL, SpectraPage  # noqa: E402
from labelcore.data.synth.datasets import labelled_set  # noqa: E402
from labelcore.evaluate import spectrum_fits  # noqa: E402
from labelcore.methods import SLAM, Lux  # noqa: E402

NAMES = ("teff", "logg", "m_h")


@pytest.fixture(scope="module")
def setup():
    d = labelled_set("rave", 260, seed=3, label_names=NAMES, snr=(50, 200))
    tr, te = d.split(200)
    slam = SLAM(n_folds=3, C_grid=(10.0,), gamma_grid=(0.01,)).fit(tr.flux, tr.labels, flux_err=tr.flux_err,
                                                                    label_names=NAMES, wave=tr.wave)
    lux = Lux(n_latent=6, omega=1.0).fit(tr.flux, tr.labels, flux_err=tr.flux_err, label_names=NAMES)
    cods = slam.cods(tr.flux, tr.labels)
    fits = {n: spectrum_fits(m, te.flux, te.flux_err) for n, m in (("SLAM", slam), ("Lux", lux))}
    page = SpectraPage(te.wave, te.flux, te.flux_err, fits, NAMES, labels=te.truth, cods=cods)
    return te, slam, lux, cods, page, fits


def test_model_spectra_and_residuals_are_the_cores(setup):
    te, slam, lux, _, page, _ = setup
    page.star, page.method, page.window = 7, "SLAM", FULL
    w, obs, err, mod, res = page.spectrum_data()
    y = slam.predict(te.flux, flux_err=te.flux_err)
    np.testing.assert_allclose(mod, slam.predict_spectra(y[7:8])[0], rtol=1e-6)
    np.testing.assert_array_equal(obs, te.flux[7])
    ok = np.isfinite(te.flux[7])
    np.testing.assert_allclose(res[ok], ((te.flux[7] - mod) / te.flux_err[7])[ok], rtol=1e-9)
    # near the truth the model fits: normalised residuals of order one
    assert 0.5 < np.nanstd(res) < 2.0
    assert f"teff = {y[7, 0]:.0f}" in page.label_text() and f"({te.truth[7, 0]:.0f})" in page.label_text()
    page.method = "Lux"
    _, _, _, mod_lux, _ = page.spectrum_data()
    np.testing.assert_allclose(mod_lux, lux.predict_spectra(lux.predict(te.flux, flux_err=te.flux_err)[7:8])[0],
                               rtol=1e-6)
    assert isinstance(page.spectrum_plot(), pn.Column)


def test_line_windows_and_dependence_spectra(setup):
    te, slam, lux, cods, page, _ = setup
    assert "Ca II 8542" in page.param.window.objects
    assert not any("H band" in w for w in page.param.window.objects)   # outside the RAVE range
    page.window = "Ca II 8542"
    w, *_ = page.spectrum_data()
    assert w.min() >= 8522 and w.max() <= 8562 and w.size > 10
    page.label = "logg"
    plot = page.dependence_plot()
    cod_overlay, deriv = plot[0].object, plot[1].object
    sel = (te.wave >= 8522) & (te.wave <= 8562)
    np.testing.assert_allclose(cod_overlay.get(1).dimension_values(1), cods["logg"][sel])
    np.testing.assert_allclose(deriv.dimension_values(1), lux.derivative_spectra()[1, sel])
    # the rendered figures show the window: their x-range is the window's, and the wheel
    # does not zoom (pan is the active drag, no active scroll)
    import holoviews as hv

    from app import figures

    figures.install()
    for grid in (plot, page.spectrum_plot()[1]):
        figs = [hv.render(p.object, backend="bokeh") for p in grid]
        assert figs and all((f.x_range.start, f.x_range.end) == (8522.0, 8562.0) for f in figs)
        assert all(f.toolbar.active_scroll is None for f in figs)
    page.window = FULL
    f0 = hv.render(page.spectrum_plot()[1][0].object, backend="bokeh")
    assert (f0.x_range.start, f0.x_range.end) == (te.wave.min(), te.wave.max())   # reset to the whole grid


def test_bad_input_is_refused(setup):
    te, slam, lux, cods, _, fits = setup
    with pytest.raises(ValueError, match="flux must be"):
        SpectraPage(te.wave[:-1], te.flux, te.flux_err, {"SLAM": fits["SLAM"]}, NAMES)
    with pytest.raises(ValueError, match="0 rows"):
        SpectraPage(te.wave, te.flux[:0], te.flux_err[:0], {"SLAM": fits["SLAM"]}, NAMES)
    with pytest.raises(ValueError, match="flux_err shape"):
        SpectraPage(te.wave, te.flux, te.flux_err[:, :-1], {"SLAM": fits["SLAM"]}, NAMES)
    with pytest.raises(ValueError, match="at least one"):
        SpectraPage(te.wave, te.flux, te.flux_err, {}, NAMES)
    with pytest.raises(ValueError, match="COD arrays"):
        SpectraPage(te.wave, te.flux, te.flux_err, {"SLAM": fits["SLAM"]}, NAMES, cods={"full": cods["full"][:-1]})
    labels_only = {"CNN": {"labels": fits["SLAM"]["labels"], "errors": fits["SLAM"]["errors"]}}
    with pytest.raises(ValueError, match="none of the models is generative"):
        SpectraPage(te.wave, te.flux, te.flux_err, labels_only, NAMES)
    with pytest.raises(ValueError, match="reference labels"):
        SpectraPage(te.wave, te.flux, te.flux_err, {"SLAM": fits["SLAM"]}, NAMES, labels=te.truth[:, :2])


def test_spectra_tab_shows_a_runs_held_out_spectra(finished_runs, tmp_path):
    from app.pages.spectra import DEMO, SpectraTab, run_spectra_page
    from app.state import AppState
    from labelcore.runs import RunStore, load_run_data

    demo = RunStore(tmp_path / "demo")
    state = AppState(store=finished_runs["store"], demo_store=demo)
    tab = SpectraTab(state)
    # the demo runs are queued (not trained here) and their progress is shown meanwhile
    assert {r.config["method"] for r in demo.runs()} == {"SLAM", "Lux", "Cannon"}
    assert all(r.state in ("queued", "running") for r in demo.runs())
    assert DEMO not in tab._pages and len(tab._holder) == 1
    for r in demo.runs():
        r.cancel()
    ids = set(tab.param.source.names.values())
    assert ids == {DEMO, finished_runs["SLAM"].id, finished_runs["Lux"].id}      # no CNN: not generative
    lux = finished_runs["Lux"]
    tab.source = lux.id
    page = tab.page_for(lux.id)
    te = load_run_data(lux.config["data"])["test"]
    n = min(len(te["flux"]), 300)
    np.testing.assert_array_equal(page.flux, te["flux"][:n])
    np.testing.assert_allclose(page.labels, te["truth"][:n])
    y = lux.model().predict(te["flux"][:n], flux_err=te["flux_err"][:n])
    np.testing.assert_allclose(page.predictions["Lux"], y)
    assert "Lux" in page.derivatives
    with pytest.raises(ValueError, match="no generative model"):
        run_spectra_page(finished_runs["CNN"])
