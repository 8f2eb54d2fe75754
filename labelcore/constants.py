"""Shared constants, one place each: label names and units, photometric bands and their
extinction coefficients, the papers' label sets, the S/N bins of every evaluation table.

Below every layer (numpy only), so the data, prep, methods, evaluate and app layers all
read the same values.
"""

from __future__ import annotations

import numpy as np

#: Canonical label names and their units (ARCHITECTURE.md section 2).
LABEL_UNITS: dict[str, str] = {
    "teff": "K",
    "logg": "dex",
    "m_h": "dex",
    "fe_h": "dex",
    "alpha_m": "dex",
    "c_fe": "dex",
    "n_fe": "dex",
    "o_fe": "dex",
    "na_fe": "dex",
    "mg_fe": "dex",
    "al_fe": "dex",
    "si_fe": "dex",
    "ca_fe": "dex",
    "ti_fe": "dex",
    "mn_fe": "dex",
    "ni_fe": "dex",
    "vmicro": "km/s",
    "vsini": "km/s",
}

#: Photometric bands used by the CNN (Guiglion et al. 2020, section 2) and their names.
PHOT_BANDS: tuple[str, ...] = ("g", "bp", "rp", "j", "h", "ks", "w1", "w2")
#: A_lambda / A_V per band (Cardelli-like, Gaia EDR3/2MASS/WISE effective wavelengths);
#: used by the synthetic photometry and by the extinction correction of absolute magnitudes.
EXTINCTION_COEFF: dict[str, float] = {
    "g": 0.789, "bp": 1.002, "rp": 0.589, "j": 0.243,
    "h": 0.131, "ks": 0.078, "w1": 0.039, "w2": 0.026,
}

#: label sets of the three papers (canonical names)
PAPER_LABELS: dict[str, list[str]] = {
    "guiglion2020": ["teff", "logg", "m_h", "fe_h", "alpha_m", "mg_fe", "si_fe", "al_fe", "ni_fe"],
    "zhang2020": ["teff", "logg", "m_h", "alpha_m", "c_fe", "n_fe"],
    "horta2024": ["teff", "logg", "fe_h", "c_fe", "n_fe", "o_fe", "mg_fe", "al_fe", "si_fe",
                  "ca_fe", "mn_fe", "ni_fe"],
}

#: S/N bin edges of every bias/scatter table and plot (learning curves, compare, benchmarks):
#: the bins of Zhang et al. 2020 Fig. 9 / Guiglion et al. 2020 Fig. 9, open above 150.
SNR_BINS: tuple[float, ...] = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, np.inf)

#: axis titles of the labels (plots and tables)
LABEL_TITLES: dict[str, str] = {
    "teff": "Teff [K]", "logg": "log g [dex]", "m_h": "[M/H] [dex]", "fe_h": "[Fe/H] [dex]",
    "alpha_m": "[α/M] [dex]", "c_fe": "[C/Fe] [dex]", "n_fe": "[N/Fe] [dex]", "o_fe": "[O/Fe] [dex]",
    "mg_fe": "[Mg/Fe] [dex]", "al_fe": "[Al/Fe] [dex]", "si_fe": "[Si/Fe] [dex]", "ca_fe": "[Ca/Fe] [dex]",
    "ti_fe": "[Ti/Fe] [dex]", "mn_fe": "[Mn/Fe] [dex]", "ni_fe": "[Ni/Fe] [dex]", "na_fe": "[Na/Fe] [dex]",
    "vmicro": "v_micro [km/s]", "vsini": "v sin i [km/s]",
}


def label_title(name: str) -> str:
    """Axis title of a label with its unit ("Teff [K]"), the raw name for other columns."""
    return LABEL_TITLES.get(name, name)
