"""The cut grammar of survey manifests and training-set presets: what a cut may say
(checked when a manifest is read) and how it reads to a person. Evaluating cuts on a table
is :mod:`labelcore.prep.cuts`.

A cut is a mapping ``{column, op, value}`` (OP one of ``< <= > >= == != between in
not_in``), ``{notnull: [...]}`` or ``{expr: "..."}``; see :mod:`labelcore.prep.cuts`.
"""

from __future__ import annotations

import re

from labelcore.errors import ManifestError

_OPS = {"<", "<=", ">", ">=", "==", "!=", "between", "in", "not_in"}
_EXPR_OK = re.compile(r"^[\w\s\.\+\-\*/\(\)<>=!&|]+$")


def validate_cuts(cuts) -> None:
    if not isinstance(cuts, list):
        raise ManifestError("cuts must be a list")
    for i, c in enumerate(cuts):
        if not isinstance(c, dict):
            raise ManifestError(f"cut {i} is not a mapping: {c!r}")
        if "notnull" in c:
            if not isinstance(c["notnull"], list) or not c["notnull"]:
                raise ManifestError(f"cut {i}: notnull needs a non-empty list")
        elif "expr" in c:
            if not _EXPR_OK.match(str(c["expr"])):
                raise ManifestError(f"cut {i}: expression {c['expr']!r} has forbidden characters")
        elif "column" in c:
            if c.get("op") not in _OPS:
                raise ManifestError(f"cut {i}: op {c.get('op')!r} not in {sorted(_OPS)}")
            if "value" not in c:
                raise ManifestError(f"cut {i}: no value")
            v, op = c["value"], c["op"]
            if op == "between" and (not isinstance(v, list) or len(v) != 2):
                raise ManifestError(f"cut {i}: between needs [lo, hi]; got {v!r}")
            nums = v if op == "between" else [v] if op in ("<", "<=", ">", ">=") else []
            for x in nums:
                if isinstance(x, bool) or not isinstance(x, int | float):
                    raise ManifestError(f"cut {i} ({c['column']} {op} ...): the value {x!r} must be a number")
            if op in ("in", "not_in") and not isinstance(v, list):
                raise ManifestError(f"cut {i}: {op} needs a list of values; got {v!r}")
        else:
            raise ManifestError(f"cut {i}: needs 'column', 'notnull' or 'expr': {c!r}")


def describe_cut(c: dict) -> str:
    if "notnull" in c:
        return "present: " + ", ".join(c["notnull"])
    if "expr" in c:
        return c["expr"]
    col = c["column"]
    col = ", ".join(col) if isinstance(col, list) else col
    v = c["value"]
    if c["op"] == "between":
        return f"{v[0]} < {col} < {v[1]}"
    return f"{col} {c['op']} {v}"
