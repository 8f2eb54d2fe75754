"""Instrumental set-ups of the synthetic survey and their line lists.

Wavelengths are those of real transitions (air for RAVE, vacuum for LAMOST and APOGEE,
as the surveys publish them), rounded to 0.01 A. Each line carries:

``(wavelength, species, strength, teff_sens, logg_sens, wing)``

* ``species`` selects the abundance driving it ([X/H] = [Fe/H] + [X/Fe]; molecules use the
  combination in :data:`MOLECULES`);
* ``strength`` is log10 of the line-centre optical depth at Teff = 5040 K, logg = 4.4,
  solar abundance;
* ``teff_sens`` multiplies (theta - 1), theta = 5040/Teff: positive = stronger in cool
  stars (neutral lines of ionised majority species, molecules); hydrogen lines use the
  special species ``H`` with their own temperature law;
* ``logg_sens`` multiplies (logg - 4.4): ions and molecules of giants are negative;
* ``wing`` is the equivalent width (A) of a pressure-broadened (Lorentzian) component at
  the reference point, 0 for most lines.

The molecular band systems (CN, CO, OH in the H band, CH G band, MgH) are represented
by combs of lines from a fixed-seed generator placed inside the real band regions, with
real band heads for CO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: species -> {label: weight} for the abundance [X/H] driving a line
MOLECULES = {
    "CN": {"c_fe": 1.0, "n_fe": 1.0, "fe_h": 2.0},
    "CO": {"c_fe": 1.0, "o_fe": 0.3, "fe_h": 1.3},
    "OH": {"o_fe": 1.0, "fe_h": 1.0},
    "CH": {"c_fe": 1.0, "fe_h": 1.0},
    "MgH": {"mg_fe": 1.0, "fe_h": 1.0},
}
ELEMENT_LABEL = {"Fe": None, "Mg": "mg_fe", "Si": "si_fe", "Ca": "ca_fe", "Ti": "ti_fe",
                 "Al": "al_fe", "Mn": "mn_fe", "Ni": "ni_fe", "C": "c_fe", "N": "n_fe",
                 "O": "o_fe", "Cr": None, "K": None, "Na": None, "Sr": None}


@dataclass(frozen=True)
class Setup:
    """A spectrograph set-up: grid, resolving power, noise-driving band, line list."""

    name: str
    wave: np.ndarray
    resolution: float
    band: str
    lines: tuple
    air: bool = False


def _comb(rng, lo, hi, n, species, strength, tsens, gsens):
    w = np.sort(rng.uniform(lo, hi, n))
    s = strength + rng.normal(0, 0.35, n)
    return [(float(a), species, float(b), tsens, gsens, 0.0) for a, b in zip(w, s, strict=True)]


def _bandhead(head, n, species, strength, tsens, gsens):
    # lines pile up at the head and spread to the red (R-branch turning point)
    k = np.arange(n)
    w = head + 0.35 * k**1.5
    s = strength - 0.02 * k
    return [(float(a), species, float(b), tsens, gsens, 0.0) for a, b in zip(w, s, strict=True)]


def _rave_lines():
    L = [
        (8498.02, "Ca2", 1.6, 0.6, -0.10, 1.3), (8542.09, "Ca2", 2.0, 0.6, -0.10, 2.4),
        (8662.14, "Ca2", 1.9, 0.6, -0.10, 2.0),
    ]
    for w in (8467.25, 8502.48, 8545.38, 8598.39, 8665.02, 8750.47):  # Paschen 17..12
        L.append((w, "H", 0.0, 0.0, 0.0, 0.6))
    for w, s in ((8468.41, 0.5), (8514.07, 0.4), (8515.11, 0.3), (8526.67, 0.1),
                 (8582.26, 0.2), (8611.80, 0.2), (8621.60, 0.1), (8674.75, 0.5),
                 (8688.62, 0.9), (8757.19, 0.3), (8763.97, 0.2), (8439.58, -0.1),
                 (8496.99, -0.3), (8571.80, -0.4), (8592.95, -0.3), (8713.19, -0.2)):
        L.append((w, "Fe", s, 2.0, 0.0, 0.0))
    for w, s in ((8717.83, 0.1), (8736.02, 0.6), (8712.68, -0.2), (8806.76, 0.8)):
        L.append((w, "Mg", s, 1.2, 0.05, 0.0))
    for w, s in ((8501.54, -0.1), (8556.78, 0.1), (8728.01, 0.0), (8742.45, 0.1),
                 (8648.46, -0.1), (8752.01, -0.1)):
        L.append((w, "Si", s, 0.5, 0.05, 0.0))
    for w, s in ((8426.50, 0.0), (8434.96, -0.1), (8435.65, 0.0), (8518.35, -0.5),
                 (8675.37, -0.5), (8682.98, -0.5), (8734.71, -0.4)):
        L.append((w, "Ti", s, 3.5, 0.0, 0.0))
    L += [(8772.87, "Al", -0.2, 1.5, 0.0, 0.0), (8773.90, "Al", -0.1, 1.5, 0.0, 0.0)]
    L += [(8579.98, "Ni", -0.4, 1.8, 0.0, 0.0), (8702.49, "Ni", -0.3, 1.8, 0.0, 0.0),
          (8636.99, "Ni", -0.5, 1.8, 0.0, 0.0)]
    L += [(8633.93, "Ca", -0.3, 1.8, 0.0, 0.0), (8673.04, "Mn", -0.6, 2.0, 0.0, 0.0),
          (8740.99, "Mn", -0.6, 2.0, 0.0, 0.0)]
    rng = np.random.default_rng(7)
    L += _comb(rng, 8420, 8780, 50, "CN", -1.2, 4.0, -0.3)
    L += _comb(rng, 8420, 8780, 60, "Fe", -0.9, 2.0, 0.0)  # weak Fe forest
    return tuple(L)


def _lamost_lines():
    L = [(3934.78, "Ca2", 2.6, 0.4, -0.1, 12.0), (3969.59, "Ca2", 2.4, 0.4, -0.1, 9.0),
         (4227.92, "Ca", 1.8, 2.5, 0.0, 1.2), (4078.86, "Sr2", 0.8, 0.6, -0.35, 0.0)]
    for w, we in ((3971.20, 2.0), (4102.89, 3.0), (4341.69, 3.5), (4862.72, 4.0)):
        L.append((w, "H", 0.0, 0.0, 0.0, we))
    for w, s in ((5168.76, 1.6), (5174.13, 1.8), (5185.05, 2.0)):  # Mg b with wings
        L.append((w, "Mg", s, 1.0, 0.05, 0.0))
    L += [(5174.13, "Mg", -9.0, 0.0, 0.0, 0.7), (5185.05, "Mg", -9.0, 0.0, 0.0, 0.9)]
    for w, s in ((4046.98, 1.2), (4064.75, 1.0), (4072.92, 0.9), (4144.99, 0.9),
                 (4261.35, 0.8), (4272.91, 1.0), (4326.93, 1.1), (4384.78, 1.3),
                 (4405.98, 1.1), (4416.35, 0.7), (4529.20, 0.6), (4921.85, 0.6),
                 (4958.98, 0.7), (5168.90, 0.8), (5228.68, 0.6), (5271.48, 1.2),
                 (5329.57, 1.0), (5372.98, 1.0), (5398.29, 0.7), (5407.28, 0.9),
                 (5430.46, 0.8), (5447.9, 0.9), (5456.30, 0.6), (5616.14, 0.5),
                 (5710.02, 0.3)):
        L.append((w, "Fe", s, 2.0, 0.0, 0.0))
    for w, s in ((4924.92, 0.8), (5019.82, 0.9), (5170.02, 0.9), (5318.0, 0.3)):
        L.append((w, "Fe2", s, 0.3, -0.35, 0.0))
    for w, s in ((4396.03, 0.8), (4444.80, 0.6), (4502.58, 0.6)):
        L.append((w, "Ti2", s, 0.3, -0.35, 0.0))
    for w, s in ((4982.89, 0.5), (4992.05, 0.4), (5065.0, 0.3)):
        L.append((w, "Ti", s, 3.5, 0.0, 0.0))
    L += [(5207.60, "Cr", 1.0, 2.0, 0.0, 0.0), (5209.87, "Cr", 0.9, 2.0, 0.0, 0.0)]
    L += [(4031.86, "Mn", 1.0, 2.0, 0.0, 0.0), (4034.61, "Mn", 0.9, 2.0, 0.0, 0.0),
          (4784.6, "Mn", 0.2, 2.0, 0.0, 0.0)]
    L += [(3945.12, "Al", 1.2, 1.5, 0.0, 0.0), (3962.64, "Al", 1.3, 1.5, 0.0, 0.0)]
    L += [(5478.4, "Ni", 0.2, 1.8, 0.0, 0.0), (5083.7, "Ni", 0.3, 1.8, 0.0, 0.0),
          (4715.2, "Ni", 0.2, 1.8, 0.0, 0.0)]
    L += [(5710.0, "Mg", 0.2, 1.2, 0.0, 0.0), (4703.0, "Mg", 0.6, 1.2, 0.0, 0.0),
          (3906.4, "Si", 0.8, 0.5, 0.0, 0.0), (5772.15, "Si", 0.0, 0.5, 0.0, 0.0)]
    L += [(5590.7, "Ca", 0.3, 1.8, 0.0, 0.0), (5858.0, "Ca", 0.3, 1.8, 0.0, 0.0)]
    rng = np.random.default_rng(11)
    L += _comb(rng, 4290, 4318, 40, "CH", 0.3, 3.5, -0.2)   # G band
    L += _comb(rng, 3871, 3884, 15, "CN", 0.2, 4.0, -0.3)
    L += _comb(rng, 4150, 4216, 30, "CN", -0.8, 4.0, -0.3)
    L += _comb(rng, 5050, 5200, 60, "MgH", -1.0, 5.0, 0.4)
    # line forest, denser in the blue (line blanketing)
    L += _comb(rng, 3900, 4600, 500, "Fe", 0.4, 2.2, 0.0)
    L += _comb(rng, 4600, 5800, 350, "Fe", 0.1, 2.0, 0.0)
    return tuple(L)


def _apogee_lines():
    L = []
    for w, s in ((15194.49, 0.6), (15207.53, 0.8), (15395.72, 0.4), (15490.34, 0.6),
                 (15648.51, 0.5), (15964.87, 0.5), (16040.65, 0.5), (16153.25, 0.5),
                 (16165.03, 0.6), (16486.67, 0.4), (16645.88, 0.3), (15294.56, 0.4),
                 (15537.45, 0.3), (15591.49, 0.4), (15621.65, 0.6), (16009.62, 0.5)):
        L.append((w, "Fe", s, 2.0, 0.0, 0.0))
    for w, s in ((15740.72, 1.0), (15748.99, 1.1), (15765.84, 1.2), (15886.26, 0.4),
                 (15954.48, 0.6), (16368.1, 0.2), (15024.99, 0.9)):
        L.append((w, "Mg", s, 1.2, 0.05, 0.0))
    for w, s in ((15361.16, 0.5), (15376.83, 0.4), (15833.60, 0.6), (15960.06, 0.9),
                 (16060.01, 0.5), (16094.79, 0.6), (16215.67, 0.5), (16680.77, 0.7),
                 (16380.0, 0.4)):
        L.append((w, "Si", s, 0.5, 0.05, 0.0))
    for w, s in ((16723.52, 0.9), (16755.14, 1.0), (16767.94, 0.8)):
        L.append((w, "Al", s, 1.5, 0.0, 0.0))
    for w, s in ((15217.74, 0.3), (15262.70, 0.2), (15159.10, 0.2)):
        L.append((w, "Mn", s, 2.0, 0.0, 0.0))
    for w, s in ((15605.68, 0.3), (16589.30, 0.2), (16673.70, 0.3), (16815.47, 0.2)):
        L.append((w, "Ni", s, 1.8, 0.0, 0.0))
    for w, s in ((16136.82, 0.3), (16150.76, 0.4), (16157.36, 0.3)):
        L.append((w, "Ca", s, 1.8, 0.0, 0.0))
    for w, s in ((15548.0, 0.0), (15719.87, 0.0), (16635.16, -0.2)):
        L.append((w, "Ti", s, 3.5, 0.0, 0.0))
    L += [(15167.21, "K", 0.5, 2.5, 0.0, 0.0), (15172.52, "K", 0.3, 2.5, 0.0, 0.0)]
    L += [(16895.2, "C", 0.2, -1.0, 0.1, 0.0), (16009.3, "C", -0.1, -1.0, 0.1, 0.0)]
    for w in (16811.11, 16411.67, 16113.71, 15884.88, 15704.96, 15560.70, 15443.14,
              15345.98, 15264.71, 15196.0):  # Brackett 11..20
        L.append((w, "H", 0.0, 0.0, 0.0, 0.4))
    for head in (15582.0, 15780.0, 15978.0, 16187.0, 16397.0, 16610.0):
        L += _bandhead(head, 18, "CO", -0.2, 5.0, -0.25)
    rng = np.random.default_rng(13)
    L += _comb(rng, 15140, 16960, 220, "OH", -1.1, 6.0, 0.0)
    L += _comb(rng, 15140, 16960, 260, "CN", -1.2, 4.5, -0.3)
    L += _comb(rng, 15140, 16960, 150, "Fe", -0.4, 2.0, 0.0)
    return tuple(L)


def apogee_grid() -> np.ndarray:
    """APOGEE-like log-linear vacuum grid (dlog10 lambda = 6e-6), chip gaps removed."""
    full = 10 ** (4.179 + 6e-6 * np.arange(8575))
    chips = ((15140, 15810), (15860, 16430), (16480, 16960))
    keep = np.zeros(full.size, bool)
    for lo, hi in chips:
        keep |= (full >= lo) & (full <= hi)
    return full[keep]


SETUPS = {
    "rave": Setup("rave", 8420.0 + 0.4 * np.arange(900), 7500.0, "g", _rave_lines(), air=True),
    "lamost": Setup("lamost", 3900.0 + 1.0 * np.arange(1901), 1800.0, "g", _lamost_lines()),
    "apogee": Setup("apogee", apogee_grid(), 22500.0, "h", _apogee_lines()),
}

#: fixed sky-line / detector regions that are flagged bad in a fraction of spectra
SKY_REGIONS = {
    "rave": ((8430.0, 8431.5), (8465.0, 8466.0), (8761.0, 8763.0)),
    "lamost": ((5577.0, 5579.5),),
    "apogee": ((15240.0, 15243.0), (15889.0, 15891.0), (16128.0, 16130.0),
               (16692.0, 16694.0)),
}
