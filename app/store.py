"""Shared data store for the app pages: loads (and caches) the default survey catalogue."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from labelcore.data.io import read_table
from labelcore.data.synth.survey import ensure_survey

#: columns the catalogue page offers for colouring (numeric)
CATALOGUE_COLUMNS = None


@functools.lru_cache(maxsize=4)
def load_catalogue(survey_dir: str | None = None) -> pd.DataFrame:
    """The catalogue table of ``survey_dir`` (default: the embedded survey, built on first
    use and cached on disk)."""
    path = Path(survey_dir) if survey_dir else ensure_survey()
    df = read_table(path / "catalogue.parquet")
    for c in ("phase", "component"):
        if c in df.columns:
            df[c] = df[c].astype("category")
    return df
