"""Survey manifests (``data_manifests/*.yaml``): what a survey is and how to read it.

A manifest names the survey, release and DOI, and lists *products*:

* ``kind: table`` -- a catalogue (FITS binary table, CSV or Parquet) with an ``id_column``,
  a ``crossmatch_column`` (Gaia source_id where the survey provides one), sentinel
  ``missing_values`` and a ``columns`` mapping ``canonical_name -> {column, err, flag,
  unit, optional, err_from_percentiles}``;
* ``kind: spectrum`` -- per-object spectrum files read by a registered ``loader``
  (see :mod:`labelcore.data.loaders`).

and *presets*: the papers' quality cuts as named lists of cuts on canonical columns
(evaluated by :mod:`labelcore.prep.cuts`).

:func:`read_survey_table` turns a raw survey table into a canonical :class:`Catalogue`:
renamed columns, ``<name>_err`` and ``<name>_flag`` companions, sentinels to NaN, and a
clear :class:`~labelcore.errors.FormatError` naming the file and the missing columns when
the file does not match its manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from labelcore import settings
from labelcore.data.containers import Catalogue
from labelcore.data.cutspec import validate_cuts
from labelcore.data.io import read_fits_table, read_table
from labelcore.errors import FormatError, ManifestError


def manifest_dir() -> Path:
    """``$LABELCORE_MANIFESTS`` or the manifests shipped as package data
    (:func:`labelcore.settings.manifest_dir`)."""
    return settings.manifest_dir()


@dataclass
class Manifest:
    name: str
    survey: str
    release: str
    description: str = ""
    doi: str = ""
    products: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    path: Path | None = None

    def product(self, name: str) -> dict:
        try:
            return self.products[name]
        except KeyError:
            raise ManifestError(
                f"manifest {self.name!r} has no product {name!r}; has {sorted(self.products)}"
            ) from None

    def preset(self, name: str) -> dict:
        try:
            return self.presets[name]
        except KeyError:
            raise ManifestError(
                f"manifest {self.name!r} has no preset {name!r}; has {sorted(self.presets)}"
            ) from None


_REQUIRED = ("name", "survey", "release", "products")


def load_manifest(name_or_path) -> Manifest:
    """Load and validate a manifest by name (``apogee_dr17``) or path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = manifest_dir() / f"{name_or_path}.yaml"
    if not p.exists():
        avail = ", ".join(list_manifests())
        raise ManifestError(f"no manifest {str(name_or_path)!r} (looked at {p}); available: {avail}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"{p}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{p}: a manifest must be a mapping")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ManifestError(f"{p}: missing keys {missing}")
    for pname, prod in raw["products"].items():
        kind = prod.get("kind")
        if kind not in ("table", "spectrum"):
            raise ManifestError(f"{p}: product {pname!r} has kind {kind!r} (table|spectrum)")
        if kind == "table":
            for k in ("id_column", "columns"):
                if k not in prod:
                    raise ManifestError(f"{p}: table product {pname!r} lacks {k!r}")
            cols = prod["columns"]
            if cols != "canonical":
                if not isinstance(cols, dict):
                    raise ManifestError(f"{p}: {pname}.columns must be a mapping or 'canonical'")
                for cname, spec in cols.items():
                    if not isinstance(spec, dict) or "column" not in spec:
                        raise ManifestError(f"{p}: {pname}.columns.{cname} needs a 'column'")
        else:
            if "loader" not in prod:
                raise ManifestError(f"{p}: spectrum product {pname!r} lacks 'loader'")
    presets = raw.get("presets") or {}
    for pr_name, pr in presets.items():
        if "cuts" not in pr:
            raise ManifestError(f"{p}: preset {pr_name!r} has no cuts")
        try:
            validate_cuts(pr["cuts"])
        except ManifestError as exc:
            raise ManifestError(f"{p}: preset {pr_name!r}: {exc}") from None
    return Manifest(
        name=raw["name"], survey=raw["survey"], release=str(raw["release"]),
        description=raw.get("description", ""), doi=raw.get("doi", ""),
        products=raw["products"], presets=presets, path=p,
    )


def list_manifests() -> list[str]:
    d = manifest_dir()
    return sorted(q.stem for q in d.glob("*.yaml")) if d.exists() else []


def _read_raw_table(path: Path, prod: dict) -> pd.DataFrame:

    fmt = prod.get("format") or path.suffix.lstrip(".").lower()
    suffix = path.suffix.lower()
    if suffix in (".fits", ".fit", ".fz") or fmt == "fits" and suffix not in (".csv", ".parquet"):
        return read_fits_table(path, prod.get("hdu", 1))
    if suffix == ".parquet" or fmt == "parquet":
        return read_table(path)
    if suffix in (".csv", ".txt") or fmt == "csv":
        try:
            return pd.read_csv(path, comment="#")
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: not a readable CSV table ({exc})") from exc
    raise FormatError(f"{path}: unknown table format {fmt!r}")


def read_survey_table(path, manifest: Manifest | str, product: str) -> Catalogue:
    """Read a survey table through its manifest into a canonical :class:`Catalogue`.

    * renames mapped columns to canonical names (``<name>``, ``<name>_err``,
      ``<name>_flag``) and keeps the survey id as ``id`` (string) and the original id
      column too;
    * replaces the manifest's sentinel ``missing_values`` (and non-finite values) by NaN;
    * raises :class:`FormatError` naming the file and every required column it lacks.
    """
    man = load_manifest(manifest) if isinstance(manifest, str) else manifest
    prod = man.product(product)
    if prod.get("kind") != "table":
        raise ManifestError(f"{man.name}.{product} is not a table product")
    path = Path(path)
    raw = _read_raw_table(path, prod)
    idc = prod["id_column"]
    cols = prod["columns"]
    if cols == "canonical":
        if idc not in raw.columns:
            raise FormatError(f"{path}: id column {idc!r} missing")
        return Catalogue(raw, name=man.name)
    needed = [idc]
    for spec in cols.values():
        if spec.get("optional"):
            continue
        needed.append(spec["column"])
        for k in ("err", "flag"):
            if spec.get(k):
                needed.append(spec[k])
        needed += list(spec.get("err_from_percentiles", []))
    lower = {c.lower(): c for c in raw.columns}

    def find(c):  # FITS column names are case-insensitive
        return c if c in raw.columns else lower.get(c.lower())

    missing = [c for c in needed if find(c) is None]
    if missing:
        raise FormatError(
            f"{path}: table does not match manifest {man.name}.{product}: missing columns "
            f"{missing}"
        )
    sentinels = [float(v) for v in prod.get("missing_values", []) or []]
    out = {"id": raw[find(idc)].astype(str).str.strip().to_numpy()}

    def numeric(series):
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            return series.to_numpy()
        v = series.to_numpy()
        if v.dtype.kind in "iu":
            if sentinels and np.isin(v, sentinels).any():
                v = v.astype(float)
                v[np.isin(v, sentinels)] = np.nan
            return v
        v = v.astype(float)
        if sentinels:
            v[np.isin(v, sentinels)] = np.nan
        v[~np.isfinite(v)] = np.nan
        return v

    for cname, spec in cols.items():
        src = find(spec["column"])
        if src is None:
            continue
        out[cname] = numeric(raw[src])
        if spec.get("err") and find(spec["err"]) is not None:
            e = numeric(raw[find(spec["err"])]).astype(float)
            e[e <= 0] = np.nan  # a zero/negative error is "unknown", not "perfect"
            out[f"{cname}_err"] = e
        if spec.get("err_from_percentiles"):
            lo, hi = (numeric(raw[find(c)]).astype(float) for c in spec["err_from_percentiles"])
            e = 0.5 * (hi - lo)
            e[e <= 0] = np.nan
            out[f"{cname}_err"] = e
        if spec.get("flag") and find(spec["flag"]) is not None:
            out[f"{cname}_flag"] = raw[find(spec["flag"])].to_numpy()
    df = pd.DataFrame(out)
    if idc not in df.columns:
        df[idc] = raw[find(idc)].to_numpy()
    if "source_id" in df.columns:
        sid = pd.to_numeric(df["source_id"], errors="coerce")
        df["source_id"] = sid.astype("Int64")
    try:
        return Catalogue(df, name=man.name, meta={"path": str(path), "product": product})
    except Exception as exc:
        raise FormatError(f"{path}: {exc}") from exc
