"""The Spectra page shows what the core computes: model spectra at each method's labels,
normalised residuals, SLAM CODs and Lux derivative spectra, in line windows."""

import numpy as np
import pytest

pn = pytest.importorskip("panel")

from app.pages.spectra import FULL, SpectraPage  # noqa: E402
from labelcore.data.synth.datasets import labelled_set  # noqa: E402
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
    page = SpectraPage(te.wave, te.flux, te.flux_err, {"SLAM": slam, "Lux": lux}, labels=te.truth, cods=cods)
    return te, slam, lux, cods, page


def test_model_spectra_and_residuals_are_the_cores(setup):
    te, slam, lux, _, page = setup
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
    te, slam, lux, cods, page = setup
    assert "Ca II 8542" in page.param.window.objects
    assert not any("H band" in w for w in page.param.window.objects)   # outside the RAVE range
    page.window = "Ca II 8542"
    w, *_ = page.spectrum_data()
    assert w.min() >= 8522 and w.max() <= 8562 and w.size > 10
    page.label = "logg"
    plot = page.dependence_plot()
    layout = plot.object
    cod_overlay, deriv = layout[0], layout[1]
    sel = (te.wave >= 8522) & (te.wave <= 8562)
    np.testing.assert_allclose(cod_overlay.get(1).dimension_values(1), cods["logg"][sel])
    np.testing.assert_allclose(deriv.dimension_values(1), lux.derivative_spectra()[1, sel])
    page.window = FULL


def test_bad_input_is_refused(setup):
    te, slam, lux, cods, _ = setup
    with pytest.raises(ValueError, match="flux must be"):
        SpectraPage(te.wave[:-1], te.flux, te.flux_err, {"SLAM": slam})
    with pytest.raises(ValueError, match="0 rows"):
        SpectraPage(te.wave, te.flux[:0], te.flux_err[:0], {"SLAM": slam})
    with pytest.raises(ValueError, match="flux_err shape"):
        SpectraPage(te.wave, te.flux, te.flux_err[:, :-1], {"SLAM": slam})
    with pytest.raises(ValueError, match="at least one"):
        SpectraPage(te.wave, te.flux, te.flux_err, {})
    with pytest.raises(ValueError, match="COD arrays"):
        SpectraPage(te.wave, te.flux, te.flux_err, {"SLAM": slam}, cods={"full": cods["full"][:-1]})
    class LabelsOnly:   # a method without a generative model, as the CNN
        label_names_ = list(NAMES)

        def predict(self, flux, flux_err=None):
            return np.zeros((len(flux), len(NAMES)))

    with pytest.raises(ValueError, match="none of the models is generative"):
        SpectraPage(te.wave, te.flux, te.flux_err, {"CNN": LabelsOnly()})
    with pytest.raises(ValueError, match="reference labels"):
        SpectraPage(te.wave, te.flux, te.flux_err, {"SLAM": slam}, labels=te.truth[:, :2])


def test_spectra_tab_shows_a_runs_held_out_spectra(finished_runs, setup):
    from app.pages.spectra import SpectraTab, run_spectra_page
    from labelcore.runs import load_run_data

    calls = []

    def demo():
        calls.append(1)
        return setup[-1]

    tab = SpectraTab(demo, finished_runs["store"])
    assert calls == [1] and tab.page_for("demo") is setup[-1] and len(tab._holder) == 1
    ids = set(tab.param.source.names.values())
    assert ids == {"demo", finished_runs["SLAM"].id, finished_runs["Lux"].id}      # no CNN: not generative
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
    tab.source = "demo"
    assert calls == [1]                                    # built once
    with pytest.raises(ValueError, match="only SLAM and Lux"):
        run_spectra_page(finished_runs["CNN"])
