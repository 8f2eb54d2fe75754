"""What the pages that read runs share: the app state (store, queue, the runs version they
watch) and a "Refresh list" button."""

from __future__ import annotations

import panel as pn
import param

from app.components import escape
from app.state import AppState


class RunListViewer(pn.viewable.Viewer):
    """Base of the pages that list runs (Learning curves, Compare): ``self.state`` (an
    :class:`~app.state.AppState`; a plain :class:`~labelcore.runs.RunStore` is wrapped),
    ``self.store``, ``self._refresh_btn``; :meth:`refresh` runs at start and whenever the
    state's runs change."""

    def __init__(self, state=None, **params):
        super().__init__(**params)
        self.state = as_state(state)
        self.store = self.state.store
        self._refresh_btn = pn.widgets.Button(label="Refresh list", color="light")
        self._refresh_btn.on_click(lambda e: (self.state.check_runs(), self.refresh()))
        self.state.param.watch(lambda e: self.refresh(), "runs_version")
        self.refresh()

    def refresh(self):
        raise NotImplementedError


def as_state(state) -> AppState:
    """``state`` if it is an :class:`AppState`; a state around it if it is a run store;
    a default state if None."""
    if isinstance(state, AppState):
        return state
    return AppState(store=state) if state is not None else AppState()


class SourceTab(pn.viewable.Viewer):
    """Base of the tabs that show one page per source (the default data, or a run): a
    ``source`` selector, each source's page built on first view and kept. Subclasses set
    :attr:`source_label` and implement :meth:`refresh` (the choices) and :meth:`make_page`
    (a page for a source; raise ``ValueError`` to show the reason instead)."""

    source = param.Selector(default=None, objects=[], check_on_set=False)
    source_label = "Source"

    def __init__(self, **params):
        super().__init__(**params)
        self._pages = {}
        self._holder = pn.Column(sizing_mode="stretch_width")

    def refresh(self):
        raise NotImplementedError

    def make_page(self, source):
        raise NotImplementedError

    def page_for(self, source):
        """The page of ``source`` (built once), or an alert saying why there is none."""
        if source not in self._pages:
            try:
                self._pages[source] = self.make_page(source)
            except ValueError as exc:
                return pn.pane.Alert(escape(exc), alert_type="warning")
        return self._pages[source]

    def start(self, source):
        """Show ``source`` at construction: one build (setting a new source builds through
        the watcher; the same source is built here)."""
        if self.source == source:
            self._show()
        else:
            self.source = source

    @param.depends("source", watch=True)
    def _show(self):
        """Show the page of the current source; in a served session the holder shows a
        loading spinner first (the page is built on the next tick, after the spinner has
        reached the browser)."""
        source = self.source

        def build():
            try:
                self._holder[:] = [self.page_for(source)]
            finally:
                self._holder.loading = False

        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None and self._holder[:]:
            self._holder.loading = True
            doc.add_next_tick_callback(build)
        else:
            build()

    def __panel__(self):
        return pn.Column(pn.widgets.Select.from_param(self.param.source, label=self.source_label, max_width=560),
                         self._holder, sizing_mode="stretch_width")
