
import numpy as np
import pandas as pd
import pytest

pn = pytest.importorskip("panel")

from app.pages.catalogue import SPLITS, CataloguePage  # noqa: E402
from app.state import load_catalogue  # noqa: E402


@pytest.fixture(scope="module")
def page(small_survey):
    return CataloguePage(load_catalogue(str(small_survey)))


def test_page_builds_and_offers_columns(page):
    assert "teff" in page.param.color_by.objects and "density" in page.param.color_by.objects
    assert not any(c.endswith("_err") for c in page.param.color_by.objects)
    assert set(page.components) == {"thin", "thick", "halo"}
    layout = page.__panel__()
    assert isinstance(layout, pn.Row)
    plots = page.plots()
    assert isinstance(plots, pn.pane.HoloViews)
    # colouring by a column changes the aggregation
    page.color_by = "m_h"
    assert page._aggregator().column == "m_h"
    page.color_by = "density"


def test_filters_and_counts(page):
    n = len(page.table)
    page.components = ["halo"]
    halo = len(page.filtered())
    assert 0 < halo < 0.2 * n and (page.filtered()["component"] == "halo").all()
    assert f"**{halo:,}** of {n:,}" in page.counts_text()
    page.components = []
    assert isinstance(page.plots(), pn.pane.Alert)
    page.components = ["thin", "thick", "halo"]
    page.min_snr = 100
    assert (page.filtered()["snr_apogee"] >= 100).all()
    page.min_snr = 0


@pytest.mark.parametrize("fmt", ["parquet", "csv", "fits"])
def test_export_round_trips(page, fmt, tmp_path):
    page.phases = ["rc"]
    page._download_fmt.value = fmt
    data = page._export().read()
    p = tmp_path / f"x.{fmt}"
    p.write_bytes(data)
    if fmt == "parquet":
        df = pd.read_parquet(p)
    elif fmt == "csv":
        df = pd.read_csv(p)
    else:
        from labelcore.data.io import read_fits_table

        df = read_fits_table(p)
    assert len(df) == len(page.filtered()) and (df["phase"] == "rc").all()
    np.testing.assert_allclose(np.sort(df["teff"].to_numpy()), np.sort(page.filtered()["teff"].to_numpy()))
    page.phases = list(page.param.phases.objects)


def test_missing_columns_named():
    with pytest.raises(ValueError, match=r"lacks columns \['alpha_m'\]"):
        CataloguePage(pd.DataFrame({"teff": [1.0], "logg": [1.0], "m_h": [0.0]}))


def test_template_is_servable(page):
    tpl = page.template()
    assert isinstance(tpl, pn.template.FastListTemplate)


def test_alpha_panels_in_teff_and_logg_bins(page):
    df = page.filtered()
    page.split = "giants / dwarfs"
    (t1, giants), (t2, dwarfs) = page.panels(df)
    assert len(giants) + len(dwarfs) == len(df)
    assert (giants["logg"] < 3.5).all() and (dwarfs["logg"] >= 3.5).all() and "giants" in t1
    layout = page.plots().object
    assert len(layout) == 3                       # Kiel diagram + two [alpha/M]-[M/H] panels
    page.split = "Teff bins"
    parts = page.panels(df)
    assert sum(len(p) for _, p in parts) == len(df[np.isfinite(df["teff"])])
    assert all(p["teff"].between(lo, hi, inclusive="left").all()
               for (_, p), (_, _, lo, hi) in zip(parts, SPLITS["Teff bins"], strict=True))
    page.split = "none"
    assert len(page.plots().object) == 2
