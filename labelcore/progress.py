"""Progress reports: the optional ``progress(fraction, message)`` callback of the method
contract (ARCHITECTURE.md section 3) and of every long job."""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(fraction in [0, 1], message)``
ProgressCallback = Callable[[float, str], None]


def report(progress: ProgressCallback | None, frac: float, msg: str) -> None:
    """Call ``progress`` (if given) with ``frac`` clipped to [0, 1]."""
    if progress is not None:
        progress(float(min(max(frac, 0.0), 1.0)), msg)
