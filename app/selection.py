"""Selection geometry of the catalogue planes, vectorised over stars: boxes, lasso
polygons and the star nearest a tap. Pure numpy; the Catalogue page calls these with the
columns of the plane drawn on."""

from __future__ import annotations

import numpy as np

#: a lasso with more vertices is thinned to this many (the outline a hand draws)
MAX_VERTICES = 400


def in_box(x: np.ndarray, y: np.ndarray, bounds) -> np.ndarray:
    """Stars inside ``bounds = (x0, y0, x1, y1)`` (either corner order)."""
    x0, y0, x1, y1 = (float(b) for b in bounds)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    with np.errstate(invalid="ignore"):
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def in_polygon(x: np.ndarray, y: np.ndarray, vertices) -> np.ndarray:
    """Stars inside the polygon ``vertices`` [K, 2] (even-odd rule; closed implicitly).

    Only stars inside the polygon's bounding box are tested, one pass over the edges
    each, vectorised over stars."""
    v = np.asarray(vertices, float)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        return np.zeros(len(x), bool)
    v = v[np.isfinite(v).all(axis=1)]
    if len(v) > MAX_VERTICES:
        v = v[np.linspace(0, len(v) - 1, MAX_VERTICES).astype(int)]
    if len(v) < 3:
        return np.zeros(len(x), bool)
    out = in_box(x, y, (v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max()))
    idx = np.flatnonzero(out)
    px, py = x[idx], y[idx]                     # the columns' own dtype (float32): no copies to float64
    inside = np.zeros(len(idx), bool)
    v = v.astype(px.dtype if px.dtype.kind == "f" else float)
    xj, yj = v[-1]
    for xi, yi in v:
        if yi == yj:                            # a horizontal edge crosses no ray
            xj, yj = xi, yi
            continue
        lo, hi = (yi, yj) if yi < yj else (yj, yi)
        k = np.flatnonzero((py >= lo) & (py < hi))          # the stars whose ray meets this edge's span
        if k.size:
            xcross = (xj - xi) * ((py[k] - yi) / (yj - yi)) + xi
            inside[k[px[k] < xcross]] ^= True
        xj, yj = xi, yi
    out[idx] = inside
    return out


def nearest(x: np.ndarray, y: np.ndarray, x0: float, y0: float, scale=(1.0, 1.0), candidates=None,
            max_distance: float = 0.03):
    """Index of the star nearest ``(x0, y0)`` in units of ``scale`` (the plot's x and y
    spans), among ``candidates`` (a boolean mask); None when none is within
    ``max_distance`` (a fraction of the spans) -- a tap on empty sky picks nothing."""
    idx = np.flatnonzero(candidates) if candidates is not None else np.arange(len(x))
    if idx.size == 0:
        return None
    dx = (x[idx] - x0) / float(scale[0])
    dy = (y[idx] - y0) / float(scale[1])
    d2 = dx * dx + dy * dy
    if not np.isfinite(d2).any():
        return None
    k = int(np.nanargmin(d2))
    return int(idx[k]) if d2[k] <= max_distance ** 2 else None
