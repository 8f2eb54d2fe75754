"""One module per page; each page is a ``pn.viewable.Viewer`` usable in a notebook."""
