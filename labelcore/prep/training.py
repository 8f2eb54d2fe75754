"""Training-set builder: spectra x labels (x photometry), cross-matched by Gaia source_id,
with the papers' cuts applied and the number of stars after each cut reported.

A :class:`TrainingSet` is saved as a folder (atomically)::

    training_set.json   what was built: survey, set-up, label source, cuts, counts, names
    spectra.h5          the selected spectra (labelcore HDF5 format)
    table.parquet       the joined table: one row per spectrum, labels, photometry, meta
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from labelcore.constants import PAPER_LABELS, PHOT_BANDS
from labelcore.data.containers import LABEL_UNITS, Labels, Spectra
from labelcore.data.io import (
    atomic_dir,
    read_spectra,
    read_spectra_meta,
    read_table,
    recover_artifact,
    write_spectra,
    write_table,
)
from labelcore.data.manifests import load_manifest, read_survey_table
from labelcore.errors import EmptySelectionError, MissingInputError, ValidationError
from labelcore.prep.crossmatch import crossmatch, dedupe
from labelcore.prep.cuts import apply_cuts
from labelcore.prep.photometry import photometry_matrix


@dataclass
class TrainingSet:
    spectra: Spectra
    labels: Labels
    table: pd.DataFrame
    counts: pd.DataFrame
    photometry: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __len__(self):
        return self.spectra.n_spectra

    def save(self, path, *, force: bool = False) -> Path:
        """Write the set to the folder ``path`` atomically. An existing folder is replaced
        only if it is a training set (or empty), unless ``force``."""
        path = Path(path)
        with atomic_dir(path, "training_set", force=force) as tmp:
            write_spectra(self.spectra, tmp / "spectra.h5")
            write_table(self.table, tmp / "table.parquet")
            info = dict(self.info, label_names=self.labels.names, n=len(self),
                        counts=self.counts.to_dict("records"),
                        has_photometry=self.photometry is not None)
            (tmp / "training_set.json").write_text(json.dumps(info, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path) -> TrainingSet:
        path = Path(path)
        recover_artifact(path)
        try:
            info = json.loads((path / "training_set.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"{path}: not a saved training set ({exc})") from exc
        spectra = read_spectra(path / "spectra.h5")
        table = read_table(path / "table.parquet")
        labels = Labels.from_frame(table, info["label_names"], id_col="obs_id")
        phot = photometry_matrix(table) if info.get("has_photometry") else None
        return cls(spectra, labels, table, pd.DataFrame(info["counts"]), phot, info)


def build_from_tables(spec_meta: pd.DataFrame, label_table: pd.DataFrame, load_rows,
                      label_names, cuts=(), photometry=False, duplicates="best_snr",
                      max_stars=None, seed=0, info=None, on="source_id") -> TrainingSet:
    """Core builder. ``spec_meta`` has one row per spectrum with the id column ``on``
    (default Gaia ``source_id``), ``snr`` and ``row`` (index into the spectra store read by
    ``load_rows(sorted_rows) -> Spectra``); ``label_table`` has canonical labels
    (``<name>``, ``<name>_err``) and ``on``."""
    miss = [s for s in label_names if s not in label_table.columns]
    if miss:
        raise ValidationError(f"label table lacks label columns {miss}")
    for name, tab in (("spectra metadata", spec_meta), ("label table", label_table)):
        if on not in tab.columns:
            raise ValidationError(f"{name} has no id column {on!r} to cross-match on")
    counts = [{"cut": "spectra", "passing": len(spec_meta), "remaining": len(spec_meta),
               "skipped": False}]
    sm = dedupe(spec_meta, on, duplicates)
    counts.append({"cut": f"one spectrum per star ({duplicates})", "passing": len(sm),
                   "remaining": len(sm), "skipped": False})
    joined = crossmatch(sm, label_table, on=on, suffixes=("_spec", ""))
    counts.append({"cut": f"cross-match on {on}", "passing": len(joined),
                   "remaining": len(joined), "skipped": False})
    sel, c2 = apply_cuts(joined, list(cuts))
    c2 = c2.iloc[1:]
    counts += c2.to_dict("records")
    joined = joined[sel]
    if photometry:
        need = ["parallax", *PHOT_BANDS, "a_v"]
        ok = joined[need].notna().all(axis=1) & (joined["parallax"] > 0)
        joined = joined[ok]
        counts.append({"cut": "photometry, parallax > 0 and A_V present", "passing": int(ok.sum()),
                       "remaining": len(joined), "skipped": False})
    if max_stars is not None and len(joined) > max_stars:
        joined = joined.sample(n=max_stars, random_state=seed)
        counts.append({"cut": f"random sample of {max_stars}", "passing": max_stars,
                       "remaining": max_stars, "skipped": False})
    if joined.empty:
        raise EmptySelectionError("training set is empty after the cuts:\n"
                                  + pd.DataFrame(counts).to_string(index=False))
    joined = joined.sort_values("row").reset_index(drop=True)
    spectra = load_rows(joined["row"].to_numpy())
    errs = [f"{s}_err" for s in label_names]
    lab = Labels(joined[label_names].to_numpy(float), list(label_names),
                 joined[errs].to_numpy(float) if all(e in joined for e in errs) else None,
                 ids=joined["obs_id"].to_numpy())
    phot = photometry_matrix(joined) if photometry else None
    return TrainingSet(spectra, lab, joined, pd.DataFrame(counts), phot, dict(info or {}))


def build_training_set(survey_dir, setup="rave", label_source="catalogue", preset=None,
                       cuts=None, label_names=None, photometry=False, max_stars=None,
                       seed=0) -> TrainingSet:
    """Training set from a synthetic-survey folder (see :mod:`labelcore.data.synth.survey`).

    ``label_source``: ``catalogue`` (APOGEE-like labels) or ``galah`` (the second label
    survey; photometry then comes from the catalogue). ``preset`` names a preset of the
    ``synthetic`` manifest (e.g. ``guiglion2020``); ``cuts`` adds cuts of your own.
    """
    survey_dir = Path(survey_dir)
    spath = survey_dir / f"spectra_{setup}.h5"
    if not spath.exists():
        raise MissingInputError(f"survey {survey_dir} has no spectra for set-up {setup!r}")
    meta = read_spectra_meta(spath)
    cat = read_table(survey_dir / "catalogue.parquet")
    if label_source == "catalogue":
        labels_tab = cat
    elif label_source == "galah":
        gal = read_table(survey_dir / "labels_galah.parquet")
        keep = [c for c in cat.columns if c not in gal.columns or c == "source_id"]
        labels_tab = gal.merge(cat[keep], on="source_id", how="left", suffixes=("", "_cat"))
    else:
        raise ValidationError(f"label_source must be 'catalogue' or 'galah'; got {label_source!r}")
    all_cuts = []
    if preset:
        all_cuts += load_manifest("synthetic").preset(preset)["cuts"]
    all_cuts += list(cuts or [])
    if label_names is None:
        label_names = PAPER_LABELS["guiglion2020"] if label_source == "catalogue" else \
            ["teff", "logg", "fe_h", "mg_fe", "si_fe", "ca_fe", "al_fe", "o_fe"]
    info = {"survey": str(survey_dir), "setup": setup, "label_source": label_source,
            "preset": preset, "cuts": all_cuts}
    return build_from_tables(meta, labels_tab, lambda rows: read_spectra(spath, rows),
                             label_names, all_cuts, photometry, max_stars=max_stars, seed=seed,
                             info=info)


def build_from_files(spectra_path, label_table_path, manifest: str, product: str = "catalogue",
                     label_names=None, preset=None, cuts=None, on="source_id", spectra_on=None,
                     photometry=False, max_stars=None, seed=0) -> TrainingSet:
    """Training set from a labelcore spectra file (e.g. made by ``labelcore ingest``) and a
    survey label table read through its manifest (e.g. an APOGEE allStar FITS with
    ``apogee_dr17``/``allstar``): spectra and labels are matched on the table's canonical
    column ``on`` (default Gaia ``source_id``; ``id`` is the survey's own id) against the
    spectra metadata column ``spectra_on`` (default the same name; ``obs_id`` is the
    spectra file's ids). ``preset`` names a preset of ``manifest`` (the paper's cuts);
    ``label_names`` default to every label of the table the manifest maps."""

    man = load_manifest(manifest)
    labels = read_survey_table(label_table_path, man, product).table
    spectra_path = Path(spectra_path)
    meta = read_spectra_meta(spectra_path)
    spectra_on = spectra_on or on
    if spectra_on not in meta.columns:
        raise ValidationError(f"{spectra_path}: spectra metadata has no column {spectra_on!r}; "
                              f"has {list(meta.columns)}")
    if "snr" not in meta.columns:
        meta["snr"] = np.nan
    if spectra_on != on:
        meta = meta.drop(columns=[on], errors="ignore")
        meta[on] = meta[spectra_on]
    if label_names is None:
        label_names = [c for c in labels.columns if c in LABEL_UNITS]
        if not label_names:
            raise ValidationError(f"{label_table_path}: no label columns after reading it with {manifest}")
    all_cuts = list(man.preset(preset)["cuts"]) if preset else []
    all_cuts += list(cuts or [])
    info = {"spectra": str(spectra_path), "label_table": str(label_table_path), "manifest": manifest,
            "product": product, "preset": preset, "cuts": all_cuts, "on": on, "spectra_on": spectra_on}
    return build_from_tables(meta, labels, lambda rows: read_spectra(spectra_path, rows), list(label_names),
                             all_cuts, photometry, max_stars=max_stars, seed=seed, info=info, on=on)


class TrainingSetRunSource:
    """Run data of kind ``"training_set"`` (:mod:`labelcore.runs.config`): a saved
    :class:`TrainingSet` split at random (``seed``) into ``1 - test_fraction`` training and
    ``test_fraction`` held-out stars, compared with their catalogue labels."""

    kind = "training_set"

    @staticmethod
    def validate(spec: dict) -> dict:
        known = {"kind", "path", "test_fraction", "seed", "photometry"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValidationError(f"training-set data has no field(s) {unknown}; valid: {sorted(known)}")
        p = spec.get("path")
        if not p or not isinstance(p, str) or not (Path(p) / "training_set.json").is_file():
            raise ValidationError(f"config data 'path' {p!r} is not a saved training set (no training_set.json)")
        try:
            info = json.loads((Path(p) / "training_set.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValidationError(f"config data 'path' {p!r}: not a saved training set (training_set.json: "
                                  f"{exc})") from exc
        if not isinstance(info, dict) or "label_names" not in info:
            raise ValidationError(f"config data 'path' {p!r}: not a saved training set (training_set.json "
                                  "has no label_names)")
        spec["path"] = str(Path(p).resolve())
        tf = spec.setdefault("test_fraction", 0.2)
        if isinstance(tf, bool) or not isinstance(tf, int | float) or not 0 < tf < 1:
            raise ValidationError(f"config data 'test_fraction' must be in (0, 1); got {tf!r}")
        seed = spec.setdefault("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValidationError(f"config data 'seed' must be a non-negative integer; got {seed!r}")
        return spec

    @staticmethod
    def load(spec: dict) -> dict:
        ts = TrainingSet.load(spec["path"])
        n = len(ts)
        n_test = int(round(spec["test_fraction"] * n))
        if n_test < 1 or n - n_test < 2:
            raise ValidationError(f"training set {spec['path']} has {n} stars: too few for a "
                                  f"{spec['test_fraction']:.0%} test split")
        perm = np.random.default_rng(int(spec["seed"])).permutation(n)
        parts = {"train": np.sort(perm[n_test:]), "test": np.sort(perm[:n_test])}
        s, lab, tab = ts.spectra, ts.labels, ts.table
        snr_col = next((c for c in ("snr", "snr_spec") if c in tab.columns), None)
        phot = ts.photometry if ts.photometry is not None else (
            photometry_matrix(tab) if spec.get("photometry") else None)
        out = {}
        for part, idx in parts.items():
            flux = np.where(s.mask[idx], np.nan, s.flux[idx])
            out[part] = {"flux": flux, "flux_err": s.flux_err[idx], "labels": lab.values[idx],
                         "label_err": lab.errors[idx] if not np.isnan(lab.errors).all() else None,
                         "photometry": None if phot is None else phot[idx], "truth": lab.values[idx],
                         "snr": tab[snr_col].to_numpy(float)[idx] if snr_col else np.full(idx.size, np.nan),
                         "ids": np.asarray(s.ids)[idx]}
        out["wave"], out["label_names"] = s.wave, list(lab.names)
        out["truth_kind"] = "catalogue labels"
        return out


RUN_SOURCE = TrainingSetRunSource()
