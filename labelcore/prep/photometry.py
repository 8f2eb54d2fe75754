"""Absolute magnitudes from parallaxes and the CNN's photometric input (Guiglion et al.
2020, section 3.2). The implementation lives in :mod:`labelcore._photometry`, below the
data layer, so that the synthetic survey uses the same code."""

from labelcore._photometry import absolute_magnitude, absolute_magnitudes, photometry_matrix

__all__ = ["absolute_magnitude", "absolute_magnitudes", "photometry_matrix"]
