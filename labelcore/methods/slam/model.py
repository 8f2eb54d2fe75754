"""SLAM: the Stellar LAbel Machine (Zhang, Liu & Deng 2020).

A generative model of each pixel's *standardised* flux as a support-vector regression
(RBF kernel, epsilon-insensitive loss) on the standardised labels, with (C, gamma) chosen
per pixel by k-fold cross-validation, and labels of new spectra by maximising the
Gaussian likelihood of eq. (8) with Levenberg-Marquardt.

Paper defaults: epsilon = 0.05; C = 10^[0, 0.5, 1, 1.5, 2]; gamma = 10^[-3, -2.5, -2,
-1.5, -1]; 5-fold CV (the paper uses 5 in section 3 and 8 in section 4); the grid point
with the lowest CV MSE is refitted on all stars; model variance in eq. (8) = CV MSE of the
pixel; initial guess = the best-matching training spectrum; optional training-set cleaning
(section 4.2): leave-1/10-out prediction, drop stars deviating by > 4 sigma in any label.

How it is made fast (and what that changes)
-------------------------------------------
* The RBF kernel over the training labels is the same for every pixel at a given gamma
  and fold, so it is built once (not 900 x 25 x 5 times). A pivoted Cholesky picks m
  landmark stars until the largest residual kernel variance is below ``rank_tol``
  (m ~ 30 at gamma = 1e-3 to ~450 at gamma = 0.1 for 3000 stars in 4 labels), and the
  Nystroem kernel K_xL K_LL^-1 K_Lx is diagonalised: r orthogonal features (eigenvalues
  below ``rank_tol`` x the largest dropped). The SVR of every pixel is then a linear
  SVR in these features (exact up to kernel directions of eigenvalue < rank_tol x
  lambda_max, which carry weight ~1/lambda in the RKHS norm), and the fitted model of
  pixel j is k(x, L) @ c_j + b_j: m landmarks, not all N training stars.
* All pixels (and all C values of the grid) are solved *at once* in JAX: the primal
  objective 1/2 |w|^2 + C sum_i L(y_i - phi_i w - b) with the epsilon-insensitive loss L
  smoothed quadratically over ``huber_delta`` beyond the tube (annealed from 1 to
  ``huber_delta``), by batched Newton-CG with a backtracking line search. The bias b is
  not regularised, as in libsvm. Bad pixels of a star have zero weight in that pixel's
  regression only. Newton directions come from Jacobi-preconditioned CG; with
  ``huber_delta`` = 1e-3 the CV MSEs agree with libsvm's to ~1e-4 (median, relative),
  worse (up to ~1e-2) at the large-C, large-gamma corner, where the Nystroem features and
  the smoothing limit the solver.
* Close calls are decided exactly. Many pixels (continuum, weak lines) have CV-MSE
  surfaces flat to < 1e-3 over several grid points, so ~1e-4 errors would flip their
  choice. Where two or more grid points of a pixel lie within ``refine_tol`` (2e-4) of
  its minimum, those points get exact CV MSEs from libsvm (scikit-learn ``SVR``) on the
  exact RBF kernel of each (gamma, fold), computed once and shared by all pixels and C
  values (a precomputed-kernel SVR), on threads; rounds repeat if the exact values move
  the minimum. ``cv_refined_grid_`` marks the exact values. The batched solver screens
  the grid; libsvm decides between the survivors (~1 grid point in 25).
* ``pixel_chunks`` > 1 splits the pixels into independent dask tasks: on the workers of
  an active ``dask.distributed.Client`` (a cluster) or dask's local scheduler -- one code
  path. One machine's cores are already busy with one batched block.
* Prediction runs Levenberg-Marquardt for all stars at once (JAX, float32): analytic
  Jacobians as one GEMM per gamma group, per-star damping and convergence flags, and
  one model evaluation per iteration, at the trial point, giving both the exact model
  change (which decides acceptance) and the Jacobian of the next step; the model, chi2
  and Gauss-Newton Hessian at the solution come out of the iteration itself.
  Continuous batching (converged stars leave, queued ones take their slots), each
  group's model carried by fewer landmarks and low-rank coefficients (``compress_tol``:
  e.g. 455 -> 272 landmarks at gamma = 0.1), and a two-stage best-match search for the
  initial guesses. No ``scipy.optimize.least_squares`` call
  per star.

``benchmarks/bench_slam.py`` measures the speed-up and how often the per-pixel (C, gamma)
choices agree with a straightforward per-pixel ``GridSearchCV(SVR)``.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Self

import dask
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn import config_context
from sklearn.base import clone
from sklearn.svm import SVR

from labelcore.data.containers import Labels, Spectra
from labelcore.errors import FormatError, ValidationError
from labelcore.methods import capabilities as caps
from labelcore.methods.base import LabelMethod, Prediction, report
from labelcore.methods.params import Param
from labelcore.methods.slam.cods import cods as slam_cods
from labelcore.methods.slam.compress import compress_coefficients, fewer_landmarks
from labelcore.methods.slam.kernels import kernel_features, rbf
from labelcore.methods.slam.lm import LMState, evaluate_at, init_search, lm_chunk, model_flux
from labelcore.methods.slam.svr import svr_fit
from labelcore.prep.standardise import Standardiser
from labelcore.progress import ProgressCallback

DEFAULT_C = tuple(float(x) for x in 10.0 ** np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
DEFAULT_GAMMA = tuple(float(x) for x in 10.0 ** np.array([-3.0, -2.5, -2.0, -1.5, -1.0]))


class PixelBlock(NamedTuple):
    """What training one block of pixels gives (:meth:`SLAM._train_chunk`)."""

    cv_mse: np.ndarray        # [J, nC, nG] CV MSE of every grid point
    cv_md: np.ndarray         # [J, nC, nG] CV mean deviation
    C: np.ndarray             # [J] chosen C
    gamma_index: np.ndarray   # [J] index of the chosen gamma
    landmarks: list           # per gamma: landmark labels [m_g, M]
    coefs: list               # per gamma: kernel coefficients [m_g, J_g]
    bias: np.ndarray          # [J]
    refined: np.ndarray       # [J, nC, nG] grid points decided by exact SVRs


class LMSolution(NamedTuple):
    """The batched Levenberg-Marquardt solution (:meth:`SLAM._solve_batched`)."""

    theta: np.ndarray      # [N, M] standardised labels
    converged: np.ndarray  # [N] bool
    n_iter: np.ndarray     # [N]
    model: np.ndarray      # [N, P] standardised model flux at theta
    hessian: np.ndarray    # [N, M, M] Gauss-Newton Hessian
    chi2: np.ndarray       # [N]


# ----------------------------------------------------------------------------- model
class SLAM(LabelMethod):
    """SLAM after Zhang, Liu & Deng (2020). See the module docstring.

    Parameters
    ----------
    C_grid, gamma_grid : grids of the SVR penalty and RBF width (paper defaults).
    epsilon : SVR tube half-width in standardised flux (paper: 0.05).
    n_folds : k of the k-fold CV (paper: 5).
    clean : bool
        Training-set cleaning of section 4.2 before training (leave-1/10-out).
    clean_sigma : rejection threshold in units of the residual scatter (paper: 4).
    rank_tol : landmarks are added until the largest residual kernel variance is below
        ``rank_tol``; Nystroem eigen-directions below ``rank_tol`` x the largest are dropped.
    max_rank : at most this many landmarks per gamma.
    huber_delta : smoothing width of the loss beyond the tube (standardised flux).
    n_newton : Newton iterations of the batched SVR solver.
    refine_tol : grid points whose batched CV MSE is within this fraction of the pixel's
        minimum are re-evaluated with exact SVRs (libsvm on the exact precomputed kernel),
        which then decide the choice (0 = off). See ``_refine_exact``.
    n_jobs : threads for the exact refinement (default: all cores).
    lm_max_iter : Levenberg-Marquardt iteration limit (unconverged stars are flagged).
    lm_tol : convergence when the Gauss-Newton decrement g^T H^-1 g (chi2 still to gain)
        (or the chi2 gain of an accepted step) is below this: 1e-2 puts the labels within
        0.1 sigma of their formal error of the likelihood maximum.
    compress_tol : prediction carries each gamma group's model on the fewest leading
        landmarks (half this budget, see ``fewer_landmarks``) and low-rank factors of the
        coefficients (the other half), exact to this RMS fraction of each pixel's model
        scatter sqrt(CV MSE) over the training labels (0 = the full model).
    batch_size : LM slots (stars iterated together) in prediction.
    pixel_chunks : train the pixels as this many independent dask tasks (1 = here, at once;
        with a ``dask.distributed.Client`` active, the tasks run on its workers).
    random_state : seed of the fold assignment.
    """

    name = "SLAM"
    _format = "labelcore-slam"
    capabilities = frozenset({caps.MODEL_SPECTRA, caps.CODS, caps.LEARNING_CURVES, caps.FIT_QUALITY})
    curve_tables = ("pixels", "grid")
    quick_params = {"n_folds": 3}
    param_spec = {
        "C_grid": Param("grid", "SVR penalty grid (paper: 10^0 ... 10^2 in steps of 10^0.5)", low=1e-6, high=1e8),
        "gamma_grid": Param("grid", "RBF width grid in standardised labels (paper: 10^-3 ... 10^-1)",
                            low=1e-8, high=1e3),
        "epsilon": Param("float", "SVR tube half-width in standardised flux (paper: 0.05)", low=0.0, high=10.0),
        "n_folds": Param("int", "k of the k-fold CV of (C, gamma) (paper: 5)", low=2, high=50),
        "clean": Param("bool", "training-set cleaning of section 4.2 before training"),
        "clean_sigma": Param("float", "cleaning threshold in residual-scatter units (paper: 4)", low=0.5, high=100),
        "rank_tol": Param("float", "landmark / Nystroem tolerance (numerical, not in the paper)", low=1e-12,
                          high=1e-2),
        "max_rank": Param("int", "most landmarks per gamma", low=1, high=20000),
        "huber_delta": Param("float", "smoothing of the loss beyond the tube (numerical)", low=1e-6, high=1.0),
        "n_newton": Param("int", "Newton iterations of the batched SVR solver", low=1, high=500),
        "refine_tol": Param("float", "close calls re-decided by exact SVRs (0 = off)", low=0.0, high=1.0),
        "n_jobs": Param("int", "threads of the exact refinement (empty = all cores)", low=1, high=1024,
                        allow_none=True),
        "lm_max_iter": Param("int", "Levenberg-Marquardt iteration limit (unconverged stars are flagged)",
                             low=1, high=10000),
        "lm_tol": Param("float", "LM convergence: chi2 still to gain", low=1e-8, high=100.0),
        "compress_tol": Param("float", "prediction model compression, RMS fraction (0 = exact)", low=0.0,
                              high=0.5),
        "batch_size": Param("int", "stars iterated together in prediction", low=1, high=65536),
        "pixel_chunks": Param("int", "pixels as this many dask tasks (1 = here, at once)", low=1, high=100000),
        "random_state": Param("int", "seed of the fold assignment", low=0, high=2**32 - 1),
    }

    def __init__(self, C_grid=DEFAULT_C, gamma_grid=DEFAULT_GAMMA, epsilon=0.05, n_folds=5,
                 clean=False, clean_sigma=4.0, rank_tol=1e-7, max_rank=1000, huber_delta=1e-3,
                 n_newton=20, refine_tol=2e-4, n_jobs=None, lm_max_iter=60, lm_tol=1e-2,
                 compress_tol=1e-3, batch_size=256, pixel_chunks=1, random_state=0):
        self.C_grid = C_grid
        self.gamma_grid = gamma_grid
        self.epsilon = epsilon
        self.n_folds = n_folds
        self.clean = clean
        self.clean_sigma = clean_sigma
        self.rank_tol = rank_tol
        self.max_rank = max_rank
        self.huber_delta = huber_delta
        self.n_newton = n_newton
        self.refine_tol = refine_tol
        self.n_jobs = n_jobs
        self.lm_max_iter = lm_max_iter
        self.lm_tol = lm_tol
        self.compress_tol = compress_tol
        self.pixel_chunks = pixel_chunks
        self.batch_size = batch_size
        self.random_state = random_state

    # ----------------------------------------------------------------- training pieces
    def _cv_grid(self, x, y, m, Cs, gammas, progress=None, frac=(0.0, 1.0)):
        """CV MSE and MD [J, nC, nG] for every pixel and grid point: the mean over the folds
        of each fold's MSE (MD) on its good test pixels, as in scikit-learn's k-fold CV.
        Also returns the fold of every star."""
        n, J = y.shape
        k = int(self.n_folds)
        rng = np.random.default_rng(self.random_state)
        fold = rng.permutation(np.arange(n) % k)
        mse = np.zeros((J, len(Cs), len(gammas)))
        md = np.zeros_like(mse)
        nf = np.zeros(J)
        order = np.argsort(Cs)
        total = k * len(gammas)
        for i in range(k):
            tr, te = fold != i, fold == i
            cnt = m[te].sum(0)
            nf += cnt > 0
            inv = (1.0 / np.maximum(cnt, 1))[:, None]
            for gi, g in enumerate(gammas):
                phi, L, proj = kernel_features(x[tr], g, self.rank_tol, self.max_rank)
                phit = rbf(x[te], L, g) @ proj
                theta = None
                for ci in order:  # C path, each solution warm-starts the next
                    theta = svr_fit(phi, y[tr], m[tr], np.full(J, Cs[ci]), self.epsilon,
                                    self.huber_delta, self.n_newton, theta0=theta)
                    res = (phit @ theta[:-1] + theta[-1] - y[te]) * m[te]
                    mse[:, ci, gi] += (res**2).sum(0) * inv[:, 0]
                    md[:, ci, gi] += res.sum(0) * inv[:, 0]
                done = i * len(gammas) + gi + 1
                report(progress, frac[0] + (frac[1] - frac[0]) * done / total,
                       f"SLAM CV fold {i + 1}/{k}, gamma={g:.3g}")
        nf = np.maximum(nf, 1)[:, None, None]
        return mse / nf, md / nf, fold

    def _refine_exact(self, x, y, m, Cs, gammas, fold, mse, md, progress=None, frac=(0.0, 1.0)):
        """Exact CV MSE/MD at the grid points that compete for a pixel's minimum.

        The batched solver's CV MSEs are good to ~1e-4 (relative, median; up to ~1e-2 at the
        large-C, large-gamma corner, from the Nystroem features and the smoothed loss). Where
        two or more of a pixel's grid points lie within ``refine_tol`` of its minimum, the
        choice between them is decided by exact SVRs: libsvm (scikit-learn ``SVR``) on the
        exact RBF kernel of each (gamma, fold), computed once and shared by every pixel and C
        (a precomputed-kernel SVR), on ``n_jobs`` threads (libsvm releases the GIL). If the
        exact values move the minimum, the points near the new minimum are refined in turn
        (at most 4 rounds). Updates ``mse`` and ``md`` in place; returns the mask
        [J, nC, nG] of the grid points that now hold exact values."""
        tol = float(self.refine_tol)
        J = y.shape[1]
        done = np.zeros(mse.shape, bool)
        if tol <= 0 or J == 0:
            return done
        for _ in range(4):
            rel = mse / np.min(mse.reshape(J, -1), axis=1)[:, None, None] - 1.0
            near = rel <= tol
            cand = near & (near.sum(axis=(1, 2)) >= 2)[:, None, None] & ~done
            if not cand.any():
                break
            e2, e1 = self._exact_cv(x, y, m, Cs, gammas, fold, cand, progress, frac)
            mse[cand], md[cand] = e2[cand], e1[cand]
            done |= cand
        return done

    def _exact_cv(self, x, y, m, Cs, gammas, fold, cand, progress=None, frac=(0.0, 1.0)):
        """libsvm CV MSE and MD [J, nC, nG] at the grid points ``cand`` (0 elsewhere)."""


        k = int(self.n_folds)
        n_jobs = int(self.n_jobs or os.cpu_count() or 1)
        ok = m > 0
        sse = np.zeros(cand.shape)
        sd = np.zeros(cand.shape)
        nf = np.zeros(cand.shape[0])
        for i in range(k):
            tr, te = np.flatnonzero(fold != i), np.flatnonzero(fold == i)
            nf += ok[te].any(0)
            for gi, g in enumerate(gammas):
                jobs = np.argwhere(cand[:, :, gi])              # (pixel, C index)
                if not len(jobs):
                    continue
                K = rbf(x[tr], x[tr], g)
                Kt = rbf(x[te], x[tr], g)

                def one(job, K=K, Kt=Kt, tr=tr, te=te):
                    j, ci = int(job[0]), int(job[1])
                    a, b = ok[tr, j], ok[te, j]
                    if not b.any():
                        return j, ci, 0.0, 0.0
                    Ka, Kb = (K, Kt) if a.all() else (K[np.ix_(a, a)], Kt[:, a])
                    with config_context(assume_finite=True):
                        svr = SVR(kernel="precomputed", C=float(Cs[ci]), epsilon=float(self.epsilon),
                                  cache_size=500).fit(Ka, y[tr[a], j])
                        res = svr.predict(Kb[b]) - y[te[b], j]
                    return j, ci, float(np.mean(res**2)), float(np.mean(res))

                with ThreadPoolExecutor(n_jobs) as ex:
                    for j, ci, e2, e1 in ex.map(one, jobs):
                        sse[j, ci, gi] += e2
                        sd[j, ci, gi] += e1
                report(progress, frac[0] + (frac[1] - frac[0]) * (i * len(gammas) + gi + 1) / (k * len(gammas)),
                       f"SLAM exact refinement fold {i + 1}/{k}, gamma={g:.3g}")
        nf = np.maximum(nf, 1)[:, None, None]
        return sse / nf, sd / nf

    def _fit_fixed(self, x, y, m, C, gidx, gammas):
        """Final per-pixel SVRs on all stars with per-pixel C [J] and gamma index [J].
        Returns (landmarks, coefs, bias): for gamma group g, the landmark labels [m_g, M]
        and kernel coefficients [m_g, J_g] of its pixels (see :func:`model_flux`)."""
        J = y.shape[1]
        landmarks, coefs = [], []
        bias = np.zeros(J)
        for gi, g in enumerate(gammas):
            cols = np.flatnonzero(gidx == gi)
            if not cols.size:
                landmarks.append(np.zeros((0, x.shape[1])))
                coefs.append(np.zeros((0, 0)))
                continue
            phi, L, proj = kernel_features(x, g, self.rank_tol, self.max_rank)
            theta = svr_fit(phi, y[:, cols], m[:, cols], C[cols], self.epsilon,
                            self.huber_delta, self.n_newton)
            landmarks.append(L)
            coefs.append(proj @ theta[:-1])
            bias[cols] = theta[-1]
        return landmarks, coefs, bias

    def _flux_std(self, xq):
        """Standardised model flux [S, J] at standardised labels ``xq`` [S, M]."""
        return model_flux(xq, self.gammas_, self.gamma_index_, self.landmarks_, self.coefs_, self.bias_)

    def _train_chunk(self, x, ys, m, Cs, gammas, progress=None, frac=(0.0, 1.0), fixed=None):
        """CV grid, exact refinement of close calls, choice and final fit for a block of
        pixels: (cv_mse [J, nC, nG], cv_md, C [J], gamma index [J], landmarks per gamma,
        coefs per gamma, bias [J], refined mask [J, nC, nG]). With ``fixed`` = (C [J],
        gamma index [J]) the choice is given: no CV, the grids are NaN."""
        if fixed is not None:
            C, gi = np.asarray(fixed[0], float), np.asarray(fixed[1])
            nan = np.full((ys.shape[1], len(Cs), len(gammas)), np.nan)
            report(progress, frac[1], "SLAM: fitting every pixel at its given (C, gamma)")
            landmarks, coefs, bias = self._fit_fixed(x, ys, m, C, gi, gammas)
            return PixelBlock(nan, nan.copy(), C, gi, landmarks, coefs, bias, np.zeros(nan.shape, bool))
        mid = frac[0] + 0.8 * (frac[1] - frac[0])
        mse, md, fold = self._cv_grid(x, ys, m, Cs, gammas, progress, (frac[0], mid))
        refined = self._refine_exact(x, ys, m, Cs, gammas, fold, mse, md, progress, (mid, frac[1]))
        best = np.argmin(mse.reshape(mse.shape[0], -1), axis=1)
        ci, gi = np.unravel_index(best, (len(Cs), len(gammas)))
        C = np.asarray(Cs, float)[ci]
        report(progress, frac[1], "SLAM: refitting every pixel on all stars")
        landmarks, coefs, bias = self._fit_fixed(x, ys, m, C, gi, gammas)
        return PixelBlock(mse, md, C, gi, landmarks, coefs, bias, refined)

    def _train_pixels(self, x, ys, m, Cs, gammas, progress, fixed=None):
        """Train every pixel, in ``pixel_chunks`` independent blocks. One block runs here;
        several run through ``dask.compute``, i.e. on the workers of an active
        ``dask.distributed.Client`` (a cluster) or else dask's local scheduler: the same
        code path either way. Pixels are independent, so the blocks give the same model
        as one block."""
        J = ys.shape[1]
        n_chunks = int(max(1, min(int(self.pixel_chunks), J)))
        if n_chunks == 1:
            return [self._train_chunk(x, ys, m, Cs, gammas, progress, (0.0, 0.95), fixed)]

        blocks = np.array_split(np.arange(J), n_chunks)
        report(progress, 0.0, f"SLAM: training {J} pixels in {n_chunks} dask tasks")
        tasks = [dask.delayed(self._train_chunk)(x, ys[:, b], m[:, b], Cs, gammas, None, (0.0, 1.0),
                                                 None if fixed is None else (fixed[0][b], fixed[1][b]))
                 for b in blocks]
        return list(dask.compute(*tasks))

    # ----------------------------------------------------------------- public API
    def fit(self, flux: ArrayLike | Spectra, labels: ArrayLike | Labels, *, flux_err: ArrayLike | None = None,
            label_err: ArrayLike | None = None, photometry: ArrayLike | None = None,
            label_names: Sequence[str] | None = None, wave: ArrayLike | None = None,
            progress: ProgressCallback | None = None) -> Self:
        """Train the per-pixel SVRs. Stars with any missing (NaN) label are dropped (SLAM
        needs every label of a training star); their number is kept in
        ``n_dropped_missing_``. Returns self.

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Training spectra on one grid; NaN/inf flux and non-positive errors are bad
            pixels.
        labels : array [N, M] or Labels
            Training labels, NaN = missing.
        flux_err, label_err : array, optional
            1-sigma uncertainties of the flux [N, P] and of the labels [N, M].
        photometry : array [N, K], optional
            Absolute magnitudes + A_V (methods with capability ``photometry``).
        label_names : sequence of str, optional
            Canonical names of the M labels (default ``label_0``, ...).
        wave : array [P], optional
            The wavelength grid, kept with the model (catalogue prediction checks it).
        progress : callable, optional
            ``progress(fraction, message)``.

        Returns
        -------
        self
        """
        if photometry is not None:
            warnings.warn("SLAM does not use photometry; it is ignored", UserWarning, stacklevel=2)
        t0 = time.perf_counter()
        f, e, bad = self._flux_arrays(flux, flux_err)
        y, _, names = self._label_arrays(labels, None, label_names, n=f.shape[0])
        keep = ~np.isnan(y).any(axis=1)
        self.n_dropped_missing_ = int((~keep).sum())
        f, bad, y = f[keep], bad[keep], y[keep]
        e = None if e is None else e[keep]
        k = int(self.n_folds)
        if y.shape[0] < 2 * k:
            raise ValidationError(f"SLAM needs at least {2 * k} complete training stars for "
                                  f"{k}-fold CV; got {y.shape[0]}")
        self.label_names_ = names
        self.n_pixels_ = f.shape[1]
        self.wave_ = None if wave is None else np.asarray(wave, float)
        self.label_scaler_ = Standardiser().fit(y, names=names)
        self.flux_scaler_ = Standardiser().fit(np.where(bad, np.nan, f),
                                               names=[f"pixel {j}" for j in range(f.shape[1])])
        m = (~bad).astype(float)
        if self.clean:
            keep2 = self._clean(f, bad, y, progress)
            self.n_cleaned_ = int((~keep2).sum())
            f, bad, y, m = f[keep2], bad[keep2], y[keep2], m[keep2]
        else:
            self.n_cleaned_ = 0
        x = self.label_scaler_.transform(y)
        ys = np.where(bad, 0.0, self.flux_scaler_.transform(np.where(bad, 0.0, f)))
        Cs, gammas = list(self.C_grid), list(self.gamma_grid)
        fixed = getattr(self, "_fixed_choice", None)
        if fixed is not None:
            if len(fixed["C"]) != f.shape[1] or list(fixed["gammas"]) != gammas:
                raise ValidationError(f"the given per-pixel (C, gamma) are for {len(fixed['C'])} pixels "
                                      f"and gammas {list(fixed['gammas'])}; this fit has {f.shape[1]} "
                                      f"pixels and gammas {gammas}")
        parts = self._train_pixels(x, ys, m, Cs, gammas, progress,
                                   None if fixed is None else (fixed["C"], fixed["gamma_index"]))
        mse, md, C, gi = (np.concatenate([getattr(p, k) for p in parts])
                          for k in ("cv_mse", "cv_md", "C", "gamma_index"))
        flat = mse.reshape(mse.shape[0], -1)
        best = np.argmin(flat, axis=1)
        self.cv_mse_grid_, self.cv_md_grid_ = mse, md
        self.cv_refined_grid_ = np.concatenate([p.refined for p in parts])
        self.C_ = C
        self.gamma_ = np.asarray(gammas)[gi]
        self.gamma_index_ = gi
        if fixed is None:
            self.cv_mse_ = flat[np.arange(flat.shape[0]), best]
            self.cv_md_ = md.reshape(md.shape[0], -1)[np.arange(flat.shape[0]), best]
        else:
            self.cv_mse_ = np.asarray(fixed["cv_mse"], float).copy()
            self.cv_md_ = np.asarray(fixed["cv_md"], float).copy()
        self.landmarks_, self.coefs_ = [], []
        for g in range(len(gammas)):   # landmarks are the same in every chunk (deterministic)
            have = [p.landmarks[g] for p in parts if p.coefs[g].size]
            self.landmarks_.append(have[0] if have else np.zeros((0, x.shape[1])))
            self.coefs_.append(np.concatenate([p.coefs[g] for p in parts if p.coefs[g].size], axis=1)
                               if have else np.zeros((0, 0)))
        self.bias_ = np.concatenate([p.bias for p in parts])
        self.x_train_ = x
        self.gammas_ = np.asarray(gammas)
        fit = self._flux_std(x)
        res = (fit - ys) * m
        cnt = np.maximum(m.sum(0), 1)
        self.mse_ = (res**2).sum(0) / cnt
        self.md_ = res.sum(0) / cnt
        # standardised training flux for the initial guesses; masked pixels hold the model
        self.train_flux_std_ = np.where(m > 0, ys, fit)
        self.train_mask_ = m.astype(bool)
        self._set_label_range(y)
        self._derived = {}      # caches of what prediction derives from the fitted state
        self.fit_seconds_ = time.perf_counter() - t0
        self._fit_envelope(flux, flux_err)
        report(progress, 1.0, "SLAM fitted")
        return self

    def _refit_model(self):
        """The error calibration's refits keep this fit's per-pixel (C, gamma) and use its
        per-pixel CV MSE as their model variance (eq. 8): no CV grid, one SVR fit per pixel,
        and a refit that differs from the final model only in its training stars. (A single
        (C, gamma) for all pixels, used before, gave APOGEE-like refits whose out-of-fold
        Teff scatter was *smaller* than the final model's held-out one, 85 vs 95 K, so the
        calibrated errors came out too small.)"""
        sub = super()._refit_model()
        sub._fixed_choice = {"C": self.C_.copy(), "gamma_index": self.gamma_index_.copy(),
                             "gammas": [float(g) for g in self.gammas_],
                             "cv_mse": self.cv_mse_.copy(), "cv_md": self.cv_md_.copy()}
        return sub

    def _clean(self, f, bad, y, progress):
        """Section 4.2: leave-1/10-out predictions with mid-grid hyper-parameters
        (C = 10, gamma = 0.01 -- the paper does not say which it used); drop stars whose
        labels deviate by more than ``clean_sigma`` x the residual scatter in any label."""
        n = y.shape[0]
        rng = np.random.default_rng(self.random_state + 1)
        fold = rng.permutation(np.arange(n) % 10)
        pred = np.zeros_like(y)
        for i in range(10):
            tr, te = fold != i, fold == i
            # this model's settings, except one mid-grid point, 2 folds, no cleaning, one block
            sub = clone(self).set_params(C_grid=(10.0,), gamma_grid=(0.01,), n_folds=2, clean=False,
                                         pixel_chunks=1, refine_tol=0.0)
            sub.fit(np.where(bad[tr], np.nan, f[tr]), y[tr], label_names=self.label_names_)
            pred[te] = sub.predict(np.where(bad[te], np.nan, f[te]))
            report(progress, 0.0, f"SLAM cleaning fold {i + 1}/10")
        r = pred - y
        sig = np.std(r, axis=0)
        keep = np.all(np.abs(r - r.mean(0)) <= self.clean_sigma * sig, axis=1)
        self.clean_residuals_ = r
        return keep

    def _initial_guess(self, fs, w, chunk=256, n_pre=16, rank=128):
        """Section 2.3: the labels of the training star whose spectrum matches best (the
        highest likelihood of eq. 8, with each star's own weights and bad pixels; masked
        pixels of training spectra hold the model flux at that star's labels).

        Searching all N training spectra costs N x J per star -- more than the whole LM
        fit. So the search runs in two stages: a preselection of the ``n_pre`` nearest
        training spectra in a rank-``rank`` PCA of the spectra whitened by the model
        scatter (weights 1/CV MSE), then the exact chi2 on those only. The best match is
        among them for > 98 % of stars, and otherwise a near-identical spectrum (the test
        suite compares with the exhaustive search)."""
        C, V, sw, tf = self._init_index(rank)
        best = np.empty(fs.shape[0], int)
        k = int(min(n_pre, C.shape[0]))
        n = fs.shape[0]
        for i in range(0, n, chunk):
            idx = np.minimum(np.arange(i, i + chunk), n - 1)        # pad: one compile
            b = init_search(jnp.asarray(fs[idx], jnp.float32), jnp.asarray(w[idx], jnp.float32),
                             sw, V, C, tf, k)
            best[i:i + chunk] = np.asarray(b)[:min(chunk, n - i)]
        return self.x_train_[best]

    def _init_index(self, rank):
        """PCA coordinates [N, r] of the whitened training spectra, the basis [J, r], the
        whitening sqrt(1/CV MSE) [J] and the training spectra as float32 (cached)."""
        cache = self.__dict__.setdefault("_derived", {})
        key = ("init_index", int(rank))
        if key in cache:
            return cache[key]
        sw = (1.0 / np.sqrt(self.cv_mse_)).astype(np.float32)
        tf = self.train_flux_std_.astype(np.float32)
        Z = tf * sw
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        V = np.ascontiguousarray(vt[:rank].T)
        out = tuple(jnp.asarray(a) for a in (Z @ V, V, sw, tf))
        cache[key] = out
        return out

    def _device_model(self):
        """Pixels in gamma-group order (perm) and the per-group arrays for JAX, with each
        group's coefficients compressed to low rank (``compress_tol``, see
        :func:`compress_coefficients`). Cached: it depends only on the fitted state."""
        cache = self.__dict__.setdefault("_derived", {})
        key = ("device_model", float(self.compress_tol))
        if key in cache:
            return cache[key]
        used = [g for g in range(len(self.coefs_)) if np.any(self.gamma_index_ == g)]
        perm = np.concatenate([np.flatnonzero(self.gamma_index_ == g) for g in used])
        Ws, Ls = [], []
        for g in used:
            cols = np.flatnonzero(self.gamma_index_ == g)
            W, L = self.coefs_[g], self.landmarks_[g]
            if self.compress_tol > 0:
                # half the budget to fewer landmarks, half to the low-rank factors
                scale = np.sqrt(self.cv_mse_[cols])
                K = rbf(self.x_train_, L, self.gammas_[g])
                k, Wk = fewer_landmarks(K, K @ W, scale, 0.5 * self.compress_tol)
                if Wk is not None:
                    W, L, K = Wk, L[:k], K[:, :k]
                Ws.append(tuple(jnp.asarray(a, jnp.float32)
                                for a in compress_coefficients(W, K @ W, scale, 0.5 * self.compress_tol)))
            else:
                Ws.append((jnp.asarray(W, jnp.float32),))
            Ls.append(jnp.asarray(L, jnp.float32))
        dev = (perm, tuple(jnp.float32(self.gammas_[g]) for g in used), tuple(Ls), tuple(Ws),
               jnp.asarray(self.bias_[perm], jnp.float32))
        cache[key] = dev
        return dev

    def _solve_batched(self, theta0, fs, w, n_steps=2):
        """Levenberg-Marquardt for all stars with *continuous batching*: a fixed number of
        slots (``batch_size``) iterates in JAX; every ``n_steps`` iterations the finished
        stars leave and queued stars take their slots, so no slot idles while the
        slowest star of a batch converges. The queue starts with the least informative
        (lowest S/N, slowest) spectra, and once it is empty the last few stars move to a
        batch 8x smaller. Returns (theta, converged, n_evaluations, model flux [N, J] in
        pixel order, GN Hessian [N, M, M], chi2 [N]), all at the solution (:func:`lm_chunk`)."""
        n, M = theta0.shape
        perm, gams, Ls, Ws, bias = self._device_model()
        fp = np.ascontiguousarray(fs[:, perm], np.float32)
        wp = np.ascontiguousarray(w[:, perm], np.float32)
        J = fp.shape[1]
        queue = np.argsort(wp.sum(1), kind="stable")
        B = int(max(1, min(int(self.batch_size), n)))
        z = lambda *shape, dt=np.float32: np.zeros((B, *shape), dt)  # noqa: E731
        st = LMState(theta=z(M), step=z(M), lam=z(), done=np.ones(B, bool), conv=z(dt=bool),
                      nit=z(dt=np.int32), fresh=z(dt=bool), mod=z(J), jac=z(M, J), H=z(M, M), chi2=z(),
                      ks=tuple(z(L.shape[0]) for L in Ls))
        fb = np.zeros((B, J), np.float32)
        wb = np.zeros_like(fb)
        slot = -np.ones(B, int)
        out_theta = theta0.astype(np.float64).copy()
        out_conv = np.zeros(n, bool)
        out_nit = np.zeros(n, int)
        out_mod = np.zeros((n, J), np.float32)
        out_H = np.zeros((n, M, M))
        out_c2 = np.zeros(n)
        nxt = 0
        while True:
            fin = st.done & (slot >= 0)
            if fin.any():
                s_ = slot[fin]
                out_theta[s_], out_conv[s_], out_nit[s_] = st.theta[fin], st.conv[fin], st.nit[fin]
                out_H[s_], out_c2[s_] = st.H[fin], st.chi2[fin]
                out_mod[s_] = np.asarray(st.mod)[fin]
                slot[fin] = -1
            free = np.flatnonzero(slot < 0)
            n_new = min(free.size, n - nxt)
            if n_new:
                new, idx = free[:n_new], queue[nxt:nxt + n_new]
                nxt += n_new
                slot[new] = idx
                st.theta[new] = theta0[idx]
                st.lam[new] = 1e-2
                st.done[new] = st.conv[new] = False
                st.nit[new] = 0
                st.fresh[new] = True
                fb[new], wb[new] = fp[idx], wp[idx]
            active = np.flatnonzero(slot >= 0)
            if not active.size:
                break
            if nxt == n and B >= 64 and active.size <= B // 8:   # tail: shrink the batch
                B //= 8
                keep = np.concatenate([active, np.flatnonzero(slot < 0)])[:B]
                st = jax.tree_util.tree_map(lambda a, keep=keep: np.asarray(a)[keep], st)
                fb, wb, slot = fb[keep], wb[keep], slot[keep]
            res = lm_chunk(st, fb, wb, bias, gams, Ls, Ws, n_steps, int(self.lm_max_iter), float(self.lm_tol))
            # the small per-slot arrays come back to the host for the slot bookkeeping; the
            # model, Jacobian and kernel values stay on the device (a fresh slot overwrites them)
            st = res._replace(**{f: np.array(getattr(res, f))
                                 for f in LMState._fields if f not in ("mod", "jac", "ks")})
        model = np.empty((n, J), np.float32)
        model[:, perm] = out_mod + np.asarray(bias)[None, :]
        return LMSolution(out_theta, out_conv, out_nit, model, out_H, out_c2)

    def _evaluate_at(self, theta, fs, w):
        """The prediction model (compressed, float32) at standardised labels ``theta``:
        model flux [N, J] (pixel order), Gauss-Newton Hessian [N, M, M] and chi2 [N] -- an
        independent evaluation, against which the tests check what the solver reports."""
        n = theta.shape[0]
        perm, gams, Ls, Ws, bias = self._device_model()
        B = int(max(1, min(int(self.batch_size), n)))
        mod = np.empty((n, fs.shape[1]))
        H = np.empty((n, theta.shape[1], theta.shape[1]))
        c2 = np.empty(n)
        for a in range(0, n, B):
            idx = np.minimum(np.arange(a, a + B), n - 1)   # pad the last batch (one compile)
            k = min(B, n - a)
            m_, h_, c_ = evaluate_at(jnp.asarray(theta[idx], jnp.float32), jnp.asarray(fs[idx][:, perm], jnp.float32),
                                   jnp.asarray(w[idx][:, perm], jnp.float32), bias, gams, Ls, Ws)
            mod[a:a + k, perm] = np.asarray(m_, np.float64)[:k]
            H[a:a + k] = np.asarray(h_, np.float64)[:k]
            c2[a:a + k] = np.asarray(c_, np.float64)[:k]
        return mod, H, c2

    def _likelihood_inputs(self, flux, flux_err):
        """Standardised flux and weights 1/(sigma_obs^2 + CV MSE) of eq. 8, float32 as the
        solver uses them (bad pixels: flux 0, weight 0), and the bad-pixel mask."""
        f, e, bad = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_)
        std = self.flux_scaler_.std_.astype(np.float32)
        fs = (f.astype(np.float32) - self.flux_scaler_.mean_.astype(np.float32)) / std
        fs[bad] = 0.0
        cv = self.cv_mse_.astype(np.float32)
        if e is None:
            w = np.broadcast_to(1.0 / cv, f.shape).copy()
            w[bad] = 0.0
        else:                                   # e = inf at bad pixels: weight 0
            w = 1.0 / ((e.astype(np.float32) / std) ** 2 + cv)
        return fs, w, bad

    def likelihood_fit(self, flux, *, flux_err=None) -> dict:
        """The maximum-likelihood solution in full: ``labels``, ``errors``, ``converged``,
        ``n_iter``, ``chi2`` (eq. 8), ``chi2_reduced`` (per good pixel less the labels),
        ``rmse`` of the fit in flux units and the ``initial`` guesses, per star."""
        self._check_fitted()
        fs, w, bad = self._likelihood_inputs(flux, flux_err)
        theta0 = self._initial_guess(fs, w)
        sol = self._solve_batched(theta0, fs, w)
        theta, conv, nit, model, H, c2 = sol
        M = theta.shape[1]
        cov = np.linalg.pinv(H + 1e-12 * np.eye(M))
        err = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
        res = (model - fs) * self.flux_scaler_.std_.astype(np.float32)
        res[bad] = 0.0
        rmse = np.sqrt(np.einsum("ij,ij->i", res, res) / np.maximum((~bad).sum(1), 1)).astype(float)
        return {
            "labels": self.label_scaler_.inverse(theta),
            "errors": self.label_scaler_.inverse_scale(err),
            "converged": conv,
            "n_iter": nit,
            "chi2": c2,
            "chi2_reduced": c2 / np.maximum((~bad).sum(1) - M, 1),
            "rmse": rmse,
            "initial": self.label_scaler_.inverse(theta0),
        }

    def _predict_details(self, flux, *, flux_err=None, photometry=None) -> Prediction:
        """Labels, formal errors and fit quality per star: ``converged``, ``n_iter``,
        ``chi2_reduced`` and ``rmse`` (see :meth:`likelihood_fit`)."""
        d = self.likelihood_fit(flux, flux_err=flux_err)
        return Prediction(d["labels"], d["errors"],
                          {k: d[k] for k in ("converged", "n_iter", "chi2_reduced", "rmse")})

    def predict(self, flux: ArrayLike | Spectra, *, flux_err: ArrayLike | None = None,
                photometry: ArrayLike | None = None, return_std: bool = False, wave: ArrayLike | None = None
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Maximum-likelihood labels [N, M] (eq. 8); with ``return_std`` also the formal
        1-sigma errors from the LM covariance. Convergence flags: :meth:`predict_details`.

        Parameters
        ----------
        flux : array [N, P] or Spectra
            Spectra on the training grid (bad pixels NaN).
        flux_err : array [N, P], optional
            1-sigma flux uncertainties.
        photometry : array [N, K], optional
            Needed when the model was fitted with photometry (``uses_photometry``).
        return_std : bool
            Also return the 1-sigma errors.
        wave : array [P], optional
            The spectra's wavelength grid: refused unless it is the model's (a
            :class:`Spectra` input is checked the same way).

        Returns
        -------
        labels : ndarray [N, M]
        errors : ndarray [N, M]
            Only with ``return_std``.
        """
        self._check_grid(flux, wave)
        d = self.likelihood_fit(flux, flux_err=flux_err)
        return (d["labels"], d["errors"]) if return_std else d["labels"]

    def predict_spectra(self, labels: ArrayLike, *, label_err: ArrayLike | None = None) -> np.ndarray:
        """The SLAM model flux (physical units) for given labels [N, M] (every label given;
        ``label_err`` is not used: the model is a deterministic function of the labels).

        Parameters
        ----------
        labels : array [N, M]
            Labels in the model's order (``label_names_``).
        label_err : array [N, M], optional
            Their uncertainties (used by a method whose emulator weighs them).

        Returns
        -------
        ndarray [N, P]
            Model flux on the training grid.
        """
        self._check_fitted()
        y, _, _ = self._label_arrays(labels, None, self.label_names_, allow_missing=False)
        xs = self.label_scaler_.transform(y)
        fs = self._flux_std(xs)
        return self.flux_scaler_.inverse(fs)

    # ----------------------------------------------------------------- CODs
    def cods(self, flux, labels, *, progress=None) -> dict[str, np.ndarray]:
        """Coefficients of dependence (section 6, eqs. 12-13) on a training set; see
        :func:`labelcore.methods.slam.cods.cods`."""
        self._check_fitted()
        return slam_cods(self, flux, labels, progress=progress)

    # ----------------------------------------------------------------- diagnostics
    def learning_curves(self) -> dict:
        """Zhang 2020 sections 2.2 and 3.3 as tables: ``pixels`` (pixel, wave, the chosen
        C and gamma, cv_mse, cv_md, mse, md) and ``grid`` (pixel, wave, C, gamma, cv_mse,
        cv_md, refined, chosen: every grid point of every pixel)."""
        self._check_fitted()
        J = self.n_pixels_
        w = np.asarray(self.wave_, float) if self.wave_ is not None else np.arange(J, dtype=float)
        pix = pd.DataFrame({"pixel": np.arange(J), "wave": w, "C": self.C_, "gamma": self.gamma_,
                            "cv_mse": self.cv_mse_, "cv_md": self.cv_md_, "mse": self.mse_, "md": self.md_})
        g = np.asarray(self.cv_mse_grid_)           # [J, n_C, n_gamma]
        nc, ng = g.shape[1], g.shape[2]
        Cs, gams = np.asarray(self.C_grid, float), np.asarray(self.gammas_, float)
        flat = g.reshape(J, -1)
        chosen = np.zeros(flat.shape, bool)
        chosen[np.arange(J), np.nanargmin(flat, axis=1)] = True
        grid = pd.DataFrame({"pixel": np.repeat(np.arange(J), nc * ng), "wave": np.repeat(w, nc * ng),
                             "C": np.tile(np.repeat(Cs, ng), J), "gamma": np.tile(np.tile(gams, nc), J),
                             "cv_mse": g.ravel(), "cv_md": np.asarray(self.cv_md_grid_).ravel(),
                             "refined": np.asarray(self.cv_refined_grid_, bool).ravel(),
                             "chosen": chosen.ravel()})
        return {"pixels": pix, "grid": grid}

    # ----------------------------------------------------------------- persistence
    def _state(self):
        meta = {"n_pixels": self.n_pixels_, "n_dropped_missing": self.n_dropped_missing_,
                "n_cleaned": self.n_cleaned_, "label_scaler": self.label_scaler_.to_dict(),
                "flux_scaler": self.flux_scaler_.to_dict(), "n_gamma": len(self.coefs_)}
        arrays = {"x_train": self.x_train_, "bias": self.bias_, "gammas": self.gammas_,
                  "C": self.C_, "gamma": self.gamma_, "gamma_index": self.gamma_index_,
                  "cv_mse": self.cv_mse_, "cv_md": self.cv_md_, "mse": self.mse_, "md": self.md_,
                  "cv_mse_grid": self.cv_mse_grid_, "cv_md_grid": self.cv_md_grid_,
                  "cv_refined_grid": self.cv_refined_grid_, "train_flux_std": self.train_flux_std_,
                  "train_mask": self.train_mask_}
        for g, (L, W) in enumerate(zip(self.landmarks_, self.coefs_, strict=True)):
            arrays[f"landmarks_{g}"] = L
            arrays[f"coef_{g}"] = W
        if self.wave_ is not None:
            arrays["wave"] = self.wave_
        return meta, arrays

    def _set_state(self, meta, a):
        if "proj_0" in a:
            raise FormatError("this SLAM model was saved by an older labelcore (eigen-feature "
                              "format without landmarks); retrain it with this version")
        self.n_pixels_ = meta["n_pixels"]
        self.n_dropped_missing_ = meta["n_dropped_missing"]
        self.n_cleaned_ = meta["n_cleaned"]
        self.label_scaler_ = Standardiser.from_dict(meta["label_scaler"])
        self.flux_scaler_ = Standardiser.from_dict(meta["flux_scaler"])
        self.x_train_, self.bias_, self.gammas_ = a["x_train"], a["bias"], a["gammas"]
        self.C_, self.gamma_, self.gamma_index_ = a["C"], a["gamma"], a["gamma_index"]
        self.cv_mse_, self.cv_md_, self.mse_, self.md_ = a["cv_mse"], a["cv_md"], a["mse"], a["md"]
        self.cv_mse_grid_, self.cv_md_grid_ = a["cv_mse_grid"], a["cv_md_grid"]
        self.cv_refined_grid_ = a.get("cv_refined_grid", np.zeros(self.cv_mse_grid_.shape, bool))
        self.train_flux_std_, self.train_mask_ = a["train_flux_std"], a["train_mask"]
        self.landmarks_ = [a[f"landmarks_{g}"] for g in range(meta["n_gamma"])]
        self.coefs_ = [a[f"coef_{g}"] for g in range(meta["n_gamma"])]
        self.wave_ = a.get("wave")
        self._derived = {}
