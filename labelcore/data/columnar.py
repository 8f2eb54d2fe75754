"""A catalogue read one column at a time, and rows written out in a stream.

A survey catalogue of ten million stars and ~90 columns is several GB in memory; the
Catalogue page needs four label columns, a colour column and the filter columns.
:class:`ColumnTable` wraps a Parquet file (or a DataFrame already in memory) and reads a
column only when asked, once; :meth:`ColumnTable.write_rows` writes the rows of a mask
batch by batch (a Parquet row group at a time), so exporting a selection never holds the
whole table in memory. Written through :func:`labelcore.data.io.atomic_path`: a failed
or interrupted export leaves no partial file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labelcore.data.io import atomic_path, write_fits_table
from labelcore.errors import FormatError, MissingInputError, ValidationError

#: export formats of :meth:`ColumnTable.write_rows`
FORMATS = ("parquet", "csv", "fits")
#: rows per batch when a DataFrame source is written out
_BATCH = 262_144


_SHARED: dict = {}


def shared_table(path) -> ColumnTable:
    """One :class:`ColumnTable` per Parquet file (and modification time) in this process:
    every browser session of a served app reads a column once, together."""
    p = Path(os.fspath(path)).resolve()
    try:
        key = (str(p), p.stat().st_mtime_ns)
    except OSError as exc:
        raise MissingInputError(f"catalogue {p} does not exist or is not a file") from exc
    if key not in _SHARED:
        for k in [k for k in _SHARED if k[0] == key[0]]:
            del _SHARED[k]
        _SHARED[key] = ColumnTable(p)
    return _SHARED[key]


class ColumnTable:
    """Columns of a catalogue, read on demand.

    Parameters
    ----------
    source : DataFrame, or path of a Parquet file.
    """

    def __init__(self, source):
        self._cache: dict[str, np.ndarray | pd.Series] = {}
        if isinstance(source, pd.DataFrame):
            self.frame, self.path = source.reset_index(drop=True), None
            self.n = len(self.frame)
            self.columns = [str(c) for c in self.frame.columns]
            self._types = {c: self.frame[c].dtype for c in self.columns}
            self._numeric = {c for c in self.columns if pd.api.types.is_numeric_dtype(self.frame[c])
                             and not pd.api.types.is_bool_dtype(self.frame[c])}
            self._categorical = {c for c in self.columns if isinstance(self.frame[c].dtype, pd.CategoricalDtype)}
            return
        path = Path(os.fspath(source))
        if not path.is_file():
            raise MissingInputError(f"catalogue {path} does not exist or is not a file")
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise FormatError(f"catalogue {path} is not a readable Parquet file: {exc}") from exc
        self.frame, self.path = None, path
        schema = self._file.schema_arrow
        self.n = self._file.metadata.num_rows
        self.columns = [f.name for f in schema if not f.name.startswith("__index_level")]
        types = {f.name: f.type for f in schema}
        self._numeric = {c for c in self.columns if (pa.types.is_integer(types[c]) or pa.types.is_floating(types[c]))}
        self._categorical = {c for c in self.columns if pa.types.is_dictionary(types[c])}
        self._types = types

    # ------------------------------------------------------------------ reading
    @property
    def numeric(self) -> list[str]:
        """Numeric columns, in table order."""
        return [c for c in self.columns if c in self._numeric]

    def has(self, name: str) -> bool:
        return name in self.columns

    def _read(self, name: str):
        if name not in self.columns:
            raise ValidationError(f"the catalogue has no column {name!r}")
        if self.frame is not None:
            return self.frame[name]
        try:
            col = self._file.read(columns=[name], use_pandas_metadata=False).column(0)
        except (pa.ArrowInvalid, OSError) as exc:
            raise FormatError(f"column {name!r} of {self.path} cannot be read: {exc}") from exc
        return col.to_pandas()

    def column(self, name: str) -> np.ndarray:
        """A numeric column as float32 (NaN where missing); read once, then cached."""
        key = f"f:{name}"
        if key not in self._cache:
            if name not in self._numeric:
                raise ValidationError(f"column {name!r} of the catalogue is not numeric")
            self._cache[key] = np.asarray(pd.to_numeric(self._read(name)), dtype=np.float32)
        return self._cache[key]

    def values(self, name: str) -> np.ndarray:
        """A column's values as they are (strings, integers, ...); cached."""
        key = f"v:{name}"
        if key not in self._cache:
            s = self._read(name)
            self._cache[key] = np.asarray(s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s)
        return self._cache[key]

    def categories(self, name: str) -> tuple[np.ndarray, list[str]]:
        """``(codes, categories)`` of a text or categorical column (-1 for missing)."""
        key = f"c:{name}"
        if key not in self._cache:
            s = self._read(name)
            cat = s.astype("category") if not isinstance(s.dtype, pd.CategoricalDtype) else s
            self._cache[key] = (np.asarray(cat.cat.codes, np.int16), [str(c) for c in cat.cat.categories])
        return self._cache[key]

    def is_categorical(self, name: str) -> bool:
        return name in self._categorical

    def find(self, name: str, value) -> int | None:
        """The first row whose column ``name`` equals ``value`` (as text), or None."""
        import pyarrow.compute as pc

        if name not in self.columns:
            return None
        if self.frame is not None:
            hit = np.flatnonzero(self.frame[name].astype(str).to_numpy() == str(value))
            return int(hit[0]) if hit.size else None
        col = self._arrow(name)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.string())
        i = pc.index(col, str(value)).as_py()
        return None if i is None or i < 0 else int(i)

    def _arrow(self, name: str):
        """A column as a pyarrow array (compact for text), read once."""
        key = f"a:{name}"
        if key not in self._cache:
            if name not in self.columns:
                raise ValidationError(f"the catalogue has no column {name!r}")
            self._cache[key] = self._file.read(columns=[name], use_pandas_metadata=False).column(0)
        return self._cache[key]

    def rows(self, index, columns=None) -> pd.DataFrame:
        """The rows at positions ``index`` (sorted or not; at most a few thousand), all
        columns or ``columns``. From a Parquet source, a few rows (the star inspector)
        are read from the row groups holding them; more rows (the selection table) are
        taken from columns read once and cached (floats as float32, for display)."""
        index = np.asarray(index, np.int64)
        cols = list(columns) if columns is not None else self.columns
        if self.frame is not None:
            return self.frame.iloc[index][cols].reset_index(drop=True)
        if index.size == 0:
            return self._file.schema_arrow.empty_table().select(cols).to_pandas()
        md = self._file.metadata
        starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        touched = np.unique(np.searchsorted(starts, index, side="right") - 1)
        if index.size > 16 and columns is not None and len(touched) > 2:
            out = {}
            for c in cols:
                t = self._types[c]
                if pa.types.is_floating(t):
                    out[c] = self.column(c)[index]
                else:
                    out[c] = self._arrow(c).take(pa.array(index)).to_pandas()
            return pd.DataFrame(out)
        groups = touched
        parts, offsets = [], []
        for g in groups:
            parts.append(self._file.read_row_group(int(g), columns=cols))
            offsets.append(starts[g])
        tab = pa.concat_tables(parts)
        # position of each wanted row in the concatenation of the groups read
        group_base = np.cumsum([0] + [starts[g + 1] - starts[g] for g in groups])[:-1]
        where = np.searchsorted(groups, np.searchsorted(starts, index, side="right") - 1)
        local = index - starts[groups[where]] + group_base[where]
        return tab.take(pa.array(local)).to_pandas().reset_index(drop=True)

    def _batches(self, columns=None):
        """(first row, DataFrame) batches in table order."""
        if self.frame is not None:
            cols = list(columns) if columns is not None else self.columns
            for a in range(0, self.n, _BATCH):
                yield a, self.frame.iloc[a:a + _BATCH][cols]
            return
        a = 0
        for batch in self._file.iter_batches(batch_size=_BATCH, columns=columns, use_pandas_metadata=True):
            df = batch.to_pandas()
            yield a, df
            a += len(df)

    # ------------------------------------------------------------------ writing
    def write_rows(self, mask, path, fmt: str = "parquet", *, columns=None, progress=None) -> int:
        """Write the rows where ``mask`` is True (in table order) to ``path`` as ``fmt``
        (parquet, csv or fits), a batch at a time; returns the number of rows written.
        FITS is written from the selected rows in memory (FITS tables cannot be appended
        by row); Parquet and CSV never hold more than one batch."""
        mask = np.asarray(mask, bool)
        if mask.shape != (self.n,):
            raise ValidationError(f"selection mask has shape {mask.shape}, the catalogue {self.n} rows")
        if fmt not in FORMATS:
            raise ValidationError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
        report = progress or (lambda frac, msg: None)
        total = int(mask.sum())
        n = 0
        with atomic_path(path) as tmp:
            writer, kept = None, []
            try:
                with open(tmp, "wb") if fmt == "csv" else _null() as fh:
                    for a, df in self._batches(columns):
                        sub = df[mask[a:a + len(df)]]
                        if fmt == "parquet":
                            t = pa.Table.from_pandas(sub, preserve_index=False)
                            if writer is None:
                                writer = pq.ParquetWriter(tmp, t.schema)
                            writer.write_table(t.cast(writer.schema) if t.schema != writer.schema else t)
                        elif fmt == "csv":
                            sub.to_csv(fh, index=False, header=(a == 0))
                        else:
                            kept.append(sub)
                        n += len(sub)
                        report(min(1.0, (a + len(df)) / max(self.n, 1)), f"{n:,} of {total:,} rows")
                    if fmt == "parquet" and writer is None:   # an empty selection: a file with the columns
                        empty = self.rows(np.zeros(0, np.int64), columns)
                        pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), tmp)
                    if fmt == "fits":
                        frame = (pd.concat(kept, ignore_index=True) if kept
                                 else self.rows(np.zeros(0, np.int64), columns))
                        for c in frame.columns:
                            if isinstance(frame[c].dtype, pd.CategoricalDtype):
                                frame[c] = frame[c].astype(str)
                        write_fits_table(frame, tmp)
            finally:
                if writer is not None:
                    writer.close()
        return n


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
