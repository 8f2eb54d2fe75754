"""Train page: choose a method, its hyper-parameters (the papers' defaults pre-filled) and
the data (synthetic survey or a saved training set), launch the run into the queue, watch
its progress, read its log, cancel it.

UI only: a launch is :meth:`labelcore.runs.JobQueue.submit` of a run config, the table is
:meth:`labelcore.runs.RunStore.table`; the training runs in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import panel as pn
import param

from app.components import MessageArea, browser_timezone, duration, local_time, parse_readable, readable, safe_table
from app.pages.runlist import as_state
from app.pages.training_set import list_training_sets
from labelcore.errors import LabelcoreError
from labelcore.methods import capabilities as caps
from labelcore.methods import method_class, method_names
from labelcore.runs import build_config
from labelcore.settings import max_queued_per_session, resolve_user_path

SETUP_LABELS = {
    "rave": ["teff", "logg", "m_h", "fe_h", "alpha_m", "mg_fe", "si_fe", "al_fe", "ni_fe"],
    "lamost": ["teff", "logg", "m_h", "alpha_m", "c_fe", "n_fe"],
    "apogee": ["teff", "logg", "fe_h", "c_fe", "n_fe", "o_fe", "mg_fe", "al_fe", "si_fe", "ca_fe",
               "mn_fe", "ni_fe"],
}


def parse_value(text: str, default, allow_none: bool = False):
    """A hyper-parameter typed into a text box (:func:`~app.components.parse_readable`:
    numbers, ``10^0.5``, lists, true/false, a bare word such as "cv"; empty = none where
    the parameter allows none); lists become tuples where the default is a tuple."""
    if text.strip() == "" and not allow_none:
        raise ValueError("empty value")
    v = parse_readable(text)
    if isinstance(default, tuple) and isinstance(v, list):
        v = tuple(v)
    return v


def _bounds_text(spec) -> str:
    if spec is None:
        return ""
    parts = []
    if spec.low is not None and spec.high is not None:
        parts.append(f"from {readable(spec.low)} to {readable(spec.high)}")
    elif spec.low is not None:
        parts.append(f"at least {readable(spec.low)}")
    elif spec.high is not None:
        parts.append(f"at most {readable(spec.high)}")
    if spec.choices:
        parts.append("or " + " / ".join(map(str, spec.choices)))
    if spec.allow_none:
        parts.append("empty = none")
    return f" ({'; '.join(parts)})" if parts else ""


def param_widget(name: str, value, spec):
    """The typed widget of one hyper-parameter, from the method's spec: a checkbox, a
    choice, a whole-number box with bounds, or a text box for real numbers and grids
    (written readably: ``10^0.5``); the spec's help and bounds as its description."""
    doc = (spec.doc if spec is not None else "") + _bounds_text(spec)
    kind = spec.kind if spec is not None else None
    if kind == "bool" or isinstance(value, bool):
        return pn.widgets.Checkbox(label=name, value=bool(value))
    if kind == "str" and spec.choices:
        return pn.widgets.Select(label=name, options=list(spec.choices), value=value, description=doc or None)
    if kind == "int" and not spec.choices and not spec.allow_none and isinstance(value, int):
        return pn.widgets.IntInput(label=name, value=value, start=None if spec.low is None else int(spec.low),
                                   end=None if spec.high is None else int(spec.high), description=doc or None)
    return pn.widgets.TextInput(label=name, value=readable(value), description=doc or None,
                                placeholder="none" if spec is not None and spec.allow_none else "")


class TrainPage(pn.viewable.Viewer):
    """Launch, watch and cancel trainings.

    Parameters
    ----------
    state : the app state (store, queue, survey, training-set folder); a run store is
        wrapped in one.
    """

    method = param.Selector(default="SLAM", objects=method_names())
    data_kind = param.Selector(default="synthetic", objects=["synthetic", "training set"])
    setup = param.Selector(default="rave", objects=list(SETUP_LABELS))
    labels = param.ListSelector(default=["teff", "logg", "m_h", "alpha_m"], objects=SETUP_LABELS["rave"])
    n_train = param.Integer(default=800, bounds=(20, 200_000))
    n_test = param.Integer(default=200, bounds=(5, 200_000))
    seed = param.Integer(default=0, bounds=(0, None))
    training_set = param.String(default="", doc="folder saved by build-training-set")
    test_fraction = param.Number(default=0.2, bounds=(0.01, 0.9))
    photometry = param.Boolean(default=False, doc="CNN: absolute magnitudes + A_V as a second input")
    run_name = param.String(default="", doc="name shown in the run lists (default: method on data)")

    def __init__(self, state=None, **params):
        super().__init__(**params)
        self.state = as_state(state)
        self.store = self.state.store
        self.queue = self.state.queue
        self._submitted: list[str] = []
        self.training_sets_root = self.state.training_sets_root
        self.survey_dir = None if self.state.survey_dir is None else Path(self.state.survey_dir)
        self._predict = pn.widgets.Button(label="Label the survey with the selected run", color="primary",
                                          width=300, sizing_mode="fixed")
        self._predict.on_click(lambda e: self.predict_selected())
        self._saved_sets = pn.widgets.Select(label="Saved training sets", options=[])
        self._saved_sets.param.watch(lambda e: setattr(self, "training_set", e.new or self.training_set), "value")
        self._param_widgets: dict[str, pn.widgets.Widget] = {}
        self._param_box = pn.Column(sizing_mode="stretch_width")
        self._message = MessageArea()
        self._launch = pn.widgets.Button(label="Launch", color="primary")
        self._launch.on_click(lambda e: self.launch())
        self._quick = pn.widgets.Button(label="Quick settings", color="light")
        self._quick.on_click(lambda e: self.quick_settings())
        self._cancel = pn.widgets.Button(label="Cancel selected", color="warning", width=180, sizing_mode="fixed")
        self._cancel.on_click(lambda e: self.cancel_selected())
        self._delete = pn.widgets.Button(label="Delete selected", color="danger", width=160, sizing_mode="fixed")
        self._delete.on_click(lambda e: self.delete_selected(confirmed=False))
        self._confirm_delete = pn.widgets.Button(label="Yes, delete", color="danger", width=140,
                                                 sizing_mode="fixed", visible=False)
        self._confirm_delete.on_click(lambda e: self.delete_selected(confirmed=True))
        self._table = safe_table(self.run_table(), selectable="checkbox",
                                 show_index=False, height=300, sizing_mode="stretch_width",
                                 formatters={"progress": {"type": "progress", "max": 1.0}},
                                 hidden_columns=["id"])
        self._log = pn.pane.Str("", styles={"font-size": "11px"}, sizing_mode="stretch_width", max_height=260)
        self._table.param.watch(lambda e: self._show_log(), "selection")
        self._build_param_widgets()
        self._callback = None

    # ------------------------------------------------------------------ config
    @param.depends("method", watch=True)
    def _build_param_widgets(self):
        cls = method_class(self.method)
        params = cls().get_params()
        spec = getattr(cls, "param_spec", {}) or {}
        self._param_widgets = {k: param_widget(k, v, spec.get(k)) for k, v in params.items()}
        quick = ", ".join(f"{k}={readable(v)}" for k, v in cls.quick_params.items()) or "the defaults"
        self._param_box[:] = [pn.pane.Markdown(f"**{self.method} hyper-parameters** (the paper's defaults; "
                                               f"*Quick settings* sets {quick}; hover ? for help)"),
                              pn.GridBox(*self._param_widgets.values(), ncols=2)]
        # a method that takes photometry uses it by default (the CNN: Guiglion 2020 section 3.2)
        self.photometry = method_class(self.method).supports(caps.PHOTOMETRY)

    def quick_settings(self):
        """Fill in the method's quick settings (``quick_params``)."""
        for k, v in method_class(self.method).quick_params.items():
            w = self._param_widgets[k]
            w.value = readable(v) if isinstance(w, pn.widgets.TextInput) else v

    @param.depends("setup", watch=True)
    def _setup_labels(self):
        objs = SETUP_LABELS[self.setup]
        self.param.labels.objects = objs
        self.labels = [n for n in self.labels if n in objs] or objs[:4]

    def hyperparameters(self) -> dict:
        """The hyper-parameters in the widgets, typed as the method's defaults."""
        cls = method_class(self.method)
        defaults = cls().get_params()
        spec = getattr(cls, "param_spec", {}) or {}
        out = {}
        for k, w in self._param_widgets.items():
            v = w.value
            if isinstance(w, pn.widgets.TextInput):
                try:
                    v = parse_value(v, defaults[k], allow_none=bool(spec.get(k) and spec[k].allow_none))
                except ValueError as exc:
                    raise LabelcoreError(f"hyper-parameter {k}: {exc}") from exc
            if v is None and isinstance(w, pn.widgets.IntInput):
                raise LabelcoreError(f"hyper-parameter {k}: empty value")
            if k in spec:
                v = spec[k].check(k, v, owner=cls.name)
            if v != defaults[k] and not (isinstance(v, float) and isinstance(defaults[k], float)
                                         and abs(v - defaults[k]) <= 1e-12 * abs(defaults[k])):
                out[k] = v
        return out

    def config(self) -> dict:
        """The run configuration of the form (validated in full: a bad value is refused
        here, naming it, before anything is queued)."""
        phot = bool(self.photometry) and method_class(self.method).supports(caps.PHOTOMETRY)
        if self.data_kind == "synthetic":
            if not self.labels:
                raise LabelcoreError("choose at least one label")
            cfg = build_config(self.method, self.hyperparameters(), setup=self.setup, n_train=int(self.n_train),
                               n_test=int(self.n_test), seed=int(self.seed), labels=list(self.labels),
                               photometry=phot, name=self.run_name)
        else:
            if not self.training_set.strip():
                raise LabelcoreError("choose a saved training set (or type its folder)")
            folder = resolve_user_path(self.training_set, roots=self.state.data_roots, what="training-set folder")
            cfg = build_config(self.method, self.hyperparameters(), training_set=folder,
                               test_fraction=float(self.test_fraction), seed=int(self.seed), photometry=phot,
                               name=self.run_name)
        return cfg.to_dict()

    # ------------------------------------------------------------------ actions
    def launch(self):
        """Queue a run of the current settings; returns it (None if the settings are wrong,
        or this session already has :func:`~labelcore.settings.max_queued_per_session` runs
        waiting, with the reason shown)."""
        return self._submit(self.config, "Queued run **{name}** ({id}).", reset_name=True)

    def _waiting(self) -> list[str]:
        """Runs this session queued that have not started yet."""
        out = []
        for rid in self._submitted:
            try:
                if self.store.get(rid).state == "queued":
                    out.append(rid)
            except LabelcoreError:
                continue
        return out

    def _submit(self, make_config, done_text, reset_name=False):
        """Queue the run ``make_config()`` describes; say so (or why not) on the page."""
        waiting = self._waiting()
        if len(waiting) >= max_queued_per_session():
            self._message.say("Not launched: this session already has {n} runs waiting to start; wait for them "
                              "or cancel some.", "warning", n=len(waiting))
            return None
        try:
            run = self.queue.submit(make_config())
        except LabelcoreError as exc:
            self._message.say("Not launched: {why}", "danger", why=exc)
            return None
        self._submitted.append(run.id)
        self._message.say(done_text, name=run.config["name"], id=run.id)
        if reset_name:
            self.run_name = ""
        self.state.run_submitted(run)
        self.refresh()
        return run

    def run_table(self):
        """The store's run table as shown: newest first, local start times, readable
        durations (elapsed so far for a running run)."""
        df = self.store.table().iloc[::-1].reset_index(drop=True)
        tz = browser_timezone()
        df["created"] = [local_time(t, tz) for t in df["created"]]
        df["seconds"] = [duration(v) for v in df["seconds"]]
        return df.rename(columns={"created": "started (local)", "seconds": "time"})

    def delete_selected(self, confirmed: bool = False) -> int:
        """Delete the selected runs and their files (asks first; running runs are refused:
        cancel them first). Returns how many were deleted."""
        ids = self.selected_ids()
        if not ids:
            self._message.say("Select runs in the table to delete them.", "warning")
            return 0
        if not confirmed:
            self._confirm_delete.visible = True
            self._message.say("Delete {n} run(s) and all their files (models, curves, catalogues)? This cannot "
                              "be undone.", "warning", n=len(ids))
            return 0
        self._confirm_delete.visible = False
        done, refused = 0, []
        for rid in ids:
            try:
                self.store.delete(rid)
                done += 1
            except LabelcoreError as exc:
                refused.append(str(exc))
        if refused:
            self._message.say("Deleted {n} run(s); not deleted: {why}", "warning", n=done, why="; ".join(refused))
        else:
            self._message.say("Deleted {n} run(s).", "success", n=done)
        self._table.selection = []
        self.state.check_runs()
        self.refresh()
        return done

    def selected_ids(self) -> list[str]:
        df = self._table.value
        return [df.iloc[i]["id"] for i in self._table.selection if i < len(df)]

    def cancel_selected(self):
        ids = self.selected_ids()
        if not ids:
            self._message.say("Select runs in the table to cancel them.", "warning")
            return
        for rid in ids:
            self.store.get(rid).cancel()
        self._message.say("Cancel requested for {n} run(s).", "warning", n=len(ids))
        self.refresh()

    def _list_saved_sets(self):
        if self.training_sets_root is None:
            return
        opts = {p.name: str(p) for p in list_training_sets(self.training_sets_root)}
        if opts != self._saved_sets.options:
            self._saved_sets.options = opts

    def prediction_config(self, run) -> dict:
        """The config of a prediction run: ``run``'s model applied to every spectrum of the
        survey file it was trained from (same set-up), joined with the survey catalogue (or,
        for a training set built from a spectra file, every spectrum of that file)."""
        if run.task != "train" or run.state != "done":
            raise LabelcoreError(f"run {run.id} is not a finished training run")
        data = run.config["data"]
        if data["kind"] == "training_set":
            info = json.loads((Path(data["path"]) / "training_set.json").read_text())
            if "spectra" in info:        # built from a spectra file and a label table
                if not Path(info["spectra"]).is_file():
                    raise LabelcoreError(f"the spectra file {info['spectra']} of this run's training set is gone")
                return {"task": "predict", "model_run": str(run.path), "spectra": info["spectra"]}
            survey, setup = Path(info["survey"]), info["setup"]
        else:
            if self.survey_dir is None:
                raise LabelcoreError("no survey folder was given to this page")
            survey, setup = self.survey_dir, data["setup"]
        spectra = survey / f"spectra_{setup}.h5"
        if not spectra.exists():
            raise LabelcoreError(f"the survey {survey} has no {setup} spectra to label")
        cfg = {"task": "predict", "model_run": str(run.path), "spectra": str(spectra)}
        if (survey / "catalogue.parquet").exists():
            cfg["join"] = str(survey / "catalogue.parquet")
        return cfg

    def predict_selected(self):
        """Queue a prediction run of the selected training run over its survey's spectra."""
        ids = self.selected_ids()
        if len(ids) != 1:
            self._message.say("Select one finished training run to label the survey with it.", "warning")
            return None
        return self._submit(lambda: self.prediction_config(self.store.get(ids[0])),
                            "Queued **{name}**: its catalogue appears on the Catalogue tab when done.")

    def refresh(self):
        """Advance the queue and update the table (the periodic callback)."""
        self.queue.poll()
        self._list_saved_sets()
        df = self.run_table()
        if not df.equals(self._table.value):   # redraw only what changed (no flicker, selection kept)
            sel = self.selected_ids()
            self._table.value = df
            self._table.selection = [i for i, r in enumerate(df["id"]) if r in sel]
        self._show_log()

    def _show_log(self):
        ids = self.selected_ids()
        if not ids:
            self._log.object = "(select a run to see its log)"
            return
        text = self.store.get(ids[-1]).log_text()
        self._log.object = "\n".join(text.splitlines()[-14:])

    def start(self, period_ms: int = 1000):
        """Follow the store while the page is shown (served or in a notebook): the state
        checks it every ``period_ms`` and the table is redrawn when a run changes."""
        if self._callback is None:
            self._callback = self.state.param.watch(lambda e: self.refresh(), "runs_version")
            self.state.start(period_ms)
        return self

    # ------------------------------------------------------------------ layout
    @param.depends("data_kind", "method")
    def _data_widgets(self):
        if self.data_kind == "synthetic":
            ws = [pn.widgets.Select.from_param(self.param.setup, label="Set-up"),
                  pn.widgets.MultiChoice.from_param(self.param.labels, label="Labels"),
                  pn.Row(pn.widgets.IntInput.from_param(self.param.n_train, label="Training stars"),
                         pn.widgets.IntInput.from_param(self.param.n_test, label="Held-out stars"))]
        else:
            self._list_saved_sets()
            ws = [self._saved_sets,
                  pn.widgets.TextInput.from_param(self.param.training_set, label="Training-set folder",
                                                  placeholder="labelcore build-training-set ... --out FOLDER"),
                  pn.widgets.FloatInput.from_param(self.param.test_fraction, label="Held-out fraction")]
        ws.append(pn.widgets.IntInput.from_param(self.param.seed, label="Seed"))
        if method_class(self.method).supports(caps.PHOTOMETRY):
            ws.append(pn.widgets.Checkbox.from_param(self.param.photometry,
                                                     label="Photometry + A_V as input (paper default)"))
        return pn.Column(*ws, sizing_mode="stretch_width")

    def controls(self):
        return pn.Column(
            pn.widgets.RadioButtonGroup.from_param(self.param.method, color="primary"),
            pn.widgets.RadioButtonGroup.from_param(self.param.data_kind),
            self._data_widgets,
            pn.widgets.TextInput.from_param(self.param.run_name, label="Run name (optional)"),
            pn.Row(self._launch, self._quick),
            width=340,
        )

    def __panel__(self):
        self.start()
        return pn.Row(self.controls(),
                      pn.Column(self._message, pn.pane.Markdown("### Runs"), self._table,
                                pn.Row(self._cancel, self._predict, self._delete, self._confirm_delete),
                                pn.pane.Markdown("**Log** of the selected run"), self._log, pn.layout.Divider(),
                                self._param_box, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")
