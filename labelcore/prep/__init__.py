"""Preprocessing: resampling, continuum normalisation, rest frame, bad pixels,
standardisation, absolute magnitudes, cross-match, quality cuts and training sets."""
