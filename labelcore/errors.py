"""Exceptions raised by labelcore. Every message says what is wrong and where."""


class LabelcoreError(Exception):
    """Base class of all labelcore errors."""


class ValidationError(LabelcoreError, ValueError):
    """Input arrays or tables that break the data contract (shape, NaN, units, ...)."""


class FormatError(LabelcoreError, ValueError):
    """A file that is not in the format its loader expects (corrupt, wrong HDU, columns)."""


class ManifestError(LabelcoreError, ValueError):
    """A survey manifest that is malformed or refers to unknown columns/presets."""


class EmptySelectionError(LabelcoreError, ValueError):
    """A cut or cross-match that leaves no rows."""


class MissingInputError(LabelcoreError, FileNotFoundError):
    """An input file or folder that does not exist (also a :class:`FileNotFoundError`)."""
