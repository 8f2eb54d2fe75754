"""Every manifest loads; every table product reads a small file written in that survey's
format (raw column names, sentinels, FITS/CSV) into canonical columns."""

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from labelcore.data.manifests import list_manifests, load_manifest, read_survey_table
from labelcore.errors import FormatError, ManifestError

EXPECTED = {"apogee_dr16", "apogee_dr17", "rave_dr6", "lamost_dr5", "galah_dr3", "gaia_dr2",
            "gaia_dr3", "twomass", "allwise", "starhorse", "synthetic"}

TABLE_PRODUCTS = [(m, p) for m in sorted(EXPECTED) for p, spec in load_manifest(m).products.items()
                  if spec["kind"] == "table" and spec["columns"] != "canonical"]


def test_all_surveys_have_manifests():
    assert EXPECTED <= set(list_manifests())
    for name in EXPECTED:
        m = load_manifest(name)
        assert m.survey and m.release and m.products


def _raw_table(prod, n=6, seed=0):
    """A table in the survey's own column names; row 2 carries sentinel values."""
    rng = np.random.default_rng(seed)
    cols = {prod["id_column"]: np.array([f"ID{i:04d}" for i in range(n)])}
    sentinel = (prod.get("missing_values") or [None])[0]
    for cname, spec in prod["columns"].items():
        src = spec["column"]
        if cname == "source_id":
            cols[src] = np.arange(n, dtype=np.int64) + 1_000_000_000
        elif cname in ("classification", "star_class", "subclass", "ph_qual", "cc_flags"):
            cols[src] = np.array(["n"] * n)
        else:
            v = rng.uniform(1, 2, n)
            if sentinel is not None:
                v[2] = sentinel
            cols[src] = v
        if spec.get("err"):
            cols[spec["err"]] = rng.uniform(0.01, 0.1, n)
        if spec.get("flag"):
            cols[spec["flag"]] = np.zeros(n, np.int32)
        for c in spec.get("err_from_percentiles", []):
            cols[c] = rng.uniform(0, 1, n) + (1.0 if c.endswith("84") else 0.0)
    return cols


@pytest.mark.parametrize("manifest,product", TABLE_PRODUCTS)
@pytest.mark.parametrize("fmt", ["fits", "csv"])
def test_table_products_read_into_canonical_columns(tmp_path, manifest, product, fmt):
    m = load_manifest(manifest)
    prod = m.product(product)
    cols = _raw_table(prod)
    path = tmp_path / f"t.{fmt}"
    if fmt == "fits":
        Table(cols).write(path)
    else:
        pd.DataFrame(cols).to_csv(path, index=False)
    cat = read_survey_table(path, m, product)
    df = cat.table
    assert list(df["id"]) == [str(v) for v in cols[prod["id_column"]]]
    for cname, spec in prod["columns"].items():
        assert cname in df.columns, cname
        if spec.get("err") or spec.get("err_from_percentiles"):
            assert f"{cname}_err" in df.columns
    sentinel = (prod.get("missing_values") or [None])[0]
    numeric = [c for c, s in prod["columns"].items() if c != "source_id"
               and pd.api.types.is_float_dtype(df[c])]
    if sentinel is not None and numeric:
        assert df[numeric[0]].isna().iloc[2], "sentinel must become NaN"
        assert df[numeric[0]].notna().iloc[0]
    if "source_id" in df:
        assert df["source_id"].iloc[0] == 1_000_000_000


def test_missing_columns_are_named(tmp_path):
    m = load_manifest("apogee_dr17")
    cols = _raw_table(m.product("allstar"))
    del cols["TEFF"], cols["LOGG_ERR"]
    Table(cols).write(tmp_path / "allStar.fits")
    with pytest.raises(FormatError, match=r"allStar.fits.*missing columns \['TEFF'.*'LOGG_ERR'"):
        read_survey_table(tmp_path / "allStar.fits", m, "allstar")


def test_fits_column_names_are_case_insensitive(tmp_path):
    m = load_manifest("gaia_dr3")
    cols = {k.upper(): v for k, v in _raw_table(m.product("gaia_source")).items()}
    Table(cols).write(tmp_path / "g.fits")
    df = read_survey_table(tmp_path / "g.fits", m, "gaia_source").table
    assert "parallax_err" in df and "g" in df


def test_bad_manifests_are_rejected(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: x\nsurvey: X\nrelease: 1\nproducts:\n  t: {kind: table, columns: {}}\n")
    with pytest.raises(ManifestError, match="lacks 'id_column'"):
        load_manifest(p)
    p.write_text("name: x\nsurvey: X\nrelease: 1\nproducts: {}\n"
                 "presets:\n  a: {cuts: [{column: teff, op: '~', value: 1}]}\n")
    with pytest.raises(ManifestError, match="preset 'a'.*op"):
        load_manifest(p)
    p.write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match="invalid YAML"):
        load_manifest(p)
    with pytest.raises(ManifestError, match="no manifest 'nope'"):
        load_manifest("nope")
    with pytest.raises(ManifestError, match="no preset"):
        load_manifest("rave_dr6").preset("nope")


def test_paper_presets_are_present():
    assert {"guiglion2020_labels", "zhang2020_apogee", *[f"horta2024_{s}" for s in "ABCDEFGH"]} <= \
        set(load_manifest("apogee_dr17").presets)
    assert {"guiglion2020_training_spectra", "guiglion2020_observed"} <= set(load_manifest("rave_dr6").presets)
    assert {"zhang2020_lamost_training", "zhang2020_lamost_apogee"} <= set(load_manifest("lamost_dr5").presets)
