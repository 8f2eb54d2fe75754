"""What a method may offer beyond the contract, one name per idea. A method lists the
ones it implements in ``capabilities``; the app, runs and catalogue ask ``supports(...)``.

=====================  ==============================================================
name                   what the method then implements
=====================  ==============================================================
``model_spectra``      ``predict_spectra(labels) -> flux [N, P]`` (a generative model)
``derivative_spectra`` ``derivative_spectra() -> [M, P]``, d label / d flux
``cods``               ``cods(flux, labels) -> {"full": [P], label: [P]}`` (SLAM eq. 12-13)
``photometry``         accepts ``photometry=`` (absolute magnitudes + A_V) in fit/predict
``learning_curves``    ``learning_curves() -> {table: DataFrame}`` (names: ``curve_tables``)
``live_curves``        ``curves_so_far()`` during ``fit`` (called from its progress callback)
``fit_quality``        ``predict_details(...).quality`` holds per-star ``chi2`` (and more)
``resumable_fit``      ``fit(..., checkpoint=folder)`` keeps its training state there and
                       resumes from it (:mod:`labelcore.methods.checkpoints`)
=====================  ==============================================================
"""

MODEL_SPECTRA = "model_spectra"
DERIVATIVE_SPECTRA = "derivative_spectra"
CODS = "cods"
PHOTOMETRY = "photometry"
LEARNING_CURVES = "learning_curves"
LIVE_CURVES = "live_curves"
FIT_QUALITY = "fit_quality"
RESUMABLE_FIT = "resumable_fit"

ALL = frozenset({MODEL_SPECTRA, DERIVATIVE_SPECTRA, CODS, PHOTOMETRY, LEARNING_CURVES, LIVE_CURVES,
                 FIT_QUALITY, RESUMABLE_FIT})
