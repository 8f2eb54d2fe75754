"""A Milky-Way-like stellar population for the synthetic survey.

Everything is vectorised numpy and deterministic for a given seed (``numpy.random.Generator``
with PCG64). One million stars take a few seconds.

Model (a deliberately simple, documented caricature of the Galaxy):

* **Components** thin disc / thick disc / halo with fractions ``(0.70, 0.25, 0.05)`` in a
  magnitude-limited spectroscopic survey. Thin disc: age U(0.5, 10) Gyr, [Fe/H] ~
  N(-0.05 - 0.06 (R - 8.2 kpc), 0.20), scale height 0.3 kpc, V_phi ~ N(225, 20) km/s.
  Thick disc: age U(8, 12.5) Gyr, [Fe/H] ~ N(-0.55, 0.25), scale height 0.9 kpc,
  V_phi ~ N(175, 45). Halo: age U(10.5, 13.5) Gyr, [Fe/H] ~ N(-1.35, 0.45), 70 % "in situ"
  high-alpha and 30 % accreted low-alpha, V_phi ~ N(20, 110).
* **[alpha/Fe] bimodality**: the thin disc follows a shallow low-alpha sequence
  (0.03 - 0.10 [Fe/H]); the thick disc a high-alpha plateau (0.28) with a knee at
  [Fe/H] = -0.7 declining towards the low-alpha sequence at super-solar metallicity.
  The spectroscopic [M/H] tracks [Fe/H] (+0.05 [alpha/Fe]) as ASPCAP's does; stellar
  structure uses the total metallicity of Salaris et al. (1993),
  [Fe/H] + log10(0.638 f + 0.362), f = 10^[alpha/Fe].
* **Elements** are tied to alpha and [Fe/H] with intrinsic scatter: Mg ~ 1.0 alpha,
  Si ~ 0.75 alpha, O ~ 1.1 alpha, Ca ~ 0.7 alpha, Ti ~ 0.8 alpha, Al ~ 0.6 alpha
  (+ metallicity term), Ni weakly alpha-correlated, Mn anti-correlated with alpha.
  [C/Fe] and [N/Fe] follow first dredge-up on the giant branch: C drops and N rises, the
  more so the more massive (younger) the star, so that [C/N] traces age.
* **Evolutionary phase** (Kiel diagram) from simple tracks in (Teff, logg) whose turn-off
  depends on age and [M/H]: main sequence (by a mass-like coordinate), sub-giant branch,
  red giant branch (luminosity function dN/dlogg ~ 10^(0.35 logg)), red clump (hotter
  than the RGB at its logg; blue horizontal branch for metal-poor stars) and a sparse
  upper RGB/AGB. RGB: Teff = 4700 + 440 (logg - 2.5) - 40 (logg - 2.5)^2 - 260 [M/H].
  These reproduce the shape of the APOGEE DR12 giants (checked against
  ``shared/realdata/apogee_dr12_labels``, see tests/data/test_synth.py).
* **Photometry** from luminosity (L ~ M Teff^4 / g), a Teff-dependent bolometric
  correction and colour-Teff relations (BP-RP from the Mucciarelli & Bellazzini 2020
  dwarf relation); extinction from a dust layer (1 mag/kpc in the plane, scale height
  0.12 kpc) with A_lambda/A_V of Wang & Chen (2019). Observed magnitudes and parallaxes
  carry Gaia/2MASS/WISE-like errors; S/N follows the magnitude (photon-limited).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelcore.constants import EXTINCTION_COEFF

R_SUN_KPC = 8.2
Z_SUN_KPC = 0.02

#: A_lambda / A_V (Wang & Chen 2019).

COMPONENTS = ("thin", "thick", "halo")

#: label name -> typical survey uncertainty (ASPCAP-like), used for the "observed" labels.
LABEL_ERRORS = {
    "teff": 60.0, "logg": 0.06, "m_h": 0.03, "fe_h": 0.03, "alpha_m": 0.02,
    "c_fe": 0.04, "n_fe": 0.05, "o_fe": 0.04, "mg_fe": 0.03, "al_fe": 0.05,
    "si_fe": 0.03, "ca_fe": 0.03, "ti_fe": 0.05, "mn_fe": 0.04, "ni_fe": 0.03,
    "vmicro": 0.1,
}

PHASES = ("ms", "sgb", "rgb", "rc", "agb")


def rgb_teff(logg, m_h):
    """Teff of the red giant branch at ``logg`` and ``m_h`` (calibrated on APOGEE DR12)."""
    x = np.asarray(logg) - 2.5
    return 4700.0 + 440.0 * x - 40.0 * x**2 - 260.0 * np.asarray(m_h)


def salaris_m_h(fe_h, alpha_fe):
    """[M/H] from [Fe/H] and [alpha/Fe] (Salaris, Chieffi & Straniero 1993)."""
    return fe_h + np.log10(0.638 * 10.0**alpha_fe + 0.362)


def _draw_chemistry(rng, comp, r_gc, n):
    fe_h = np.empty(n)
    alpha = np.empty(n)
    thin, thick, halo = comp == 0, comp == 1, comp == 2
    fe_h[thin] = rng.normal(-0.05 - 0.06 * (r_gc[thin] - R_SUN_KPC), 0.20)
    fe_h[thick] = rng.normal(-0.55, 0.25, thick.sum())
    fe_h[halo] = rng.normal(-1.35, 0.45, halo.sum())
    fe_h = np.clip(fe_h, -2.5, 0.6)
    # low-alpha sequence
    alpha_lo = 0.03 - 0.10 * fe_h
    # high-alpha: plateau then knee at [Fe/H] = -0.7, joining low-alpha near +0.3
    knee = -0.7
    alpha_hi = np.where(fe_h < knee, 0.28, 0.28 - (0.28 - 0.06) * (fe_h - knee) / 1.0)
    alpha[thin] = alpha_lo[thin] + rng.normal(0, 0.025, thin.sum())
    alpha[thick] = alpha_hi[thick] + rng.normal(0, 0.03, thick.sum())
    accreted = halo & (rng.random(n) < 0.30)
    insitu = halo & ~accreted
    alpha[insitu] = 0.30 + rng.normal(0, 0.04, insitu.sum())
    alpha[accreted] = 0.12 + 0.08 * (fe_h[accreted] + 1.3) + rng.normal(0, 0.04, accreted.sum())
    alpha = np.clip(alpha, -0.2, 0.5)
    return fe_h, alpha


def _draw_phase(rng, n, comp, age, m_h):
    """Evolutionary phase, Teff, logg, mass, vmicro for each star."""
    # phase probabilities of a magnitude-limited survey (giants over-represented)
    p = np.array([0.40, 0.07, 0.36, 0.15, 0.02])
    phase = rng.choice(len(PHASES), size=n, p=p)
    teff = np.empty(n)
    logg = np.empty(n)
    # turn-off of an isochrone of this age and metallicity
    la = np.log10(age / 4.0)
    teff_to = 6150.0 - 650.0 * la - 230.0 * m_h
    logg_to = 4.02 + 0.22 * la + 0.05 * m_h
    mass_to = 1.15 - 0.45 * la + 0.12 * m_h  # Msun at the turn-off
    mass = np.empty(n)

    ms = phase == 0
    u = rng.random(ms.sum()) ** 0.7  # mass-like coordinate along the MS (0 = K/M dwarf)
    t0 = 3700.0 + 0.0 * u
    teff[ms] = t0 + u * (teff_to[ms] - t0)
    evol = rng.random(ms.sum()) * u**3  # main-sequence broadening towards the turn-off
    logg[ms] = 4.72 - 0.30 * u**1.6 - 0.25 * evol + 0.04 * m_h[ms]
    logg[ms] = np.minimum(logg[ms] + rng.normal(0, 0.05, ms.sum()), 4.8)
    teff[ms] -= 150.0 * evol
    mass[ms] = 0.55 + u * (mass_to[ms] - 0.55)

    sgb = phase == 1
    v = rng.random(sgb.sum())
    logg_b = 3.55 + 0.05 * m_h[sgb]
    teff_b = rgb_teff(logg_b, m_h[sgb])
    teff[sgb] = teff_to[sgb] + v * (teff_b - teff_to[sgb])
    logg[sgb] = logg_to[sgb] + v * (logg_b - logg_to[sgb]) - 0.08 * np.sin(np.pi * v)
    mass[sgb] = mass_to[sgb]

    rgb = phase == 2
    # luminosity function: dN/dlogg ~ 10^(0.35 logg) on [0.3, 3.6]
    a, b, k = 0.3, 3.6, 0.35 * np.log(10)
    q = rng.random(rgb.sum())
    logg[rgb] = np.log(np.exp(k * a) + q * (np.exp(k * b) - np.exp(k * a))) / k
    teff[rgb] = rgb_teff(logg[rgb], m_h[rgb])
    mass[rgb] = mass_to[rgb]

    rc = phase == 3
    mrc = m_h[rc]
    logg[rc] = 2.50 + 0.05 * mrc + rng.normal(0, 0.07, rc.sum())
    teff[rc] = 4790.0 - 230.0 * mrc
    # metal-poor core-He burners spread on to a (blue) horizontal branch
    hb = mrc < -0.9
    teff[rc] = np.where(hb, 5100.0 + rng.random(rc.sum()) * 1400.0 * np.clip(-0.9 - mrc, 0, 1.2),
                        teff[rc])
    logg[rc] = np.where(hb, 2.45 + 0.00025 * (teff[rc] - 5100.0), logg[rc])
    mass[rc] = mass_to[rc] * 0.92

    agb = phase == 4
    logg[agb] = rng.uniform(0.4, 2.2, agb.sum())
    teff[agb] = rgb_teff(logg[agb], m_h[agb]) + 90.0
    mass[agb] = mass_to[agb] * 0.85

    teff += rng.normal(0, 35.0, n) * np.where(phase >= 2, 1.4, 1.0)
    logg += rng.normal(0, 0.03, n)
    mass = np.clip(mass, 0.5, 3.0)
    # microturbulence (APOGEE-like calibration): grows up the giant branch
    vmicro = np.where(logg > 3.8, 1.0 + 0.25 * (teff - 5000) / 1000, 2.4 - 0.35 * logg)
    vmicro = np.clip(vmicro + rng.normal(0, 0.08, n), 0.5, 3.0)
    return phase, teff, logg, mass, vmicro


def _bolometric_correction_g(teff):
    th = 5040.0 / teff
    return 0.08 - 3.2 * (th - 0.873) ** 2 - 0.5 * np.clip(th - 1.1, 0, None)


def _bp_rp(teff):
    # Mucciarelli & Bellazzini (2020) dwarfs: theta = b0 + b1 C + b2 C^2, solved for C
    th = 5040.0 / teff
    b0, b1, b2 = 0.4929, 0.5092, -0.0353
    disc = b1**2 - 4 * b2 * (b0 - th)
    return (-b1 + np.sqrt(np.clip(disc, 0, None))) / (2 * b2)


def absolute_magnitudes(teff, logg, mass):
    """Absolute magnitudes in G, BP, RP, J, H, Ks, W1, W2 (no extinction)."""
    log_l = np.log10(mass) + 4 * np.log10(teff / 5772.0) - (logg - 4.438)
    mbol = 4.74 - 2.5 * log_l
    g = mbol - _bolometric_correction_g(teff)
    c = _bp_rp(teff)
    g_rp = 0.02 + 0.53 * c - 0.04 * c**2
    rp = g - g_rp
    bp = rp + c
    ks = g - (2.0 * c - 0.15)
    j = ks + 0.5 * c - 0.05
    h = ks + 0.12 * c - 0.04
    w1 = ks - 0.02 - 0.015 * c
    w2 = w1 + 0.04 * c - 0.05
    return {"g": g, "bp": bp, "rp": rp, "j": j, "h": h, "ks": ks, "w1": w1, "w2": w2}


def make_population(n_stars: int, seed: int = 42, survey_band: str = "h",
                    mag_range=(7.0, 13.5)) -> pd.DataFrame:
    """Draw ``n_stars`` stars of a magnitude-limited survey.

    Returns a DataFrame with true labels (``teff, logg, m_h, fe_h, alpha_m`` and element
    ratios, ``vmicro``), evolutionary ``phase``, Galactic ``component``, age, mass,
    geometry (``ra, dec, l, b, dist_kpc, r_gc, z_gc, v_phi``), extinction ``a_v``,
    *observed* photometry with errors, parallax with error, and ``source_id``.
    Label uncertainties/observational noise on labels are added by
    :func:`observe_labels`.
    """
    if n_stars <= 0:
        raise ValueError(f"n_stars must be positive; got {n_stars}")
    rng = np.random.default_rng(seed)
    n = int(n_stars)
    comp = rng.choice(3, size=n, p=[0.70, 0.25, 0.05])
    age = np.select(
        [comp == 0, comp == 1],
        [rng.uniform(0.5, 10.0, n), rng.uniform(8.0, 12.5, n)],
        rng.uniform(10.5, 13.5, n),
    )
    # geometry, first pass: the survey band magnitude fixes the distance once the star's
    # absolute magnitude is known; radial position needed for the metallicity gradient is
    # approximated from a provisional distance, then recomputed consistently below.
    r_prov = R_SUN_KPC + rng.normal(0, 1.5, n)
    fe_h, alpha_fe = _draw_chemistry(rng, comp, r_prov, n)
    # the *spectroscopic* [M/H] of ASPCAP-like pipelines tracks [Fe/H] closely; stellar
    # structure (turn-off, RGB colour) responds to the total metallicity of Salaris et al.
    m_h = fe_h + 0.05 * alpha_fe
    phase, teff, logg, mass, vmicro = _draw_phase(rng, n, comp, age,
                                                  salaris_m_h(fe_h, alpha_fe))

    absmag = absolute_magnitudes(teff, logg, mass)
    # apparent magnitude in the survey band: uniform-ish in the survey's range
    m_app0 = rng.uniform(*mag_range, n) ** 1.0
    dist_pc = 10.0 ** ((m_app0 - absmag[survey_band] + 5.0) / 5.0)
    dist_kpc = np.clip(dist_pc / 1000.0, 0.01, 40.0)
    # heights: exponential with the component's scale height, capped by the distance
    hz = np.array([0.3, 0.9, 4.0])[comp]
    z_abs = rng.exponential(hz)
    z = np.sign(rng.random(n) - 0.5) * np.minimum(z_abs, 0.98 * dist_kpc)
    b = np.arcsin(np.clip((z - Z_SUN_KPC) / dist_kpc, -1, 1))
    l = rng.uniform(0, 2 * np.pi, n)
    x = R_SUN_KPC - dist_kpc * np.cos(b) * np.cos(l)
    y = dist_kpc * np.cos(b) * np.sin(l)
    r_gc = np.hypot(x, y)
    # dust layer: 1 mag/kpc in the plane, scale height 0.12 kpc
    sinb = np.maximum(np.abs(np.sin(b)), 1e-3)
    h_d = 0.12
    a_v = 1.0 * h_d / sinb * (1 - np.exp(-dist_kpc * sinb / h_d))
    a_v = np.clip(a_v * rng.lognormal(0, 0.25, n), 0, 6)
    v_phi = np.select([comp == 0, comp == 1],
                      [rng.normal(225, 20, n), rng.normal(175, 45, n)],
                      rng.normal(20, 110, n))

    # elements
    def nrm(s):
        return rng.normal(0, s, n)

    giant = (phase >= 2) | ((phase == 1) & (logg < 3.7))
    mix = np.where(giant, np.clip((mass - 0.8) / 1.2, 0, 1.2), 0.0)
    labels = {
        "teff": teff, "logg": logg, "m_h": m_h, "fe_h": fe_h, "alpha_m": alpha_fe,
        "c_fe": 0.02 - 0.05 * fe_h + 0.2 * alpha_fe - 0.10 * giant - 0.20 * mix + nrm(0.04),
        "n_fe": 0.02 + 0.10 * fe_h + 0.15 * giant + 0.45 * mix + nrm(0.05),
        "o_fe": 1.1 * alpha_fe + nrm(0.04),
        "mg_fe": 1.0 * alpha_fe + nrm(0.025),
        "al_fe": 0.6 * alpha_fe + 0.05 * fe_h + 0.02 + nrm(0.05),
        "si_fe": 0.75 * alpha_fe + nrm(0.025),
        "ca_fe": 0.7 * alpha_fe + nrm(0.03),
        "ti_fe": 0.8 * alpha_fe + nrm(0.05),
        "mn_fe": -0.05 + 0.15 * fe_h - 0.5 * alpha_fe + nrm(0.04),
        "ni_fe": 0.01 + 0.12 * alpha_fe + 0.04 * fe_h + nrm(0.025),
        "vmicro": vmicro,
    }
    # alpha_m is [alpha/M] = [alpha/Fe] - ([M/H] - [Fe/H])
    labels["alpha_m"] = alpha_fe - (m_h - fe_h)

    df = pd.DataFrame(labels)
    df.insert(0, "id", np.char.add("SYN", np.char.zfill(np.arange(n).astype(str), 8)))
    df.insert(1, "source_id", (np.int64(4_000_000_000_000_000_000) // 1000
                               + rng.permutation(n).astype(np.int64) * 7919 + seed))
    df["phase"] = pd.Categorical.from_codes(phase, PHASES)
    df["component"] = pd.Categorical.from_codes(comp, COMPONENTS)
    df["age"] = age
    df["mass"] = mass
    # sky coordinates (Galactic l, b -> ICRS via a fixed rotation)
    df["l"] = np.degrees(l)
    df["b"] = np.degrees(b)
    ra, dec = galactic_to_icrs(df["l"].to_numpy(), df["b"].to_numpy())
    df["ra"], df["dec"] = ra, dec
    df["dist_kpc"] = dist_kpc
    df["r_gc"] = r_gc
    df["z_gc"] = z
    df["v_phi"] = v_phi
    df["a_v"] = a_v
    df["a_v_err"] = 0.05 + 0.1 * a_v
    # observed photometry
    dm = 5 * np.log10(dist_pc) - 5
    err_floor = {"g": 0.002, "bp": 0.004, "rp": 0.004, "j": 0.022, "h": 0.024, "ks": 0.022,
                 "w1": 0.023, "w2": 0.021}
    for band, m_abs in absmag.items():
        true_app = m_abs + dm + EXTINCTION_COEFF[band] * a_v
        lim = 15.0 if band in ("j", "h", "ks", "w1", "w2") else 19.0
        err = err_floor[band] + 0.02 * 10 ** (0.4 * (true_app - lim))
        df[band] = true_app + rng.normal(0, 1, n) * err
        df[f"{band}_err"] = err
    plx = 1.0 / dist_kpc
    g_app = df["g"].to_numpy()
    plx_err = 0.015 + 0.03 * 10 ** (0.4 * (g_app - 17.0))
    df["parallax"] = plx + rng.normal(0, 1, n) * plx_err
    df["parallax_err"] = plx_err
    df["survey_mag"] = df[survey_band]
    return df


def galactic_to_icrs(l_deg, b_deg):
    """Galactic (l, b) to ICRS (ra, dec) in degrees (IAU rotation matrix, vectorised)."""
    # rows: ICRS unit vectors expressed in Galactic coordinates (transpose of the
    # ICRS->Galactic matrix of Hipparcos / Liu et al. 2011)
    r = np.array([
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
    ])
    lr, br = np.radians(l_deg), np.radians(b_deg)
    v = np.stack([np.cos(br) * np.cos(lr), np.cos(br) * np.sin(lr), np.sin(br)])
    e = r.T @ v
    ra = np.degrees(np.arctan2(e[1], e[0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(e[2], -1, 1)))
    return ra, dec


def observe_labels(pop: pd.DataFrame, seed: int = 43, names=None, error_scale: float = 1.0,
                   offsets: dict | None = None, missing_fraction: float = 0.03,
                   prefix: str = "") -> pd.DataFrame:
    """Survey-measured labels: truth + offsets + Gaussian noise, with errors and gaps.

    Missing labels follow survey practice: abundances are dropped (NaN) at random with
    ``missing_fraction`` and always for stars where the synthetic pipeline "fails"
    (N and C for Teff > 6200 K, where CN/CH features vanish; Al for Teff > 6500 K).
    Returns columns ``<prefix><label>`` and ``<prefix><label>_err``.
    """
    rng = np.random.default_rng(seed)
    names = list(names or LABEL_ERRORS)
    offsets = offsets or {}
    n = len(pop)
    out = {}
    teff = pop["teff"].to_numpy()
    for s in names:
        e = LABEL_ERRORS[s] * error_scale * rng.lognormal(0, 0.2, n)
        if s == "teff":
            e = e * (teff / 5000.0)
        v = pop[s].to_numpy() + offsets.get(s, 0.0) + rng.normal(0, 1, n) * e
        if s not in ("teff", "logg", "m_h", "fe_h"):
            miss = rng.random(n) < missing_fraction
            if s in ("c_fe", "n_fe"):
                miss |= teff > 6200
            if s == "al_fe":
                miss |= teff > 6500
            v = np.where(miss, np.nan, v)
            e = np.where(miss, np.nan, e)
        out[prefix + s] = v
        out[prefix + s + "_err"] = e
    return pd.DataFrame(out, index=pop.index)
