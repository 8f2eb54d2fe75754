"""Synthetic spectra: curve-of-growth line strengths, instrumental profiles, noise.

For each line k and star n:

1. line-centre optical depth ``tau = 10^(strength + [X/H] + teff_sens (theta-1) +
   logg_sens (logg-4.4))`` (hydrogen: a temperature law peaking near 9000 K);
2. equivalent width from the curve of growth, ``W = b_lambda F(tau)`` with
   ``F(tau) = sqrt(pi) tau / sqrt(1 + pi tau / (4 ln(1 + tau)))`` (linear for weak lines,
   ``2 sqrt(ln tau)`` when saturated) and Doppler width ``b = sqrt(b_th^2 + vmicro^2)``, so
   that saturation and microturbulence act as in real spectra;
3. the line is seen through the instrument as a Gaussian of the set-up's resolving power
   with that area; a damped (Lorentzian) wing of its own equivalent width is added for
   the strong lines (Ca II, H, Mg b).

The log-flux is linear in the per-line depths, so a whole chunk of stars is one matrix
product ``depth [N, K] @ profile [K, P]`` (BLAS; no loop over stars or pixels). Flux =
exp(-that). Optionally an un-normalised continuum (Planck curve x instrument throughput)
multiplies it; noise follows photon statistics at the star's S/N; bad pixels come from
cosmic rays (spikes) and sky-line regions and are flagged in the mask.
"""

from __future__ import annotations

import numpy as np

from labelcore._numerics import doppler_factor, interp_rows
from labelcore.data.synth.setups import ELEMENT_LABEL, MOLECULES, SETUPS, SKY_REGIONS, Setup

C_KMS = 299_792.458


class LineModel:
    """Vectorised line-formation model for one :class:`Setup`."""

    def __init__(self, setup: Setup | str, wave: np.ndarray | None = None):
        self.setup = SETUPS[setup] if isinstance(setup, str) else setup
        self.wave = self.setup.wave if wave is None else np.asarray(wave, float)
        lines = self.setup.lines
        self.lam = np.array([ln[0] for ln in lines])
        self.species = [ln[1] for ln in lines]
        self.strength = np.array([ln[2] for ln in lines])
        self.tsens = np.array([ln[3] for ln in lines])
        self.gsens = np.array([ln[4] for ln in lines])
        self.wing = np.array([ln[5] for ln in lines])
        self.is_h = np.array([s == "H" for s in self.species])
        # abundance design: [X/H] = sum_j weight_kj label_j
        self.label_names = ["fe_h", "c_fe", "n_fe", "o_fe", "mg_fe", "al_fe", "si_fe",
                            "ca_fe", "ti_fe", "mn_fe", "ni_fe"]
        W = np.zeros((len(lines), len(self.label_names)))
        for k, sp in enumerate(self.species):
            el = sp.rstrip("2")
            if sp in MOLECULES:
                for lab, wgt in MOLECULES[sp].items():
                    W[k, self.label_names.index(lab)] += wgt
            elif el == "H":
                pass
            else:
                W[k, 0] = 1.0
                lab = ELEMENT_LABEL.get(el)
                if lab is not None:
                    W[k, self.label_names.index(lab)] += 1.0
        self.abund_design = W
        # instrumental Gaussian (sigma in A) and Lorentzian wing profiles, peak-normalised
        sig = self.lam / self.setup.resolution / 2.3548
        d = self.wave[None, :] - self.lam[:, None]
        self.sigma_inst = sig
        self.gauss = np.exp(-0.5 * (d / sig[:, None]) ** 2)
        self.gauss[np.abs(d) > 6 * sig[:, None]] = 0.0
        # damping half-widths (km/s): Balmer (Stark) 300, the higher Paschen/Brackett
        # members 120, Ca II H&K 400, other strong lines 60
        hk = np.array([sp == "Ca2" for sp in self.species]) & (self.lam < 4000)
        h_kms = np.where(self.lam > 8000, 120.0, 300.0)
        gam_kms = np.where(self.is_h, h_kms, np.where(hk, 400.0, 60.0))
        gam = np.maximum(sig, self.lam * gam_kms / C_KMS)
        self.gamma = gam
        lor = 1.0 / (1.0 + (d / gam[:, None]) ** 2)
        lor[np.abs(d) > 40 * gam[:, None]] = 0.0
        self.lorentz = np.maximum(lor, self.gauss)  # Voigt-like core
        self.has_wing = (self.wing > 0) | self.is_h
        self._basis = np.vstack([self.gauss, self.lorentz[self.has_wing]])

    def depths(self, labels: dict) -> np.ndarray:
        """Instrumental line depths [N, K + n_wing] for label arrays in ``labels``."""
        teff = np.asarray(labels["teff"], float)
        logg = np.asarray(labels["logg"], float)
        n = teff.size
        lab = np.column_stack([np.nan_to_num(np.asarray(labels.get(s, np.zeros(n)), float))
                               for s in self.label_names])
        x_h = lab @ self.abund_design.T  # [N, K]
        theta = 5040.0 / teff
        log_tau = (self.strength[None, :] + x_h + self.tsens[None, :] * (theta[:, None] - 1.0)
                   + self.gsens[None, :] * (logg[:, None] - 4.4))
        tau = 10.0 ** np.clip(log_tau, -8, 8)
        vmic = np.asarray(labels.get("vmicro", np.full(n, 1.2)), float)
        b_kms = np.sqrt(1.2**2 + vmic**2)[:, None]
        b_lam = self.lam[None, :] * b_kms / C_KMS
        f = np.sqrt(np.pi) * tau / np.sqrt(1.0 + np.pi * tau / (4.0 * np.log1p(tau) + 1e-30))
        ew = b_lam * f
        ew[:, self.is_h] = 0.0
        core = ew / (np.sqrt(2 * np.pi) * self.sigma_inst[None, :])
        # damped wings: grow with abundance (sqrt, as on the damping part of the CoG) and
        # pressure; hydrogen follows its excitation (n=3/n=4 populations) with Teff
        wing_ew = self.wing[None, :] * np.sqrt(10.0 ** x_h) * 10 ** (-0.1 * (logg[:, None] - 4.4))
        h_law = np.exp((teff[:, None] - 6000.0) / 900.0) / (1 + np.exp((teff[:, None] - 9000.0) / 900.0))
        h_ew = self.wing[None, :] * h_law * 10 ** (0.05 * (logg[:, None] - 4.4))
        wing_ew = np.where(self.is_h[None, :], h_ew, wing_ew)
        wing_depth = (wing_ew / (np.pi * self.gamma[None, :]))[:, self.has_wing]
        return np.hstack([core, wing_depth])

    def normalised_flux(self, labels: dict) -> np.ndarray:
        """Continuum-normalised, noise-free model flux [N, P]."""
        return np.exp(-(self.depths(labels) @ self._basis))


def planck_continuum(wave: np.ndarray, teff: np.ndarray) -> np.ndarray:
    """Planck curve B_lambda(Teff) [N, P], scaled to unit mean per star."""
    hc_k = 1.438777e8  # h c / k in A K
    x = hc_k / (wave[None, :] * np.asarray(teff, float)[:, None])
    b = 1.0 / (wave[None, :] ** 5 * np.expm1(x))
    return b / b.mean(axis=1, keepdims=True)


def throughput(wave: np.ndarray, setup: str) -> np.ndarray:
    """A smooth instrument response (blaze/fibre/dichroic), unit mean."""
    t = (wave - wave.mean()) / np.ptp(wave)
    if setup == "lamost":
        r = np.exp(-0.5 * ((wave - 5200.0) / 900.0) ** 2) * (1 - 0.15 * np.cos(9 * t))
    elif setup == "apogee":
        r = 1.0 + 0.25 * t - 0.4 * t**2
    else:
        r = 1.0 - 0.3 * t - 0.5 * t**2
    return r / r.mean()


def observe(setup: str, labels: dict, snr: np.ndarray, rng: np.random.Generator,
            rv: np.ndarray | None = None, normalised: bool = True,
            cosmic_rate: float = 5e-4, sky_fraction: float = 0.1,
            model: LineModel | None = None):
    """Simulate observed spectra for one chunk of stars.

    Returns ``flux, flux_err, mask`` [N, P] (float32, float32, bool). With ``rv`` the
    spectra are in the observed frame (Doppler-shifted by interpolation of a rest-frame
    model); otherwise in the rest frame.
    """
    model = model or LineModel(setup)
    wave = model.wave
    flux = model.normalised_flux(labels)
    n, p = flux.shape
    if rv is not None:
        lam_rest = wave[None, :] / doppler_factor(rv)[:, None]
        flux, inside = interp_rows(lam_rest, wave, flux, fill=1.0)
    snr = np.asarray(snr, float)
    err = np.sqrt(np.clip(flux, 0.05, None)) / snr[:, None]
    flux = flux + rng.standard_normal((n, p)) * err
    mask = np.zeros((n, p), bool)
    # cosmic rays: positive spikes, flagged
    cr = rng.random((n, p)) < cosmic_rate
    flux = np.where(cr, flux + rng.uniform(0.5, 5.0, (n, p)), flux)
    mask |= cr
    # sky-line residuals in a fraction of spectra: flagged, flux corrupted
    sky_rows = rng.random(n) < sky_fraction
    for lo, hi in SKY_REGIONS.get(setup, ()):
        cols = (wave >= lo) & (wave <= hi)
        m = sky_rows[:, None] & cols[None, :]
        flux = np.where(m, flux + rng.normal(0, 0.3, (n, p)), flux)
        mask |= m
    if not normalised:
        cont = planck_continuum(wave, labels["teff"]) * throughput(wave, setup)[None, :]
        scale = rng.lognormal(np.log(1000.0), 0.5, n)[:, None]
        flux = flux * cont * scale
        err = err * cont * scale
    return flux.astype(np.float32), err.astype(np.float32), mask
