"""Containers, I/O, survey manifests and loaders, synthetic survey."""

from labelcore.data.containers import LABEL_UNITS, PHOT_BANDS, Catalogue, Labels, Spectra

__all__ = ["LABEL_UNITS", "PHOT_BANDS", "Catalogue", "Labels", "Spectra"]
