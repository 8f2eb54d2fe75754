"""The star inspector: a survey star's spectrum with every finished run's model fit, its
labels from each run; a prediction catalogue's star with its own labels; a star without
a spectrum says so."""

import numpy as np
import pandas as pd
import pytest

pn = pytest.importorskip("panel")

from app.pages.catalogue import CataloguePage  # noqa: E402
from app.pages.inspector import StarInspector  # noqa: E402
from app.state import AppState  # noqa: E402
from labelcore.catalogue import find_observations, star_fit  # noqa: E402
from labelcore.data.io import read_spectra, read_spectra_meta  # noqa: E402
from labelcore.runs import RunStore  # noqa: E402


def _texts(view):
    out = []
    for o in view.select(pn.pane.Markdown) + view.select(pn.pane.Alert):
        out.append(str(o.object))
    return "\n".join(out)


def test_a_survey_star_shows_every_runs_fit_and_labels(small_survey, finished_runs, tmp_path):
    meta = read_spectra_meta(small_survey / "spectra_rave.h5")
    sid = str(meta["star_id"].iloc[3])
    obs = find_observations(small_survey, sid)
    assert obs and obs[0]["setup"] == "rave" and all(o["obs_id"].split("-")[1] == sid for o in obs)
    state = AppState(store=finished_runs["store"], survey_dir=str(small_survey),
                     demo_store=RunStore(tmp_path / "demo"))
    page = CataloguePage(small_survey / "catalogue.parquet", inspector=StarInspector(state).view_survey_star)
    row = page.data.find("id", sid)
    page.inspect(row)
    view = page._inspect_holder[0]
    text = _texts(view)
    assert f"Star {sid}" in text and "rave" in text
    tables = view.select(pn.widgets.Tabulator)
    assert tables and set(tables[0].value["method"]) == {"CNN", "SLAM", "Lux"}
    assert page.star == row and page.star_ref == sid
    # the Lux row is the same prediction a catalogue of this file would hold
    lux = finished_runs["Lux"].model()
    fit = star_fit(lux, obs[0]["path"], obs[0]["row"])
    s = read_spectra(obs[0]["path"], slice(obs[0]["row"], obs[0]["row"] + 1))
    np.testing.assert_allclose(fit["flux"], np.where(s.mask[0], np.nan, s.flux[0]))
    y = lux.predict(np.where(s.mask, np.nan, s.flux), flux_err=s.flux_err)
    np.testing.assert_allclose(fit["row"][list(lux.label_names_)].to_numpy(float), y[0], rtol=1e-6)
    assert np.isfinite(fit["model"]).mean() > 0.9 and np.nanstd(fit["residual"]) < 5


def test_a_star_without_a_spectrum_and_a_bookmarked_unknown_star(small_survey, tmp_path):
    state = AppState(store=RunStore(tmp_path / "runs"), survey_dir=str(small_survey),
                     demo_store=RunStore(tmp_path / "demo"))
    page = CataloguePage(small_survey / "catalogue.parquet", inspector=StarInspector(state).view_survey_star)
    cat = pd.read_parquet(small_survey / "catalogue.parquet")
    no_spec = cat.index[cat[[c for c in cat.columns if c.startswith("snr_")]].isna().all(axis=1)][0]
    page.inspect(int(no_spec))
    assert "No spectrum of this star" in _texts(page._inspect_holder[0])
    page.star_ref = "NO-SUCH-STAR"
    assert "No star NO-SUCH-STAR" in page.messages.text
