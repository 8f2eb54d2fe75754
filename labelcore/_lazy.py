"""The one lazy loader: objects named ``"package.module:attribute"`` imported on first use.

Used for what must not load with labelcore itself -- the heavy optional backends
(Keras/TensorFlow behind the CNN) and the plug-ins named in registries (methods, data
sources) -- so that ``import labelcore`` stays light and one method never loads another's
framework."""

from __future__ import annotations

import importlib
from functools import cache


@cache
def load(target: str):
    """The object ``target`` (``"module:attr"``, or ``"module"`` for the module itself)."""
    mod, _, attr = target.partition(":")
    obj = importlib.import_module(mod)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj
