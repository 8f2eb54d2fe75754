"""The methods behind one contract (ARCHITECTURE.md section 3) and their registry.

The registry maps a method's name to its class, imported on first use (so using one method
never loads another's framework, e.g. Keras/TensorFlow for the CNN). Adding a method is one
module (or small package) under ``labelcore/methods/`` and one line in :data:`REGISTRY`;
see ``docs/architecture.md``.

>>> from labelcore.methods import method_class, method_names    # doctest: +SKIP
>>> method_names()                                               # doctest: +SKIP
['CNN', 'SLAM', 'Lux', 'Cannon']
>>> model = load_model("runs/.../model")                         # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from labelcore._lazy import load
from labelcore.errors import ValidationError
from labelcore.methods import capabilities
from labelcore.methods.base import LabelMethod, NotFittedError, NotSupportedError, Prediction
from labelcore.methods.params import Param, validate_params

#: name -> "module:Class", imported on first use
REGISTRY: dict[str, str] = {
    "CNN": "labelcore.methods.cnn:CNN",
    "SLAM": "labelcore.methods.slam:SLAM",
    "Lux": "labelcore.methods.lux:Lux",
    "Cannon": "labelcore.methods.cannon:Cannon",
}

__all__ = ["REGISTRY", "LabelMethod", "NotFittedError", "NotSupportedError", "Param", "Prediction",
           "capabilities", "load_model", "method_class", "method_names", "validate_params",
           *REGISTRY]


def method_names() -> list[str]:
    """The registered methods' names, in registry order."""
    return list(REGISTRY)


def method_class(name: str) -> type[LabelMethod]:
    """The class registered as ``name`` (raises :class:`ValidationError` for an unknown name)."""
    if name not in REGISTRY:
        raise ValidationError(f"unknown method {name!r}; expected one of {method_names()}")
    return load(REGISTRY[name])


def load_model(path) -> LabelMethod:
    """A saved model of any registered method; the kind is read from the folder's
    ``params.json`` (written by :meth:`LabelMethod.save`). A folder that holds the model as
    ``model/`` (a run folder) works too."""
    path = Path(path)
    if not (path / "params.json").exists() and (path / "model" / "params.json").exists():
        path = path / "model"
    try:
        doc = json.loads((path / "params.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path}: not a saved labelcore model ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("class") not in REGISTRY:
        raise ValidationError(f"{path}: not a saved labelcore model (class {doc.get('class')!r} "
                              f"is not one of {method_names()})" if isinstance(doc, dict) else
                              f"{path}: not a saved labelcore model")
    return method_class(doc["class"]).load(path)


def __getattr__(name):
    if name in REGISTRY:
        return method_class(name)
    raise AttributeError(name)
