"""What the pages share: plot defaults, colours, label titles, run choices and a message
area that escapes what it shows. One place each; pages import from here."""

from __future__ import annotations

import html

import panel as pn

from labelcore.constants import label_title  # noqa: F401  (the pages' label titles)

#: toolbar of every plot (wheel zoom present but not active: the page scrolls)
TOOLS = ["pan", "wheel_zoom", "box_zoom", "reset", "save"]
#: one colour per run/series
COLORS = ["#2f5f8a", "#d1495b", "#66a182", "#edae49", "#6a4c93", "#00798c"]
KEPT, DROPPED, STOPPED = "#2f5f8a", "#d1495b", "#999999"


#: characters that start HTML or Markdown markup (links, emphasis, code), as entities
_MARKUP = {c: f"&#{ord(c)};" for c in "&<>*`[]\\|~"}


def escape(text) -> str:
    """``text`` safe to put into Markdown/HTML: every character that could start markup
    (tags, entities, links, emphasis, code) becomes an entity -- run names, messages and
    errors come from users."""
    return "".join(_MARKUP.get(c, c) for c in str(text))


def run_label(run) -> str:
    """How a run is named in selectors: "name — id" (plain text; selectors escape it)."""
    return f"{run.config.get('name')} — {run.id}"


def run_choices(store, task: str = "train", where=None) -> dict[str, str]:
    """{"name — id": id} of the store's finished runs of ``task`` (and ``where(run)``),
    newest first: what the pages' run selectors offer."""
    return {run_label(r): r.id for r in reversed(store.finished(task)) if where is None or where(r)}


class MessageArea(pn.viewable.Viewer):
    """An alert line whose text is always escaped (``say(text, kind)``; ``**bold**`` in
    the template is kept, user values are not interpreted)."""

    def __init__(self, **params):
        super().__init__(**params)
        self._pane = pn.pane.Alert("", alert_type="light", visible=False, sizing_mode="stretch_width")

    def say(self, template: str, kind: str = "success", **values) -> None:
        """Show ``template.format(**escaped values)``."""
        self._pane.object = template.format(**{k: escape(v) for k, v in values.items()})
        self._pane.alert_type = kind
        self._pane.visible = True

    @property
    def markup(self) -> str:
        """What is sent to the browser (escaped)."""
        return self._pane.object

    @property
    def text(self) -> str:
        """What the reader sees (entities shown as their characters)."""
        return html.unescape(self._pane.object)

    @property
    def kind(self) -> str:
        return self._pane.alert_type

    def __panel__(self):
        return self._pane


def loading(text: str):
    """A spinner with a line of text (shown while something is built or loaded)."""
    return pn.Row(pn.indicators.LoadingSpinner(value=True, size=24, sizing_mode="fixed"),
                  pn.pane.Markdown(escape(text)), sizing_mode="stretch_width")


def safe_table(df, formatters=None, **kw):
    """A read-only Tabulator whose text cells and column titles can hold no markup: text
    columns use Tabulator's ``plaintext`` formatter (which escapes) and titles are escaped,
    because Panel renders cells and titles as HTML."""
    fmt = {c: {"type": "plaintext"} for c in df.columns if df[c].dtype == object or str(df[c].dtype) == "string"}
    fmt.update(formatters or {})
    titles = {c: html.escape(str(c)) for c in df.columns}
    return pn.widgets.Tabulator(df, disabled=True, formatters=fmt, titles=titles, **kw)


#: the header's colour
HEADER_COLOUR = "#2f5f8a"


def template(title: str, **kw):
    """The app's page template: Panel's Bootstrap template, served with the app (no web
    fonts, no CDN). It replaced the Fast list template, whose design requested Google
    fonts and whose components add 0.9 MB of script to every page's first load (at 10M
    stars, 0.2-0.3 s of the first paint in chromium)."""
    return pn.template.BootstrapTemplate(title=title, header_background=HEADER_COLOUR, **kw)


def readable(v) -> str:
    """A hyper-parameter value as a person would type it: ``10^0.5`` for a fractional
    power of ten (not 3.1622776601683795), 6 significant digits otherwise, lists in
    brackets, ``true``/``false``, words as they are; None as empty."""
    import math

    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple | list):
        return "[" + ", ".join(readable(x) for x in v) + "]"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v > 0 and math.isfinite(v):
            e = math.log10(v)
            q = round(e * 4) / 4
            if abs(e - q) < 1e-9 and abs(q - round(q)) > 1e-9:       # 10^0.5, 10^-1.25, ...
                return f"10^{q:g}"
        return f"{v:.6g}"
    return str(v)


def parse_readable(text: str):
    """The value of a field written as :func:`readable` writes (also plain JSON, ``1e-3``,
    ``10^x`` anywhere in a list, ``null``); raises ValueError naming what is wrong."""
    import json
    import re

    t = text.strip()
    if t == "":
        return None
    t2 = re.sub(r"10\s*\^\s*(-?\d+(?:\.\d+)?)", lambda m: repr(10 ** float(m.group(1))), t)
    t2 = {"true": "true", "false": "false", "none": "null"}.get(t2.lower(), t2)
    try:
        return json.loads(t2)
    except json.JSONDecodeError:
        if re.fullmatch(r"[A-Za-z_]+", t):
            return t
        raise ValueError(f"{text!r} is not a number, a list of numbers or a word") from None


def local_time(iso, tz: str | None = None) -> str:
    """An ISO 8601 (UTC) time as local time "2026-12-01 16:48:24", in the browser's time
    zone when the session knows it (else this machine's)."""
    import pandas as pd

    if not iso:
        return ""
    try:
        t = pd.Timestamp(iso)
    except (ValueError, TypeError):
        return str(iso)
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    import datetime as _dt

    zone = tz or _dt.datetime.now().astimezone().tzinfo      # the browser's zone, else this machine's
    try:
        t = t.tz_convert(zone)
    except (KeyError, ValueError, TypeError):                  # an unknown zone name: show UTC
        pass
    return t.strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds) -> str:
    """Seconds as "4.2 s", "3 min 05 s", "1 h 02 min"; empty when unknown."""
    import math

    if seconds is None or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return ""
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def browser_timezone() -> str | None:
    """The browser's time zone in a served session (Panel's browser info), else None."""
    info = getattr(pn.state, "browser_info", None)
    return getattr(info, "timezone", None) if info is not None else None


def plot_grid(elements, ncols: int = 1, linked_axes: bool = True):
    """HoloViews elements side by side, each in its own pane with its own toolbar, so that
    every plot's save tool works (Bokeh's merged toolbar of a grid saves nothing). With
    ``linked_axes`` Panel links the axes the plots share (spectrum and residuals zoom
    together)."""
    return pn.GridBox(*[pn.pane.HoloViews(e, sizing_mode="stretch_width", linked_axes=linked_axes)
                        for e in elements], ncols=ncols, sizing_mode="stretch_width")


def label_precision(label: str) -> int:
    """Decimals a label's values are shown with: Teff in whole K, dex to 3."""
    return 0 if label == "teff" or label.startswith("teff") else 3


def format_metrics(df):
    """A bias/scatter table (one row per label and S/N bin) with each row's numbers as text
    at its label's precision (Teff 0 decimals, dex 3, z-scores 2), for display."""
    out = df.copy()
    for c in ("bias", "scatter"):
        if c in out:
            out[c] = [("" if v != v else f"{v:.{label_precision(lab)}f}") for lab, v in zip(out["label"], out[c],
                                                                                         strict=True)]
    for c in ("z_formal", "z_total"):
        if c in out:
            out[c] = ["" if v != v else f"{v:.2f}" for v in out[c]]
    return out
