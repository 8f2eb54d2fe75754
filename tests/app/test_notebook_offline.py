"""The notebook widgets need no internet: after ``app.notebook.setup()`` the notebook's
resource loader fetches nothing (its script and stylesheet URL lists are empty: Bokeh,
Panel and Tabulator are inline in the output), and no page module emits a CDN loader of
its own. What remains in the libraries' code are fallbacks for ``requirejs`` set-ups and
on-demand extras (MathJax), which these pages do not use."""

import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.mark.slow
def test_notebook_widgets_load_nothing_from_the_internet(small_survey):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from app.notebook import setup\nsetup()"),
        nbformat.v4.new_code_cell(f"from app.pages.catalogue import CataloguePage\n"
                                  f"page = CataloguePage({str(small_survey / 'catalogue.parquet')!r})\npage"),
    ]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    html = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            for v in out.get("data", {}).values():
                html.append(v if isinstance(v, str) else str(v))
    text = "\n".join(html)
    assert len(text) > 1_000_000                      # Bokeh, Panel and Tabulator themselves are in it
    lists = re.findall(r"const (js_urls|js_modules|css_urls) = \[(.*?)\];", text, flags=re.S)
    assert lists, "no resource loader in the outputs"
    fetched = [(kind, urls) for kind, urls in lists if "http" in urls]
    assert not fetched, fetched
    # link/script tags pointing outside
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", text)
