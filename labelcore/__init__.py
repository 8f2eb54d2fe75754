"""labelcore: data-driven stellar labels from survey spectra.

Layers (data flows one way): ``labelcore.data`` (containers, I/O, manifests, synthetic
survey) -> ``labelcore.prep`` (resampling, continuum, RV, photometry, cross-match, training
sets) -> ``labelcore.methods`` (CNN, SLAM, Lux). The core never imports the UI.
"""

__version__ = "0.1.0"
