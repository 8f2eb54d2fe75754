"""Training-set page: spectra of one survey set-up cross-matched with a label survey on Gaia
``source_id``, a paper's cuts (the presets of the ``synthetic`` manifest) plus cuts of your
own, the number of stars left after every cut, the sample on a Kiel diagram and its S/N
distribution, and saving the set for the Train tab.

UI only: the set is built by :func:`labelcore.prep.training.build_training_set` and saved by
:meth:`TrainingSet.save` (atomically)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import holoviews as hv
import numpy as np
import panel as pn
import param

from app import figures
from app.components import TOOLS, MessageArea, plot_grid, safe_table
from labelcore.constants import PAPER_LABELS
from labelcore.data.manifests import list_manifests, load_manifest
from labelcore.errors import LabelcoreError
from labelcore.prep.cuts import validate_cuts
from labelcore.prep.training import build_from_files, build_training_set
from labelcore.settings import resolve_user_path

figures.use_bokeh()

NO_PRESET = "(none)"
_NAME_OK = re.compile(r"^[\w.\-]+$")


def parse_cuts(text: str) -> list:
    """Cuts typed by the user: a JSON list of cut mappings, or one JSON mapping per line
    (grammar of :mod:`labelcore.prep.cuts`). Raises :class:`LabelcoreError` naming the line."""
    text = text.strip()
    if not text:
        return []
    try:
        cuts = json.loads(text)
        cuts = cuts if isinstance(cuts, list) else [cuts]
    except json.JSONDecodeError:
        cuts = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                cuts.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LabelcoreError(f"cut on line {i} is not JSON: {exc.msg} ({line.strip()!r})") from exc
    validate_cuts(cuts)
    return cuts


def list_training_sets(root) -> list[Path]:
    """Saved training sets (folders with ``training_set.json``) under ``root``, newest first."""
    root = Path(root)
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if (p / "training_set.json").exists()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


FOLDER, FILES = "survey folder", "spectra file + label table"


class TrainingSetPage(pn.viewable.Viewer):
    """Build, inspect and save a training set from a survey folder (the synthetic survey),
    or from a spectra file (``labelcore ingest``) and a survey label table read through its
    manifest (:func:`labelcore.prep.training.build_from_files`).

    Parameters
    ----------
    survey_dir : a survey folder made by ``labelcore synth`` (the app's default survey).
    out_root : where saved training sets go (the Train tab lists them).
    """

    source = param.Selector(default=FOLDER, objects=[FOLDER, FILES])
    spectra_file = param.String(default="", doc="labelcore HDF5 spectra file")
    label_table = param.String(default="", doc="survey label table (FITS, CSV, Parquet)")
    manifest = param.Selector(default="apogee_dr17", objects=["apogee_dr17"], check_on_set=False)
    product = param.Selector(default=None, objects=[None], allow_None=True, doc="the label table's product")
    match_on = param.String(default="source_id", doc="canonical id column of the label table")
    spectra_on = param.String(default="", doc="spectra metadata column with that id (empty: same name)")
    setup = param.Selector(default="rave", objects=["rave", "lamost", "apogee"])
    label_source = param.Selector(default="catalogue", objects=["catalogue", "galah"])
    preset = param.Selector(default="guiglion2020", objects=[NO_PRESET, "guiglion2020"], check_on_set=False)
    label_set = param.Selector(default="guiglion2020", objects=[*PAPER_LABELS, "custom"])
    labels = param.ListSelector(default=list(PAPER_LABELS["guiglion2020"]), objects=[])
    photometry = param.Boolean(default=True, doc="keep stars with 8 absolute magnitudes + A_V (CNN input)")
    max_stars = param.Integer(default=0, bounds=(0, None), doc="random sample of at most this many (0 = all)")
    cuts_text = param.String(default="", doc="extra cuts, JSON")
    set_name = param.String(default="")

    def __init__(self, survey_dir, out_root, roots=None, **params):
        super().__init__(**params)
        self.survey_dir = Path(survey_dir)
        self.out_root = Path(out_root)
        #: the only folders whose files the typed paths may name (settings.data_roots())
        self.roots = roots
        self.param.manifest.objects = [m for m in list_manifests() if m != "synthetic"]
        self._presets()
        every = sorted({n for v in PAPER_LABELS.values() for n in v} | {"alpha_m", "m_h"})
        self.param.labels.objects = every
        self.ts = None
        self._message = MessageArea()
        self._build = pn.widgets.Button(label="Build", color="primary")
        self._build.on_click(lambda e: self.build())
        self._save = pn.widgets.Button(label="Save training set", color="success", disabled=True)
        self._save.on_click(lambda e: self.save())
        self._result = pn.Column(sizing_mode="stretch_width")

    @param.depends("source", "manifest", "setup", watch=True)
    def _presets(self):
        """The presets of the manifest in use (``synthetic`` for a survey folder; there only
        those made for the chosen set-up, e.g. no LAMOST S/N cut on RAVE spectra), and the
        manifest's table products for the label table."""
        man = load_manifest("synthetic" if self.source == FOLDER else self.manifest)
        names = [k for k, v in man.presets.items()
                 if self.source != FOLDER or self.setup in (v.get("setups") or [self.setup])]
        objs = [NO_PRESET, *sorted(names)]
        self.param.preset.objects = objs
        if self.preset not in objs:
            self.preset = NO_PRESET
        if self.source == FILES:
            tables = [k for k, v in man.products.items() if v.get("kind") == "table"]
            self.param.product.objects = tables or [None]
            if self.product not in tables:
                self.product = tables[0] if tables else None

    @param.depends("preset", watch=True)
    def _labels_from_preset(self):
        """A paper's preset brings that paper's label set (the user can still change it)."""
        for key in PAPER_LABELS:
            if self.preset and self.preset.startswith(key):
                self.label_set = key
                return

    @param.depends("label_set", watch=True, on_init=True)
    def _labels_from_set(self):
        if self.label_set in PAPER_LABELS:
            self.labels = list(PAPER_LABELS[self.label_set])

    # ------------------------------------------------------------------ actions
    def _say(self, template, kind="success", **values):
        self._message.say(template, kind, **values)

    def build(self):
        """Build the training set of the current settings (shown, not yet saved)."""
        try:
            if not self.labels:
                raise LabelcoreError("choose at least one label")
            cuts = parse_cuts(self.cuts_text)
            preset = None if self.preset == NO_PRESET else self.preset
            if self.source == FOLDER:
                ts = build_training_set(self.survey_dir, self.setup, self.label_source, preset, cuts,
                                        list(self.labels), self.photometry, self.max_stars or None, seed=0)
            else:
                if not self.spectra_file.strip():
                    raise LabelcoreError("give the spectra file (labelcore HDF5, from `labelcore ingest`)")
                if not self.label_table.strip():
                    raise LabelcoreError(f"give the label table ({self.manifest} {self.product or 'table'})")
                if not self.product:
                    raise LabelcoreError(f"manifest {self.manifest} has no label table product")
                spectra = resolve_user_path(self.spectra_file, roots=self.roots, what="spectra file")
                table = resolve_user_path(self.label_table, roots=self.roots, what="label table")
                ts = build_from_files(spectra, table, self.manifest,
                                      self.product, list(self.labels), preset, cuts,
                                      self.match_on.strip() or "source_id", self.spectra_on.strip() or None,
                                      self.photometry, self.max_stars or None, seed=0)
        except (LabelcoreError, FileNotFoundError, ValueError) as exc:
            self.ts = None
            self._save.disabled = True
            self._say("Not built: {why}", "danger", why=exc)
            self._result[:] = []
            return None
        self.ts = ts
        self._save.disabled = False
        self._say("**{n}** spectra × {m} labels. Save it to train on it.", n=len(ts), m=len(ts.labels.names))
        self._result[:] = [self._counts_table(), plot_grid(list(self.plots()), ncols=2, linked_axes=False)]
        return ts

    def save(self):
        """Save the built set under ``out_root/<name>``; refuses names that are not plain
        folder names or that already exist."""
        if self.ts is None:
            self._say("Build a training set first.", "warning")
            return None
        base = self.setup if self.source == FOLDER else Path(self.spectra_file.strip()).stem or "set"
        name = self.set_name.strip() or f"{base}_{self.preset if self.preset != NO_PRESET else 'nocuts'}"
        if not _NAME_OK.match(name):
            self._say("Not saved: {name} is not a plain folder name (letters, digits, . _ -).", "danger",
                      name=repr(name))
            return None
        path = self.out_root / name
        if path.exists():
            self._say("Not saved: {path} exists. Choose another name.", "danger", path=path)
            return None
        self.ts.save(path)
        self._say("Saved **{n}** spectra to {path}: pick it on the Train tab.", n=len(self.ts), path=path)
        return path

    # ------------------------------------------------------------------ views
    def _counts_table(self):
        c = self.ts.counts[["cut", "passing", "remaining"]]
        return safe_table(c, show_index=False, sizing_mode="stretch_width", height=min(40 + 32 * len(c), 360))

    def plots(self):
        """Kiel diagram of the sample coloured by metallicity, and its S/N distribution."""
        tab = self.ts.table
        if not {"teff", "logg"} <= set(tab.columns):
            return hv.Div("<p>No Teff / log g in this training set: no Kiel diagram.</p>")
        colour = next((c for c in ("m_h", "fe_h") if c in tab.columns), None)
        vd = [colour] if colour else []
        kiel = hv.Points(tab, ["teff", "logg"], vd).opts(
            color=colour, cmap="viridis", colorbar=bool(colour), size=3, invert_xaxis=True, invert_yaxis=True,
            title=f"Kiel diagram of the {len(tab)} stars", xlabel="Teff [K]", ylabel="log g",
            responsive=True, height=380, tools=["hover"], default_tools=TOOLS)
        snr_col = next((c for c in ("snr", "snr_spec") if c in tab.columns), None)
        if snr_col is None:
            return kiel
        s = tab[snr_col].to_numpy(float)
        s = s[np.isfinite(s) & (s > 0)]
        edges = np.geomspace(s.min(), s.max() * 1.0001, 25) if s.size else np.array([1.0, 2.0])
        cnt, _ = np.histogram(s, edges)
        hist = hv.Histogram((edges, cnt), kdims=["S/N"], vdims=["spectra"]).opts(
            logx=True, color="#9bbcd8", title="S/N of the spectra", responsive=True, height=380,
            default_tools=TOOLS)
        return (kiel + hist).cols(2)

    @param.depends("source")
    def _source_widgets(self):
        if self.source == FOLDER:
            return pn.Column(pn.widgets.Select.from_param(self.param.setup, label="Spectra (set-up)"),
                             pn.widgets.Select.from_param(self.param.label_source, label="Labels from"))
        return pn.Column(
            pn.widgets.TextInput.from_param(self.param.spectra_file, label="Spectra file",
                                            placeholder="labelcore ingest ... --out FILE.h5"),
            pn.widgets.TextInput.from_param(self.param.label_table, label="Label table (FITS/CSV/Parquet)"),
            pn.widgets.Select.from_param(self.param.manifest, label="Survey manifest of the table"),
            pn.Row(pn.widgets.Select.from_param(self.param.product, label="Table product"),
                   pn.widgets.TextInput.from_param(self.param.match_on, label="Match on")),
            pn.widgets.TextInput.from_param(self.param.spectra_on, label="Spectra id column (empty: same)"))

    def controls(self):
        return pn.Column(
            pn.widgets.RadioButtonGroup.from_param(self.param.source),
            self._source_widgets,
            pn.widgets.Select.from_param(self.param.preset, label="Paper preset (cuts)"),
            pn.widgets.Select.from_param(self.param.label_set, label="Label set"),
            pn.widgets.MultiChoice.from_param(self.param.labels, label="Labels"),
            pn.widgets.Checkbox.from_param(self.param.photometry, label="Require photometry + A_V"),
            pn.widgets.IntInput.from_param(self.param.max_stars, label="At most (0 = all)"),
            pn.widgets.TextAreaInput.from_param(
                self.param.cuts_text, label="Extra cuts (JSON, one per line)", height=90,
                placeholder='{"column": "teff", "op": "<", "value": 5500}'),
            self._build,
            pn.widgets.TextInput.from_param(self.param.set_name, label="Name to save as"),
            self._save,
            width=340,
        )

    def __panel__(self):
        return pn.Row(self.controls(), pn.Column(self._message, self._result, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
