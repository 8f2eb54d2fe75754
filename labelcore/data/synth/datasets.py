"""In-memory labelled data sets for tests, benchmarks and notebooks: spectra of one set-up
with survey-like labels (truth + noise, some missing) drawn from the synthetic population.

>>> d = labelled_set("rave", 3000, seed=1)          # doctest: +SKIP
>>> d.flux.shape, d.labels.shape, d.label_names       # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelcore.data.synth.population import LABEL_ERRORS, make_population, observe_labels
from labelcore.data.synth.spectra import LineModel, observe
from labelcore.data.synth.survey import SNR_MODEL, spectra_snr
from labelcore._photometry import photometry_matrix
from labelcore.constants import PAPER_LABELS

#: the label sets of the benchmarks (RAVE-like 9 labels as Guiglion 2020; APOGEE-like 12)
RAVE_LABELS = tuple(PAPER_LABELS["guiglion2020"])
APOGEE_LABELS = tuple(PAPER_LABELS["horta2024"])


@dataclass
class LabelledSet:
    wave: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    labels: np.ndarray        # observed (noisy) labels, NaN where missing
    label_err: np.ndarray
    truth: np.ndarray         # true labels
    snr: np.ndarray
    photometry: np.ndarray    # 8 absolute magnitudes + A_V
    label_names: tuple

    def split(self, n_train):
        a = slice(0, n_train)
        b = slice(n_train, None)
        return (LabelledSet(self.wave, self.flux[a], self.flux_err[a], self.labels[a],
                            self.label_err[a], self.truth[a], self.snr[a], self.photometry[a],
                            self.label_names),
                LabelledSet(self.wave, self.flux[b], self.flux_err[b], self.labels[b],
                            self.label_err[b], self.truth[b], self.snr[b], self.photometry[b],
                            self.label_names))


def labelled_set(setup="rave", n=1000, seed=0, label_names=None, snr=None, missing_fraction=0.0,
                 giants_only=False, cosmic_rate=5e-4, sky_fraction=0.1) -> LabelledSet:
    """``n`` stars with spectra of ``setup`` and their labels.

    ``snr``: a number (all spectra), a (lo, hi) range (log-uniform) or None (survey-like,
    from the magnitude). ``giants_only`` keeps logg < 3.5 (as Horta 2024 samples A-C)."""
    names = tuple(label_names or (RAVE_LABELS if setup != "apogee" else APOGEE_LABELS))
    rng = np.random.default_rng(seed)
    pop = make_population(int(n * (3 if giants_only else 1.2)) + 50, seed=seed)
    pop = pop[(pop["parallax"] > 0)]
    if giants_only:
        pop = pop[(pop["logg"] < 3.5) & pop["teff"].between(3500, 5500)]
    pop = pop.iloc[:n].reset_index(drop=True)
    if len(pop) < n:
        raise ValueError(f"could not draw {n} stars (got {len(pop)})")
    obs = observe_labels(pop, seed=seed + 1, names=[s for s in names if s in LABEL_ERRORS],
                         missing_fraction=missing_fraction)
    if snr is None:
        s = spectra_snr(pop[SNR_MODEL[setup][1]].to_numpy(), setup, rng)
    elif np.ndim(snr) == 0:
        s = np.full(n, float(snr))
    else:
        s = np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]), n))
    truth_dict = {c: pop[c].to_numpy() for c in pop.columns}
    model = LineModel(setup)
    flux, err, mask = observe(setup, truth_dict, s, rng, model=model, cosmic_rate=cosmic_rate,
                              sky_fraction=sky_fraction)
    flux = flux.astype(np.float64)
    err = err.astype(np.float64)
    flux[mask] = np.nan  # bad pixels travel as NaN, as a user would pass them
    labels = np.column_stack([obs[c].to_numpy() for c in names])
    lerr = np.column_stack([obs[c + "_err"].to_numpy() for c in names])
    truth = np.column_stack([pop[c].to_numpy() for c in names])
    return LabelledSet(model.wave, flux, err, labels, lerr, truth, s, photometry_matrix(pop), names)
