"""In-memory labelled data sets for tests, benchmarks and notebooks: spectra of one set-up
with survey-like labels (truth + noise, some missing) drawn from the synthetic population.

>>> d = labelled_set("rave", 3000, seed=1)          # doctest: +SKIP
>>> d.flux.shape, d.labels.shape, d.label_names       # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelcore._photometry import photometry_matrix
from labelcore.constants import PAPER_LABELS
from labelcore.data.synth.population import LABEL_ERRORS, make_population, observe_labels
from labelcore.data.synth.spectra import LineModel, observe
from labelcore.data.synth.survey import SNR_MODEL, spectra_snr
from labelcore.errors import ValidationError

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


#: the synthetic set-ups (spectrograph-like configurations of the generator)
SETUP_NAMES = ("rave", "lamost", "apogee")


class SyntheticRunSource:
    """Run data of kind ``"synthetic"`` (:mod:`labelcore.runs.config`): ``n_train`` +
    ``n_test`` stars of a set-up drawn by :func:`labelled_set`; the held-out part carries
    the true labels, so a run's metrics measure accuracy."""

    kind = "synthetic"

    @staticmethod
    def validate(spec: dict) -> dict:
        spec.setdefault("setup", "rave")
        spec.setdefault("seed", 0)
        spec.setdefault("snr", [20, 300])
        known = {"kind", "setup", "n_train", "n_test", "seed", "snr", "labels", "photometry"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValidationError(f"synthetic data has no field(s) {unknown}; valid: {sorted(known)}")
        for k, hi in (("n_train", 200_000), ("n_test", 200_000)):
            v = spec.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
                raise ValidationError(f"config data '{k}' must be an integer in [1, {hi}]; got {v!r}")
        if spec["setup"] not in SETUP_NAMES:
            raise ValidationError(f"config data 'setup' must be one of {list(SETUP_NAMES)}; got {spec['setup']!r}")
        seed = spec["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValidationError(f"config data 'seed' must be a non-negative integer; got {seed!r}")
        snr = spec["snr"]
        if snr is not None:
            ok = isinstance(snr, list | tuple) and len(snr) == 2 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in snr)
            if not ok or not 0 < snr[0] <= snr[1]:
                raise ValidationError(f"config data 'snr' must be [lo, hi] with 0 < lo <= hi; got {snr!r}")
        labels = spec.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or not labels:
                raise ValidationError("config data 'labels' must be a non-empty list of label names")
            unknown = [n for n in labels if n not in LABEL_ERRORS]
            if unknown:
                raise ValidationError(f"config data 'labels' {unknown} are not labels of the synthetic survey; "
                                      f"known: {sorted(LABEL_ERRORS)}")
        return spec

    @staticmethod
    def load(spec: dict) -> dict:
        d = labelled_set(spec["setup"], spec["n_train"] + spec["n_test"], seed=int(spec["seed"]),
                         label_names=spec.get("labels"), snr=tuple(spec["snr"]) if spec.get("snr") else None)
        tr, te = d.split(spec["n_train"])
        out = {}
        for part, s in (("train", tr), ("test", te)):
            out[part] = {"flux": s.flux, "flux_err": s.flux_err, "labels": s.labels, "label_err": s.label_err,
                         "photometry": s.photometry, "snr": s.snr,
                         "truth": s.truth if part == "test" else s.labels,
                         "ids": np.arange(len(s.snr)) + (0 if part == "train" else spec["n_train"])}
        out["wave"], out["label_names"] = d.wave, list(d.label_names)
        out["truth_kind"] = "true labels"
        return out


RUN_SOURCE = SyntheticRunSource()
