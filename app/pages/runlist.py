"""What the pages that read finished runs share: the run store and a "Refresh list" button."""

from __future__ import annotations

import panel as pn

from labelcore.runs import RunStore


class RunListViewer(pn.viewable.Viewer):
    """Base of the Learning-curves and Compare pages: ``self.store`` (default
    ``<data dir>/runs``), ``self._refresh_btn``, and :meth:`refresh` called once at start."""

    def __init__(self, store: RunStore | None = None, **params):
        super().__init__(**params)
        self.store = store or RunStore()
        self._refresh_btn = pn.widgets.Button(label="Refresh list", color="light")
        self._refresh_btn.on_click(lambda e: self.refresh())
        self.refresh()

    def refresh(self):
        raise NotImplementedError
