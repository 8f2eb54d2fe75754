"""Hyper-parameter specs: what each constructor argument of a method may be (type, bounds,
choices, help text), declared by the method and checked before anything is queued.

A run configuration (:mod:`labelcore.runs.config`), the CLI and the app's Train form all
call :func:`validate_params`, so a bad value is refused with a message naming the
parameter, not found minutes later in a training process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from labelcore.errors import ValidationError


@dataclass(frozen=True)
class Param:
    """The spec of one hyper-parameter.

    Parameters
    ----------
    kind : {"int", "float", "bool", "str", "grid"}
        ``grid`` is a non-empty tuple of numbers (e.g. SLAM's C grid).
    doc : str
        One line of help (what it is, the paper's value).
    low, high : float, optional
        Inclusive bounds of the value (of every item for a grid).
    choices : tuple
        Allowed words (``kind="str"``), or words allowed *instead of* a number
        (``n_latent="cv"``).
    allow_none : bool
        None is a valid value (e.g. ``n_jobs=None``: all cores).
    integer_items : bool
        Grid items must be integers (Lux's latent-size multipliers).
    max_items : int
        Longest grid accepted.
    """

    kind: str
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    allow_none: bool = False
    integer_items: bool = False
    max_items: int = 64

    def check(self, name: str, value, owner: str = "method"):
        """``value`` converted to the declared type; raises :class:`ValidationError` naming
        ``owner`` and ``name`` when it is not allowed."""
        where = f"{owner} hyper-parameter {name!r}"
        if value is None:
            if self.allow_none:
                return None
            raise ValidationError(f"{where} may not be null/None")
        if isinstance(value, str) and self.choices and value in self.choices:
            return value
        if self.kind == "str":
            raise ValidationError(f"{where} must be one of {list(self.choices)}; got {value!r}")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValidationError(f"{where} must be true or false; got {value!r}")
        if self.kind == "grid":
            if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
                raise ValidationError(f"{where} must be a list of numbers; got {value!r}")
            items = list(value)
            if not items:
                raise ValidationError(f"{where} must not be empty")
            if len(items) > self.max_items:
                raise ValidationError(f"{where} has {len(items)} values; at most {self.max_items}")
            return tuple(self._number(f"{where} item {i}", v, self.integer_items) for i, v in enumerate(items))
        if self.kind in ("int", "float"):
            v = self._number(where, value, self.kind == "int")
            return v
        raise ValidationError(f"{where}: unknown spec kind {self.kind!r}")  # a bug in a method's spec

    def _number(self, where, value, integer):
        words = f" or one of {list(self.choices)}" if self.choices else ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"{where} must be {'an integer' if integer else 'a number'}{words}; "
                                  f"got {value!r}")
        if not math.isfinite(value):
            raise ValidationError(f"{where} must be finite; got {value!r}")
        if integer:
            if float(value) != int(value):
                raise ValidationError(f"{where} must be an integer; got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if self.low is not None and value < self.low:
            raise ValidationError(f"{where} must be >= {self.low:g}; got {value!r}")
        if self.high is not None and value > self.high:
            raise ValidationError(f"{where} must be <= {self.high:g}; got {value!r}")
        return value


def validate_params(cls, params: dict) -> dict:
    """``params`` checked against ``cls.param_spec`` (every key a known parameter, every
    value allowed), converted to the declared types. Raises :class:`ValidationError`."""
    if not isinstance(params, dict):
        raise ValidationError(f"{cls.name} hyper-parameters must be a mapping; got {type(params).__name__}")
    spec = cls.param_spec
    unknown = [k for k in params if k not in spec]
    if unknown:
        raise ValidationError(f"{cls.name} has no hyper-parameter(s) {unknown}; valid: {sorted(spec)}")
    return {k: spec[k].check(k, v, cls.name) for k, v in params.items()}
